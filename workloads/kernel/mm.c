/* mm.c - physical frames, page tables, and the page-fault handler.
 *
 * All RAM up to 128 MiB is identity-mapped in every address space with 4 MiB
 * pages (supervisor-only, global), so the kernel reaches any frame or page
 * table at its physical address. User space is 128 MiB .. 3 GiB, mapped with
 * 4 KiB pages, and filled lazily:
 *
 *   [UIMAGE_BASE, img_ro_end)        text and rodata: the program's frames in
 *                                    the kernel image, shared read-only
 *   [img_ro_end, img_file_end)       data: the same frames, copy-on-write
 *   [img_file_end, brk)              bss and heap: demand-zero
 *   [USTACK_TOP - USTACK_MAX, top)   stack: demand-zero
 *
 * fork marks every writable page of both processes read-only + PTE_COW and
 * counts the sharers in a per-frame reference count; the first write copies
 * the frame (or, when the writer is the last sharer, just makes it writable). */
#include "kernel.h"

#define MAX_FRAMES (KERNEL_SPACE / PAGE_SIZE)

extern char _kernel_end[];          /* kernel.ld */

uint32_t *kernel_pd;                /* the kernel mappings alone (boot, idle, the cr3 nanobenchmark) */
static uint32_t alloc_base, alloc_top, free_head, nfree;
static uint32_t bump;               /* frames from here to alloc_top were never used: no need to
                                       touch all of RAM at boot to thread a free list through it */
static uint16_t refcnt[MAX_FRAMES];

static inline void zero_page(uint32_t pa)
{
    uint32_t d = pa, n = PAGE_SIZE / 4;
    __asm__ volatile("rep stosl" : "+D"(d), "+c"(n) : "a"(0) : "memory");
}

static inline void copy_page(uint32_t dst, uint32_t src)
{
    uint32_t n = PAGE_SIZE / 4;
    __asm__ volatile("rep movsl" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
}

static inline int owned(uint32_t pa)
{
    return pa >= alloc_base && pa < alloc_top;
}

uint32_t frame_alloc_nozero(void)
{
    uint32_t pa = free_head;
    if (pa) {
        free_head = *(uint32_t *)pa;
    } else if (bump < alloc_top) {
        pa = bump;
        bump += PAGE_SIZE;
    } else {
        return 0;
    }
    nfree--;
    refcnt[pa / PAGE_SIZE] = 1;
    return pa;
}

uint32_t frame_alloc(void)
{
    uint32_t pa = frame_alloc_nozero();
    if (pa)
        zero_page(pa);
    return pa;
}

void frame_incref(uint32_t pa)
{
    if (owned(pa))
        refcnt[pa / PAGE_SIZE]++;
}

void frame_decref(uint32_t pa)
{
    if (!owned(pa))
        return;
    if (refcnt[pa / PAGE_SIZE] == 0)
        panic("frame %x freed twice", pa);
    if (--refcnt[pa / PAGE_SIZE] == 0) {
        *(uint32_t *)pa = free_head;
        free_head = pa;
        nfree++;
    }
}

uint32_t frames_free(void)
{
    return nfree;
}

void mm_init(uint32_t ram_top, int kernel_user)
{
    if (ram_top > KERNEL_SPACE)
        ram_top = KERNEL_SPACE;
    alloc_base = ((uint32_t)_kernel_end + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
    alloc_top = ram_top & ~(PAGE_SIZE - 1);
    bump = alloc_base;
    nfree = alloc_top > alloc_base ? (alloc_top - alloc_base) / PAGE_SIZE : 0;
    kernel_pd = (uint32_t *)frame_alloc();
    if (!kernel_pd)
        panic("no memory for the kernel page directory");
    for (uint32_t i = 0; i < (ram_top + (4u << 20) - 1) >> 22; i++)
        kernel_pd[i] = (i << 22) | PTE_P | PTE_W | PTE_PS | PTE_G;
    /* kstack_user on the command line: an engine-bug workaround for development only. It
     * makes the first 4 MiB (the kernel image, kernel stacks included) user-accessible,
     * for an engine that pushes the frame of an interrupt from ring 3 onto the ring-0
     * stack with ring-3 access rights. Never use it to measure or to test isolation. */
    if (kernel_user)
        kernel_pd[0] |= PTE_U;
    uint32_t cr0, cr4;
    __asm__ volatile("movl %%cr4, %0" : "=r"(cr4));
    cr4 |= 0x10 | 0x80;                         /* PSE: 4 MiB pages; PGE: global pages */
    __asm__ volatile("movl %0, %%cr4" : : "r"(cr4));
    lcr3((uint32_t)kernel_pd);
    __asm__ volatile("movl %%cr0, %0" : "=r"(cr0));
    cr0 |= 0x80000000u | 0x10000u;              /* PG, WP: the kernel honours read-only too */
    __asm__ volatile("movl %0, %%cr0" : : "r"(cr0) : "memory");
}

uint32_t *pd_new(void)
{
    uint32_t *pd = (uint32_t *)frame_alloc();
    if (pd)
        memcpy(pd, kernel_pd, (KERNEL_SPACE >> 22) * 4);
    return pd;
}

uint32_t *pte_walk(uint32_t *pd, uint32_t la, int create)
{
    uint32_t *pde = &pd[la >> 22];
    if (!(*pde & PTE_P)) {
        if (!create)
            return 0;
        uint32_t pt = frame_alloc();
        if (!pt)
            return 0;
        *pde = pt | PTE_P | PTE_W | PTE_U;
    }
    return (uint32_t *)PTE_FRAME(*pde) + ((la >> 12) & 1023);
}

int pd_fork(uint32_t *child, uint32_t *parent)
{
    for (uint32_t i = USER_BASE >> 22; i < USER_TOP >> 22; i++) {
        if (!(parent[i] & PTE_P))
            continue;
        uint32_t *ppt = (uint32_t *)PTE_FRAME(parent[i]);
        uint32_t *cpt = (uint32_t *)frame_alloc();
        if (!cpt)
            return -1;
        child[i] = (uint32_t)cpt | PTE_P | PTE_W | PTE_U;
        for (uint32_t j = 0; j < 1024; j++) {
            uint32_t e = ppt[j];
            if (!(e & PTE_P))
                continue;
            if (e & PTE_W)
                e = (e & ~PTE_W) | PTE_COW;
            ppt[j] = e;
            cpt[j] = e;
            frame_incref(PTE_FRAME(e));
        }
    }
    lcr3((uint32_t)parent);         /* the parent's writable pages are read-only now */
    return 0;
}

void pd_free_user(uint32_t *pd)
{
    for (uint32_t i = USER_BASE >> 22; i < USER_TOP >> 22; i++) {
        if (!(pd[i] & PTE_P))
            continue;
        uint32_t *pt = (uint32_t *)PTE_FRAME(pd[i]);
        for (uint32_t j = 0; j < 1024; j++) {
            if (pt[j] & PTE_P)
                frame_decref(PTE_FRAME(pt[j]));
        }
        frame_decref((uint32_t)pt);
        pd[i] = 0;
    }
}

/* Maps one page of the nanobenchmark window and unmaps the other one, so the
 * next touch of the other page faults again. */
static uint32_t nano_frame;

static int nano_pgfault(struct proc *p, uint32_t la)
{
    uint32_t page = la & ~(PAGE_SIZE - 1);
    uint32_t other = page ^ PAGE_SIZE;
    if (!nano_frame && !(nano_frame = frame_alloc()))
        return -1;
    uint32_t *pte = pte_walk(p->pd, page, 1);
    if (!pte)
        return -1;
    *pte = nano_frame | PTE_P | PTE_W | PTE_U;
    frame_incref(nano_frame);                   /* one reference per mapping */
    uint32_t *opte = pte_walk(p->pd, other, 0);
    if (opte && (*opte & PTE_P)) {
        frame_decref(PTE_FRAME(*opte));
        *opte = 0;
        invlpg(other);
    }
    return 0;
}

int mm_fault(uint32_t la, uint32_t err)
{
    struct proc *p = curproc;
    if (la < USER_BASE || la >= USER_TOP)
        return -1;
    uint32_t page = la & ~(PAGE_SIZE - 1);
    uint32_t *pte = pte_walk(p->pd, page, 0);

    if (pte && (*pte & PTE_P)) {
        if (!(err & PF_ERR_W) || (*pte & PTE_W)) {
            invlpg(page);           /* a stale TLB entry: the mapping allows it now */
            return 0;
        }
        if (!(*pte & PTE_COW))
            return -1;              /* a write to text */
        uint32_t old = PTE_FRAME(*pte);
        if (owned(old) && refcnt[old / PAGE_SIZE] == 1) {
            *pte = (*pte | PTE_W) & ~PTE_COW;
            kstats.cow_reuses++;
        } else {
            uint32_t pa = frame_alloc_nozero();
            if (!pa)
                return -1;
            copy_page(pa, old);
            *pte = pa | PTE_P | PTE_W | PTE_U;
            frame_decref(old);
            kstats.cow_copies++;
        }
        invlpg(page);
        return 0;
    }

    if ((p->flags & PROC_NANO_PGFAULT) && page - NANO_PF_BASE < 2 * PAGE_SIZE)
        return nano_pgfault(p, la);

    uint32_t entry;
    if (page >= UIMAGE_BASE && page < p->img_file_end) {
        uint32_t pa = (uint32_t)p->prog->start + (page - UIMAGE_BASE);
        if (page < p->img_ro_end) {
            if (err & PF_ERR_W)
                return -1;
            entry = pa | PTE_P | PTE_U;
        } else if (err & PF_ERR_W) {
            uint32_t copy = frame_alloc_nozero();
            if (!copy)
                return -1;
            copy_page(copy, pa);
            entry = copy | PTE_P | PTE_W | PTE_U;
            kstats.cow_copies++;
        } else {
            entry = pa | PTE_P | PTE_U | PTE_COW;
        }
    } else if ((page >= p->img_file_end && page < p->brk) || (page >= USTACK_TOP - USTACK_MAX)) {
        uint32_t pa = frame_alloc();
        if (!pa)
            return -1;
        entry = pa | PTE_P | PTE_W | PTE_U;
        kstats.demand_zero++;
    } else {
        return -1;
    }
    pte = pte_walk(p->pd, page, 1);
    if (!pte) {
        frame_decref(PTE_FRAME(entry));
        return -1;
    }
    *pte = entry;
    return 0;
}

/* Makes [la, la+len) of the current process accessible (resolving faults as
 * the CPU would raise them); 0, or -1 if some page is not the process's. */
int uaccess(uint32_t la, uint32_t len, int write)
{
    if (la < USER_BASE || la >= USER_TOP || len > USER_TOP - la)
        return -1;
    if (!len)
        return 0;
    for (uint32_t page = la & ~(PAGE_SIZE - 1); page < la + len; page += PAGE_SIZE) {
        uint32_t *pte = pte_walk(curproc->pd, page, 0);
        if (pte && (*pte & PTE_P) && (!write || (*pte & PTE_W)))
            continue;
        if (mm_fault(page, PF_ERR_U | (write ? PF_ERR_W : 0)) < 0)
            return -1;
        if (page + PAGE_SIZE < page)
            break;
    }
    return 0;
}

int ucopy_str(char *dst, uint32_t src, uint32_t max)
{
    for (uint32_t i = 0; i < max; i++) {
        if (i == 0 || ((src + i) & (PAGE_SIZE - 1)) == 0) {
            if (uaccess(src + i, 1, 0) < 0)
                return -1;
        }
        dst[i] = *(const char *)(src + i);
        if (!dst[i])
            return (int)i;
    }
    return -1;
}
