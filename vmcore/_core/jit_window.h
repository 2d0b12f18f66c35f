/* The JIT's guest address-space window (ARCHITECTURE.md, "The native engine").
 *
 * A window is a 4 GiB (+ guard) reservation of host address space, PROT_NONE until the monitor
 * maps guest RAM pages (pages of the RAM memfd) at their guest-linear addresses. Emitted code
 * reaches guest memory as gs: + addr32 operands with the GS base at the window, so an effective
 * address wraps at 4 GiB exactly as on IA-32 and cannot leave the reservation.
 *
 * A SIGSEGV whose faulting RIP is inside the code arena of the running context and whose address is
 * inside its window is a window fault: the handler records it and resumes at the context's fault
 * exit. Any other SIGSEGV goes to the handler installed before (Python's faulthandler, or the
 * default action). */
#ifndef VMCORE_JIT_WINDOW_H
#define VMCORE_JIT_WINDOW_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/auxv.h>
#include <ucontext.h>
#include <unistd.h>

#define VMW_SPAN (1ULL << 32)
/* an access at 0xFFFFFFFD..0xFFFFFFFF reaches up to 3 bytes past 4 GiB: the guard turns it into
 * a fault that the slow path handles (IA-32 wraps it) */
#define VMW_GUARD 0x10000ULL
#define VMW_PAGE 4096U

typedef struct vmw_window {
    uint8_t* base;          /* host address of guest-linear 0 */
    uint64_t reserved;      /* VMW_SPAN + VMW_GUARD */
    int ram_fd;             /* the guest RAM memfd */
    uint32_t ram_pages;
    uint64_t n_maps, n_unmaps, n_protects;
} vmw_window;

/* The window fault the handler saw: what the run loop reads after a fault exit. */
typedef struct vmw_fault {
    uint32_t gla;           /* guest-linear address (offset in the window) */
    uint32_t write;         /* 1: the access was a write (page-fault error code bit 1) */
    uint64_t rip;           /* host RIP of the faulting instruction */
    uint32_t kind;          /* VMW_FAULT_WINDOW or VMW_FAULT_TRAP */
} vmw_fault;

enum { VMW_FAULT_WINDOW = 1, VMW_FAULT_TRAP = 2, VMW_FAULT_DIVIDE = 3 };

/* What the handler needs of the code that is running: set on entry to emitted code, cleared after. */
typedef struct vmw_context {
    const vmw_window* window;
    uint64_t code_lo, code_hi;      /* the code arena */
    uint64_t fault_exit;            /* where a window fault resumes (registers as they were) */
    uint64_t trap_lo, trap_hi;      /* a guard the code reads on purpose to leave (the budget) */
    vmw_fault fault;
    uint64_t n_faults;
} vmw_context;

static __thread vmw_context* vmw_running;
static struct sigaction vmw_previous, vmw_previous_fpe;
static int vmw_installed;

/* What the emitted code needs of the host CPU and kernel: NULL if all is there, else what is not.
 * FSGSBASE in user mode (Linux 5.9+ enables it and says so in AT_HWCAP2 bit 1) for the window base;
 * BMI2 for the flagless budget check and string steps (SARX, PEXT). */
static const char* vmw_host_missing(void) {
#if defined(__x86_64__)
    if (!(getauxval(AT_HWCAP2) & 2))
        return "FSGSBASE in user mode (AT_HWCAP2 bit 1)";
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("bmi2"))
        return "BMI2";
    return NULL;
#else
    return "an x86-64 host";
#endif
}

/* at: a host address for the window, or NULL for anywhere; never replaces an existing mapping */
static int vmw_reserve(vmw_window* w, int ram_fd, uint32_t ram_pages, void* at) {
    /* anywhere: a page more on each side, given back, so that the window is not flush against
     * another mapping (a test can put canaries there) */
    uint64_t hole = at ? 0 : VMW_PAGE;
    uint8_t* p = (uint8_t*)mmap(at, VMW_SPAN + VMW_GUARD + 2 * hole, PROT_NONE,
                                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | (at ? MAP_FIXED_NOREPLACE : 0), -1, 0);
    if ((void*)p == MAP_FAILED)
        return -errno;
    if (hole) {
        munmap(p, hole);
        munmap(p + hole + VMW_SPAN + VMW_GUARD, hole);
        p += hole;
    }
    memset(w, 0, sizeof(*w));
    w->base = (uint8_t*)p;
    w->reserved = VMW_SPAN + VMW_GUARD;
    w->ram_fd = ram_fd;
    w->ram_pages = ram_pages;
    return 0;
}

static void vmw_release(vmw_window* w) {
    if (w->base)
        munmap(w->base, w->reserved);
    w->base = NULL;
}

/* Map gpa page gpa_page of RAM at gla page gla_page; prot is PROT_READ or PROT_READ|PROT_WRITE. */
static int vmw_map(vmw_window* w, uint32_t gla_page, uint32_t gpa_page, int prot) {
    if (!w->base || gla_page >= (1U << 20) || gpa_page >= w->ram_pages || (prot & ~(PROT_READ | PROT_WRITE)))
        return -EINVAL;
    void* at = w->base + ((uint64_t)gla_page << 12);
    if (mmap(at, VMW_PAGE, prot, MAP_SHARED | MAP_FIXED, w->ram_fd, (off_t)gpa_page << 12) == MAP_FAILED)
        return -errno;
    w->n_maps++;
    return 0;
}

/* n pages from gla_page on, to n pages of RAM from gpa_page on (one mmap). */
static int vmw_map_range(vmw_window* w, uint32_t gla_page, uint32_t gpa_page, uint32_t n, int prot) {
    if (!w->base || n == 0 || (uint64_t)gla_page + n > (1ULL << 20) || (uint64_t)gpa_page + n > w->ram_pages
            || (prot & ~(PROT_READ | PROT_WRITE)))
        return -EINVAL;
    void* at = w->base + ((uint64_t)gla_page << 12);
    if (mmap(at, (size_t)n << 12, prot, MAP_SHARED | MAP_FIXED, w->ram_fd, (off_t)gpa_page << 12) == MAP_FAILED)
        return -errno;
    w->n_maps++;
    return 0;
}

/* Back to "not filled": an anonymous PROT_NONE page (never the RAM file). */
static int vmw_unmap(vmw_window* w, uint32_t gla_page) {
    if (!w->base || gla_page >= (1U << 20))
        return -EINVAL;
    void* at = w->base + ((uint64_t)gla_page << 12);
    if (mmap(at, VMW_PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == MAP_FAILED)
        return -errno;
    w->n_unmaps++;
    return 0;
}

/* Every page back to "not filled" (a flush of a paged view): one mmap over the reservation. */
static int vmw_clear(vmw_window* w) {
    if (!w->base)
        return -EINVAL;
    if (mmap(w->base, w->reserved, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0)
            == MAP_FAILED)
        return -errno;
    w->n_unmaps++;
    return 0;
}

/* Change the protection of a mapped page (read-only: traced). */
static int vmw_protect(vmw_window* w, uint32_t gla_page, int prot) {
    if (!w->base || gla_page >= (1U << 20) || (prot & ~(PROT_READ | PROT_WRITE)))
        return -EINVAL;
    if (mprotect(w->base + ((uint64_t)gla_page << 12), VMW_PAGE, prot) != 0)
        return -errno;
    w->n_protects++;
    return 0;
}

static void vmw_chain(int sig, siginfo_t* info, void* uctx) {
    const struct sigaction* prev = sig == SIGFPE ? &vmw_previous_fpe : &vmw_previous;
    if (prev->sa_flags & SA_SIGINFO) {
        if (prev->sa_sigaction)
            prev->sa_sigaction(sig, info, uctx);
        return;
    }
    if (prev->sa_handler == SIG_IGN)
        return;
    if (prev->sa_handler == SIG_DFL) {
        /* the fault is not ours: let it take its default action when the instruction re-runs */
        signal(sig, SIG_DFL);
        return;
    }
    prev->sa_handler(sig);
}

/* Record the fault and resume at the context's fault exit (registers as the fault left them). */
static void vmw_fault_exit(vmw_context* ctx, ucontext_t* uc, uint64_t rip, uint32_t gla, uint32_t write,
                           uint32_t kind) {
    ctx->fault.gla = gla;
    ctx->fault.write = write;
    ctx->fault.rip = rip;
    ctx->fault.kind = kind;
    uc->uc_mcontext.gregs[REG_RIP] = (greg_t)ctx->fault_exit;
}

/* A divide error (#DE) of a guest DIV/IDIV in translated code: a fault exit at that instruction. */
static void vmw_on_fpe(int sig, siginfo_t* info, void* uctx) {
    ucontext_t* uc = (ucontext_t*)uctx;
    vmw_context* ctx = vmw_running;
    uint64_t rip = (uint64_t)uc->uc_mcontext.gregs[REG_RIP];
    if (ctx && rip >= ctx->code_lo && rip < ctx->code_hi && info->si_code == FPE_INTDIV) {
        vmw_fault_exit(ctx, uc, rip, 0, 0, VMW_FAULT_DIVIDE);
        return;
    }
    vmw_chain(sig, info, uctx);
}

static void vmw_on_segv(int sig, siginfo_t* info, void* uctx) {
    ucontext_t* uc = (ucontext_t*)uctx;
    vmw_context* ctx = vmw_running;
    uint64_t rip = (uint64_t)uc->uc_mcontext.gregs[REG_RIP];
    uint64_t addr = (uint64_t)info->si_addr;
    if (ctx && ctx->window && rip >= ctx->code_lo && rip < ctx->code_hi
            && addr >= (uint64_t)ctx->window->base && addr - (uint64_t)ctx->window->base < ctx->window->reserved) {
        uint64_t off = addr - (uint64_t)ctx->window->base;
        ctx->n_faults++;
        /* the guard's bytes past 4 GiB wrap, as the slow path does */
        vmw_fault_exit(ctx, uc, rip, (uint32_t)off, (uc->uc_mcontext.gregs[REG_ERR] & 2) ? 1 : 0, VMW_FAULT_WINDOW);
        return;
    }
    if (ctx && rip >= ctx->code_lo && rip < ctx->code_hi && addr >= ctx->trap_lo && addr < ctx->trap_hi) {
        vmw_fault_exit(ctx, uc, rip, 0, 0, VMW_FAULT_TRAP);
        return;
    }
    vmw_chain(sig, info, uctx);
}

/* Installed for the duration of a run only; nesting is not supported (one running context per thread). */
static int vmw_install(void) {
    struct sigaction sa;
    if (vmw_installed)
        return -EBUSY;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = vmw_on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &vmw_previous) != 0)
        return -errno;
    sa.sa_sigaction = vmw_on_fpe;
    if (sigaction(SIGFPE, &sa, &vmw_previous_fpe) != 0) {
        int e = errno;
        sigaction(SIGSEGV, &vmw_previous, NULL);
        return -e;
    }
    vmw_installed = 1;
    return 0;
}

/* The context whose code runs on this thread, for the handler. */
static inline void vmw_enter(vmw_context* ctx) { vmw_running = ctx; }
static inline void vmw_leave(void) { vmw_running = NULL; }

static void vmw_uninstall(void) {
    if (!vmw_installed)
        return;
    sigaction(SIGSEGV, &vmw_previous, NULL);
    sigaction(SIGFPE, &vmw_previous_fpe, NULL);
    vmw_installed = 0;
}

#endif
