/* guest.c - runtime for the freestanding multiboot build: console and exit
 * through debug ports, a bump allocator over the RAM the loader reports, the
 * size from the kernel command line, and the mem* functions gcc may call. */
#include "wl.h"

#define MB_BOOT_MAGIC     0x2BADB002u   /* EAX from a multiboot v1 loader */
#define MBI_FLAG_MEM      (1u << 0)     /* mem_lower/mem_upper are valid */
#define MBI_FLAG_CMDLINE  (1u << 2)     /* cmdline is valid */
#define DEBUG_CONSOLE_PORT 0xE9
#define DEBUG_EXIT_PORT    0xF4         /* host sees status (value << 1) | 1 */
#define HIGH_MEMORY_GPA    0x100000u    /* mem_upper counts KiB from 1 MiB */

/* The leading fields of the multiboot v1 information structure. */
struct multiboot_info {
    uint32_t flags;
    uint32_t mem_lower;     /* KiB below 640 KiB */
    uint32_t mem_upper;     /* KiB from 1 MiB up to the first hole */
    uint32_t boot_device;
    uint32_t cmdline;       /* gpa of a NUL-terminated string */
};

extern char _end[];                  /* end of the loaded image (link.ld) */
static uint32_t heap_next, heap_limit;

static inline void outb(uint16_t port, uint8_t value)
{
    __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline void outl(uint16_t port, uint32_t value)
{
    __asm__ volatile("outl %0, %1" : : "a"(value), "Nd"(port));
}

void wl_putc(char c)
{
    outb(DEBUG_CONSOLE_PORT, (uint8_t)c);
}

_Noreturn void wl_exit(int status)
{
    outl(DEBUG_EXIT_PORT, (uint32_t)status);
    for (;;)
        __asm__ volatile("cli; hlt");
}

void *wl_alloc(uint32_t bytes)
{
    uint32_t free_bytes = heap_limit - heap_next;

    if (bytes > free_bytes) {
        wl_printf("wl_alloc: out of memory: %u bytes asked, %u free\n", bytes, free_bytes);
        wl_exit(WL_NO_MEMORY);
    }
    void *p = (void *)heap_next;
    heap_next += (bytes + 15u) & ~15u;  /* heap_limit is 16-aligned: stays <= it */
    return p;
}

/* Finds "size=N" among the space-separated words of the command line. */
static int cmdline_size(const char *cmdline, uint32_t *size)
{
    for (const char *p = cmdline; *p; p++) {
        int word_start = p == cmdline || p[-1] == ' ';
        if (word_start && p[0] == 's' && p[1] == 'i' && p[2] == 'z' && p[3] == 'e' && p[4] == '=')
            return wl_parse_size(p + 5, size);
    }
    return 0;
}

/* Called by _start; the multiboot info is read here only, before any
 * allocation, since the loader may have put it where the heap goes. */
int wl_guest_main(uint32_t magic, const struct multiboot_info *mbi)
{
    uint32_t size;

    if (magic != MB_BOOT_MAGIC || !(mbi->flags & MBI_FLAG_MEM)) {
        wl_puts("wl: not booted by a multiboot loader with memory info\n");
        return WL_BAD_BOOT;
    }
    if (!(mbi->flags & MBI_FLAG_CMDLINE) || !cmdline_size((const char *)mbi->cmdline, &size)) {
        wl_puts("wl: expected size=N on the command line\n");
        return WL_BAD_SIZE;
    }

    uint32_t max_kib = (0xFFFFFFFFu - HIGH_MEMORY_GPA) >> 10;
    uint32_t mem_upper = mbi->mem_upper < max_kib ? mbi->mem_upper : max_kib;
    heap_next = ((uint32_t)_end + 15u) & ~15u;
    heap_limit = (HIGH_MEMORY_GPA + (mem_upper << 10)) & ~15u;
    if (heap_limit < heap_next)
        heap_limit = heap_next;

    return wl_run(size);
}

/* gcc may emit calls to these even in freestanding code (struct copies,
 * large initializers). The attribute stops gcc from turning the loops back
 * into calls to themselves. */
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
