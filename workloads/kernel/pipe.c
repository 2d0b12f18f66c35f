/* pipe.c - open files: the console and pipes (a 512-byte ring each). */
#include "kernel.h"

#define NFILE     64
#define NPIPE     16
#define PIPE_SIZE 512

enum ftype { F_FREE, F_CONSOLE, F_PIPE };

struct pipe {
    uint8_t buf[PIPE_SIZE];
    uint32_t rpos, wpos;        /* free-running; wpos - rpos bytes are buffered */
    int readers, writers;       /* open read and write ends */
    int used;
};

struct file {
    enum ftype type;
    int refs;
    int writable;
    struct pipe *pipe;
};

static struct file files[NFILE];
static struct pipe pipes[NPIPE];
static struct file console = { F_CONSOLE, 1, 1, 0 };

struct file *console_file(void)
{
    return &console;
}

struct file *file_dup(struct file *f)
{
    if (f->type == F_PIPE) {
        f->refs++;
        if (f->writable)
            f->pipe->writers++;
        else
            f->pipe->readers++;
    }
    return f;
}

/* Closes one reference (a file descriptor) to f. */
void file_close(struct file *f)
{
    if (f->type != F_PIPE)
        return;
    struct pipe *pp = f->pipe;
    if (f->writable)
        pp->writers--;
    else
        pp->readers--;
    wakeup(pp);
    if (--f->refs == 0)
        f->type = F_FREE;
    if (pp->readers == 0 && pp->writers == 0)
        pp->used = 0;
}

static struct file *file_alloc(void)
{
    for (struct file *f = files; f < files + NFILE; f++) {
        if (f->type == F_FREE) {
            f->refs = 1;
            return f;
        }
    }
    return 0;
}

int sys_pipe(uint32_t fds_la)
{
    struct proc *p = curproc;
    int fd[2], n = 0;
    if (uaccess(fds_la, 8, 1) < 0)
        return E_FAULT;
    for (int i = 0; i < NOFILE && n < 2; i++) {
        if (!p->files[i])
            fd[n++] = i;
    }
    if (n < 2)
        return E_AGAIN;
    struct pipe *pp = 0;
    for (struct pipe *q = pipes; q < pipes + NPIPE; q++) {
        if (!q->used) {
            pp = q;
            break;
        }
    }
    struct file *r = pp ? file_alloc() : 0;
    if (r)
        r->type = F_PIPE;           /* claimed before looking for the second */
    struct file *w = r ? file_alloc() : 0;
    if (!w) {
        if (r)
            r->type = F_FREE;
        return E_AGAIN;
    }
    pp->used = 1;
    pp->rpos = pp->wpos = 0;
    pp->readers = pp->writers = 1;
    *r = (struct file){ F_PIPE, 1, 0, pp };
    *w = (struct file){ F_PIPE, 1, 1, pp };
    p->files[fd[0]] = r;
    p->files[fd[1]] = w;
    ((int *)fds_la)[0] = fd[0];
    ((int *)fds_la)[1] = fd[1];
    return 0;
}

int file_write(struct file *f, uint32_t buf, uint32_t len)
{
    if (!f->writable)
        return E_BADF;
    if (uaccess(buf, len, 0) < 0)
        return E_FAULT;
    const uint8_t *src = (const uint8_t *)buf;
    if (f->type == F_CONSOLE) {
        console_write((const char *)src, len);
        return (int)len;
    }
    struct pipe *pp = f->pipe;
    uint32_t done = 0;
    while (done < len) {
        if (pp->readers == 0)
            return done ? (int)done : E_PIPE;
        if (pp->wpos - pp->rpos == PIPE_SIZE) {
            wakeup(pp);
            sleep_on(pp);
            continue;
        }
        while (done < len && pp->wpos - pp->rpos < PIPE_SIZE)
            pp->buf[pp->wpos++ % PIPE_SIZE] = src[done++];
    }
    wakeup(pp);
    return (int)done;
}

int file_read(struct file *f, uint32_t buf, uint32_t len)
{
    if (f->type == F_CONSOLE)
        return 0;                   /* the console has no input */
    if (f->writable)
        return E_BADF;
    if (uaccess(buf, len, 1) < 0)
        return E_FAULT;
    struct pipe *pp = f->pipe;
    while (pp->wpos == pp->rpos) {
        if (pp->writers == 0)
            return 0;
        sleep_on(pp);
    }
    uint8_t *dst = (uint8_t *)buf;
    uint32_t n = 0;
    while (n < len && pp->rpos != pp->wpos)
        dst[n++] = pp->buf[pp->rpos++ % PIPE_SIZE];
    wakeup(pp);
    return (int)n;
}
