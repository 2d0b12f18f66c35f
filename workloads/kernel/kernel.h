/* kernel.h - declarations shared by the guest kernel's files.
 *
 * A small multiboot v1 kernel for vmcore: flat segments (GDT with ring-0 and
 * ring-3 code/data and one TSS), an IDT of interrupt gates, one page directory
 * per process with the kernel identity-mapped (4 MiB pages, supervisor-only,
 * global) in every one of them, ring-3 processes that enter through int 0x80,
 * a round-robin scheduler preempted by the PIT through the 8259 PIC, and
 * demand-zero and copy-on-write page faults. See README.md here. */
#ifndef KERNEL_H
#define KERNEL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "wl.h"             /* the kernel prints with wl_printf (workloads/common/wl.c) */
#include "ksys.h"           /* system call numbers and the user-visible constants */

/* ---- segments (gdt.c) ---------------------------------------------------------------- */
#define SEL_KCODE 0x08
#define SEL_KDATA 0x10
#define SEL_UCODE 0x1B      /* GDT index 3, RPL 3 */
#define SEL_UDATA 0x23      /* GDT index 4, RPL 3 */
#define SEL_TSS   0x28

/* ---- memory layout ------------------------------------------------------------------- */
#define PAGE_SIZE     4096u
#define KERNEL_SPACE  0x08000000u   /* linear 0..128 MiB: all RAM, identity-mapped, supervisor */
#define USER_BASE     0x08000000u   /* user space: 128 MiB .. 3 GiB */
#define USER_TOP      0xC0000000u
#define UIMAGE_BASE   0x08048000u   /* where user programs are linked (user/user.ld) */
#define USTACK_TOP    0xC0000000u
#define USTACK_MAX    (16u << 20)   /* the stack may grow to 16 MiB, demand-zero */
#define UHEAP_MAX     0x90000000u   /* sbrk stops here */
#define NANO_PF_BASE  0xA0000000u   /* the pgfault nanobenchmark's two pages */

#define PTE_P    0x001u
#define PTE_W    0x002u
#define PTE_U    0x004u
#define PTE_A    0x020u
#define PTE_D    0x040u
#define PTE_PS   0x080u     /* in a PDE: a 4 MiB page */
#define PTE_G    0x100u
#define PTE_COW  0x200u     /* software bit: read-only now, copy on the first write */
#define PTE_FRAME(e) ((e) & ~0xFFFu)

#define PF_ERR_P 1u         /* #PF error code: protection violation (else not present) */
#define PF_ERR_W 2u         /* a write */
#define PF_ERR_U 4u         /* from CPL 3 */

/* ---- x86 helpers --------------------------------------------------------------------- */
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline void lcr3(uint32_t pa) { __asm__ volatile("movl %0, %%cr3" : : "r"(pa) : "memory"); }
static inline uint32_t rcr2(void)
{
    uint32_t v;
    __asm__ volatile("movl %%cr2, %0" : "=r"(v));
    return v;
}
static inline void invlpg(uint32_t la) { __asm__ volatile("invlpg (%0)" : : "r"(la) : "memory"); }
static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

/* ---- traps (trap.c, entry.S) --------------------------------------------------------- */
struct trapframe {
    /* pushal */
    uint32_t edi, esi, ebp, oesp, ebx, edx, ecx, eax;
    uint32_t gs, fs, es, ds;
    uint32_t trapno, err;
    /* pushed by the CPU */
    uint32_t eip, cs, eflags;
    uint32_t esp, ss;       /* only when coming from ring 3 */
};

#define T_DIVIDE  0
#define T_PGFLT   14
#define T_IRQ0    0x20      /* the master PIC's vectors after remapping */
#define T_SYSCALL 0x80

void gdt_init(void);
void idt_init(void);
void tss_set_esp0(uint32_t esp0);
void trap(struct trapframe *tf);
void trapret(void);                     /* entry.S: pops a trapframe and IRETs */
void swtch(uint32_t *save_esp, uint32_t new_esp);   /* entry.S */
void pic_init(int timer);
void pit_init(uint32_t hz);

/* ---- counters (printed at shutdown) -------------------------------------------------- */
struct kstats {
    uint32_t ticks, preemptions, switches, syscalls, page_faults, demand_zero, cow_copies, cow_reuses,
        forks, spawns, exits, spurious;
};
extern struct kstats kstats;

/* ---- memory (mm.c) ------------------------------------------------------------------- */
void mm_init(uint32_t ram_top, int kernel_user);
uint32_t frame_alloc(void);             /* a zeroed frame (physical = kernel linear), 0 if none */
uint32_t frame_alloc_nozero(void);
void frame_incref(uint32_t pa);
void frame_decref(uint32_t pa);
uint32_t frames_free(void);
uint32_t *pd_new(void);                 /* a page directory with the kernel mapped */
uint32_t *pte_walk(uint32_t *pd, uint32_t la, int create);
int pd_fork(uint32_t *child, uint32_t *parent);
void pd_free_user(uint32_t *pd);
int mm_fault(uint32_t la, uint32_t err);     /* resolves a fault in the current process: 0 or -1 */
int uaccess(uint32_t la, uint32_t len, int write);
int ucopy_str(char *dst, uint32_t src, uint32_t max);
extern uint32_t *kernel_pd;

/* ---- processes (proc.c) -------------------------------------------------------------- */
#define NPROC     64
#define NOFILE    8
#define KSTACK_SIZE 8192

enum pstate { P_FREE, P_RUNNABLE, P_SLEEPING, P_ZOMBIE };

struct file;

struct proc {
    enum pstate state;
    int pid;
    struct proc *parent;
    const void *chan;           /* what a sleeping process waits for */
    uint32_t *pd;               /* its page directory (physical = linear) */
    uint32_t kesp;              /* saved kernel ESP while switched out */
    struct trapframe *tf;
    uint32_t img_ro_end;        /* image: [UIMAGE_BASE, img_ro_end) read-only text */
    uint32_t img_file_end;      /* [img_ro_end, img_file_end) data, copy-on-write from the blob */
    uint32_t heap_start, brk;   /* [img_file_end, brk) demand-zero (bss, then the heap) */
    const struct program *prog;
    struct file *files[NOFILE];
    int exit_status;
    uint32_t flags;
    char name[16];
    uint8_t kstack[KSTACK_SIZE] __attribute__((aligned(16)));
};

#define PROC_NANO_DIVZERO 1u    /* #DE skips the 2-byte DIV instead of killing */
#define PROC_NANO_PGFAULT 2u    /* faults in the nano page window map it (and unmap the other) */

struct program {
    const char *name;
    const uint8_t *start, *end;     /* the flat image, page-aligned in the kernel */
};
extern const struct program programs[];
extern const uint32_t nprograms;
const struct program *program_find(const char *name);

extern struct proc *curproc;
extern struct proc procs[NPROC];
void proc_init(void);
struct proc *proc_spawn(const char *name, const char *arg, struct proc *parent);
int proc_fork(void);
_Noreturn void proc_exit(int status);
int proc_wait(int pid, uint32_t status_la);
void proc_yield(void);
void sleep_on(const void *chan);
void wakeup(const void *chan);
void schedule(void);
_Noreturn void proc_start_first(struct proc *p);
void proc_kill_current(const char *why, uint32_t eip, int status);

/* ---- files and pipes (pipe.c) -------------------------------------------------------- */
struct file *file_dup(struct file *f);
void file_close(struct file *f);
int sys_pipe(uint32_t fds_la);
int file_read(struct file *f, uint32_t buf, uint32_t len);
int file_write(struct file *f, uint32_t buf, uint32_t len);
struct file *console_file(void);

/* ---- system calls and nanobenchmarks ------------------------------------------------- */
void syscall(struct trapframe *tf);
int32_t nano_kernel(uint32_t op, uint32_t iters);

/* ---- main.c -------------------------------------------------------------------------- */
_Noreturn void kernel_shutdown(int status);
_Noreturn void panic(const char *fmt, ...);
void console_write(const char *s, uint32_t len);
extern char kcmdline[512];

void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memset(void *dst, int c, size_t n);
int kstrcmp(const char *a, const char *b);
uint32_t kstrlen(const char *s);

#endif
