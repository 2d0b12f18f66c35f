/* ksys.h - the guest kernel's system call interface, shared by the kernel and
 * its user programs (user/usys.h wraps it).
 *
 * int 0x80 with EAX = number, arguments in EBX, ECX, EDX, ESI, EDI; the result
 * comes back in EAX, a negative value on error. */
#ifndef KSYS_H
#define KSYS_H

#define SYS_exit    1   /* (status): never returns */
#define SYS_write   2   /* (fd, buf, len) -> bytes written; fd 1 and 2 are the console */
#define SYS_read    3   /* (fd, buf, len) -> bytes read, 0 at end of file; blocks on an empty pipe */
#define SYS_spawn   4   /* (name, arg) -> pid of a new process running program `name` with `arg` */
#define SYS_wait    5   /* (pid or -1, int *status) -> pid of the child that exited */
#define SYS_yield   6   /* () -> 0 */
#define SYS_getpid  7   /* () -> pid */
#define SYS_sbrk    8   /* (increment) -> the old break, or -1 */
#define SYS_fork    9   /* () -> child pid in the parent, 0 in the child; copy-on-write */
#define SYS_pipe    10  /* (int fds[2]) -> 0; fds[0] reads, fds[1] writes */
#define SYS_close   11  /* (fd) -> 0 */
#define SYS_nano    12  /* (op, iterations) -> a kernel-side nanobenchmark loop, or a mode for
                           the user-side ones; see NANO_* */
#define SYS_mark    13  /* (n) -> 0: writes n to port 0x80 so the host can time an interval */
#define SYS_null    14  /* () -> 0: the null system call */
#define NSYSCALLS   15

#define E_INVAL  (-1)
#define E_FAULT  (-2)
#define E_NOMEM  (-3)
#define E_NOENT  (-4)
#define E_CHILD  (-5)
#define E_BADF   (-6)
#define E_PIPE   (-7)
#define E_AGAIN  (-8)

/* Nanobenchmarks (Adams & Agesen, ASPLOS 2006). The kernel-side ones run as
 * a loop inside SYS_nano; the user-side ones run in the nano program and use
 * SYS_nano only to switch a mode of the process on or off. */
#define NANO_SYSCALL  1     /* user: int 0x80 of SYS_null */
#define NANO_IN       2     /* kernel: inb from the CMOS data port 0x71 */
#define NANO_CLI_STI  3     /* kernel: cli; sti */
#define NANO_CALLRET  4     /* kernel: call to a function that returns at once */
#define NANO_PGFAULT  5     /* user: touch a not-present page; the kernel maps it and unmaps the other */
#define NANO_DIVZERO  6     /* user: div by zero; the kernel's #DE handler skips the instruction */
#define NANO_PTEMOD   7     /* kernel: change a PTE and INVLPG it */
#define NANO_CR3      8     /* kernel: load CR3 (alternating between two page directories) */
#define NANO_MODE_OFF 0x100 /* SYS_nano(NANO_MODE_OFF | op, 0): leave the mode of a user-side op */

#endif
