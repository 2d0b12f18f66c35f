"""Reset, the BIOS ROM mapping, the A20 gate, CPU reset through the 8042 and port 0x92,
external interrupts, the STI shadow and single-step traps."""
import struct

import pytest

import vmcore
from vmcore import Exit


def rom_image(entry_code: bytes, size=0x10000) -> bytes:
    """A ROM whose reset vector (offset size - 16) jumps to entry_code at F000:E000."""
    rom = bytearray(b"\xff" * size)
    entry = size - 0x2000
    rom[entry:entry + len(entry_code)] = entry_code
    rom[size - 16:size - 11] = bytes.fromhex("ea 00 e0 00 f0")     # jmp far f000:e000
    return bytes(rom)


PRINT_AND_EXIT = bytes.fromhex(
    "b0 52 e6 e9"            # mov al, 'R' ; out 0xe9, al
    "b0 4f e6 e9"            # mov al, 'O' ; out 0xe9, al
    "b0 4d e6 e9"            # mov al, 'M' ; out 0xe9, al
    "66 31 c0"               # xor eax, eax
    "ba f4 00"               # mov dx, 0xf4
    "66 ef")                 # out dx, eax


def test_bios_boots_from_the_reset_vector(tmp_path):
    path = tmp_path / "bios.bin"
    path.write_bytes(rom_image(PRINT_AND_EXIT))
    m = vmcore.Machine(memory_mb=4)
    m.load_bios(path)
    assert (m.reg_read("cs"), m.reg_read("eip")) == (0xF000, 0xFFF0)
    r = m.run(count=1000)
    assert r.exit is Exit.DEBUG_EXIT and r.exit_code == 1
    assert r.console == "ROM"
    # the same bytes are visible below 1 MiB and at the top of the 4 GiB space
    assert m.memory[0xFFFF0] == 0     # RAM underneath is untouched: the ROM is an overlay


def test_rom_is_read_only_and_aliased_below_1mib(tmp_path):
    code = bytes.fromhex(
        "b8 00 f0"           # mov ax, 0xf000
        "8e d8"              # mov ds, ax
        "a0 f0 ff"           # mov al, [0xfff0]        the reset vector's first byte (0xea)
        "c6 06 f0 ff 00"     # mov byte [0xfff0], 0    ignored: ROM
        "8a 1e f0 ff"        # mov bl, [0xfff0]
        "f4")
    path = tmp_path / "bios.bin"
    path.write_bytes(rom_image(code))
    m = vmcore.Machine(memory_mb=4)
    m.load_bios(path)
    r = m.run(count=100)
    assert r.exit is Exit.HLT
    assert (m.reg_read("al"), m.reg_read("bl")) == (0xEA, 0xEA)
    assert m.stats["rom_writes_ignored"] == 1


def test_bad_bios_image_is_a_loader_error(tmp_path):
    path = tmp_path / "short.bin"
    path.write_bytes(b"\x90" * 1000)
    with pytest.raises(vmcore.LoaderError, match="multiple of 64 KiB"):
        vmcore.Machine(memory_mb=4).load_bios(path)


A20_PROBE = bytes.fromhex(
    "31 c0"                  # xor ax, ax
    "8e d8"                  # mov ds, ax
    "c6 06 00 00 11"         # mov byte [0], 0x11          linear 0x000000
    "b8 ff ff"               # mov ax, 0xffff
    "8e c0"                  # mov es, ax
    "26 c6 06 10 00 22"      # mov byte [es:0x10], 0x22    linear 0x100000, or 0 with A20 closed
    "a0 00 00"               # mov al, [0]
    "f4")


def real_mode_machine(code):
    m = vmcore.Machine(memory_mb=4)
    m.reset()
    m.mem_write(0x7C00, code)
    m.reg_write("cs", 0)
    m.reg_write("eip", 0x7C00)
    return m


def test_a20_closed_wraps_at_1mib():
    m = real_mode_machine(A20_PROBE)
    m._engine.set_a20(False)
    assert m.run(count=100).exit is Exit.HLT
    assert m.reg_read("al") == 0x22


def test_a20_closed_and_opened_through_port_92():
    close = bytes.fromhex("e4 92 24 fd e6 92")        # in al,0x92 ; and al,0xfd ; out 0x92,al
    m = real_mode_machine(close + A20_PROBE)
    assert m.run(count=100).exit is Exit.HLT
    assert not m.a20 and m.reg_read("al") == 0x22
    opened = bytes.fromhex("e4 92 0c 02 e6 92")       # in al,0x92 ; or al,2 ; out 0x92,al
    m = real_mode_machine(close + opened + A20_PROBE)
    assert m.run(count=100).exit is Exit.HLT
    assert m.a20 and m.reg_read("al") == 0x11 and m.memory[0x100000] == 0x22


def test_a20_closed_and_opened_through_the_8042_output_port():
    close = bytes.fromhex("b0 d1 e6 64 b0 01 e6 60")  # command 0xd1 to 0x64, then output port 0x01
    m = real_mode_machine(close + A20_PROBE)
    assert m.run(count=100).exit is Exit.HLT
    assert not m.a20 and m.reg_read("al") == 0x22
    opened = bytes.fromhex("b0 d1 e6 64 b0 03 e6 60")  # output port 0x03: A20 | not-reset
    m = real_mode_machine(close + opened + A20_PROBE)
    assert m.run(count=100).exit is Exit.HLT
    assert m.a20 and m.reg_read("al") == 0x11


@pytest.mark.parametrize("code", [bytes.fromhex("b0 fe e6 64 f4"), bytes.fromhex("b0 01 e6 92 f4")],
                         ids=["8042-pulse", "port-92-fast-reset"])
def test_guest_reset_is_a_reset_exit(code):
    m = real_mode_machine(code)
    r = m.run(count=100)
    assert r.exit is Exit.RESET


def ivt_machine(code, handler=bytes.fromhex("43 cf")):      # inc bx ; iret
    m = real_mode_machine(code)
    m.mem_write(0x20 * 4, struct.pack("<HH", 0x9000, 0))   # vector 0x20 -> 0000:9000
    m.mem_write(0x9000, handler)
    m.reg_write("esp", 0x7000)
    return m


def test_external_interrupt_waits_for_if_and_the_sti_shadow():
    # fa        cli
    # 90 90     nop nop
    # fb        sti            the interrupt may not come before the next instruction
    # 89 d9     mov cx, bx     (sees BX unchanged)
    # 90        nop
    # f4        hlt
    m = ivt_machine(bytes.fromhex("fa 90 90 fb 89 d9 90 f4"))
    m.raise_irq(0x20)
    r = m.run(count=100)
    assert r.exit is Exit.HLT
    assert m.reg_read("bx") == 1           # delivered exactly once
    assert m.reg_read("cx") == 0           # not before the instruction after STI
    assert m.stats["interrupts"] == 1


def test_single_step_trap_after_each_instruction():
    # 9c 58 0d 00 01 50 9d   pushf ; pop ax ; or ax, 0x100 ; push ax ; popf   (TF on)
    # 90 90 90               three nops, each followed by a #DB trap
    # f4
    m = ivt_machine(bytes.fromhex("9c 58 0d 00 01 50 9d 90 90 90 f4"))
    m.mem_write(1 * 4, struct.pack("<HH", 0x9000, 0))       # #DB -> the counting handler
    r = m.run(count=100)
    assert r.exit is Exit.HLT
    assert m.reg_read("bx") == 3


class OneVectorController:
    """A stand-in interrupt controller: INTR up until acknowledged once."""

    def __init__(self, machine, vector):
        self.machine, self.vector, self.acks = machine, vector, 0

    def acknowledge(self):
        self.acks += 1
        self.machine.set_intr(False)
        return self.vector


def test_intr_line_is_acknowledged_at_an_interruptible_boundary():
    # fa ; 90 ; fb ; 89 d9 ; 90 ; f4   cli ; nop ; sti ; mov cx, bx ; nop ; hlt
    m = ivt_machine(bytes.fromhex("fa 90 fb 89 d9 90 f4"))
    pic = OneVectorController(m, 0x20)
    m.interrupt_controller = pic
    m.set_intr(True)
    r = m.run(count=100)
    assert r.exit is Exit.HLT
    assert pic.acks == 1
    assert (m.reg_read("bx"), m.reg_read("cx")) == (1, 0)
    assert m.stats["exits_intr"] == 1


def rom_protected_mode_image(pm_code: bytes) -> bytes:
    """A ROM that enters flat 32-bit protected mode from the reset vector, as a BIOS's POST does,
    and runs pm_code from ROM at 0xFE100 with CS = 0x08 (CPL 0) and DS = 0x10."""
    rom = bytearray(rom_image(bytes.fromhex(
        "2e 66 0f 01 16 00 d0"   # lgdt cs:[0xd000]   (o32: a 32-bit base)
        "0f 20 c0"               # mov eax, cr0
        "0c 01"                  # or al, 1           CR0.PE
        "0f 22 c0"               # mov cr0, eax
        "66 ea 00 e1 0f 00 08 00")))  # jmp dword 0x08:0x000fe100
    flat = 0xFFFF | 0xCF << 48  # base 0, limit 4 GiB, 32-bit, 4 KiB granules
    gdt = bytes(8) + (flat | 0x9A << 40).to_bytes(8, "little") + (flat | 0x92 << 40).to_bytes(8, "little")
    rom[0xD000:0xD006] = struct.pack("<HI", len(gdt) - 1, 0xFD008)
    rom[0xD008:0xD008 + len(gdt)] = gdt
    rom[0xE100:0xE100 + len(pm_code)] = pm_code
    return bytes(rom)


@pytest.mark.parametrize("mode", ["bare", "bt", "trap"])
def test_guest_kernel_code_in_rom_is_translated_under_bt(tmp_path, mode):
    """Firmware code runs at CPL 0 from ROM: under bt it is translated like kernel code in RAM, so
    MOV from CS shows the guest's RPL 0, not the monitor's real RPL 1 (trap mode, which does not
    translate, shows the real one: the sensitive-unprivileged leak)."""
    path = tmp_path / "bios.bin"
    path.write_bytes(rom_protected_mode_image(bytes.fromhex(
        "8c c8"                  # mov eax, cs
        "66 ba 10 00"            # mov dx, 0x10
        "8e da"                  # mov ds, dx
        "a3 00 05 00 00"         # mov [0x500], eax
        "f4")))                  # hlt
    m = vmcore.Machine(memory_mb=4, mode=mode)
    m.load_bios(path)
    r = m.run(count=1000)
    assert r.exit is Exit.HLT, r.reason
    shown_cs = struct.unpack("<I", m.mem_read(0x500, 4))[0] & 0xFFFF
    assert shown_cs == (0x09 if mode == "trap" else 0x08)
    if mode == "bt":
        assert m.stats["callout_read_cs"] == 1
