/* ulib.c - the wl.h runtime for user programs of the guest kernel: output
 * through the write system call (line-buffered, so each line is one write and
 * concurrent processes never interleave inside a line), wl_alloc through sbrk,
 * wl_exit through exit; plus the mem* functions gcc may call. */
#include "wl.h"
#include "wlsys.h"
#include "usys.h"

static char outbuf[256];
static uint32_t outlen;

void wl_flush(void)
{
    if (outlen)
        sys_write(1, outbuf, outlen);
    outlen = 0;
}

void wl_putc(char c)
{
    outbuf[outlen++] = c;
    if (c == '\n' || outlen == sizeof outbuf)
        wl_flush();
}

_Noreturn void wl_exit(int status)
{
    wl_flush();
    sys_exit(status);
}

void *wl_alloc(uint32_t bytes)
{
    uint32_t cur = (uint32_t)sys_sbrk(0);
    uint32_t pad = (0u - cur) & 15u;
    uint32_t want = (bytes + 15u) & ~15u;
    if (want < bytes || (int32_t)(pad + want) < 0 || sys_sbrk((int32_t)(pad + want)) == (void *)-1) {
        wl_printf("wl_alloc: out of memory: %u bytes asked\n", bytes);
        wl_exit(WL_NO_MEMORY);
    }
    return (void *)(cur + pad);
}

/* wlsys.h: the process API the kernel workloads use, here as system calls. */
int wl_fork(void)
{
    wl_flush();                     /* nothing buffered is printed twice */
    return sys_fork();
}
int wl_wait(int *status) { return sys_wait(-1, status); }
int wl_pipe(int fds[2]) { return sys_pipe(fds); }
int wl_read(int fd, void *buf, uint32_t len) { return sys_read(fd, buf, len); }
int wl_write(int fd, const void *buf, uint32_t len) { return sys_write(fd, buf, len); }
int wl_close(int fd) { return sys_close(fd); }
int wl_getpid(void) { return sys_getpid(); }
void wl_yield(void) { sys_yield(); }
_Noreturn void wl_child_exit(int status) { wl_exit(status); }

void *wl_pages(uint32_t bytes)
{
    uint32_t cur = (uint32_t)sys_sbrk(0);
    uint32_t pad = (0u - cur) & 4095u;
    if ((int32_t)(pad + bytes) < 0 || sys_sbrk((int32_t)(pad + bytes)) == (void *)-1) {
        wl_printf("wl_pages: out of memory: %u bytes asked\n", bytes);
        wl_exit(WL_NO_MEMORY);
    }
    return (void *)(cur + pad);
}

void wl_pages_free(void *p, uint32_t bytes)
{
    uint32_t brk = (uint32_t)sys_sbrk(0);
    if ((uint32_t)p + bytes == brk)         /* the latest: give the pages back (the padding stays) */
        sys_sbrk(-(int32_t)bytes);
}

#define NO_LIBCALL __attribute__((optimize("no-tree-loop-distribute-patterns")))

NO_LIBCALL void *memcpy(void *restrict dst, const void *restrict src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

NO_LIBCALL void *memmove(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (d < s) {
        while (n--)
            *d++ = *s++;
    } else {
        while (n--)
            d[n] = s[n];
    }
    return dst;
}

NO_LIBCALL void *memset(void *dst, int c, size_t n)
{
    unsigned char *d = dst;
    while (n--)
        *d++ = (unsigned char)c;
    return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (; n; n--, x++, y++) {
        if (*x != *y)
            return *x - *y;
    }
    return 0;
}
