/* nano - one nanobenchmark (Adams & Agesen, ASPLOS 2006), named with its
 * iteration count in the argument, "OP:ITERS":
 *
 *   syscall   int 0x80 of the null system call, from ring 3
 *   in        inb from the CMOS data port 0x71, in the kernel
 *   cli_sti   cli; sti in the kernel
 *   callret   call to a function that returns at once, in the kernel
 *   pgfault   a ring-3 store to a not-present page that the kernel maps
 *             (unmapping the other page of a two-page window) and resumes
 *   divzero   a ring-3 div by zero that the kernel's #DE handler skips
 *   ptemod    a PTE write and INVLPG, in the kernel
 *   cr3       a CR3 load (alternating between two page directories), in the kernel
 *
 * Prints "nano op=OP iters=N insns=I base=B": I guest instructions (RDTSC
 * counts instructions on vmcore) for the N iterations, B for the same code
 * with 0 iterations, so the cost of one iteration is (I - B) / N. The timed
 * interval is bracketed by SYS_mark(1) and SYS_mark(2) (port 0x80), which the
 * host can hook to time it in wall-clock terms. */
#include "wl.h"
#include "usys.h"

static const struct {
    const char *name;
    uint32_t op;
} ops[] = {
    { "syscall", NANO_SYSCALL }, { "in", NANO_IN }, { "cli_sti", NANO_CLI_STI },
    { "callret", NANO_CALLRET }, { "pgfault", NANO_PGFAULT }, { "divzero", NANO_DIVZERO },
    { "ptemod", NANO_PTEMOD }, { "cr3", NANO_CR3 },
};

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static void loop(uint32_t op, uint32_t n)
{
    switch (op) {
    case NANO_SYSCALL:
        if (n)
            __asm__ volatile("1: movl %1, %%eax\n\tint $0x80\n\tdecl %0\n\tjnz 1b"
                             : "+c"(n) : "i"(SYS_null) : "eax", "memory");
        break;
    case NANO_PGFAULT:
        for (uint32_t i = 0; i < n; i++)
            *(volatile uint32_t *)(0xA0000000u + ((i & 1u) << 12)) = i;
        break;
    case NANO_DIVZERO:
        if (n)      /* div %ecx spelled out: the kernel skips exactly these 2 bytes */
            __asm__ volatile("1: xorl %%edx, %%edx\n\tmovl $1, %%eax\n\t.byte 0xF7, 0xF1\n\tdecl %0\n\tjnz 1b"
                             : "+S"(n) : "c"(0) : "eax", "edx", "memory");
        break;
    default:
        sys_nano(op, n);
        break;
    }
}

static uint32_t measure(uint32_t op, uint32_t n, int mark)
{
    if (op == NANO_PGFAULT || op == NANO_DIVZERO)
        sys_nano(op, 0);
    if (mark)
        sys_mark(1);
    uint64_t t0 = rdtsc();
    loop(op, n);
    uint64_t t1 = rdtsc();
    if (mark)
        sys_mark(2);
    if (op == NANO_PGFAULT || op == NANO_DIVZERO)
        sys_nano(NANO_MODE_OFF | op, 0);
    uint64_t d = t1 - t0;
    return d >> 32 ? 0xFFFFFFFFu : (uint32_t)d;
}

static int streq(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

int umain(const char *arg)
{
    char name[16];
    uint32_t i = 0, iters;
    while (arg[i] && arg[i] != ':' && i < sizeof name - 1) {
        name[i] = arg[i];
        i++;
    }
    name[i] = 0;
    if (arg[i] != ':' || !wl_parse_size(arg + i + 1, &iters)) {
        wl_printf("nano: expected OP:ITERS, not \"%s\"\n", arg);
        return WL_BAD_SIZE;
    }
    for (uint32_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        if (!streq(ops[k].name, name))
            continue;
        uint32_t base = measure(ops[k].op, 0, 0);
        uint32_t insns = measure(ops[k].op, iters, 1);
        wl_printf("nano op=%s iters=%u insns=%u base=%u\n", name, iters, insns, base);
        return insns == 0xFFFFFFFFu ? WL_BAD_SIZE : WL_OK;
    }
    wl_printf("nano: unknown op \"%s\"\n", name);
    return WL_BAD_SIZE;
}
