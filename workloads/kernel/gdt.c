/* gdt.c - the GDT (flat ring-0 and ring-3 segments, one TSS), the IDT, the
 * 8259 PIC pair and the 8254 PIT. */
#include "kernel.h"

struct __attribute__((packed)) dtr {
    uint16_t limit;
    uint32_t base;
};

/* A 32-bit TSS; only SS0:ESP0 (the ring-0 stack for entries from ring 3) and
 * the I/O map base are used: hardware task switching is not. */
struct __attribute__((packed)) tss {
    uint32_t link, esp0, ss0, esp1, ss1, esp2, ss2, cr3, eip, eflags;
    uint32_t eax, ecx, edx, ebx, esp, ebp, esi, edi;
    uint32_t es, cs, ss, ds, fs, gs, ldt;
    uint16_t trap, iomap_base;
};

static uint64_t gdt[6];
static struct tss tss;
static uint64_t idt[256];

void gdt_load(const struct dtr *d);     /* entry.S */
extern const uint32_t trap_vectors[];   /* entry.S: stubs for vectors 0-47 and 0x80 */

/* A segment descriptor: base, limit (in 4 KiB units when G), access byte, G/D flags. */
static uint64_t seg_desc(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags)
{
    return (uint64_t)(limit & 0xFFFF) | ((uint64_t)(base & 0xFFFFFF) << 16) | ((uint64_t)access << 40)
        | ((uint64_t)((limit >> 16) & 0xF) << 48) | ((uint64_t)(flags & 0xF) << 52)
        | ((uint64_t)(base >> 24) << 56);
}

void gdt_init(void)
{
    gdt[0] = 0;
    gdt[1] = seg_desc(0, 0xFFFFF, 0x9A, 0xC);       /* ring-0 code: present, DPL 0, execute/read */
    gdt[2] = seg_desc(0, 0xFFFFF, 0x92, 0xC);       /* ring-0 data: read/write */
    gdt[3] = seg_desc(0, 0xFFFFF, 0xFA, 0xC);       /* ring-3 code: DPL 3 */
    gdt[4] = seg_desc(0, 0xFFFFF, 0xF2, 0xC);       /* ring-3 data: DPL 3 */
    tss.ss0 = SEL_KDATA;
    tss.iomap_base = sizeof tss;                    /* no I/O bitmap: ring 3 has no ports */
    gdt[5] = seg_desc((uint32_t)&tss, sizeof tss - 1, 0x89, 0x0);   /* available 32-bit TSS */
    struct dtr d = { sizeof gdt - 1, (uint32_t)gdt };
    gdt_load(&d);
    __asm__ volatile("ltr %w0" : : "r"(SEL_TSS));
}

void tss_set_esp0(uint32_t esp0)
{
    tss.esp0 = esp0;
}

/* An interrupt gate (IF cleared on entry: the kernel is never interrupted). */
static uint64_t gate(uint32_t handler, unsigned dpl)
{
    return (uint64_t)(handler & 0xFFFF) | ((uint64_t)SEL_KCODE << 16)
        | ((uint64_t)(0x8E | (dpl << 5)) << 40) | ((uint64_t)(handler >> 16) << 48);
}

void idt_init(void)
{
    for (unsigned v = 0; v < 48; v++)
        idt[v] = gate(trap_vectors[v], v == 3 || v == 4 ? 3 : 0);   /* INT3 and INTO from ring 3 */
    idt[T_SYSCALL] = gate(trap_vectors[48], 3);
    struct dtr d = { sizeof idt - 1, (uint32_t)idt };
    __asm__ volatile("lidt %0" : : "m"(d));
}

/* The 8259 pair, the standard PC way: ICW1 (edge, cascade, ICW4 follows), ICW2
 * (vector base 0x20 / 0x28, away from the CPU's exceptions), ICW3 (slave on
 * IRQ 2), ICW4 (8086 mode); then mask everything but IRQ 0, the timer (and
 * that too when there is to be no timer). */
#define PIC1_CMD  0x20
#define PIC1_DATA 0x21
#define PIC2_CMD  0xA0
#define PIC2_DATA 0xA1

void pic_init(int timer)
{
    outb(PIC1_DATA, 0xFF);
    outb(PIC2_DATA, 0xFF);
    outb(PIC1_CMD, 0x11);
    outb(PIC2_CMD, 0x11);
    outb(PIC1_DATA, T_IRQ0);
    outb(PIC2_DATA, T_IRQ0 + 8);
    outb(PIC1_DATA, 0x04);
    outb(PIC2_DATA, 0x02);
    outb(PIC1_DATA, 0x01);
    outb(PIC2_DATA, 0x01);
    outb(PIC1_DATA, timer ? 0xFE : 0xFF);      /* IRQ 0 only, if at all */
    outb(PIC2_DATA, 0xFF);
}

/* PIT channel 0, rate generator (mode 2), lobyte/hibyte, binary, at hz. */
#define PIT_HZ 1193182u

void pit_init(uint32_t hz)
{
    uint32_t divisor = hz ? PIT_HZ / hz : 0;
    if (divisor < 2)
        divisor = 2;
    if (divisor > 0xFFFF)
        divisor = 0;            /* 0 means 65536 */
    outb(0x43, 0x34);
    outb(0x40, divisor & 0xFF);
    outb(0x40, (divisor >> 8) & 0xFF);
}
