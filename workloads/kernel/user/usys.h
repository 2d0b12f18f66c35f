/* usys.h - system call wrappers for the guest kernel's user programs. */
#ifndef USYS_H
#define USYS_H

#include <stdint.h>

#include "ksys.h"

static inline int32_t syscall0(uint32_t n)
{
    int32_t r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(n) : "memory");
    return r;
}

static inline int32_t syscall1(uint32_t n, uint32_t a)
{
    int32_t r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(n), "b"(a) : "memory");
    return r;
}

static inline int32_t syscall2(uint32_t n, uint32_t a, uint32_t b)
{
    int32_t r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(n), "b"(a), "c"(b) : "memory");
    return r;
}

static inline int32_t syscall3(uint32_t n, uint32_t a, uint32_t b, uint32_t c)
{
    int32_t r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(n), "b"(a), "c"(b), "d"(c) : "memory");
    return r;
}

static inline _Noreturn void sys_exit(int status)
{
    syscall1(SYS_exit, (uint32_t)status);
    for (;;)
        ;
}
static inline int sys_write(int fd, const void *buf, uint32_t len) { return syscall3(SYS_write, fd, (uint32_t)buf, len); }
static inline int sys_read(int fd, void *buf, uint32_t len) { return syscall3(SYS_read, fd, (uint32_t)buf, len); }
static inline int sys_spawn(const char *name, const char *arg) { return syscall2(SYS_spawn, (uint32_t)name, (uint32_t)arg); }
static inline int sys_wait(int pid, int *status) { return syscall2(SYS_wait, (uint32_t)pid, (uint32_t)status); }
static inline int sys_yield(void) { return syscall0(SYS_yield); }
static inline int sys_getpid(void) { return syscall0(SYS_getpid); }
static inline void *sys_sbrk(int32_t incr) { return (void *)syscall1(SYS_sbrk, (uint32_t)incr); }
static inline int sys_fork(void) { return syscall0(SYS_fork); }
static inline int sys_pipe(int fds[2]) { return syscall1(SYS_pipe, (uint32_t)fds); }
static inline int sys_close(int fd) { return syscall1(SYS_close, (uint32_t)fd); }
static inline int sys_nano(uint32_t op, uint32_t n) { return syscall2(SYS_nano, op, n); }
static inline int sys_mark(uint32_t n) { return syscall1(SYS_mark, n); }

/* ulib.c */
void wl_flush(void);

#endif
