"""Hostile guests against the monitor and the memory path (issue 15 items 2, 3, 4, 5, 7): run by
tests/test_hostile.py with run(timeout=2) in every mode, and by tests/test_isolation_defects.py.

Every guest starts in the machine's power-on flat 32-bit protected mode at CPL 0 and sets up its own
GDT, IDT, TSSs and page tables, so bare, bt and trap run the same bytes and must show the same.
"""
from __future__ import annotations

import struct

import numpy as np

import vmcore
from hostile import HostileCase, load_rom_image
from isolation_guest import descriptor, gate

GDT = 0x500
GDTR = 0x600            # GDTR image; IDTR image at GDTR + 6
IDT = 0x2000
CODE = 0x1000
PD = 0x10000            # paged guests: first page directory and its table
PT = 0x11000
FLAT_GDT = bytes(8) + descriptor(0, 0xFFFFF, 0x9A) + descriptor(0, 0xFFFFF, 0x92)    # 0x08 code, 0x10 data
LGDT_LIDT = bytes.fromhex(
    "0f 01 15 00 06 00 00"      # lgdt [0x600]
    "0f 01 1d 06 06 00 00")     # lidt [0x606]


def tables(m: vmcore.Machine, gdt: bytes = FLAT_GDT, idt_entries: int = 0) -> None:
    m.mem_write(GDT, gdt)
    m.mem_write(GDTR, struct.pack("<HIHI", len(gdt) - 1, GDT, max(idt_entries * 8 - 1, 0), IDT))
    m.reg_write("esp", 0x8000)


def identity_table(pt_gpa: int, present=lambda page: True) -> bytes:
    """A page table mapping its 4 MiB to themselves (present, writable, user)."""
    frames = np.arange(1024, dtype=np.uint32) << 12
    entries = frames | 7
    entries[[not present(k) for k in range(1024)]] = 0
    return entries.astype("<u4").tobytes()


def paging_on(m: vmcore.Machine, pd: int = PD) -> None:
    m.reg_write("cr3", pd)
    m.reg_write("cr0", m.reg_read("cr0") | 0x80000000)


def dword(m: vmcore.Machine, gpa: int) -> int:
    return struct.unpack("<I", m.mem_read(gpa, 4))[0]


# ---- item 2: a hardware task switch loads CR3: task 2 must see its own address space ----------------

PD2, PT2 = 0x12000, 0x13000
TSS1, TSS2 = 0x4000, 0x4100
PRIVATE = 0x300000              # the same linear page, a different frame in each task
FRAME1, FRAME2 = 0x300000, 0x301000
RESULTS = 0x5000
TASK2 = 0x1100


def setup_task_switch(via_gate: bool):
    def setup(m: vmcore.Machine) -> None:
        gdt = FLAT_GDT + descriptor(TSS1, 0x67, 0x89, 0) + descriptor(TSS2, 0x67, 0x89, 0)   # 0x18, 0x20
        tables(m, gdt, idt_entries=0x41)
        m.mem_write(IDT + 0x40 * 8, gate(0x20, 0, 0x85))          # vector 0x40: task gate to TSS2
        m.mem_write(PD, struct.pack("<I", PT | 7))
        m.mem_write(PT, identity_table(PT))
        m.mem_write(PD2, struct.pack("<I", PT2 | 7))
        m.mem_write(PT2, identity_table(PT2))
        m.mem_write(PT2 + (PRIVATE >> 12) * 4, struct.pack("<I", FRAME2 | 7))
        m.mem_write(FRAME1, struct.pack("<I", 0x11111111))
        m.mem_write(FRAME2, struct.pack("<I", 0x22222222))
        tss2 = bytearray(0x68)
        struct.pack_into("<III", tss2, 0x1C, PD2, TASK2, 0x2)     # CR3, EIP, EFLAGS
        struct.pack_into("<I", tss2, 0x38, 0x8000)                # ESP
        struct.pack_into("<HxxHxxHxxHxxHxxHxx", tss2, 0x48, 0x10, 0x08, 0x10, 0x10, 0x10, 0x10)   # ES CS SS DS FS GS
        m.mem_write(TSS2, bytes(tss2))
        m.mem_write(CODE, LGDT_LIDT + bytes.fromhex(
            "66 b8 18 00"               # mov ax, 0x18
            "0f 00 d8"                  # ltr ax
            "a1 00 00 30 00"            # mov eax, [0x300000]    (task 1's frame: 0x11111111)
            "a3 04 50 00 00")           # mov [0x5004], eax
            + (bytes.fromhex("cd 40")   # int 0x40               (the task gate)
               if via_gate else
               bytes.fromhex("ea 00 00 00 00 20 00")))   # jmp far 0x20:0 (TSS2)
        m.mem_write(TASK2, bytes.fromhex(
            "a1 00 00 30 00"            # 1100: mov eax, [0x300000]   (task 2's frame: 0x22222222)
            "a3 00 50 00 00"            # 1105: mov [0x5000], eax
            "c7 05 04 00 30 00 33 33 33 33"   # 110a: mov dword [0x300004], 0x33333333   (frame 0x301004)
            "f4"))                      # 1114: hlt
        paging_on(m)
        m.reg_write("eip", CODE)
    return setup


def check_task_switch(m: vmcore.Machine, r) -> None:
    assert dword(m, RESULTS + 4) == 0x11111111, "task 1 read the wrong frame"
    assert dword(m, RESULTS) == 0x22222222, f"task 2 read {dword(m, RESULTS):#x}: task 1's address space"
    assert dword(m, FRAME2 + 4) == 0x33333333 and dword(m, FRAME1 + 4) == 0, "task 2's store hit task 1's frame"
    assert m.reg_read("cr3") == PD2


# ---- item 3: the scanner must classify the bytes the engine runs (an A20 alias) ---------------------

SENSITIVE_PROBE = bytes.fromhex(
    "fa"                        # cli
    "9c 58"                     # pushfd; pop eax
    "a3 00 30 00 00"            # mov [0x3000], eax       (IF must read 0)
    "0f 01 05 10 30 00 00"      # sgdt [0x3010]           (the guest's GDT, not the monitor's)
    "0f 01 e0"                  # smsw eax
    "a3 20 30 00 00"            # mov [0x3020], eax
    "8c c8"                     # mov eax, cs             (RPL 0, not the monitor's 1)
    "a3 30 30 00 00"            # mov [0x3030], eax
    "f4")                       # hlt


def setup_a20_alias_code(m: vmcore.Machine) -> None:
    tables(m)
    m.mem_write(0x2000, SENSITIVE_PROBE)             # what runs at 0x102000 with A20 closed
    m.mem_write(0x102000, b"\x90" * 64)              # what RAM holds at 0x102000: NOPs
    m.mem_write(CODE, LGDT_LIDT + bytes.fromhex(
        "b0 00"                 # mov al, 0
        "e6 92")                # out 0x92, al           (A20 closed)
        + b"\xe9" + struct.pack("<i", 0x102000 - (CODE + 14 + 4 + 5)))   # jmp 0x102000
    m.reg_write("eflags", 0x202)
    m.reg_write("eip", CODE)


def check_sensitive_probe(m: vmcore.Machine, r) -> None:
    flags = dword(m, 0x3000)
    assert not flags & 0x200, f"PUSHFD after CLI showed IF=1 (EFLAGS {flags:#x}): CLI ran untranslated"
    limit, base = struct.unpack("<HI", m.mem_read(0x3010, 6))
    assert (limit, base) == (len(FLAT_GDT) - 1, GDT), f"SGDT showed {base:#x}/{limit:#x}"
    assert dword(m, 0x3020) & 0xFFFF == m.reg_read("cr0") & 0xFFFF
    assert dword(m, 0x3030) & 3 == 0, f"MOV r, CS showed RPL {dword(m, 0x3030) & 3}"


# ---- item 3 again: 32-bit kernel code in the BIOS ROM's low window (RAM under it is zeros) ----------

ROM_GDT = 0xFFFFEF10


def rom_low_window_image() -> bytes:
    rom = bytearray(b"\xf4" * 0x10000)          # 64 KiB: mapped at 0xffff0000 and at 0xf0000
    rom[0xFFF0:0xFFF5] = bytes.fromhex("ea 00 e0 00 f0")             # jmp far f000:e000
    boot = bytes.fromhex(
        "fa"                        # f000:e000: cli
        "66 2e 0f 01 16 00 ef"      # lgdt cs:[0xef00]
        "0f 20 c0 0c 01 0f 22 c0"   # mov eax, cr0; or al, 1; mov cr0, eax
        "66 ea 00 d0 0f 00 08 00")  # jmp far dword 0x08:0x000fd000   (the low window)
    rom[0xE000:0xE000 + len(boot)] = boot
    rom[0xEF00:0xEF06] = struct.pack("<HI", 0x17, ROM_GDT)
    rom[0xEF10:0xEF28] = FLAT_GDT
    code = bytes.fromhex(
        "66 b8 10 00 8e d8 8e d0"   # 000fd000: mov ax, 0x10; mov ds, ax; mov ss, ax
        "bc 00 80 00 00"            # mov esp, 0x8000
        "fb") + SENSITIVE_PROBE     # sti; then the probe (cli; pushfd ...)
    rom[0xD000:0xD000 + len(code)] = code
    return bytes(rom)


def setup_rom_low_window_code(m: vmcore.Machine) -> None:
    load_rom_image(m, rom_low_window_image())


def check_rom_low_window_code(m: vmcore.Machine, r) -> None:
    assert 0xFD000 < m.reg_read("eip") < 0xFD100, hex(m.reg_read("eip"))
    flags = dword(m, 0x3000)
    assert not flags & 0x200, f"PUSHFD after CLI showed IF=1 (EFLAGS {flags:#x}): CLI ran untranslated"
    assert struct.unpack("<HI", m.mem_read(0x3010, 6)) == (0x17, ROM_GDT), "SGDT showed another GDT"
    assert dword(m, 0x3030) & 3 == 0, f"MOV r, CS showed RPL {dword(m, 0x3030) & 3}"


# ---- item 4: guest-kernel code in the last page of the 4 GiB space ---------------------------------

PT_TOP = 0x12000
TOP_FRAME = 0x6000


def setup_top_page_code(m: vmcore.Machine) -> None:
    tables(m)
    m.mem_write(PD, struct.pack("<I", PT | 7))
    m.mem_write(PD + 1023 * 4, struct.pack("<I", PT_TOP | 7))
    m.mem_write(PT, identity_table(PT))
    m.mem_write(PT_TOP + 1023 * 4, struct.pack("<I", TOP_FRAME | 7))     # 0xfffff000 -> 0x6000
    m.mem_write(TOP_FRAME + 0xFF0, bytes.fromhex(
        "90"                    # fffffff0: nop
        "eb fd"))               # fffffff1: jmp 0xfffffff0
    m.mem_write(CODE, LGDT_LIDT + b"\xe9" + struct.pack("<I", (0xFFFFFFF0 - (CODE + 14 + 5)) & 0xFFFFFFFF))
    paging_on(m)
    m.reg_write("eip", CODE)


def check_top_page_code(m: vmcore.Machine, r) -> None:
    assert 0xFFFFFFF0 <= m.reg_read("eip") <= 0xFFFFFFF1, hex(m.reg_read("eip"))


# ---- item 5: INSB whose store faults, with no IDT: the triple fault ends the run ---------------------

def setup_ins_triple_fault(m: vmcore.Machine) -> None:
    tables(m)                                       # IDTR limit 0: #PF cannot be delivered
    m.mem_write(PD, struct.pack("<I", PT | 7))
    m.mem_write(PT, identity_table(PT, present=lambda page: page != 0x200))    # 0x200000 not present
    m.mem_write(CODE, LGDT_LIDT + bytes.fromhex(
        "bf 00 00 20 00"        # mov edi, 0x200000
        "66 ba 55 00"           # mov dx, 0x55          (an unclaimed port)
        "6c"                    # insb                  (its store: #PF, #DF, triple fault)
        "f4"))                  # hlt
    paging_on(m)
    m.reg_write("eip", CODE)


def check_triple_fault_pf(m: vmcore.Machine, r) -> None:
    assert r.exception is not None and r.exception[0] == 14, r.reason


# ---- item 7: a page-crossing store that faults on its second page writes nothing --------------------

def setup_crossing_store(m: vmcore.Machine) -> None:
    tables(m)
    m.mem_write(PD, struct.pack("<I", PT | 7))
    m.mem_write(PT, identity_table(PT, present=lambda page: page != 0x8))      # 0x8000 not present
    m.mem_write(0x7FFC, bytes.fromhex("aa bb cc dd"))
    m.mem_write(CODE, LGDT_LIDT + bytes.fromhex(
        "b8 44 33 22 11"        # mov eax, 0x11223344
        "a3 fe 7f 00 00"        # mov [0x7ffe], eax     (0x7ffe..0x7fff, then 0x8000: not present)
        "f4"))                  # hlt
    paging_on(m)
    m.reg_write("eip", CODE)


def check_crossing_store(m: vmcore.Machine, r) -> None:
    check_triple_fault_pf(m, r)
    assert m.reg_read("cr2") == 0x8000, hex(m.reg_read("cr2"))
    assert m.mem_read(0x7FFC, 4) == bytes.fromhex("aa bb cc dd"), "the faulting store wrote its first page"


HLT = frozenset({"hlt"})
SHUTDOWN = frozenset({"shutdown"})
CASES = [
    HostileCase("task_switch_cr3_jmp", setup_task_switch(False), HLT, check=check_task_switch),
    HostileCase("task_switch_cr3_gate", setup_task_switch(True), HLT, check=check_task_switch),
    # not trap: there PUSHF, SGDT, SMSW and MOV r, CS show the real CPU by design (test_monitor_modes.py)
    HostileCase("a20_alias_sensitive_code", setup_a20_alias_code, HLT, modes=("bare", "bt"),
                check=check_sensitive_probe),
    HostileCase("rom_low_window_sensitive_code", setup_rom_low_window_code, HLT, modes=("bare", "bt"),
                check=check_rom_low_window_code),
    HostileCase("top_page_kernel_code", setup_top_page_code, frozenset({"timeout"}), check=check_top_page_code),
    HostileCase("ins_store_triple_fault", setup_ins_triple_fault, SHUTDOWN, check=check_triple_fault_pf),
    HostileCase("crossing_store_faults", setup_crossing_store, SHUTDOWN, check=check_crossing_store),
]
