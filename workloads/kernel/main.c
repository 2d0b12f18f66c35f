/* main.c - boot: the multiboot entry's C half, the console, shutdown. */
#include "kernel.h"

#define MB_BOOT_MAGIC      0x2BADB002u
#define MBI_FLAG_MEM       (1u << 0)
#define MBI_FLAG_CMDLINE   (1u << 2)
#define DEBUG_CONSOLE_PORT 0xE9
#define DEBUG_EXIT_PORT    0xF4
#define DEFAULT_HZ         1000

struct multiboot_info {
    uint32_t flags, mem_lower, mem_upper, boot_device, cmdline;
};

char kcmdline[512];
static uint32_t boot_frames_free, hz;

void wl_putc(char c)
{
    outb(DEBUG_CONSOLE_PORT, (uint8_t)c);
}

void console_write(const char *s, uint32_t len)
{
    __asm__ volatile("rep outsb" : "+S"(s), "+c"(len) : "d"(DEBUG_CONSOLE_PORT) : "memory");
}

_Noreturn void wl_exit(int status)
{
    outl(DEBUG_EXIT_PORT, (uint32_t)status);
    for (;;)
        __asm__ volatile("cli; hlt");
}

void *wl_alloc(uint32_t bytes)
{
    (void)bytes;
    panic("wl_alloc in the kernel");
}

_Noreturn void panic(const char *fmt, ...)
{
    /* wl_printf has no va_list form: print the format's arguments by hand. */
    va_list ap;
    va_start(ap, fmt);
    uint32_t a[4];
    for (int i = 0; i < 4; i++)
        a[i] = va_arg(ap, uint32_t);       /* reads past the real arguments harmlessly */
    va_end(ap);
    wl_puts("kernel: panic: ");
    wl_printf(fmt, a[0], a[1], a[2], a[3]);
    wl_puts("\n");
    wl_exit(3);
}

/* The value of "key=" among the space-separated words of the command line. */
static const char *cmdline_value(const char *key)
{
    uint32_t n = kstrlen(key);
    for (const char *p = kcmdline; *p; p++) {
        if (p != kcmdline && p[-1] != ' ')
            continue;
        uint32_t i = 0;
        while (i < n && p[i] == key[i])
            i++;
        if (i == n && p[n] == '=')
            return p + n + 1;
    }
    return 0;
}

_Noreturn void kernel_shutdown(int status)
{
    __asm__ volatile("cli");
    wl_printf("kernel: hz=%u ticks=%u preemptions=%u switches=%u syscalls=%u page_faults=%u "
              "demand_zero=%u cow_copies=%u cow_reuses=%u forks=%u spawns=%u exits=%u\n",
              hz, kstats.ticks, kstats.preemptions, kstats.switches, kstats.syscalls, kstats.page_faults,
              kstats.demand_zero, kstats.cow_copies, kstats.cow_reuses, kstats.forks, kstats.spawns,
              kstats.exits);
    /* Every user frame is free again by now but init's page directory and
     * the pgfault nanobenchmark's frame. */
    wl_printf("kernel: frames_free=%u at_boot=%u\n", frames_free(), boot_frames_free);
    wl_printf("kernel: exit status %d\n", status);
    wl_exit(status);
}

void kmain(uint32_t magic, const struct multiboot_info *mbi)
{
    if (magic != MB_BOOT_MAGIC || !(mbi->flags & MBI_FLAG_MEM)) {
        wl_puts("kernel: not booted by a multiboot loader with memory info\n");
        wl_exit(WL_BAD_BOOT);
    }
    if (mbi->flags & MBI_FLAG_CMDLINE) {
        const char *c = (const char *)mbi->cmdline;
        uint32_t i = 0;
        for (; c[i] && i < sizeof kcmdline - 1; i++)
            kcmdline[i] = c[i];
        kcmdline[i] = 0;
    }
    uint32_t mem_upper = mbi->mem_upper < (KERNEL_SPACE >> 10) ? mbi->mem_upper : (KERNEL_SPACE >> 10);
    uint32_t ram_top = 0x100000u + (mem_upper << 10);

    const char *v;
    gdt_init();
    idt_init();
    v = cmdline_value("kstack_user");
    mm_init(ram_top, v && *v == '1');
    boot_frames_free = frames_free();

    hz = DEFAULT_HZ;
    v = cmdline_value("hz");
    if (v && !wl_parse_size(v, &hz)) {
        wl_puts("kernel: bad hz= on the command line\n");
        wl_exit(WL_BAD_SIZE);
    }
    if (!cmdline_value("run") && !cmdline_value("nano")) {
        wl_puts("kernel: usage: run=PROG:SIZE[,PROG:SIZE...] nano=OP:ITERS[,...] [hz=N]\n");
        wl_exit(WL_BAD_SIZE);
    }
    pic_init(hz != 0);
    if (hz)
        pit_init(hz);
    wl_printf("kernel: %u KiB free, %u programs, hz=%u\n", frames_free() * 4, nprograms, hz);

    struct proc *init = proc_spawn("init", kcmdline, 0);
    if (!init)
        panic("cannot start init");
    proc_start_first(init);
}
