/* The JIT's x86-64 emitter and code arena (ARCHITECTURE.md, "The native engine").
 *
 * Register pinning while emitted code runs: guest EAX ECX EDX EBX live in the host registers of
 * the same number, guest ESP in r8d (host RSP stays the host stack), EBP ESI EDI in their own;
 * r15 holds the vmj_state pointer, r14 is scratch. Guest arithmetic flags live in host EFLAGS.
 * Guest memory operands are gs: + addr32 (0x65 0x67): the effective address is computed in 32
 * bits and is an offset into the window that GS points at.
 *
 * The arena is one memfd mapped twice: read-write at wbase, where the emitter writes, and read-execute at
 * base, where the code runs; no mapping is both (W^X) and patching a jump costs no mprotect. */
#ifndef VMCORE_JIT_EMIT_H
#define VMCORE_JIT_EMIT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Guest state as emitted code sees it (offsets are baked into the code: keep in step with
 * VMJ_OFF_* below). */
typedef struct vmj_state {
    uint32_t gpr[8];        /*  0: guest EAX..EDI */
    uint32_t eflags;        /* 32: guest arithmetic flags and DF */
    uint32_t exit;          /* 36: why emitted code returned (VMJ_EXIT_*) */
    uint64_t window_base;   /* 40: GS base while guest code runs */
    uint64_t host_gs;       /* 48: the host's GS base, restored on the way out */
    uint64_t host_rsp;      /* 56: the host stack pointer after the prologue */
    int64_t remaining;      /* 64: guest instructions left in the budget (r13 while code runs) */
    uint32_t next_eip;      /* 72: a block exit's guest target */
    uint32_t stub;          /* 76: arena offset of the exit stub taken (VMJ_NO_STUB: indirect) */
    uint64_t target;        /* 80: host address the entry trampoline jumps to */
} vmj_state;

enum { VMJ_OFF_GPR = 0, VMJ_OFF_EFLAGS = 32, VMJ_OFF_EXIT = 36, VMJ_OFF_WINDOW = 40,
       VMJ_OFF_HOST_GS = 48, VMJ_OFF_HOST_RSP = 56, VMJ_OFF_REMAIN = 64, VMJ_OFF_NEXT = 72,
       VMJ_OFF_STUB = 76, VMJ_OFF_TARGET = 80 };

enum { VMJ_EXIT_END = 1, VMJ_EXIT_FAULT = 2 };

/* the guest flags emitted code may carry in host EFLAGS: CF PF AF ZF SF DF OF */
#define VMJ_FLAGS_MASK 0x0CD5U

typedef struct vmj_arena {
    uint8_t* base;          /* the code as it runs (PROT_READ | PROT_EXEC) */
    uint8_t* wbase;         /* the same pages, to write (PROT_READ | PROT_WRITE) */
    size_t size, used;
    int writable;           /* 1: between unseal and seal, when the emitter may write */
    int overflow;           /* an emit ran past the end: the code is not usable */
} vmj_arena;

static int vmj_arena_open(vmj_arena* a, size_t size) {
    int fd = memfd_create("vmcore-jit-code", MFD_CLOEXEC);
    void *w, *x;
    memset(a, 0, sizeof(*a));
    if (fd < 0)
        return -1;
    if (ftruncate(fd, (off_t)size) != 0) {
        close(fd);
        return -1;
    }
    w = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    x = w == MAP_FAILED ? MAP_FAILED : mmap(NULL, size, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
    close(fd);
    if (x == MAP_FAILED) {
        if (w != MAP_FAILED)
            munmap(w, size);
        return -1;
    }
    a->wbase = (uint8_t*)w;
    a->base = (uint8_t*)x;
    a->size = size;
    a->writable = 1;
    return 0;
}

static void vmj_arena_close(vmj_arena* a) {
    if (a->base) {
        munmap(a->base, a->size);
        munmap(a->wbase, a->size);
    }
    a->base = a->wbase = NULL;
}

static int vmj_arena_seal(vmj_arena* a) {          /* done writing */
    a->writable = 0;
    return 0;
}

static int vmj_arena_unseal(vmj_arena* a) {        /* about to write */
    a->writable = 1;
    return 0;
}

static inline void vmj_b(vmj_arena* a, uint8_t v) {
    if (a->used >= a->size || !a->writable) {
        a->overflow = 1;
        return;
    }
    a->wbase[a->used++] = v;
}

static inline void vmj_u32(vmj_arena* a, uint32_t v) {
    vmj_b(a, v); vmj_b(a, v >> 8); vmj_b(a, v >> 16); vmj_b(a, v >> 24);
}

/* host register number of a guest GPR */
static inline int vmj_host_reg(int guest) { return guest == 4 ? 8 : guest; }

static inline void vmj_rex(vmj_arena* a, int w, int r, int x, int b) {
    uint8_t rex = 0x40 | (w << 3) | ((r >> 3) << 2) | ((x >> 3) << 1) | (b >> 3);
    if (rex != 0x40)
        vmj_b(a, rex);
}

/* op r32, [r15 + disp8] / op [r15 + disp8], r32 (0x8B load, 0x89 store); host regs */
static void vmj_state_access(vmj_arena* a, uint8_t op, int host_reg, uint8_t disp, int wide) {
    vmj_rex(a, wide, host_reg, 0, 15);
    vmj_b(a, op);
    vmj_b(a, 0x40 | ((host_reg & 7) << 3) | 7);     /* mod 01, rm = r15 (7 + REX.B) */
    vmj_b(a, disp);
}

/* The first half of every entry (C ABI uint32_t fn(vmj_state* s), s in rdi): the host's callee-saved
 * registers pushed, r15 = s, the host stack and GS base kept in s, GS at the window. */
static void vmj_emit_enter_host(vmj_arena* a) {
    vmj_b(a, 0x53); vmj_b(a, 0x55);                             /* push rbx; push rbp */
    vmj_b(a, 0x41); vmj_b(a, 0x54); vmj_b(a, 0x41); vmj_b(a, 0x55);  /* push r12; push r13 */
    vmj_b(a, 0x41); vmj_b(a, 0x56); vmj_b(a, 0x41); vmj_b(a, 0x57);  /* push r14; push r15 */
    vmj_b(a, 0x49); vmj_b(a, 0x89); vmj_b(a, 0xFF);             /* mov r15, rdi */
    vmj_b(a, 0x49); vmj_b(a, 0x89); vmj_b(a, 0x67); vmj_b(a, VMJ_OFF_HOST_RSP);  /* mov [r15+56], rsp */
    vmj_b(a, 0xF3); vmj_b(a, 0x49); vmj_b(a, 0x0F); vmj_b(a, 0xAE); vmj_b(a, 0xCE);  /* rdgsbase r14 */
    vmj_state_access(a, 0x89, 14, VMJ_OFF_HOST_GS, 1);           /* mov [r15+48], r14 */
    vmj_state_access(a, 0x8B, 14, VMJ_OFF_WINDOW, 1);            /* mov r14, [r15+40] */
    vmj_b(a, 0xF3); vmj_b(a, 0x49); vmj_b(a, 0x0F); vmj_b(a, 0xAE); vmj_b(a, 0xDE);  /* wrgsbase r14 */
}

/* The second half: the guest's flags and registers from s. */
static void vmj_emit_load_guest(vmj_arena* a) {
    int g;
    /* guest flags: only the ones emitted code may carry (never TF, IF, IOPL, AC) */
    vmj_state_access(a, 0x8B, 14, VMJ_OFF_EFLAGS, 0);            /* mov r14d, [r15+32] */
    vmj_b(a, 0x41); vmj_b(a, 0x81); vmj_b(a, 0xE6); vmj_u32(a, VMJ_FLAGS_MASK);  /* and r14d, mask */
    vmj_b(a, 0x41); vmj_b(a, 0x56); vmj_b(a, 0x9D);             /* push r14; popfq */
    for (g = 0; g < 8; g++)
        vmj_state_access(a, 0x8B, vmj_host_reg(g), VMJ_OFF_GPR + 4 * g, 0);
}

/* The entry sequence of straight-line code (JitProbe): both halves. */
static void vmj_emit_prologue(vmj_arena* a) {
    vmj_emit_enter_host(a);
    vmj_emit_load_guest(a);
}

/* The way out, with the exit code; also the fault exit (registers as the fault left them). */
static void vmj_emit_exit(vmj_arena* a, uint32_t exit_code) {
    int g;
    vmj_b(a, 0x9C); vmj_b(a, 0x41); vmj_b(a, 0x5E);             /* pushfq; pop r14 */
    vmj_b(a, 0xFC);                                             /* cld: the C ABI wants DF = 0 */
    vmj_state_access(a, 0x89, 14, VMJ_OFF_EFLAGS, 0);            /* mov [r15+32], r14d */
    for (g = 0; g < 8; g++)
        vmj_state_access(a, 0x89, vmj_host_reg(g), VMJ_OFF_GPR + 4 * g, 0);
    vmj_state_access(a, 0x8B, 14, VMJ_OFF_HOST_GS, 1);           /* mov r14, [r15+48] */
    vmj_b(a, 0xF3); vmj_b(a, 0x49); vmj_b(a, 0x0F); vmj_b(a, 0xAE); vmj_b(a, 0xDE);  /* wrgsbase r14 */
    vmj_state_access(a, 0x8B, 4, VMJ_OFF_HOST_RSP, 1);           /* mov rsp, [r15+56] */
    vmj_b(a, 0x41); vmj_b(a, 0xC7); vmj_b(a, 0x47); vmj_b(a, VMJ_OFF_EXIT); vmj_u32(a, exit_code);  /* mov dword [r15+36], imm */
    vmj_b(a, 0xB8); vmj_u32(a, exit_code);                      /* mov eax, imm */
    vmj_b(a, 0x41); vmj_b(a, 0x5F); vmj_b(a, 0x41); vmj_b(a, 0x5E);  /* pop r15; pop r14 */
    vmj_b(a, 0x41); vmj_b(a, 0x5D); vmj_b(a, 0x41); vmj_b(a, 0x5C);  /* pop r13; pop r12 */
    vmj_b(a, 0x5D); vmj_b(a, 0x5B); vmj_b(a, 0xC3);             /* pop rbp; pop rbx; ret */
}

/* A guest memory access of 4 bytes, op gs:[addr32 base + disp32] with op 0x8B (load into reg) or
 * 0x89 (store reg); base and reg are guest GPR numbers. */
static void vmj_emit_guest_mem32(vmj_arena* a, uint8_t op, int guest_reg, int guest_base, uint32_t disp) {
    int r = vmj_host_reg(guest_reg), b = vmj_host_reg(guest_base);
    vmj_b(a, 0x65); vmj_b(a, 0x67);
    vmj_rex(a, 0, r, 0, b);
    vmj_b(a, op);
    vmj_b(a, 0x80 | ((r & 7) << 3) | (b & 7));                 /* mod 10: [base32 + disp32] */
    if ((b & 7) == 4)
        vmj_b(a, 0x24);                                         /* SIB: no index (not reached: ESP is r8) */
    vmj_u32(a, disp);
}

/* A register-register ALU instruction re-encoded for the host: op r/m32, r32 (0x01 add, 0x29 sub,
 * 0x31 xor, 0x21 and, 0x09 or, 0x39 cmp); flags land in host EFLAGS exactly as on IA-32. */
static void vmj_emit_alu_rr(vmj_arena* a, uint8_t op, int guest_dst, int guest_src) {
    int d = vmj_host_reg(guest_dst), s = vmj_host_reg(guest_src);
    vmj_rex(a, 0, s, 0, d);
    vmj_b(a, op);
    vmj_b(a, 0xC0 | ((s & 7) << 3) | (d & 7));
}

#endif
