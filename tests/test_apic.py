"""The local APIC (vmcore/devices/lapic.py; Intel SDM Vol. 3A ch. 10) and the I/O APIC
(vmcore/devices/ioapic.py; 82093AA datasheet 290566): registers without a guest, the LAPIC timer
in virtual time, I/O APIC routing, and 32-bit guests that take the LAPIC timer and a PIT
interrupt routed through the I/O APIC, under both engines and the three modes."""
import struct

import pc_guest
import pytest
from nasm_guests import assemble_text

import vmcore
from vmcore import Exit
from vmcore.devices.clock import VirtualClock
from vmcore.devices.ioapic import IoApic, isa_pin
from vmcore.devices.irq import IrqLine
from vmcore.devices.lapic import BUS_HZ, LocalApic
from vmcore.errors import ConfigError

ENGINES = ("interp", "jit")
MODES = ("bare", "bt", "trap")


class Cpu:
    """The CPU's side of the LAPIC: its INTR input, and a PIC that answers INTA."""

    def __init__(self):
        self.intr = False
        self.pic_acks = 0

    def set_intr(self, level):
        self.intr = level

    def acknowledge(self):          # the PIC behind LINT0
        self.pic_acks += 1
        return 0x20


def lapic(apic_base=0xFEE00900):
    clock = VirtualClock()
    cpu = Cpu()
    eois = []
    apic = LocalApic(clock, apic_base=lambda: apic_base, set_intr=cpu.set_intr, pic=cpu, on_eoi=eois.append)
    return apic, clock, cpu, eois


def enabled_lapic():
    apic, clock, cpu, eois = lapic()
    apic.write(0xF0, 4, 0x1FF)                  # SVR: software enable, spurious vector FFh
    return apic, clock, cpu, eois


def r32(dev, offset):
    return dev.read(offset, 4)


# ---- local APIC registers -------------------------------------------------------------------

def test_lapic_reset_values():
    # SDM Vol. 3 §10.4.7.1: IRR, ISR, TMR, ICR, LDR, TPR, the timer cleared; DFR all ones; LVT
    # masked; SVR FFh. LINT0: virtual wire (ExtINT), as the BIOS (QEMU's apic_reset_common) leaves it.
    apic, *_ = lapic()
    assert r32(apic, 0x20) == 0                     # ID: BSP 0
    assert r32(apic, 0x30) == 0x00050014            # version 14h, max LVT entry 5 (QEMU)
    assert r32(apic, 0x80) == r32(apic, 0xA0) == 0  # TPR, PPR
    assert r32(apic, 0xD0) == 0 and r32(apic, 0xE0) == 0xFFFFFFFF
    assert r32(apic, 0xF0) == 0xFF
    for off in range(0x100, 0x280, 0x10):           # ISR, TMR, IRR
        assert r32(apic, off) == 0
    for off in (0x320, 0x330, 0x340, 0x360, 0x370):
        assert r32(apic, off) == 0x10000
    assert r32(apic, 0x350) == 0x700
    assert r32(apic, 0x380) == r32(apic, 0x390) == r32(apic, 0x3E0) == 0


def test_lapic_read_only_and_reserved_bits():
    apic, *_ = enabled_lapic()
    for off in (0x30, 0xA0, 0x100, 0x180, 0x200, 0x390):
        before = r32(apic, off)
        apic.write(off, 4, 0xFFFFFFFF)
        assert r32(apic, off) == before
    apic.write(0xE0, 4, 0)                          # DFR: bits 27:0 read as ones (§10.6.2.2)
    assert r32(apic, 0xE0) == 0x0FFFFFFF
    apic.write(0xD0, 4, 0xFFFFFFFF)                 # LDR: the logical ID in bits 31:24
    assert r32(apic, 0xD0) == 0xFF000000
    apic.write(0x80, 4, 0xFFFFFFFF)                 # TPR: bits 7:0
    assert r32(apic, 0x80) == 0xFF
    apic.write(0x320, 4, 0xFFFFFFFF)                # LVT timer: vector, mask, periodic; no TSC-deadline
    assert r32(apic, 0x320) == 0x300FF
    apic.write(0x350, 4, 0xFFFFFFFF)                # LINT0: remote IRR and delivery status read-only
    assert r32(apic, 0x350) == 0x1A7FF
    apic.write(0x370, 4, 0xFFFFFFFF)                # LVT error: vector and mask
    assert r32(apic, 0x370) == 0x100FF
    apic.write(0x3E0, 4, 0xFFFFFFFF)                # divide configuration: bits 3, 1:0
    assert r32(apic, 0x3E0) == 0xB


def test_lapic_software_disable_masks_the_lvt():
    # §10.4.7.2: software-disabled, every LVT mask is set and cannot be cleared
    apic, *_ = lapic()
    apic.write(0x320, 4, 0x40)
    assert r32(apic, 0x320) == 0x10040
    apic.write(0xF0, 4, 0x1FF)
    apic.write(0x320, 4, 0x40)
    assert r32(apic, 0x320) == 0x40
    apic.write(0xF0, 4, 0xFF)
    assert r32(apic, 0x320) == 0x10040 and r32(apic, 0x350) == 0x10700


def test_lapic_hardware_disabled_reads_all_ones_and_passes_the_pic():
    # §10.4.3: IA32_APIC_BASE[11] clear, the processor is as one without an APIC
    apic, clock, cpu, _ = lapic(apic_base=0xFEE00100)
    assert r32(apic, 0x30) == 0xFFFFFFFF
    apic.pic_intr(True)
    assert cpu.intr and apic.acknowledge() == 0x20 and cpu.pic_acks == 1


def test_lapic_priority_irr_to_isr_by_class_above_ppr():
    # §10.8.3.1: the highest IRR vector is dispatched when its class is above PPR's class
    apic, clock, cpu, _ = enabled_lapic()
    for vector in (0x35, 0x62, 0x41):
        assert apic.accept(vector)
    assert cpu.intr
    assert r32(apic, 0x200 + 0x10 * (0x62 // 32)) == 1 << (0x62 % 32)
    assert apic.acknowledge() == 0x62
    assert r32(apic, 0x100 + 0x10 * 3) == 1 << 2        # ISR bit 0x62
    assert r32(apic, 0xA0) == 0x60                      # PPR: the class in service
    assert not cpu.intr                                 # 0x41 and 0x35 wait: class 4, 3 <= 6
    apic.write(0xB0, 4, 0)                              # EOI
    assert r32(apic, 0xA0) == 0 and cpu.intr
    apic.write(0x80, 4, 0x45)                           # TPR class 4 holds 0x41 (class 4) back
    assert not cpu.intr and r32(apic, 0xA0) == 0x45
    apic.write(0x80, 4, 0x30)
    assert apic.acknowledge() == 0x41
    assert not cpu.intr                                 # 0x35: class 3 <= 4 in service
    apic.write(0xB0, 4, 0)
    assert not cpu.intr                                 # 0x35: class 3, not above TPR's 3
    apic.write(0x80, 4, 0)
    assert apic.acknowledge() == 0x35 and r32(apic, 0xA0) == 0x30


def test_lapic_eoi_clears_the_highest_in_service_and_ends_level_interrupts():
    apic, clock, cpu, eois = enabled_lapic()
    apic.accept(0x50)
    assert apic.acknowledge() == 0x50
    apic.accept(0x70, level=True)
    assert apic.acknowledge() == 0x70                   # nests above 0x50
    assert r32(apic, 0x180 + 0x10 * 3) == 1 << (0x70 % 32)   # TMR: level
    apic.write(0xB0, 4, 0)
    assert eois == [0x70]                               # the I/O APIC hears of a level EOI
    assert r32(apic, 0x100 + 0x10 * 3) == 0 and r32(apic, 0x100 + 0x10 * 2) == 1 << (0x50 % 32)
    apic.write(0xB0, 4, 0)
    assert eois == [0x70] and r32(apic, 0x100 + 0x10 * 2) == 0
    apic.write(0xB0, 4, 0)                              # nothing in service: no effect
    assert eois == [0x70]


def test_lapic_software_disabled_holds_fixed_interrupts_but_not_the_pic():
    apic, clock, cpu, _ = lapic()
    apic.accept(0x40)
    assert not cpu.intr                                 # SVR bit 8 clear: not dispatched
    apic.pic_intr(True)                                 # LINT0 ExtINT (virtual wire)
    assert cpu.intr and apic.acknowledge() == 0x20
    apic.pic_intr(False)
    apic.write(0xF0, 4, 0x1FF)
    assert cpu.intr and apic.acknowledge() == 0x40
    apic.write(0x350, 4, 0x10700)                       # LINT0 masked: the PIC is cut off
    apic.pic_intr(True)
    assert not cpu.intr


def test_lapic_illegal_vectors_are_errors_latched_by_esr_writes():
    # §10.5.3: ESR reads what the last write to it latched
    apic, clock, cpu, _ = enabled_lapic()
    assert not apic.accept(0x0F)
    assert r32(apic, 0x280) == 0
    apic.write(0x280, 4, 0)
    assert r32(apic, 0x280) == 0x40                     # receive illegal vector
    apic.write(0x300, 4, (1 << 18) | 0x05)              # self IPI, vector 5
    apic.write(0x280, 4, 0)
    assert r32(apic, 0x280) == 0x20                     # send illegal vector
    apic.write(0x280, 4, 0)
    assert r32(apic, 0x280) == 0


def test_lapic_self_ipi_and_ipis_to_absent_processors():
    # §10.6.1: ICR; one CPU here, so INIT and STARTUP to the others go nowhere
    apic, clock, cpu, _ = enabled_lapic()
    apic.write(0x300, 4, (1 << 18) | 0x4C)              # shorthand self, fixed, vector 4Ch
    assert r32(apic, 0x300) & (1 << 12) == 0            # delivery status: idle
    assert apic.acknowledge() == 0x4C
    apic.write(0x310, 4, 0x01000000)                    # destination APIC ID 1: not this CPU
    apic.write(0x300, 4, 0x4500)                        # INIT
    apic.write(0x300, 4, 0x4610)                        # STARTUP
    apic.write(0x300, 4, 0x4051)                        # fixed, vector 51h, to APIC 1
    assert apic.ignored_ipis == 2 and r32(apic, 0x200 + 0x10 * 2) == 0
    apic.write(0x310, 4, 0)                             # to APIC 0: this one
    apic.write(0x300, 4, 0x4051)
    assert r32(apic, 0x200 + 0x10 * 2) == 1 << (0x51 % 32)
    assert r32(apic, 0x310) == 0


def test_lapic_logical_destinations():
    apic, *_ = enabled_lapic()
    apic.write(0xD0, 4, 0x02000000)                     # logical ID 2, flat model
    assert apic.accept(0x40, dest=0x03, logical=True)
    assert not apic.accept(0x41, dest=0x01, logical=True)
    apic.write(0xE0, 4, 0x0FFFFFFF)                     # cluster model: cluster 0, member bit 1
    assert apic.accept(0x42, dest=0x02, logical=True)
    assert not apic.accept(0x43, dest=0x12, logical=True)


def units(clock, bus_ticks):
    return clock.units_at(bus_ticks, BUS_HZ)


@pytest.mark.parametrize("config, divisor", [(0x0, 2), (0x3, 16), (0x8, 32), (0xA, 128), (0xB, 1)])
def test_lapic_timer_one_shot_counts_down_at_bus_clock_over_divide(config, divisor):
    # §10.5.4: the current count decrements at the bus clock / divide; one-shot stops at 0
    apic, clock, cpu, _ = enabled_lapic()
    apic.write(0x3E0, 4, config)
    apic.write(0x320, 4, 0x40)                          # one-shot, vector 40h
    apic.write(0x380, 4, 1000)
    assert r32(apic, 0x390) == 1000
    assert apic.next_event() == units(clock, 1000 * divisor)
    clock.advance(units(clock, 400 * divisor))
    assert r32(apic, 0x390) == 600
    clock.advance_to(apic.next_event() - 1)
    apic.poll()
    assert not cpu.intr and r32(apic, 0x390) >= 1
    clock.advance_to(apic.next_event())
    apic.poll()
    assert r32(apic, 0x390) == 0 and cpu.intr and apic.acknowledge() == 0x40
    assert apic.next_event() is None                    # one-shot: done
    clock.advance(units(clock, 5000 * divisor))
    apic.poll()
    assert apic.timer_fires == 1 and r32(apic, 0x390) == 0


def test_lapic_timer_periodic_reloads_and_masked_expiries_are_lost():
    apic, clock, cpu, _ = enabled_lapic()
    apic.write(0x3E0, 4, 0x1)                           # divide by 4
    apic.write(0x320, 4, 0x20041)                       # periodic, vector 41h
    apic.write(0x380, 4, 250)                           # 1000 bus ticks a period
    for k in range(1, 4):
        clock.advance_to(apic.next_event())
        apic.poll()
        assert apic.timer_fires == k and apic.acknowledge() == 0x41
        apic.write(0xB0, 4, 0)
        assert r32(apic, 0x390) == 250                  # reloaded
    assert apic.next_event() == units(clock, 4000)
    clock.advance(units(clock, 100 * 4))
    assert r32(apic, 0x390) == 150
    apic.write(0x320, 4, 0x30041)                       # masked: no events, expiries lost
    assert apic.next_event() is None
    clock.advance(units(clock, 3000))
    apic.write(0x320, 4, 0x20041)
    apic.poll()
    assert apic.timer_fires == 3 and not cpu.intr
    apic.write(0x380, 4, 0)                             # initial count 0 stops the timer
    assert apic.next_event() is None and r32(apic, 0x390) == 0


# ---- I/O APIC -------------------------------------------------------------------------------

def ioapic_with_lapic():
    apic, clock, cpu, eois = enabled_lapic()
    io = IoApic(deliver=apic.accept)
    apic.on_eoi = io.eoi
    return io, apic, cpu


def io_write(io, index, value):
    io.write(0x00, 4, index)
    io.write(0x10, 4, value)


def io_read(io, index):
    io.write(0x00, 4, index)
    return io.read(0x10, 4)


def test_ioapic_reset_values_and_read_only_registers():
    io = IoApic()
    assert io_read(io, 0x01) == 0x00170011                # 24 entries, version 11h (§3.2.2)
    assert io_read(io, 0x00) == 0 and io_read(io, 0x02) == 0
    for pin in range(24):
        assert io_read(io, 0x10 + 2 * pin) == 0x10000     # masked
        assert io_read(io, 0x11 + 2 * pin) == 0
    io_write(io, 0x01, 0)
    assert io_read(io, 0x01) == 0x00170011
    io_write(io, 0x00, 0xFFFFFFFF)                        # ID bits 27:24; ARB follows the ID
    assert io_read(io, 0x00) == 0x0F000000 and io_read(io, 0x02) == 0x0F000000
    io_write(io, 0x10, 0xFFFFFFFF)                        # delivery status, remote IRR read-only
    assert io_read(io, 0x10) == 0x1AFFF
    io_write(io, 0x11, 0xFFFFFFFF)                        # destination in bits 63:56
    assert io_read(io, 0x11) == 0xFF000000
    assert io.read(0x00, 4) == 0x11                       # IOREGSEL reads back


def test_ioapic_edge_entries_and_the_mask():
    io, apic, cpu = ioapic_with_lapic()
    line = IrqLine()
    io.connect(isa_pin(4), line)                           # COM1 on pin 4
    line.raise_()
    line.lower()
    assert not cpu.intr                                    # masked at reset: the edge is lost
    io_write(io, 0x10 + 2 * 4, 0x31)                       # vector 31h, fixed, edge, active high
    assert not cpu.intr                                    # unmasking makes no edge
    line.raise_()
    assert cpu.intr and apic.acknowledge() == 0x31
    line.raise_()                                          # no change: no message
    apic.write(0xB0, 4, 0)
    assert not cpu.intr and io.messages == 1
    io_write(io, 0x10 + 2 * 4, 0x2031)                     # active low: the line high is now deasserted
    line.lower()
    assert cpu.intr and apic.acknowledge() == 0x31


def test_ioapic_level_entries_and_remote_irr():
    io, apic, cpu = ioapic_with_lapic()
    line = IrqLine()
    io.connect(10, line)
    io_write(io, 0x10 + 2 * 10, 0x8052)                    # vector 52h, level
    line.raise_()
    assert io_read(io, 0x10 + 2 * 10) & (1 << 14)          # remote IRR: accepted
    assert apic.acknowledge() == 0x52
    assert r32(apic, 0x180 + 0x10 * 2) == 1 << (0x52 % 32)  # TMR: level
    apic.write(0xB0, 4, 0)                                 # EOI with the line still up: again
    assert io.messages == 2 and apic.acknowledge() == 0x52
    line.lower()
    apic.write(0xB0, 4, 0)
    assert not io_read(io, 0x10 + 2 * 10) & (1 << 14) and io.messages == 2
    io_write(io, 0x10 + 2 * 10, 0x18052)                   # masked while asserted...
    line.raise_()
    assert io.messages == 2
    io_write(io, 0x10 + 2 * 10, 0x8052)                    # ...unmasking sends it
    assert io.messages == 3 and apic.acknowledge() == 0x52


def test_ioapic_destination_must_name_the_cpu():
    io, apic, cpu = ioapic_with_lapic()
    line = IrqLine()
    io.connect(5, line)
    io_write(io, 0x11 + 2 * 5, 0x03000000)                 # physical APIC ID 3: nobody
    io_write(io, 0x10 + 2 * 5, 0x8055)
    line.raise_()
    assert not cpu.intr and not io_read(io, 0x10 + 2 * 5) & (1 << 14)


def test_ioapic_pins_and_errors():
    io = IoApic()
    with pytest.raises(ConfigError, match="pin 24"):
        io.connect(24, IrqLine())
    io.connect(2, IrqLine())
    with pytest.raises(ConfigError, match="pin 2 is taken"):
        io.connect(2, IrqLine())
    assert [isa_pin(irq) for irq in (0, 1, 4, 8, 14)] == [2, 1, 4, 8, 14]


def test_machine_wires_the_isa_lines_to_both_controllers():
    m = vmcore.Machine(engine="interp", apic=True)
    assert m.ioapic.lines[2] is m.pic.lines[0] is m.pit.irq
    assert m.ioapic.lines[4] is m.uart.irq and m.ioapic.lines[8] is m.cmos.irq
    assert m.interrupt_controller is m.lapic
    with pytest.raises(ConfigError, match="devices=True"):
        vmcore.Machine(engine="interp", apic=True, devices=False)


# ---- CPUID and IA32_APIC_BASE ---------------------------------------------------------------

CPUID_GUEST = """
bits 32
org 0x1000
    mov eax, 1
    cpuid
    mov [0x9000], edx
    mov ecx, 0x1b
    rdmsr
    mov [0x9004], eax
    and eax, ~0x800                 ; IA32_APIC_BASE[11] = 0: the APIC off
    wrmsr
    mov eax, 1
    cpuid
    mov [0x9008], edx
    mov [0x900C], ecx
    mov eax, [0xFEE00030]           ; the version register, or nothing
    mov [0x9010], eax
    cli
    hlt
"""


@pytest.mark.parametrize("apic", [False, True])
def test_cpuid_apic_bit_follows_the_apic_base_msr(apic):
    # SDM Vol. 3 §10.4.3: with IA32_APIC_BASE[11] clear CPUID.1:EDX[9] reads 0
    m = vmcore.Machine(memory_mb=4, engine="interp", apic=apic)
    m.mem_write(0x1000, assemble_text(CPUID_GUEST, "apic-cpuid"))
    m.reg_write("eip", 0x1000)
    assert m.run(count=10 ** 5).exit is Exit.HLT
    edx1, base, edx2, ecx2, version = struct.unpack("<5I", m.mem_read(0x9000, 20))
    assert bool(edx1 & (1 << 9)) == apic
    assert base == (0xFEE00900 if apic else 0xFEE00100)
    assert not edx2 & (1 << 9) and not ecx2 & (1 << 24)      # no TSC-deadline timer either
    assert version == 0xFFFFFFFF


# ---- guests -----------------------------------------------------------------------------

GUEST_HEAD = """
bits 32
org 0x1000
start:
    lgdt [gdtr]
    jmp 0x08:.flat
.flat:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, 0x8000
    mov eax, handler                ; an interrupt gate for VECTOR
    mov [idt + VECTOR * 8], ax
    mov word [idt + VECTOR * 8 + 2], 0x08
    mov word [idt + VECTOR * 8 + 4], 0x8E00
    shr eax, 16
    mov [idt + VECTOR * 8 + 6], ax
    lidt [idtr]
%if PAGING
    mov edi, 0x10000                ; 4 MiB pages: RAM, and the APICs' 4 MiB at 0xFEC00000
    xor eax, eax
    mov ecx, 1024
    rep stosd
    mov dword [0x10000], 0x83
    mov dword [0x10000 + (0xFEC00000 >> 22) * 4], 0xFEC00083 | 0x10    ; PCD
    mov eax, cr4
    or eax, 0x10
    mov cr4, eax
    mov eax, 0x10000
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax
    jmp .paged
.paged:
%endif
    mov dword [0xFEE000F0], 0x1FF   ; SVR: APIC software enable, spurious vector FFh
"""

GUEST_TAIL = """
.wait:
    sti
%if !BUSY
    hlt
%endif
    cmp dword [ticks], TICKS
    jb .wait
    cli
    mov eax, [ticks]                ; the count on COM1, two decimal digits
    xor edx, edx
    mov ecx, 10
    div ecx
    add al, '0'
    add dl, '0'
    mov ah, dl
    mov dx, 0x3F8
    out dx, al
    mov al, ah
    out dx, al
    hlt
handler:
    inc dword [ticks]
    mov dword [0xFEE000B0], 0       ; EOI
    iretd
align 8
ticks: dd 0
gdt: dq 0
    dq 0x00CF9A000000FFFF
    dq 0x00CF92000000FFFF
gdtr: dw 23
    dd gdt
idtr: dw 256 * 8 - 1
    dd idt
align 8
idt: times 256 * 8 db 0
"""

LAPIC_TIMER = """
    mov dword [0xFEE003E0], 0x3     ; divide by 16
    mov dword [0xFEE00320], 0x20040 ; LVT timer: periodic, vector 40h
    mov dword [0xFEE00380], 10000   ; 160000 bus ticks a period (1.6 ms at 100 MHz)
"""

PIT_VIA_IOAPIC = """
    mov al, 0x11                    ; the PIC initialized and fully masked: IRQ 0 only via the I/O APIC
    out 0x20, al
    out 0xA0, al
    mov al, 0x20
    out 0x21, al
    mov al, 0x28
    out 0xA1, al
    mov al, 4
    out 0x21, al
    mov al, 2
    out 0xA1, al
    mov al, 1
    out 0x21, al
    out 0xA1, al
    mov al, 0xFF
    out 0x21, al
    out 0xA1, al
    mov dword [0xFEC00000], 0x15    ; pin 2 (IRQ 0) high dword: destination APIC 0
    mov dword [0xFEC00010], 0
    mov dword [0xFEC00000], 0x14    ; low dword: vector 30h, fixed, physical, edge, active high
    mov dword [0xFEC00010], VECTOR
    mov al, 0x34                    ; PIT counter 0, mode 2, 11932: 100 Hz
    out 0x43, al
    mov al, 11932 & 0xFF
    out 0x40, al
    mov al, 11932 >> 8
    out 0x40, al
"""


def apic_guest(program: str, vector: int, ticks: int, paging: bool, busy: bool = False) -> bytes:
    """The guest waits in HLT for each interrupt, or (busy) spins comparing its tick count."""
    head = (f"%define VECTOR {vector:#x}\n%define TICKS {ticks}\n%define PAGING {int(paging)}\n"
            f"%define BUSY {int(busy)}\n")
    return assemble_text(head + GUEST_HEAD + program + GUEST_TAIL,
                         f"apic-{vector:x}-{ticks}-{int(paging)}-{int(busy)}")


def boot_guest(code: bytes, engine: str, mode: str) -> vmcore.Machine:
    m = vmcore.Machine(memory_mb=4, engine=engine, mode=mode, apic=True)
    m.mem_write(0x1000, code)
    m.reg_write("eip", 0x1000)
    return m


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode, paging", [("bare", False), ("bare", True), ("bt", False), ("bt", True),
                                          ("trap", True)])
def test_guest_counts_lapic_timer_ticks(engine, mode, paging):
    m = boot_guest(apic_guest(LAPIC_TIMER, 0x40, 12, paging), engine, mode)
    r = m.run(count=10 ** 7, timeout=30)
    assert r.exit is Exit.HLT, r.reason
    assert r.console == "12"
    assert m.lapic.timer_fires == 12
    period = m.clock.units_at(160000, BUS_HZ)
    assert 12 * period <= m.clock.now() < 13 * period      # halted between ticks: time skipped
    assert r.instructions < 5000


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_busy_guest_takes_lapic_timer_ticks_one_period_apart(engine, mode):
    """A guest spinning (hot code: the JIT's) between ticks: each expiry ends the engine's slice,
    so the interrupts come a period of virtual time apart, in instructions."""
    m = boot_guest(apic_guest(LAPIC_TIMER, 0x40, 6, False, busy=True), engine, mode)
    seen = []
    acknowledge = m.lapic.acknowledge
    m.lapic.acknowledge = lambda: (seen.append(m._engine.icount), acknowledge())[1]
    r = m.run(count=10 ** 7, timeout=60)
    assert r.exit is Exit.HLT, r.reason
    assert r.console == "06" and m.lapic.timer_fires == 6
    period = m.clock.units_at(160000, BUS_HZ)              # 190909.12 instructions
    assert all(period - 1 <= b - a <= period + 1 for a, b in zip(seen, seen[1:])), seen
    assert 6 * period <= r.instructions < 6 * period + 1000


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", MODES)
def test_guest_takes_the_pit_through_the_ioapic(engine, mode):
    m = boot_guest(apic_guest(PIT_VIA_IOAPIC, 0x30, 7, mode != "bare"), engine, mode)
    r = m.run(count=10 ** 8, timeout=30)
    assert r.exit is Exit.HLT, r.reason
    assert r.console == "07"
    assert m.pic.vectors == 0                   # the PIC never answered an INTA
    assert m.ioapic.messages == 7 and m.pit.edges == 7


@pytest.mark.parametrize("engine", ENGINES)
def test_pic_guests_run_unchanged_through_lint0_virtual_wire(engine):
    """A guest that knows nothing of the APIC: the PIC's interrupts reach it via LINT0 (ExtINT)."""
    m = pc_guest.machine(pc_guest.pic_init(0xFE, 0xFF) + pc_guest.pit_periodic(11932) + pc_guest.hlt_loop(5),
                         {0x20: pc_guest.TIMER_HANDLER}, engine=engine, apic=True)
    r = m.run(count=10 ** 6, timeout=10)
    assert r.exit is Exit.HLT and pc_guest.ticks(m) == 5 and r.console == "....."
    assert m.pic.vectors == 5


def test_a_dropped_machine_with_apics_is_freed_at_once():
    """The APICs add no reference cycle through the machine (as tests/test_engine.py checks without)."""
    import gc
    import weakref
    gc.disable()
    try:
        m = vmcore.Machine(memory_mb=4, engine="interp", apic=True)
        m.mem_write(0x1000, bytes.fromhex("a1 30 00 e0 fe f4"))     # mov eax, [0xFEE00030] ; hlt
        m.reg_write("eip", 0x1000)
        m.run()
        assert m.reg_read("eax") == 0x00050014
        ref = weakref.ref(m)
        del m
        assert ref() is None
    finally:
        gc.enable()


SELF_IPI_TAIL = """
    sti
    mov dword [0xFEE00300], 0x40000 | VECTOR    ; ICR: fixed IPI to self
    mov dword [marker], 1                       ; the interrupt comes before this
    cli
    mov eax, [seen]
    add al, '0'
    mov dx, 0x3F8
    out dx, al
    hlt
handler:
    mov eax, [marker]
    mov [seen], eax
    mov dword [0xFEE000B0], 0
    iretd
align 8
marker: dd 0
seen: dd 7
gdt: dq 0
    dq 0x00CF9A000000FFFF
    dq 0x00CF92000000FFFF
gdtr: dw 23
    dd gdt
idtr: dw 256 * 8 - 1
    dd idt
align 8
idt: times 256 * 8 db 0
"""


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_self_ipi_is_taken_right_after_the_store_that_sends_it(engine, mode):
    """The ICR store exits before it retires; the interrupt it raises is taken at the next
    instruction boundary, after the store and before the next instruction (SDM Vol. 3 §6.6)."""
    head = f"%define VECTOR 0x50\n%define PAGING {int(mode != 'bare')}\n"
    m = boot_guest(assemble_text(head + GUEST_HEAD + SELF_IPI_TAIL, f"apic-self-ipi-{mode}"), engine, mode)
    r = m.run(count=10 ** 5)
    assert r.exit is Exit.HLT, r.reason
    assert r.console == "0"
    assert m.lapic.isr == 0 and m.lapic.irr == 0


# ---- published registers: the LAPIC ID read without an exit --------------------------------

ID_READS_GUEST = """
bits 32
org 0x1000
    mov ecx, 1000
.loop:
    mov eax, [0xFEE00020]           ; the APIC ID, as xv6's mycpu() reads it on every spinlock operation
    dec ecx
    jnz .loop
    mov [0x9000], eax
    mov dword [0xFEE00020], 0x05000000  ; a new ID (SDM Vol. 3 §10.4.6: writable on P6)
    mov ebx, [0xFEE00020]
    mov [0x9004], ebx
    mov ecx, 0x1b
    rdmsr
    and eax, ~0x800                 ; the APIC off: its registers are open bus
    wrmsr
    mov edx, [0xFEE00020]
    mov [0x9008], edx
    cli
    hlt
"""


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_the_apic_id_is_read_without_an_exit_until_it_changes(engine, mode):
    m = vmcore.Machine(memory_mb=4, engine=engine, mode=mode, apic=True)
    m.mem_write(0x1000, assemble_text(ID_READS_GUEST, "apic-id-reads"))
    m.reg_write("eip", 0x1000)
    r = m.run(count=10 ** 5)
    assert r.exit is Exit.HLT, r.reason
    first, changed, disabled = struct.unpack("<3I", m.mem_read(0x9000, 12))
    assert (first, changed, disabled) == (0, 0x05000000, 0xFFFFFFFF)
    s = m.stats
    # the first read exits and publishes the ID; its re-execution and the 999 after it are answered
    # by the engine, as is the re-execution of the read that exits after the ID changed
    assert s["mmio_const_reads"] == 1000 + 1
    assert s["exits_mmio"] == 4                  # that read, the ID write, the read after it, the read after WRMSR
    assert m._engine.mmio_constants() == {}      # withdrawn by the WRMSR to IA32_APIC_BASE


def test_an_mmio_constant_is_an_aligned_dword_of_a_region():
    m = vmcore.Machine(memory_mb=4, apic=True)
    with pytest.raises(ValueError):
        m._engine.mmio_constant(0xFEE00022, 1)           # not aligned
    with pytest.raises(ValueError):
        m._engine.mmio_constant(0xFED00000, 1)           # no MMIO region there
    m._engine.mmio_constant(0xFEE00030, 0x00050014)
    assert m._engine.mmio_constants() == {0xFEE00030: 0x00050014}
    m._engine.mmio_constant(0xFEE00030, None)
    assert m._engine.mmio_constants() == {}
