/* native_sys.c - wlsys.h for the native build of the kernel workloads: POSIX
 * fork, wait, pipes. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "wl.h"
#include "wlsys.h"

int wl_fork(void)
{
    fflush(stdout);                 /* nothing buffered is printed twice */
    return fork();
}

int wl_wait(int *status)
{
    int st;
    pid_t pid = wait(&st);
    if (pid >= 0 && status)
        *status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return pid;
}

int wl_pipe(int fds[2]) { return pipe(fds); }
int wl_read(int fd, void *buf, uint32_t len) { return (int)read(fd, buf, len); }
int wl_write(int fd, const void *buf, uint32_t len) { return (int)write(fd, buf, len); }
int wl_close(int fd) { return close(fd); }
int wl_getpid(void) { return (int)getpid(); }
void wl_yield(void) { sched_yield(); }
_Noreturn void wl_child_exit(int status) { _exit(status); }

void *wl_pages(uint32_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        wl_printf("wl_pages: out of memory: %u bytes asked\n", bytes);
        wl_exit(WL_NO_MEMORY);
    }
    return p;
}

void wl_pages_free(void *p, uint32_t bytes)
{
    munmap(p, bytes);
}
