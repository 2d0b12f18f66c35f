"""ENTER and ARPL at the edges of memory (issue 14).

ENTER (C8 iw ib): the final stack pointer is checked as a write would
be (SDM Vol. 2 ENTER: "#SS(0) if the new value of the SP or ESP register is outside the stack segment
limit"; "#PF if a write using the final value of the stack pointer would cause a page fault").

Each guest runs at ring 3 with paging on and page 0 (0x0000-0x0fff) supervisor-only; it has no IDT,
so the first exception ends the run in a triple fault whose first exception (vector, error code,
EIP) the run reports. An ENTER that succeeds reaches its HLT, which #GPs at ring 3.
"""
from __future__ import annotations

import struct

import pytest

import vmcore
from isolation_guest import descriptor

GDT, GDTR, PD, PT = 0x500, 0x600, 0x10000, 0x11000
KERNEL, USER = 0x2000, 0x3000
EXC_SS, EXC_GP, EXC_PF = 12, 13, 14
PF_USER_WRITE_PRESENT = 7


READ_ONLY_PAGE = 0x5000         # a user page mapped read-only


def run_ring3(user_code: bytes, *, esp: int, ebp: int = 0x1800, stack16: bool = False, mode: str = "bare",
              regs=None, mem=()):
    m = vmcore.Machine(memory_mb=4, mode=mode)
    # 0x08/0x10 ring-0 code/data, 0x18/0x20 ring-3 code/data (0x20: limit 0x1fff, 16-bit if stack16)
    gdt = (bytes(8) + descriptor(0, 0xFFFFF, 0x9A) + descriptor(0, 0xFFFFF, 0x92)
           + descriptor(0, 0xFFFFF, 0xFA)
           + (descriptor(0, 0x1FFF, 0xF2, 0x0) if stack16 else descriptor(0, 0xFFFFF, 0xF2)))
    m.mem_write(GDT, gdt)
    m.mem_write(GDTR, struct.pack("<HI", len(gdt) - 1, GDT))
    m.mem_write(PD, struct.pack("<I", PT | 7))
    m.mem_write(PT, struct.pack("<I", 0x0000 | 3)                 # page 0: supervisor
                + b"".join(struct.pack("<I", (k << 12) | (5 if k << 12 == READ_ONLY_PAGE else 7))
                           for k in range(1, 1024)))
    for gpa, data in mem:
        m.mem_write(gpa, data)
    for name, value in (regs or {}).items():
        m.reg_write(name, value)
    m.mem_write(KERNEL, bytes.fromhex(
        "0f 01 15 00 06 00 00"      # lgdt [0x600]
        "6a 23")                    # push 0x23          (SS, RPL 3)
        + b"\x68" + struct.pack("<I", esp) +                          # push esp3
        bytes.fromhex(
        "6a 02"                     # push 0x2           (EFLAGS)
        "6a 1b"                     # push 0x1b          (CS, RPL 3)
        "68 00 30 00 00"            # push 0x3000
        "cf"))                      # iretd              (to ring 3)
    m.mem_write(USER, user_code + b"\xf4")                         # ...; hlt (#GP at ring 3)
    m.reg_write("ebp", ebp)
    m.reg_write("esp", 0x8000)              # the kernel stack, for the IRET frame
    m.reg_write("cr3", PD)
    m.reg_write("cr0", m.reg_read("cr0") | 0x80000000)
    m.reg_write("eip", KERNEL)
    r = m.run(count=1000)
    assert r.exit is vmcore.Exit.SHUTDOWN, r.reason
    return m, r


@pytest.mark.parametrize("mode", ["bare", "bt", "trap"])
def test_enter_whose_frame_ends_in_a_supervisor_page_faults(mode):
    # ESP 0x1004: EBP pushed at 0x1000 (user), final ESP 0xfff (supervisor)
    # c8 01 00 00   enter 1, 0
    m, r = run_ring3(bytes.fromhex("c8 01 00 00"), esp=0x1004, mode=mode)
    assert r.exception == (EXC_PF, PF_USER_WRITE_PRESENT, USER)
    assert m.reg_read("cr2") == 0xFFF


@pytest.mark.parametrize("code, esp, final", [
    ("c8 04 00 00", 0x1008, 0x1000),    # enter 4, 0     push EBP at 0x1004; final ESP 0x1000: allowed
    ("c8 04 00 01", 0x100C, 0x1000),    # enter 4, 1     EBP at 0x1008, frame pointer at 0x1004
    ("c8 04 00 02", 0x1010, 0x1000),    # enter 4, 2     EBP, one copied frame pointer, the frame pointer
])
def test_enter_whose_frame_ends_at_the_page_boundary_succeeds(code, esp, final):
    m, r = run_ring3(bytes.fromhex(code), esp=esp)
    assert r.exception == (EXC_GP, 0, USER + 4), r.reason     # it reached the HLT
    assert m.mem_read(esp - 4, 4) == struct.pack("<I", 0x1800)    # the old EBP was pushed


@pytest.mark.parametrize("code, esp, cr2", [
    ("c8 05 00 00", 0x1008, 0xFFF),     # enter 5, 0     final ESP 0xfff
    ("c8 08 00 02", 0x1010, 0xFFC),     # enter 8, 2     final ESP 0x1004 - 8 = 0xffc
    ("66 c8 02 00 00", 0x1002, 0xFFE),  # enter 2, 0 (o16): BP at 0x1000, final ESP 0xffe, a word
    ("c8 00 00 05", 0x1010, 0xFFC),     # enter 0, 5     the fifth push lands at 0xffc: #PF before the end
])
def test_enter_faults_on_its_final_stack_pointer_or_a_push(code, esp, cr2):
    m, r = run_ring3(bytes.fromhex(code), esp=esp)
    assert r.exception == (EXC_PF, PF_USER_WRITE_PRESENT, USER), r.reason
    assert m.reg_read("cr2") == cr2


def test_enter_past_a_16_bit_stack_segment_limit_is_ss_fault():
    # SS: 16-bit, limit 0x1fff; SP 0x1010: EBP at 0x100c, final SP 0xffec
    # c8 20 10 00   enter 0x1020, 0
    m, r = run_ring3(bytes.fromhex("c8 20 10 00"), esp=0x1010, stack16=True)
    assert r.exception == (EXC_SS, 0, USER), r.reason


def test_enter_within_a_16_bit_stack_segment_succeeds():
    # SP 0x1010: EBP at 0x100c, final SP 0x1004 (limit 0x1fff)
    # c8 08 00 00   enter 8, 0
    m, r = run_ring3(bytes.fromhex("c8 08 00 00"), esp=0x1010, stack16=True)
    assert r.exception == (EXC_GP, 0, USER + 4), r.reason


# ---- ARPL (63 /r) with a memory destination the guest may not write ------------------------------
# The write check comes before the RPL comparison (see h_ARPL): a read-only destination faults even
# when its RPL is already high enough and nothing would be written.

@pytest.mark.parametrize("dest, ax, why", [
    (0x0003, 0x0000, "no write needed: RPL 3 >= 0"),
    (0x0000, 0x0003, "a write needed: RPL 0 < 3"),
])
def test_arpl_on_a_read_only_page_faults_either_way(dest, ax, why):
    # SS: IRET to ring 3 nulled DS
    # 36 63 05 00 50 00 00   arpl word ptr ss:[0x5000], ax
    m, r = run_ring3(bytes.fromhex("36 63 05 00 50 00 00"), esp=0x1800, regs={"eax": ax},
                     mem=[(READ_ONLY_PAGE, struct.pack("<H", dest))])
    assert r.exception == (EXC_PF, PF_USER_WRITE_PRESENT, USER), why
    assert m.reg_read("cr2") == READ_ONLY_PAGE
    assert m.mem_read(READ_ONLY_PAGE, 2) == struct.pack("<H", dest)


def test_arpl_on_a_writable_page_raises_the_rpl():
    # 36 63 05 00 60 00 00   arpl word ptr ss:[0x6000], ax
    m, r = run_ring3(bytes.fromhex("36 63 05 00 60 00 00"), esp=0x1800, regs={"eax": 0x0002},
                     mem=[(0x6000, struct.pack("<H", 0x1230))])
    assert r.exception == (EXC_GP, 0, USER + 7), r.reason      # it reached the HLT
    assert m.mem_read(0x6000, 2) == struct.pack("<H", 0x1232)
