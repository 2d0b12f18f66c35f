/* native.c - runtime for the host build: stdout, malloc, exit, and the size
 * from argv[1]. */
#include <stdio.h>
#include <stdlib.h>

#include "wl.h"

void wl_putc(char c)
{
    putchar(c);
}

_Noreturn void wl_exit(int status)
{
    exit(status);
}

void *wl_alloc(uint32_t bytes)
{
    void *p = aligned_alloc(16, ((size_t)bytes + 15) & ~(size_t)15);

    if (!p) {
        wl_printf("wl_alloc: out of memory: %u bytes asked\n", bytes);
        wl_exit(WL_NO_MEMORY);
    }
    return p;
}

int main(int argc, char **argv)
{
    uint32_t size;

    if (argc != 2 || !wl_parse_size(argv[1], &size)) {
        wl_puts("usage: <workload> SIZE\n");
        return WL_BAD_SIZE;
    }
    return wl_run(size);
}
