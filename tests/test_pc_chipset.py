"""The 440FX PC chipset: the 82441FX host bridge's PAM registers, which route 0xC0000-0xFFFFF
between shadow RAM and the BIOS ROM (Intel 290549, PAM0-PAM6 at 59h-5Fh), and the PIIX3's
PCI-to-ISA bridge at 00:01.0 with its reset control register at 0xCF9 (Intel 290550); then
Debian's SeaBIOS, which shadows itself through PAM before it does anything else."""
from pathlib import Path

import pytest

import vmcore
from vmcore import Exit, Machine
from vmcore.devices import DebugConsole
from vmcore.devices.pci import PciConfig, PciHostBridge, Piix3IsaBridge, ResetControl, pam_field_range
from vmcore.machine import PAM_ALL_RAM

from nasm_guests import assemble_text

ENABLE = 0x80000000
SEABIOS = Path("/usr/share/seabios/bios.bin")
SEABIOS_DEBUG_PORT = 0x402       # SeaBIOS's CONFIG_DEBUG_IO port (QEMU's isa-debugcon)


def addr(dev=0, fn=0, reg=0):
    return ENABLE | dev << 11 | fn << 8 | reg


def cfg_read(p, a, size=4, k=0):
    p.write(0, 4, a)
    return p.read(4 + k, size)


def cfg_write(p, a, size, value, k=0):
    p.write(0, 4, a)
    p.write(4 + k, size, value)


def machine_cfg_write(m, reg, size, value):
    """A configuration write to 00:00.0 through the ports, as a guest makes it."""
    m.bus.write(0xCF8, 4, addr(reg=reg & 0xFC))
    m.bus.write(0xCFC + (reg & 3), size, value)


# ---- 00:00.0 and 00:01.0 configuration space -------------------------------------------------

def test_host_bridge_header_and_pam_reset_value():
    p = PciConfig({(0, 0, 0): PciHostBridge()})
    assert cfg_read(p, addr()) == 0x12378086                        # 82441FX: 8086:1237
    assert cfg_read(p, addr(reg=0x08)) == 0x06000002                # class 06 00 00, RID 02
    assert cfg_read(p, addr(reg=0x2C)) == 0x11001AF4                # subsystem 1AF4:1100 as QEMU's
    assert cfg_read(p, addr(reg=0x58)) == 0 and cfg_read(p, addr(reg=0x5C)) == 0   # PAM0-6: 00h at reset


def test_pam_fields_cover_0xc0000_to_0xfffff():
    # PAM0 bits 7:4 = F0000-FFFFF, bits 3:0 reserved; PAM1-6 low then high nibble, 16 KiB each
    assert pam_field_range(0x59, True) == (0xF0000, 0x10000)
    assert pam_field_range(0x59, False) is None
    assert pam_field_range(0x5A, False) == (0xC0000, 0x4000)
    assert pam_field_range(0x5A, True) == (0xC4000, 0x4000)
    assert pam_field_range(0x5E, True) == (0xE4000, 0x4000)
    assert pam_field_range(0x5F, True) == (0xEC000, 0x4000)
    ranges = sorted(pam_field_range(r, h) for r in range(0x59, 0x60) for h in (False, True) if (r, h) != (0x59, False))
    assert ranges[0][0] == 0xC0000 and all(a + n == b for (a, n), (b, _) in zip(ranges, ranges[1:]))
    assert ranges[-1][0] + ranges[-1][1] == 0x100000
    with pytest.raises(vmcore.ConfigError, match="not a PAM register"):
        pam_field_range(0x60, True)


def test_host_bridge_reports_each_changed_pam_range():
    calls = []
    bridge = PciHostBridge(on_pam=lambda *a: calls.append(a))
    p = PciConfig({(0, 0, 0): bridge})
    cfg_write(p, addr(reg=0x58), 4, 0x33333000)     # SeaBIOS's first write: PAM0 = 30h, PAM1-2 = 33h
    assert calls == [(48, 16, True, True), (0, 4, True, True), (4, 4, True, True), (8, 4, True, True),
                     (12, 4, True, True)]
    calls.clear()
    cfg_write(p, addr(reg=0x58), 1, 0x55, k=1)      # PAM0 = 55h: RE only (bit 6 is CE: storage)
    assert calls == [(48, 16, True, False)]
    calls.clear()
    cfg_write(p, addr(reg=0x58), 1, 0x15, k=1)      # only CE (bit 6) and the reserved low field change
    assert calls == [] and cfg_read(p, addr(reg=0x58), 1, 1) == 0x15


def test_piix3_isa_bridge_header_and_reset_values():
    p = PciConfig({(0, 1, 0): Piix3IsaBridge()})
    a = lambda reg: addr(dev=1, reg=reg)
    assert cfg_read(p, a(0)) == 0x70008086                          # 82371SB function 0: 8086:7000
    assert cfg_read(p, a(0x04)) == 0x02000007                       # PCICMD 0007h, PCISTS 0200h (DEVSEL medium)
    assert cfg_read(p, a(0x08)) >> 8 == 0x060100                    # class: bridge, PCI-to-ISA
    assert cfg_read(p, a(0x0C), 1, 2) == 0x80                       # HEDT: multi-function
    assert cfg_read(p, a(0x2C)) == 0x11001AF4
    assert cfg_read(p, a(0x4C), 1) == 0x4D                          # IORT
    assert cfg_read(p, a(0x4C), 2, 2) == 0x0003                     # XBCS
    assert cfg_read(p, a(0x60)) == 0x80808080                       # PIRQRC[A:D]: routing disabled
    assert cfg_read(p, a(0x68), 1, 1) == 0x02                       # TOM
    assert cfg_read(p, a(0x70), 2) == 0x8080                        # MBIRQ0/1
    assert cfg_read(p, a(0x74), 2, 2) == 0x0C0C                     # MBDMA0/1
    assert cfg_read(p, a(0x78), 2) == 0x0002                        # PCSC
    assert cfg_read(p, a(0xA0), 1) == 0x08 and cfg_read(p, a(0xA8), 1) == 0x0F   # SMICNTL, FTMR
    assert cfg_read(p, addr(dev=1, fn=1)) == 0xFFFFFFFF             # 01.1 (IDE) is not there


def test_piix3_registers_are_storage_and_the_header_is_read_only():
    p = PciConfig({(0, 1, 0): Piix3IsaBridge()})
    a = lambda reg: addr(dev=1, reg=reg)
    cfg_write(p, a(0x00), 4, 0)
    cfg_write(p, a(0x04), 2, 0)                                     # bits 2:0 hardwired to 1
    assert cfg_read(p, a(0x00)) == 0x70008086 and cfg_read(p, a(0x04), 2) == 0x0007
    cfg_write(p, a(0x04), 2, 0x0008)                                # special cycle enable: writable
    assert cfg_read(p, a(0x04), 2) == 0x000F
    cfg_write(p, a(0x60), 4, 0x0B0A0B0A)                            # PIRQA/C -> IRQ 10, B/D -> IRQ 11
    assert cfg_read(p, a(0x60)) == 0x0B0A0B0A
    cfg_write(p, a(0x60), 1, 0xFF)                                  # bits 6:4 reserved
    assert cfg_read(p, a(0x60), 1) == 0x8F
    cfg_write(p, a(0x68), 1, 0x40, k=1)                             # TOM
    assert cfg_read(p, a(0x68), 1, 1) == 0x40
    cfg_write(p, a(0x50), 4, 0xFFFFFFFF)                            # no register there
    assert cfg_read(p, a(0x50)) == 0
    state = p.export_state()
    q = PciConfig({(0, 1, 0): Piix3IsaBridge()})
    q.restore_state(state)
    assert cfg_read(q, a(0x60)) == 0x0B0A0B8F


def test_reset_control_at_0xcf9():
    resets = []
    p = PciConfig(reset_control=ResetControl(resets.append))
    p.write(1, 1, 0x02)                     # SRST alone: nothing happens yet
    assert resets == [] and p.read(1, 1) == 0x02
    p.write(1, 1, 0x06)                     # RCPU 0 -> 1 with SRST: a hard reset
    assert resets == [True]
    p.write(1, 1, 0x04)                     # RCPU stays 1: no new transition
    p.write(1, 1, 0x00)
    p.write(1, 1, 0x04)                     # soft reset (INIT)
    assert resets == [True, False]
    p.write(1, 1, 0xF9)                     # reserved bits read 0
    assert p.read(1, 1) == 0x00
    p.write(0, 4, addr())                   # a dword at 0xCF8 is still CONFIG_ADDRESS
    assert p.read(0, 4) == addr() and p.read(1, 1) == 0x00
    assert PciConfig().read(1, 1) == 0xFF   # no PIIX3: nothing at 0xCF9


def test_machine_has_both_functions_and_elcr():
    m = Machine(memory_mb=4)
    assert cfg_read(m.pci, addr()) == 0x12378086 and cfg_read(m.pci, addr(dev=1)) == 0x70008086
    m.bus.write(0x4D0, 1, 0xF8)             # ELCR1: IRQ 0-2 are edge only (reserved, read 0)
    m.bus.write(0x4D1, 1, 0xFF)             # ELCR2: IRQ 8 and 13 are edge only
    assert m.bus.read(0x4D0, 1) == 0xF8 and m.bus.read(0x4D1, 1) == 0xDE


# ---- PAM through the engine, guest-free ------------------------------------------------------

def rom_with(marks: dict[int, bytes], size=0x10000, entry: bytes = b"") -> bytes:
    """A ROM image with bytes at the given offsets; entry runs at F000:E000 from the reset vector."""
    rom = bytearray(b"\xff" * size)
    for off, data in marks.items():
        rom[off:off + len(data)] = data
    rom[size - 0x2000:size - 0x2000 + len(entry)] = entry
    rom[size - 16:size - 11] = bytes.fromhex("ea 00 e0 00 f0")       # jmp far f000:e000
    return bytes(rom)


def test_without_a_bios_pam_is_all_ram():
    m = Machine(memory_mb=4)
    assert bytes(m.host_bridge.config[0x59:0x60]) == PAM_ALL_RAM
    assert all(m._engine.pam_get(k) == (True, True) for k in range(64))
    m.phys_write(0xF0000, b"ram")
    assert m.mem_read(0xF0000, 3) == b"ram" and m.phys_read(0xF0000, 3) == b"ram"


def test_pam_routes_reads_and_writes(tmp_path):
    rom = rom_with({0x0100: b"ROM!"})
    (tmp_path / "bios.bin").write_bytes(rom)
    m = Machine(memory_mb=4)
    m.load_bios(tmp_path / "bios.bin")
    m.mem_write(0xF0100, b"RAM.")
    m.mem_write(0xC0000, b"\x55\xAA")
    # power-on, PAM0-6 = 0: 0xF0000 reads the ROM's low window, writes vanish; 0xC0000 has no ROM
    assert bytes(m.host_bridge.config[0x59:0x60]) == bytes(7)
    assert m.phys_read(0xF0100, 4) == b"ROM!"
    assert m.phys_read(0xFFFF0100, 4) == b"ROM!"                      # the top-of-4-GiB copy
    assert m.phys_read(0xC0000, 2) == b"\xff\xff"
    m.phys_write(0xF0100, b"xxxx")
    assert m.mem_read(0xF0100, 4) == b"RAM."
    # PAM0 = 30h (RE | WE): DRAM for both
    machine_cfg_write(m, 0x59, 1, 0x30)
    assert m._engine.pam_get(48) == (True, True) and m._engine.pam_get(47) == (False, False)
    assert m.phys_read(0xF0100, 4) == b"RAM."
    m.phys_write(0xF0100, b"new!")
    assert m.mem_read(0xF0100, 4) == b"new!"
    # PAM0 = 10h (RE): reads DRAM, writes go to the PCI side and are lost
    machine_cfg_write(m, 0x59, 1, 0x10)
    m.phys_write(0xF0100, b"lost")
    assert m.phys_read(0xF0100, 4) == b"new!"
    # PAM0 = 20h (WE): reads the ROM, writes DRAM underneath
    machine_cfg_write(m, 0x59, 1, 0x20)
    m.phys_write(0xF0100, b"unde")
    assert m.phys_read(0xF0100, 4) == b"ROM!" and m.mem_read(0xF0100, 4) == b"unde"
    # PAM1 = 03h: 0xC0000-0xC3FFF is DRAM, 0xC4000 still nothing
    machine_cfg_write(m, 0x5A, 1, 0x03)
    assert m.phys_read(0xC0000, 2) == b"\x55\xAA" and m.phys_read(0xC4000, 2) == b"\xff\xff"
    assert m._engine.code_bytes(0xC0000, 2) == b"\x55\xAA"           # fetches read the same place
    with pytest.raises(vmcore.GuestMemoryError):
        m.phys_read(0xFFFFFFFF, 2)


def test_a_hard_reset_through_0xcf9_restores_the_chipset_reset_state(tmp_path):
    (tmp_path / "bios.bin").write_bytes(rom_with({}))
    m = Machine(memory_mb=4)
    m.load_bios(tmp_path / "bios.bin")
    machine_cfg_write(m, 0x58, 4, 0x33333000)
    cfg_write(m.pci, addr(dev=1, reg=0x60), 1, 0x0B)        # PIRQA -> IRQ 11
    m.bus.write(0xCF9, 1, 0x04)                             # a soft reset (INIT): the chipset keeps its state
    assert m._engine.pam_get(63) == (True, True) and cfg_read(m.pci, addr(dev=1, reg=0x60), 1) == 0x0B
    m.bus.write(0xCF9, 1, 0x00)
    m.bus.write(0xCF9, 1, 0x02)
    m.bus.write(0xCF9, 1, 0x06)                             # a hard reset: PCIRST#
    assert bytes(m.host_bridge.config[0x59:0x60]) == bytes(7) and m._engine.pam_get(63) == (False, False)
    assert cfg_read(m.pci, addr(dev=1, reg=0x60), 1) == 0x80 and m.bus.read(0xCF9, 1) == 0


# ---- TLB, decoded blocks and JIT code follow a PAM change --------------------------------------

# real mode from the ROM: into flat 32-bit protected mode, to the probe code in RAM at 0x10000
ROM_ENTRY = """
bits 16
    cli
    xor ax, ax
    mov ds, ax
    o32 lgdt [0x1100]
    mov eax, cr0
    or al, 1
    mov cr0, eax
    jmp dword 0x08:0x10000
"""

# Each phase sets PAM0 (0xF0000-0xFFFFF), then runs `probe` PROBES times: it stores the phase's
# word at 0xF0200, loads 0xF0100 and 0xF0200 and (if the phase says so) calls the code at
# 0xF8400 (on a page of its own: stores to a page with decoded code would keep faulting out of
# the JIT's host code, and the JIT would leave the guest to the interpreter for a while): the
# same blocks in every phase, hot enough for the JIT. Results go to RESULTS, three
# dwords a phase: the two loads and the call's EAX (0 without a call).
PROBE = """
bits 32
org 0x10000
PROBES equ 200
RESULTS equ 0x20000
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, 0x9000
    mov ebp, RESULTS
%macro phase 3          ; PAM0 value, word to store, call 0xF8400 (1) or not (0)
    mov al, %1
    call set_pam0
    mov edi, %2
    mov esi, %3
    call probe
    add ebp, 12
%endmacro
PHASES
    hlt

set_pam0:                           ; PAM0 = al through configuration mechanism #1
    mov ecx, eax
    mov dx, 0xCF8
    mov eax, 0x80000058
    out dx, eax
    mov dx, 0xCFD
    mov eax, ecx
    out dx, al
    ret

probe:
    mov ecx, PROBES
.again:
    mov [0xF0200], edi
    mov eax, [0xF0100]
    mov edx, [0xF0200]
    xor ebx, ebx
    test esi, esi
    jz .no_call
    push eax
    push edx
    mov ebx, 0xF8400
    call ebx
    mov ebx, eax
    pop edx
    pop eax
.no_call:
    dec ecx
    jnz .again
    mov [ebp], eax
    mov [ebp + 4], edx
    mov [ebp + 8], ebx
    ret
"""


def probe_guest(phases, name) -> bytes:
    lines = "\n".join(f"    phase {pam0:#04x}, {word:#010x}, {int(call)}" for pam0, word, call in phases)
    return assemble_text(PROBE.replace("PHASES", lines), name, kind="pc-chipset")


def probe_results(m, n_phases):
    words = [int.from_bytes(m.mem_read(0x20000 + 4 * k, 4), "little") for k in range(3 * n_phases)]
    return [tuple(words[k:k + 3]) for k in range(0, 3 * n_phases, 3)]


ROM_WORD_100, ROM_WORD_200, RAM_WORD_100 = 0xDEADBEEF, 0xCAFEF00D, 0x0BADF00D
ROM_CALL, RAM_CALL = 0xAAAA0001, 0x5555000


def gdt() -> bytes:
    null = bytes(8)
    code = bytes.fromhex("ffff 0000 009a cf00")     # base 0, limit 4 GiB, 32-bit code
    data = bytes.fromhex("ffff 0000 0092 cf00")
    return null + code + data


@pytest.mark.parametrize("engine,mode", [("interp", "bare"), (None, "bare"), (None, "bt")],
                         ids=["interp", "default-engine", "bt"])
def test_guest_sees_each_pam_change_at_once(tmp_path, engine, mode):
    rom = rom_with({0x0100: ROM_WORD_100.to_bytes(4, "little"), 0x0200: ROM_WORD_200.to_bytes(4, "little"),
                    0x8400: b"\xb8" + ROM_CALL.to_bytes(4, "little") + b"\xc3"},     # mov eax, ROM_CALL ; ret
                   entry=assemble_text(ROM_ENTRY, "pam-rom-entry", kind="pc-chipset"))
    (tmp_path / "bios.bin").write_bytes(rom)
    m = Machine(memory_mb=4, mode=mode, engine=engine)
    m.load_bios(tmp_path / "bios.bin")
    m.mem_write(0x1000, gdt())
    m.mem_write(0x1100, (0x17).to_bytes(2, "little") + (0x1000).to_bytes(4, "little"))
    m.mem_write(0x10000, probe_guest([(0x00, 0x11111111, 1),        # reset: the ROM for reads and writes
                                      (0x30, 0x22222222, 1),        # RE | WE: DRAM
                                      (0x10, 0x33333333, 1),        # RE: DRAM reads, writes lost
                                      (0x20, 0x44444444, 1),        # WE: ROM reads, DRAM writes
                                      (0x30, 0x55555555, 1),        # DRAM again
                                      (0x00, 0x66666666, 1)],       # the ROM again
                                     "pam-probe-rom"))
    m.mem_write(0xF0100, RAM_WORD_100.to_bytes(4, "little"))
    m.mem_write(0xF8400, b"\xb8" + RAM_CALL.to_bytes(4, "little") + b"\xc3")
    r = m.run(count=2_000_000)
    assert r.exit is Exit.HLT, r.reason
    assert probe_results(m, 6) == [
        (ROM_WORD_100, ROM_WORD_200, ROM_CALL),     # PAM0 = 00h: the ROM; the store is lost
        (RAM_WORD_100, 0x22222222, RAM_CALL),       # 30h: DRAM, the store lands
        (RAM_WORD_100, 0x22222222, RAM_CALL),       # 10h: DRAM reads, the store is lost
        (ROM_WORD_100, ROM_WORD_200, ROM_CALL),     # 20h: ROM reads (and fetches) ...
        (RAM_WORD_100, 0x55555555, RAM_CALL),       # 30h: ... the 20h stores were in DRAM, then 55h's
        (ROM_WORD_100, ROM_WORD_200, ROM_CALL),     # 00h: the ROM again
    ]
    assert m.mem_read(0xF0200, 4) == (0x55555555).to_bytes(4, "little")
    assert m.stats["rom_writes_ignored"] >= 2 * 200
    if m.engine == "jit" and mode == "bare":
        assert m.stats["jit_instructions"] > 0                          # the probe ran as host code


@pytest.mark.parametrize("engine,mode", [("interp", "bare"), (None, "bare"), (None, "bt")],
                         ids=["interp", "default-engine", "bt"])
def test_ram_cached_while_pam_gave_it_to_ram_is_dropped_when_pam_takes_it(engine, mode):
    # no BIOS: PAM starts all RAM, so the TLB and the JIT's window map 0xF0000 as RAM at first
    m = Machine(memory_mb=4, mode=mode, engine=engine)
    m.mem_write(0x10000, probe_guest([(0x30, 0x22222222, 1),        # DRAM
                                      (0x00, 0x33333333, 0),        # nothing there (no ROM): all ones
                                      (0x30, 0x44444444, 1),        # DRAM again
                                      (0x10, 0x55555555, 1),        # RE: the 55h stores are lost
                                      (0x20, 0x66666666, 0)],       # WE: reads float high
                                     "pam-probe-ram"))
    m.mem_write(0xF0100, RAM_WORD_100.to_bytes(4, "little"))
    m.mem_write(0xF8400, b"\xb8" + RAM_CALL.to_bytes(4, "little") + b"\xc3")
    m.reg_write("eip", 0x10000 + 4 + 3 * 2)     # past mov ax, 0x10 and three mov sreg, ax: flat already
    r = m.run(count=2_000_000)
    assert r.exit is Exit.HLT, r.reason
    assert probe_results(m, 5) == [
        (RAM_WORD_100, 0x22222222, RAM_CALL),
        (0xFFFFFFFF, 0xFFFFFFFF, 0),
        (RAM_WORD_100, 0x44444444, RAM_CALL),
        (RAM_WORD_100, 0x44444444, RAM_CALL),
        (0xFFFFFFFF, 0xFFFFFFFF, 0),
    ]
    assert m.mem_read(0xF0200, 4) == (0x66666666).to_bytes(4, "little")
    if m.engine == "jit" and mode == "bare":
        assert m.stats["jit_instructions"] > 0


# ---- SeaBIOS -----------------------------------------------------------------------------------

def seabios_machine(mode: str):
    """A 64 MiB machine with Debian's SeaBIOS and a debug console at 0x402 for its log."""
    m = Machine(memory_mb=64, mode=mode)
    log = bytearray()
    # SeaBIOS keeps writing its log to 0x402 only if 0x402 reads back 0xE9 (QEMU's isa-debugcon)
    m.bus.attach(SEABIOS_DEBUG_PORT, 1, DebugConsole(sink=log.extend), name="seabios-debug")
    m.load_bios(SEABIOS)
    return m, log


@pytest.mark.skipif(not SEABIOS.exists(), reason=f"{SEABIOS} is missing (apt-get install seabios)")
@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_seabios_shadows_itself_and_runs_its_post(mode):
    m, log_bytes = seabios_machine(mode)
    r = m.run(count=20_000_000, timeout=120)
    log = log_bytes.decode(errors="replace")
    # RamSize is the RAM below 4 GiB, from CMOS 34h/35h (64 KiB units above 16 MiB) + 16 MiB; it
    # is a variable in the BIOS's own segment: before PAM it read back 0 from the ROM
    assert "RamSize: 0x04000000 [cmos]" in log, log[-2000:]
    assert "Running on QEMU (i440fx)" in log                      # the host bridge's subsystem ID
    assert "Found 2 PCI devices" in log and "init bdf=00:01.0 id=8086:7000" in log
    assert "PIIX3/PIIX4 init: elcr=00 0c" in log                  # ELCR: PCI IRQs 10 and 11 level
    assert "e820 map has 5 items" in log
    assert m.stats["rom_writes_ignored"] == 0     # every store to its own data segment landed in RAM
    # no disk to boot: it gives up and resets through the PIIX3's 0xCF9 (a hard reset)
    assert "No bootable device." in log and "Attempting a hard reboot" in log
    assert r.exit is Exit.RESET, r.reason
    assert bytes(m.host_bridge.config[0x59:0x60]) == bytes(7)
    assert 1_000_000 < r.instructions < 20_000_000
    # after the reset the CPU starts in the ROM again, which PAM shows once more: a second POST
    m.reset()
    r2 = m.run(count=20_000_000, timeout=120)
    assert r2.exit is Exit.RESET, r2.reason
    assert log_bytes.decode(errors="replace").count("RamSize: 0x04000000 [cmos]") == 2


BOOT_SECTOR_CODE = bytes.fromhex(
    "fa"                     # cli                     (so that HLT ends the run)
    "31 c0 8e d8"            # xor ax, ax ; mov ds, ax
    "be 20 7c"               # mov si, 0x7c20          the message
    "ac"                     # next: lodsb
    "84 c0 74 04"            # test al, al ; jz done
    "e6 e9"                  # out 0xe9, al            vmcore's debug console
    "eb f7"                  # jmp next
    "f4 eb fd")              # done: hlt ; jmp done


@pytest.mark.skipif(not SEABIOS.exists(), reason=f"{SEABIOS} is missing (apt-get install seabios)")
@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_seabios_boots_the_ide_disk(tmp_path, mode):
    """SeaBIOS finds the ATA disk through the PIIX3 IDE function (00:01.1), reads its boot sector
    (INT 13h over the IDE ports) to 0000:7C00 and jumps to it; the same run in bare and bt."""
    sector = bytearray(512)
    sector[:len(BOOT_SECTOR_CODE)] = BOOT_SECTOR_CODE
    sector[0x20:0x20 + 12] = b"BOOT SECTOR\0"
    sector[510:512] = b"\x55\xaa"
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(sector) + bytes(512 * 2047))                 # 1 MiB
    m, log_bytes = seabios_machine(mode)
    m.attach_disk(image)
    r = m.run(count=50_000_000, timeout=120)
    log = log_bytes.decode(errors="replace")
    assert r.exit is Exit.HLT and r.eip == 0x7C12, (r.reason, log[-1500:])  # past the HLT at 7C11
    assert r.console == "BOOT SECTOR"
    assert "ata0-0: VMCORE HARDDISK ATA-6 Hard-Disk (1 MiBytes)" in log
    assert "Booting from Hard Disk..." in log and "Booting from 0000:7c00" in log
    assert m.ide.disk.path == image and image.read_bytes()[:512] == bytes(sector)    # overlay: file untouched
    assert 1_000_000 < r.instructions < 50_000_000
