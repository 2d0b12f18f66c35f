"""Small 32-bit guests for the interrupt hardware tests: a flat protected-mode Machine with a
GDT (0x08 code, 0x10 data, both 0..4 GiB), an IDT of interrupt gates for the handlers given,
a stack, and code snippets (raw bytes, their disassembly beside them) that program the 8259A
pair and the 8254 as a PC kernel does."""
import struct

import vmcore

GDT, IDT, DATA, CODE, HANDLERS, STACK = 0x500, 0x800, 0x600, 0x1000, 0x3000, 0x7000
KCODE = 0x08
TICKS = DATA              # dword: the handlers' counter
MASTER_BASE, SLAVE_BASE = 0x20, 0x28


def descriptor(base, limit, access, flags=0xC):
    return struct.pack("<HHBBBB", limit & 0xFFFF, base & 0xFFFF, (base >> 16) & 0xFF, access,
                       (flags << 4) | ((limit >> 16) & 0xF), base >> 24)


def interrupt_gate(offset, selector=KCODE):
    return struct.pack("<HHBBH", offset & 0xFFFF, selector, 0, 0x8E, offset >> 16)    # 32-bit, DPL 0


def machine(code: bytes, handlers: dict[int, bytes], clock="virtual", memory_mb=2, **machine_args) -> vmcore.Machine:
    """``code`` at CODE (EIP), ``handlers`` {vector: bytes} each at its own 0x100 bytes from
    HANDLERS; CPL 0, IF = 0, ESP = STACK. ``machine_args`` go to vmcore.Machine (engine, mode, apic)."""
    m = vmcore.Machine(memory_mb=memory_mb, clock=clock, **machine_args)
    gdt = bytes(8) + descriptor(0, 0xFFFFF, 0x9A) + descriptor(0, 0xFFFFF, 0x92)
    m.mem_write(GDT, gdt)
    m._engine.gdtr_set(GDT, len(gdt) - 1)
    idt = bytearray(256 * 8)
    for i, (vector, body) in enumerate(sorted(handlers.items())):
        addr = HANDLERS + 0x100 * i
        assert len(body) <= 0x100
        idt[vector * 8:vector * 8 + 8] = interrupt_gate(addr)
        m.mem_write(addr, body)
    m.mem_write(IDT, bytes(idt))
    m._engine.idtr_set(IDT, len(idt) - 1)
    m.mem_write(CODE, code)
    m.reg_write("eip", CODE)
    m.reg_write("esp", STACK)
    return m


def ticks(m) -> int:
    return struct.unpack("<I", m.mem_read(TICKS, 4))[0]


def pic_init(master_mask: int, slave_mask: int) -> bytes:
    """ICW1-ICW4 for both chips (vectors 0x20 and 0x28, slave on IR2, 8086 mode), then the masks."""
    return bytes.fromhex(
        "b0 11"              # mov al, 0x11        ICW1: edge, cascade, ICW4 needed
        "e6 20"              # out 0x20, al
        "e6 a0"              # out 0xa0, al
        "b0 20"              # mov al, 0x20        ICW2: master vectors 0x20-0x27
        "e6 21"              # out 0x21, al
        "b0 28"              # mov al, 0x28        ICW2: slave vectors 0x28-0x2f
        "e6 a1"              # out 0xa1, al
        "b0 04"              # mov al, 0x04        ICW3: slave on IR2
        "e6 21"              # out 0x21, al
        "b0 02"              # mov al, 0x02        ICW3: slave id 2
        "e6 a1"              # out 0xa1, al
        "b0 01"              # mov al, 0x01        ICW4: 8086 mode
        "e6 21"              # out 0x21, al
        "e6 a1"              # out 0xa1, al
    ) + bytes([0xB0, master_mask,    # mov al, master_mask   OCW1
               0xE6, 0x21,           # out 0x21, al
               0xB0, slave_mask,     # mov al, slave_mask
               0xE6, 0xA1])          # out 0xa1, al


def pit_periodic(count: int, mode: int = 2) -> bytes:
    """Counter 0 in mode 2 (rate generator) or 3, LSB then MSB."""
    return bytes([0xB0, 0x30 | (mode << 1),   # mov al, 0x34 / 0x36     control word: counter 0, LSB+MSB
                  0xE6, 0x43,                 # out 0x43, al
                  0xB0, count & 0xFF,         # mov al, count & 0xff
                  0xE6, 0x40,                 # out 0x40, al
                  0xB0, count >> 8,           # mov al, count >> 8
                  0xE6, 0x40])                # out 0x40, al


# until [TICKS] reaches n: hlt, compare, loop; then cli; hlt (the end of the run)
def hlt_loop(n: int) -> bytes:
    return bytes.fromhex(
        "fb"                 # sti
        "f4"                 # l: hlt
        "83 3d 00 06 00 00") + bytes([n]) + bytes.fromhex(   # cmp dword [0x600], n
        "72 f6"              # jb l
        "fa"                 # cli
        "f4")                # hlt


def busy_loop(n: int) -> bytes:
    return bytes.fromhex(
        "fb"                 # sti
        "83 3d 00 06 00 00") + bytes([n]) + bytes.fromhex(   # l: cmp dword [0x600], n
        "72 f7"              # jb l
        "fa"                 # cli
        "f4")                # hlt


# IRQ 0: count, print '.', EOI
TIMER_HANDLER = bytes.fromhex(
    "ff 05 00 06 00 00"      # inc dword [0x600]
    "50"                     # push eax
    "b0 2e"                  # mov al, '.'
    "e6 e9"                  # out 0xe9, al
    "b0 20"                  # mov al, 0x20        non-specific EOI
    "e6 20"                  # out 0x20, al
    "58"                     # pop eax
    "cf")                    # iretd
