/* syscall.c - the int 0x80 system calls (numbers in ksys.h). */
#include "kernel.h"

static struct file **fd_slot(uint32_t fd)
{
    if (fd >= NOFILE || !curproc->files[fd])
        return 0;
    return &curproc->files[fd];
}

static int32_t sys_sbrk(int32_t incr)
{
    struct proc *p = curproc;
    uint32_t old = p->brk;
    if (incr > 0) {
        uint32_t inc = (uint32_t)incr;
        if (inc > UHEAP_MAX - old)
            return -1;
        uint32_t pages = ((old + inc + PAGE_SIZE - 1) >> 12) - ((old + PAGE_SIZE - 1) >> 12);
        if (pages > frames_free())
            return -1;
        p->brk = old + inc;
    } else if (incr < 0) {
        uint32_t dec = 0u - (uint32_t)incr;
        if (dec > old - p->heap_start)
            return -1;
        uint32_t nbrk = old - dec;
        for (uint32_t page = (nbrk + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1); page < old; page += PAGE_SIZE) {
            uint32_t *pte = pte_walk(p->pd, page, 0);
            if (pte && (*pte & PTE_P)) {
                frame_decref(PTE_FRAME(*pte));
                *pte = 0;
                invlpg(page);
            }
        }
        p->brk = nbrk;
    }
    return (int32_t)old;
}

static int32_t sys_spawn(uint32_t name_la, uint32_t arg_la)
{
    char name[32], arg[256];
    if (ucopy_str(name, name_la, sizeof name) < 0)
        return E_FAULT;
    if (!arg_la)
        arg[0] = 0;
    else if (ucopy_str(arg, arg_la, sizeof arg) < 0)
        return E_FAULT;
    if (!program_find(name))
        return E_NOENT;
    struct proc *p = proc_spawn(name, arg, curproc);
    return p ? p->pid : E_NOMEM;
}

void syscall(struct trapframe *tf)
{
    struct file **f;
    int32_t r;

    kstats.syscalls++;
    switch (tf->eax) {
    case SYS_null:
        r = 0;
        break;
    case SYS_exit:
        proc_exit((int)tf->ebx);
    case SYS_write:
        r = (f = fd_slot(tf->ebx)) ? file_write(*f, tf->ecx, tf->edx) : E_BADF;
        break;
    case SYS_read:
        r = (f = fd_slot(tf->ebx)) ? file_read(*f, tf->ecx, tf->edx) : E_BADF;
        break;
    case SYS_spawn:
        r = sys_spawn(tf->ebx, tf->ecx);
        break;
    case SYS_wait:
        r = proc_wait((int)tf->ebx, tf->ecx);
        break;
    case SYS_yield:
        proc_yield();
        r = 0;
        break;
    case SYS_getpid:
        r = curproc->pid;
        break;
    case SYS_sbrk:
        r = sys_sbrk((int32_t)tf->ebx);
        break;
    case SYS_fork:
        r = proc_fork();
        break;
    case SYS_pipe:
        r = sys_pipe(tf->ebx);
        break;
    case SYS_close:
        if ((f = fd_slot(tf->ebx))) {
            file_close(*f);
            *f = 0;
            r = 0;
        } else {
            r = E_BADF;
        }
        break;
    case SYS_nano:
        r = nano_kernel(tf->ebx, tf->ecx);
        break;
    case SYS_mark:
        outl(0x80, tf->ebx);
        r = 0;
        break;
    default:
        r = E_INVAL;
        break;
    }
    tf->eax = (uint32_t)r;
}
