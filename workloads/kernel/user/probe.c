/* probe - does one thing a ring-3 process must not be able to do, named by its
 * argument, and prints "probe OP survived" if it could. The kernel kills it
 * instead, with status 128 + the exception vector:
 *
 *   idt_read     read the IDT, found with SIDT (unprivileged), after a system
 *                call has made the CPU read the IDT on this process's behalf
 *   gdt_write    write the GDT, found with SGDT, likewise
 *   kernel_read  read the kernel's code at 1 MiB
 *   kernel_jump  jump into the kernel's code
 *   text_write   write to its own (read-only, shared) code
 *   null_read    read address 0
 *   cli          cli (IOPL is 0)
 *   in           inb from port 0x71
 *   hlt          hlt (privileged)
 *   cr3          mov %cr3, %eax (privileged)
 */
#include "wl.h"
#include "usys.h"

struct __attribute__((packed)) dtr {
    uint16_t limit;
    uint32_t base;
};

static int streq(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

int umain(const char *op)
{
    struct dtr d;
    volatile uint32_t v = 0;

    sys_getpid();           /* enter and leave the kernel once: the CPU reads the IDT, GDT and TSS */
    if (streq(op, "idt_read")) {
        __asm__ volatile("sidt %0" : "=m"(d));
        v = *(volatile uint32_t *)(d.base + 0x80 * 8);
    } else if (streq(op, "gdt_write")) {
        __asm__ volatile("sgdt %0" : "=m"(d));
        *(volatile uint32_t *)(d.base + 8) = 0;        /* the kernel code segment */
    } else if (streq(op, "kernel_read")) {
        v = *(volatile uint32_t *)0x00100000u;
    } else if (streq(op, "kernel_jump")) {
        ((void (*)(void))0x00100000u)();
    } else if (streq(op, "text_write")) {
        *(volatile uint8_t *)(uint32_t)umain = 0xC3;
    } else if (streq(op, "null_read")) {
        static volatile uint32_t zero;      /* an address gcc cannot see is 0 (else it emits ud2) */
        v = *(volatile uint32_t *)zero;
    } else if (streq(op, "cli")) {
        __asm__ volatile("cli");
    } else if (streq(op, "in")) {
        uint8_t b;
        __asm__ volatile("inb $0x71, %0" : "=a"(b));
        v = b;
    } else if (streq(op, "hlt")) {
        __asm__ volatile("hlt");
    } else if (streq(op, "cr3")) {
        uint32_t cr3;
        __asm__ volatile("movl %%cr3, %0" : "=r"(cr3));
        v = cr3;
    } else {
        wl_printf("probe: unknown op \"%s\"\n", op);
        return WL_BAD_SIZE;
    }
    (void)v;
    wl_printf("probe %s survived\n", op);
    return WL_FAILED;
}
