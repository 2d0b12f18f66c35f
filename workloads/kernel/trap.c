/* trap.c - where every interrupt, exception and system call arrives. */
#include "kernel.h"

struct kstats kstats;

static const char *const exception_names[32] = {
    "#DE divide error", "#DB debug", "NMI", "#BP breakpoint", "#OF overflow", "#BR bound range",
    "#UD invalid opcode", "#NM no math coprocessor", "#DF double fault", "coprocessor segment overrun",
    "#TS invalid TSS", "#NP segment not present", "#SS stack fault", "#GP general protection",
    "#PF page fault", "vector 15", "#MF x87 error", "#AC alignment check", "#MC machine check",
    "#XM SIMD exception",
};

void trap(struct trapframe *tf)
{
    int from_user = (tf->cs & 3) == 3;
    if (from_user)
        curproc->tf = tf;

    if (tf->trapno == T_SYSCALL) {
        syscall(tf);
        return;
    }
    if (tf->trapno == T_IRQ0) {
        kstats.ticks++;
        outb(0x20, 0x20);                   /* EOI to the master PIC */
        if (from_user) {                    /* the kernel itself is never preempted */
            kstats.preemptions++;
            schedule();
        }
        return;
    }
    if (tf->trapno > T_IRQ0 && tf->trapno < T_IRQ0 + 16) {
        uint32_t irq = tf->trapno - T_IRQ0;
        if (irq == 7 || irq == 15) {        /* spurious unless the ISR bit says otherwise */
            kstats.spurious++;
            if (irq == 15)
                outb(0x20, 0x20);           /* the master did see the cascade */
            return;
        }
        if (irq >= 8)
            outb(0xA0, 0x20);
        outb(0x20, 0x20);
        return;
    }
    if (tf->trapno == T_PGFLT) {
        uint32_t la = rcr2();
        kstats.page_faults++;
        if (mm_fault(la, tf->err) == 0)
            return;
        if (from_user) {
            wl_printf("kernel: pid %d (%s): page fault at 0x%08x, error code %x\n", curproc->pid,
                      curproc->name, la, tf->err);
            proc_kill_current("#PF page fault", tf->eip, 128 + T_PGFLT);
        }
        panic("page fault in the kernel at 0x%08x (error code %x, eip 0x%08x)", la, tf->err, tf->eip);
    }
    if (tf->trapno == T_DIVIDE && from_user && (curproc->flags & PROC_NANO_DIVZERO)) {
        tf->eip += 2;                       /* the nanobenchmark's "div %ecx" (F7 F1) */
        return;
    }
    const char *name = tf->trapno < 32 && exception_names[tf->trapno] ? exception_names[tf->trapno] : "trap";
    if (from_user)
        proc_kill_current(name, tf->eip, 128 + (int)tf->trapno);
    panic("%s (vector %u, error code %x) in the kernel at eip 0x%08x", name, tf->trapno, tf->err, tf->eip);
}
