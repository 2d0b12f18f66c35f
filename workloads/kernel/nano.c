/* nano.c - the kernel side of the nanobenchmarks (Adams & Agesen, ASPLOS 2006).
 *
 * SYS_nano(op, n) runs n iterations of a kernel-mode operation (in, cli_sti,
 * callret, ptemod, cr3) and returns; for the user-mode ones (pgfault, divzero)
 * it switches the calling process's mode so that the fault is handled and
 * resumed instead of killing it. Each loop is the operation plus a decrement
 * and a branch; the nano program subtracts the cost of a zero-iteration call. */
#include "kernel.h"

#define NANO_PTE_LA (NANO_PF_BASE + 4 * PAGE_SIZE)     /* the PTE that ptemod rewrites */
#define CMOS_INDEX 0x70
#define CMOS_DATA  0x71

void nano_ret(void);        /* entry.S: a bare ret */

int32_t nano_kernel(uint32_t op, uint32_t n)
{
    struct proc *p = curproc;

    switch (op) {
    case NANO_IN:
        outb(CMOS_INDEX, 0x00);         /* RTC seconds */
        for (uint32_t i = n; i; i--)
            __asm__ volatile("inb %%dx, %%al" : : "d"(CMOS_DATA) : "eax");
        return 0;
    case NANO_CLI_STI:
        for (uint32_t i = n; i; i--)
            __asm__ volatile("cli; sti" ::: "memory");
        __asm__ volatile("cli");
        return 0;
    case NANO_CALLRET:
        for (uint32_t i = n; i; i--)
            __asm__ volatile("call nano_ret" ::: "memory");
        return 0;
    case NANO_PTEMOD: {
        uint32_t *pte = pte_walk(p->pd, NANO_PTE_LA, 1);
        if (!pte)
            return E_NOMEM;
        /* Alternates between two read-only mappings of kernel frames (never
         * owned by the allocator, so no reference counts are involved). */
        uint32_t a = 0x000B8000u | PTE_P | PTE_U, b = 0x000B9000u | PTE_P | PTE_U;
        for (uint32_t i = n; i; i--) {
            *(volatile uint32_t *)pte = (i & 1) ? a : b;
            invlpg(NANO_PTE_LA);
        }
        *pte = 0;
        invlpg(NANO_PTE_LA);
        return 0;
    }
    case NANO_CR3: {
        uint32_t mine = (uint32_t)p->pd, other = (uint32_t)kernel_pd;
        for (uint32_t i = n; i; i--)
            lcr3((i & 1) ? other : mine);
        lcr3(mine);
        return 0;
    }
    case NANO_PGFAULT:
        p->flags |= PROC_NANO_PGFAULT;
        return 0;
    case NANO_DIVZERO:
        p->flags |= PROC_NANO_DIVZERO;
        return 0;
    case NANO_MODE_OFF | NANO_PGFAULT:
        p->flags &= ~PROC_NANO_PGFAULT;
        for (uint32_t la = NANO_PF_BASE; la < NANO_PF_BASE + 2 * PAGE_SIZE; la += PAGE_SIZE) {
            uint32_t *pte = pte_walk(p->pd, la, 0);
            if (pte && (*pte & PTE_P)) {
                frame_decref(PTE_FRAME(*pte));
                *pte = 0;
                invlpg(la);
            }
        }
        return 0;
    case NANO_MODE_OFF | NANO_DIVZERO:
        p->flags &= ~PROC_NANO_DIVZERO;
        return 0;
    default:
        return E_INVAL;
    }
}
