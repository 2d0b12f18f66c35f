/* proc.c - processes: spawn from an embedded program, fork (copy-on-write),
 * exit, wait, sleep/wakeup and the round-robin scheduler.
 *
 * Each process has its own kernel stack (in struct proc). Entering the kernel
 * from ring 3 pushes a trapframe at the top of it (the TSS's ESP0); a switch
 * saves the callee-saved registers on the old stack (swtch) and resumes the
 * new one, which eventually returns through trapret to its own ring-3 code.
 * The kernel runs with interrupts off, so nothing here needs a lock. */
#include "kernel.h"

/* The header every user program starts with (user/user.ld). */
struct uheader {
    uint32_t magic, entry, ro_end, data_end, bss_end;
};
#define UHEADER_MAGIC 0x47525055u       /* "UPRG" */

struct proc procs[NPROC];
struct proc *curproc;
static struct proc *initproc;
static int nextpid = 1;

const struct program *program_find(const char *name)
{
    for (uint32_t i = 0; i < nprograms; i++) {
        if (!kstrcmp(programs[i].name, name))
            return &programs[i];
    }
    return 0;
}

static struct proc *proc_alloc(void)
{
    for (struct proc *p = procs; p < procs + NPROC; p++) {
        if (p->state != P_FREE)
            continue;
        p->pid = nextpid++;
        p->parent = 0;
        p->chan = 0;
        p->pd = 0;
        p->flags = 0;
        p->exit_status = 0;
        for (int i = 0; i < NOFILE; i++)
            p->files[i] = 0;
        /* The kernel stack: a trapframe at the top, under it a return into
         * trapret and the four registers swtch pops. */
        uint32_t sp = (uint32_t)(p->kstack + KSTACK_SIZE);
        sp -= sizeof(struct trapframe);
        p->tf = (struct trapframe *)sp;
        memset(p->tf, 0, sizeof *p->tf);
        sp -= 4;
        *(uint32_t *)sp = (uint32_t)trapret;
        sp -= 16;
        memset((void *)sp, 0, 16);
        p->kesp = sp;
        return p;
    }
    return 0;
}

static void name_copy(char *dst, const char *src)
{
    uint32_t i = 0;
    for (; src[i] && i < 15; i++)
        dst[i] = src[i];
    dst[i] = 0;
}

struct proc *proc_spawn(const char *name, const char *arg, struct proc *parent)
{
    const struct program *prog = program_find(name);
    if (!prog)
        return 0;
    const struct uheader *h = (const struct uheader *)prog->start;
    uint32_t size = (uint32_t)(prog->end - prog->start);
    if (h->magic != UHEADER_MAGIC || h->ro_end < UIMAGE_BASE || h->data_end < h->ro_end
        || h->data_end - UIMAGE_BASE > size || h->bss_end < h->data_end || h->bss_end > UHEAP_MAX)
        panic("program %s has a bad header", name);

    struct proc *p = proc_alloc();
    if (!p)
        return 0;
    uint32_t *pd = pd_new();
    uint32_t stack = frame_alloc();
    uint32_t *pte = pd ? pte_walk(pd, USTACK_TOP - PAGE_SIZE, 1) : 0;
    if (!pte || !stack) {
        if (pd) {
            pd_free_user(pd);
            frame_decref((uint32_t)pd);
        }
        if (stack)
            frame_decref(stack);
        p->state = P_FREE;
        return 0;
    }
    *pte = stack | PTE_P | PTE_W | PTE_U;

    /* The argument string at the top of the stack, a pointer to it under it. */
    uint32_t len = kstrlen(arg);
    if (len > 1024)
        len = 1024;
    uint32_t str_off = (PAGE_SIZE - (len + 1)) & ~15u;
    memcpy((char *)stack + str_off, arg, len);
    ((char *)stack)[str_off + len] = 0;
    uint32_t esp_off = str_off - 16;
    *(uint32_t *)(stack + esp_off) = USTACK_TOP - PAGE_SIZE + str_off;

    p->pd = pd;
    p->prog = prog;
    p->img_ro_end = h->ro_end;
    p->img_file_end = h->data_end;
    p->heap_start = p->brk = h->bss_end;
    name_copy(p->name, name);
    p->files[0] = p->files[1] = p->files[2] = console_file();
    struct trapframe *tf = p->tf;
    tf->cs = SEL_UCODE;
    tf->ds = tf->es = tf->fs = tf->gs = tf->ss = SEL_UDATA;
    tf->eflags = 0x202;                 /* IF: ring 3 runs with interrupts on */
    tf->eip = h->entry;
    tf->esp = USTACK_TOP - PAGE_SIZE + esp_off;
    p->parent = parent;
    p->state = P_RUNNABLE;
    kstats.spawns++;
    if (!initproc)
        initproc = p;
    return p;
}

int proc_fork(void)
{
    struct proc *cur = curproc;
    struct proc *p = proc_alloc();
    if (!p)
        return E_AGAIN;
    p->pd = pd_new();
    if (!p->pd || pd_fork(p->pd, cur->pd) < 0) {
        if (p->pd) {
            pd_free_user(p->pd);
            frame_decref((uint32_t)p->pd);
        }
        p->state = P_FREE;
        return E_NOMEM;
    }
    p->prog = cur->prog;
    p->img_ro_end = cur->img_ro_end;
    p->img_file_end = cur->img_file_end;
    p->heap_start = cur->heap_start;
    p->brk = cur->brk;
    name_copy(p->name, cur->name);
    for (int i = 0; i < NOFILE; i++)
        p->files[i] = cur->files[i] ? file_dup(cur->files[i]) : 0;
    *p->tf = *cur->tf;
    p->tf->eax = 0;                     /* fork returns 0 in the child */
    p->parent = cur;
    p->state = P_RUNNABLE;
    kstats.forks++;
    return p->pid;
}

static void switch_to(struct proc *next)
{
    struct proc *prev = curproc;
    curproc = next;
    tss_set_esp0((uint32_t)(next->kstack + KSTACK_SIZE));
    if (prev->pd != next->pd)
        lcr3((uint32_t)next->pd);
    kstats.switches++;
    swtch(&prev->kesp, next->kesp);
}

/* Round robin: the next runnable process after the current one in the table. */
void schedule(void)
{
    struct proc *cur = curproc;
    uint32_t start = (uint32_t)(cur - procs);
    for (uint32_t i = 1; i <= NPROC; i++) {
        struct proc *q = &procs[(start + i) % NPROC];
        if (q->state == P_RUNNABLE) {
            if (q != cur)
                switch_to(q);
            return;
        }
    }
    panic("no runnable process (every process waits for another)");
}

void proc_yield(void)
{
    schedule();
}

void sleep_on(const void *chan)
{
    curproc->chan = chan;
    curproc->state = P_SLEEPING;
    schedule();
    curproc->chan = 0;
}

void wakeup(const void *chan)
{
    for (struct proc *p = procs; p < procs + NPROC; p++) {
        if (p->state == P_SLEEPING && p->chan == chan)
            p->state = P_RUNNABLE;
    }
}

_Noreturn void proc_exit(int status)
{
    struct proc *p = curproc;
    for (int i = 0; i < NOFILE; i++) {
        if (p->files[i]) {
            file_close(p->files[i]);
            p->files[i] = 0;
        }
    }
    pd_free_user(p->pd);
    lcr3((uint32_t)p->pd);              /* drop the freed user mappings from the TLB */
    p->exit_status = status;
    p->flags = 0;
    kstats.exits++;
    if (p == initproc)
        kernel_shutdown(status);
    for (struct proc *q = procs; q < procs + NPROC; q++) {
        if (q->state != P_FREE && q->parent == p) {
            q->parent = initproc;
            if (q->state == P_ZOMBIE)
                wakeup(initproc);
        }
    }
    p->state = P_ZOMBIE;
    if (p->parent)
        wakeup(p->parent);
    schedule();
    panic("a zombie ran");
}

int proc_wait(int pid, uint32_t status_la)
{
    struct proc *cur = curproc;
    if (status_la && uaccess(status_la, 4, 1) < 0)
        return E_FAULT;
    for (;;) {
        int havekids = 0;
        for (struct proc *q = procs; q < procs + NPROC; q++) {
            if (q->state == P_FREE || q->parent != cur || (pid != -1 && q->pid != pid))
                continue;
            havekids = 1;
            if (q->state != P_ZOMBIE)
                continue;
            if (status_la)
                *(int *)status_la = q->exit_status;
            int qpid = q->pid;
            frame_decref((uint32_t)q->pd);
            q->pd = 0;
            q->parent = 0;
            q->state = P_FREE;
            return qpid;
        }
        if (!havekids)
            return E_CHILD;
        sleep_on(cur);
    }
}

void proc_kill_current(const char *why, uint32_t eip, int status)
{
    wl_printf("kernel: pid %d (%s) killed: %s at eip=0x%08x\n", curproc->pid, curproc->name, why, eip);
    proc_exit(status);
}

_Noreturn void proc_start_first(struct proc *p)
{
    static uint32_t boot_esp;
    curproc = p;
    tss_set_esp0((uint32_t)(p->kstack + KSTACK_SIZE));
    lcr3((uint32_t)p->pd);
    swtch(&boot_esp, p->kesp);
    panic("returned to the boot stack");
}
