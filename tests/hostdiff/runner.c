/* Host CPU as oracle: runs batches of random user-mode instruction sequences natively, in a
 * 32-bit process, for tests/hostdiff/harness.py (which runs the same bytes in vmcore).
 *
 * Built by the harness with `gcc -m32 -O2 -fno-pie -no-pie [-static]`; the binary is cached,
 * keyed by a hash of this file.
 *
 * Protocol (all integers u32 little endian), stdin -> stdout:
 *   header:   "HDF1" mode n_cases code_addr code_size data_addr data_size stack_addr stack_size max_steps
 *             mode bit 0: 0 = run, 1 = trace (single-step every guest instruction with EFLAGS.TF);
 *             mode bit 1: x87, every record ends with the x87 state (108 bytes, the 32-bit
 *             protected-mode FNSAVE image: FNSAVE at guest_exit, else the kernel's copy in the
 *             signal frame, whose first 108 bytes have the same layout)
 *   per case: code_len code[code_len] eax ecx edx ebx esp ebp esi edi eflags data[data_size] stack[stack_size]
 *   out, run mode, per case:   one record
 *   out, trace mode, per case: n_steps, n_steps records (the state before the first guest
 *                              instruction and after each single step, REP iterations one by one),
 *                              then the final record
 *   record:   status eip eax ecx edx ebx esp ebp esi edi eflags data[data_size] stack[stack_size]
 *             status 0: the sequence ran to its end (eip is then the end of the code);
 *             otherwise the signal that stopped it (eip is where)
 *
 * The code, data and stack regions are mapped at the fixed addresses given in the header
 * (MAP_FIXED_NOREPLACE) so that the bytes and addresses are the same as in the guest. The
 * sequence is copied to code_addr and followed by `jmp guest_exit`: a trampoline saves the
 * host's registers, loads the guest's (EFLAGS with POPFD from a scratch stack, so that nothing
 * is written to the guest's stack), jumps to the code, and at guest_exit stores all registers
 * and PUSHFD's image (before anything can change DF) and returns to C.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

#define TF 0x100u
#define RF 0x10000u

typedef struct {
    uint32_t r[8];          /* eax ecx edx ebx esp ebp esi edi */
    uint32_t eflags;
} regs_t;

regs_t g_in, g_out;
uint8_t g_fpu[108];
uint32_t g_entry;
uint32_t g_host_esp;

void run_guest(void);
void guest_exit(void);

__asm__(
    ".text\n"
    ".globl run_guest\n"
    ".type run_guest, @function\n"
    "run_guest:\n"
    "    pushl %ebp\n"
    "    pushl %ebx\n"
    "    pushl %esi\n"
    "    pushl %edi\n"
    "    pushfl\n"
    "    movl %esp, g_host_esp\n"
    "    leal g_in+32, %esp\n"          /* &g_in.eflags: POPFD from here, not from the guest stack */
    "    popfl\n"
    "    movl g_in+0, %eax\n"
    "    movl g_in+4, %ecx\n"
    "    movl g_in+8, %edx\n"
    "    movl g_in+12, %ebx\n"
    "    movl g_in+20, %ebp\n"
    "    movl g_in+24, %esi\n"
    "    movl g_in+28, %edi\n"
    "    movl g_in+16, %esp\n"
    "    jmp *g_entry\n"
    ".globl guest_exit\n"
    ".type guest_exit, @function\n"
    "guest_exit:\n"
    "    movl %eax, g_out+0\n"
    "    movl %ecx, g_out+4\n"
    "    movl %edx, g_out+8\n"
    "    movl %ebx, g_out+12\n"
    "    movl %esp, g_out+16\n"
    "    movl %ebp, g_out+20\n"
    "    movl %esi, g_out+24\n"
    "    movl %edi, g_out+28\n"
    "    leal g_out+36, %esp\n"         /* PUSHFD stores to g_out.eflags */
    "    pushfl\n"
    "    fnsave g_fpu\n"               /* no wait: a pending exception stays in the image */
    "    cld\n"
    "    movl g_host_esp, %esp\n"
    "    popfl\n"
    "    popl %edi\n"
    "    popl %esi\n"
    "    popl %ebx\n"
    "    popl %ebp\n"
    "    ret\n");

static uint32_t code_addr, code_size, data_addr, data_size, stack_addr, stack_size, max_steps;
static uint8_t *code, *data, *stack;

static sigjmp_buf g_jb;
static volatile sig_atomic_t g_in_guest;

/* a stopped or finished state */
typedef struct {
    uint32_t status, eip;
    regs_t regs;
} head_t;

static head_t g_fault;
static uint8_t g_fault_fpu[108];
static int g_x87;
#define FPU_SIZE 108

/* trace mode */
static int g_tracing;
static int g_started;
static uint32_t g_prev_eip;
static uint32_t g_nsteps;
static uint8_t *g_steps;        /* max_steps records */
static size_t rec_size;

static void die(const char *what) {
    fprintf(stderr, "hostdiff runner: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void get_regs(const greg_t *g, regs_t *out) {
    out->r[0] = g[REG_EAX];
    out->r[1] = g[REG_ECX];
    out->r[2] = g[REG_EDX];
    out->r[3] = g[REG_EBX];
    out->r[4] = g[REG_UESP];
    out->r[5] = g[REG_EBP];
    out->r[6] = g[REG_ESI];
    out->r[7] = g[REG_EDI];
    out->eflags = g[REG_EFL];
}

static void put_record(uint8_t *p, const head_t *h, const uint8_t *fpu) {
    memcpy(p, h, sizeof *h);
    memcpy(p + sizeof *h, data, data_size);
    memcpy(p + sizeof *h + data_size, stack, stack_size);
    if (g_x87)
        memcpy(p + sizeof *h + data_size + stack_size, fpu, FPU_SIZE);
}

static void get_fpu(const ucontext_t *uc, uint8_t *out) {
    memset(out, 0, FPU_SIZE);
    if (uc->uc_mcontext.fpregs)
        memcpy(out, uc->uc_mcontext.fpregs, FPU_SIZE);
}

/* the instruction at eip is PUSHF/PUSHFD (after prefixes) */
static int is_pushf(uint32_t eip) {
    const uint8_t *p = (const uint8_t *)(uintptr_t)eip;
    for (int i = 0; i < 15; i++) {
        uint8_t b = p[i];
        if (b == 0x66 || b == 0x67 || b == 0xF0 || b == 0xF2 || b == 0xF3 || b == 0x26 || b == 0x2E ||
            b == 0x36 || b == 0x3E || b == 0x64 || b == 0x65)
            continue;
        return b == 0x9C;
    }
    return 0;
}

static void on_trap(greg_t *g, const ucontext_t *uc) {
    uint32_t eip = g[REG_EIP];
    if (eip >= code_addr && eip < code_addr + code_size) {
        if (g_started && is_pushf(g_prev_eip)) {
            /* PUSHF ran with TF set: the image on the stack has TF, the guest's would not */
            uint32_t *top = (uint32_t *)(uintptr_t)g[REG_UESP];
            *top &= ~TF;
        }
        g_started = 1;
        g_prev_eip = eip;
        g[REG_EFL] |= TF;               /* keep stepping after a POPFD */
        if (g_nsteps < max_steps) {
            head_t h = {0, eip, {{0}, 0}};
            get_regs(g, &h.regs);
            h.regs.eflags &= ~(TF | RF);
            uint8_t fpu[FPU_SIZE];
            get_fpu(uc, fpu);
            put_record(g_steps + (size_t)g_nsteps * rec_size, &h, fpu);
            g_nsteps++;
        } else {
            g[REG_EFL] &= ~TF;
        }
    } else if (g_started) {
        g[REG_EFL] &= ~TF;              /* left the code (guest_exit): stop stepping */
    }
}

static void on_signal(int sig, siginfo_t *si, void *ctx) {
    ucontext_t *uc = (ucontext_t *)ctx;
    greg_t *g = uc->uc_mcontext.gregs;
    if (sig == SIGTRAP && g_tracing && g_in_guest && si->si_code == TRAP_TRACE) {
        on_trap(g, uc);
        return;
    }
    if (!g_in_guest) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    g_fault.status = (uint32_t)sig;
    g_fault.eip = g[REG_EIP];
    get_regs(g, &g_fault.regs);
    g_fault.regs.eflags &= ~(TF | RF);
    get_fpu(uc, g_fault_fpu);
    g_in_guest = 0;
    siglongjmp(g_jb, 1);
}

static void read_exact(void *buf, size_t n) {
    uint8_t *p = buf;
    while (n) {
        size_t k = fread(p, 1, n, stdin);
        if (k == 0) {
            fprintf(stderr, "hostdiff runner: short input\n");
            exit(2);
        }
        p += k;
        n -= k;
    }
}

static void write_exact(const void *buf, size_t n) {
    if (n && fwrite(buf, 1, n, stdout) != n)
        die("write");
}

static uint8_t *map_fixed(uint32_t addr, uint32_t size, int prot) {
    void *p = mmap((void *)(uintptr_t)addr, size, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == MAP_FAILED || (uintptr_t)p != addr) {
        fprintf(stderr, "hostdiff runner: cannot map %#x bytes at %#x (%s); see /proc/sys/vm/mmap_min_addr\n",
                size, addr, p == MAP_FAILED ? strerror(errno) : "mapped elsewhere");
        exit(2);
    }
    return p;
}

int main(void) {
    uint32_t hdr[11];
    static char obuf[1 << 20];
    setvbuf(stdout, obuf, _IOFBF, sizeof obuf);
    read_exact(hdr, sizeof hdr);
    if (memcmp(&hdr[0], "HDF1", 4) != 0) {
        fprintf(stderr, "hostdiff runner: bad magic\n");
        return 2;
    }
    uint32_t mode = hdr[1], n_cases = hdr[2];
    code_addr = hdr[3];
    code_size = hdr[4];
    data_addr = hdr[5];
    data_size = hdr[6];
    stack_addr = hdr[7];
    stack_size = hdr[8];
    max_steps = hdr[9];
    g_tracing = mode & 1;
    g_x87 = (mode & 2) != 0;
    if (n_cases == 0)
        return 0;
    code = map_fixed(code_addr, code_size, PROT_READ | PROT_WRITE | PROT_EXEC);
    data = map_fixed(data_addr, data_size, PROT_READ | PROT_WRITE);
    stack = map_fixed(stack_addr, stack_size, PROT_READ | PROT_WRITE);
    rec_size = sizeof(head_t) + data_size + stack_size + (g_x87 ? FPU_SIZE : 0);
    if (g_tracing) {
        g_steps = malloc(rec_size * (size_t)max_steps);
        if (!g_steps)
            die("malloc");
    }

    /* faults in the guest are reported, not fatal; the handler runs on its own stack */
    stack_t ss;
    ss.ss_size = 1 << 18;
    ss.ss_sp = malloc(ss.ss_size);
    ss.ss_flags = 0;
    if (!ss.ss_sp || sigaltstack(&ss, NULL) != 0)
        die("sigaltstack");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGALRM};
    for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        if (sigaction(sigs[i], &sa, NULL) != 0)
            die("sigaction");

    memset(code, 0xF4, code_size);      /* HLT: privileged, faults if run */
    uint8_t *rec = malloc(rec_size);
    if (!rec)
        die("malloc");
    for (uint32_t c = 0; c < n_cases; c++) {
        uint32_t len;
        read_exact(&len, 4);
        if (len + 5 > code_size) {
            fprintf(stderr, "hostdiff runner: case %u: %u code bytes do not fit\n", c, len);
            return 2;
        }
        read_exact(code, len);
        /* jmp guest_exit */
        uint32_t end = code_addr + len;
        int32_t rel = (int32_t)((uint32_t)(uintptr_t)guest_exit - (end + 5));
        code[len] = 0xE9;
        memcpy(code + len + 1, &rel, 4);
        read_exact(&g_in, sizeof g_in);
        read_exact(data, data_size);
        read_exact(stack, stack_size);
        g_entry = code_addr;
        if (g_tracing) {
            g_in.eflags |= TF;
            g_started = 0;
            g_nsteps = 0;
        }
        head_t h;
        const uint8_t *fpu = g_fpu;
        alarm(5);                       /* a sequence that never ends stops with SIGALRM */
        if (sigsetjmp(g_jb, 1) == 0) {
            g_in_guest = 1;
            run_guest();
            g_in_guest = 0;
            h.status = 0;
            h.eip = end;
            h.regs = g_out;
            h.regs.eflags &= ~(TF | RF);
        } else {
            h = g_fault;
            fpu = g_fault_fpu;
        }
        alarm(0);
        if (g_tracing) {
            write_exact(&g_nsteps, 4);
            write_exact(g_steps, (size_t)g_nsteps * rec_size);
        }
        put_record(rec, &h, fpu);
        write_exact(rec, rec_size);
        memset(code, 0xF4, len + 5);
    }
    if (fflush(stdout) != 0)
        die("write");
    return 0;
}
