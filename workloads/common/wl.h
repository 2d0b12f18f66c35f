/* wl.h - the API every workload is written against.
 *
 * Each workload is one C file built twice: as a freestanding multiboot i386
 * guest (with multiboot.S and guest.c) and as a native host program (with
 * native.c). Both builds link wl.c, so formatting is identical and the two
 * outputs are byte for byte the same for the same size.
 *
 * Rules for workload code: 32-bit integer arithmetic (no 64-bit division: the
 * guest has no libgcc), no libc headers besides <stdint.h>, <stddef.h> and
 * <stdarg.h>; floating point only in nbody.c (see workloads/README.md). */
#ifndef WL_H
#define WL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* Exit statuses (the guest writes them to the debug-exit port). */
enum {
    WL_OK = 0,
    WL_FAILED = 1,      /* the workload's own self-check failed */
    WL_BAD_SIZE = 2,    /* size missing, malformed or out of range */
    WL_NO_MEMORY = 3,   /* wl_alloc could not satisfy a request */
    WL_BAD_BOOT = 4,    /* guest: not started by a multiboot loader */
};

/* Defined by the workload: does the work for SIZE, prints exactly one line
 * "<name> size=<size> checksum=0x<8 hex digits>\n" and returns an exit status. */
int wl_run(uint32_t size);

/* Build-specific (guest.c / native.c). */
void wl_putc(char c);
void *wl_alloc(uint32_t bytes);     /* 16-byte aligned, contents undefined; exits on failure */
_Noreturn void wl_exit(int status);

/* Shared (wl.c). */
void wl_puts(const char *s);
/* Supports %u %d %x %c %s %%, an optional '0' flag and a field width. */
void wl_printf(const char *fmt, ...);
/* Parses a decimal size ending at NUL or a space; returns 1 on success. */
int wl_parse_size(const char *s, uint32_t *size);
/* Prints an error line and exits with WL_BAD_SIZE unless lo <= size <= hi. */
void wl_check_size(const char *name, uint32_t size, uint32_t lo, uint32_t hi);

/* xorshift32: deterministic pseudo-random numbers; *state must be nonzero. */
static inline uint32_t wl_rand(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

/* A pseudo-random number in [0, n), by multiply-high (no division). */
static inline uint32_t wl_rand_below(uint32_t *state, uint32_t n)
{
    return (uint32_t)(((uint64_t)wl_rand(state) * n) >> 32);
}

/* Folds one word into a running checksum (FNV-1a style, per word). */
static inline uint32_t wl_mix(uint32_t h, uint32_t v)
{
    return (h ^ v) * 0x01000193u;
}

#define WL_CHECKSUM_SEED 0x811C9DC5u

#endif
