/* wlsys.h - the process API of the kernel-intensive workloads (forkwait,
 * pingpong, touchpages), on top of wl.h. Implemented twice, like the rest of
 * wl.h: with the guest kernel's system calls (ulib.c) and with POSIX for the
 * native build (native_sys.c), so both builds print the same line. */
#ifndef WLSYS_H
#define WLSYS_H

#include <stdint.h>

int wl_fork(void);                  /* 0 in the child, the child's pid in the parent, < 0 on error */
int wl_wait(int *status);           /* waits for any child; its pid, < 0 if none; *status = exit status */
int wl_pipe(int fds[2]);
int wl_read(int fd, void *buf, uint32_t len);
int wl_write(int fd, const void *buf, uint32_t len);
int wl_close(int fd);
int wl_getpid(void);
void wl_yield(void);
_Noreturn void wl_child_exit(int status);   /* ends a forked child (no output flushing natively) */
/* Fresh zero-filled pages (demand-zero: nothing is touched yet), page-aligned; exits on failure.
 * wl_pages_free gives back the latest wl_pages (last in, first out: the guest's is sbrk). */
void *wl_pages(uint32_t bytes);
void wl_pages_free(void *p, uint32_t bytes);

#endif
