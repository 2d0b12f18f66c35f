"""CPUID, RDTSC, IN/OUT (all forms, through hooks), HLT, #UD on undefined opcodes, flag control
(CLC STC CMC CLD STD), prefixes (66, 67, segment overrides, LOCK, repeats), the run budget,
self-modifying code, and the check that every listing comment in the ISA suites matches
capstone's disassembly of the bytes beside it.
"""

import os
import pathlib
import struct
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # isa_harness, with or without tests/__init__.py

from isa_harness import (AF, ARITH, CF, CODE_GPA, DATA_GPA, DF, FIXED1, OF, PF, SF, ZF, asm,
                         assert_flags, assert_regs, le32, listing_check, new_machine, prog, read32,
                         run_code, run_fault, vmcore)

HERE = pathlib.Path(__file__).resolve().parent
SUITES = sorted(p.name for p in HERE.glob("test_isa_*.py"))


@pytest.mark.parametrize("name", SUITES)
def test_listings_match_capstone(name):
    """Every '# <hex>  <disassembly>' comment in the suites is what capstone decodes from those bytes."""
    pytest.importorskip("capstone")
    checked, bad = listing_check(HERE / name)
    assert checked >= 5, f"only {checked} listing comments found in {name}"
    assert not bad, "\n".join(bad)


# ---------------------------------------------------------------------------
# CPUID, RDTSC
# ---------------------------------------------------------------------------

def test_cpuid_leaf_0_vendor():
    code = asm("0f a2")         # 0f a2                 cpuid
    m, _ = run_code(code, regs=dict(eax=0, ecx=0x12345678, eflags=FIXED1 | ARITH))
    assert m.reg_read("eax") >= 1, "leaf 0: EAX is the highest basic leaf; leaf 1 must exist"
    vendor = b"".join(struct.pack("<I", m.reg_read(r)) for r in ("ebx", "edx", "ecx"))
    assert len(vendor) == 12 and all(0x20 <= c < 0x7F for c in vendor), f"vendor string {vendor!r}"
    assert_flags(m, FIXED1 | ARITH, mask=0xFFFFFFFF, code=code)


def test_cpuid_leaf_1_is_stable():
    code = asm("0f a2")         # 0f a2                 cpuid
    results = []
    for _ in range(2):
        m, _ = run_code(code, regs=dict(eax=1, ebx=0xAAAAAAAA, ecx=0, edx=0xDDDDDDDD))
        results.append(tuple(m.reg_read(r) for r in ("eax", "ebx", "ecx", "edx")))
    assert results[0] == results[1]
    assert results[0][0] != 0, "leaf 1 EAX holds the family/model/stepping signature"


def test_rdtsc_is_monotonic():
    code = prog(
        "0f 31",                # 0f 31                 rdtsc
        "89 c6",                # 89 c6                 mov esi, eax
        "89 d7",                # 89 d7                 mov edi, edx
        "b9 00 01 00 00",       # b9 00 01 00 00        mov ecx, 0x100
        "e2 fe",                # e2 fe                 loop $+0
        "0f 31",                # 0f 31                 rdtsc
    )
    m, _ = run_code(code)
    t0 = m.reg_read("edi") << 32 | m.reg_read("esi")
    t1 = m.reg_read("edx") << 32 | m.reg_read("eax")
    assert t1 >= t0, f"TSC went backwards: {t0:#x} then {t1:#x}"
    m2, _ = run_code(asm("0f 31"))      # 0f 31                 rdtsc
    t2 = m2.reg_read("edx") << 32 | m2.reg_read("eax")
    if m2 is m:
        assert t2 >= t1


# ---------------------------------------------------------------------------
# IN / OUT
# ---------------------------------------------------------------------------

PORT8 = 0x80            # unclaimed by the default devices
PORT16 = 0x1234


@pytest.mark.parametrize("code_hex,port,size,reg_after", [
    ("e4 80", PORT8, 1, 0x111111A1),         # e4 80                 in al, 0x80
    ("66 e5 80", PORT8, 2, 0x1111B2A1),      # 66 e5 80              in ax, 0x80
    ("e5 80", PORT8, 4, 0xD4C3B2A1),         # e5 80                 in eax, 0x80
    ("ec", PORT16, 1, 0x111111A1),           # ec                    in al, dx
    ("66 ed", PORT16, 2, 0x1111B2A1),        # 66 ed                 in ax, dx
    ("ed", PORT16, 4, 0xD4C3B2A1),           # ed                    in eax, dx
])
def test_in_forms(code_hex, port, size, reg_after):
    m = new_machine()
    seen = []

    def on_in(mach, p, sz):
        seen.append((p, sz))
        return 0xD4C3B2A1 & ((1 << (8 * sz)) - 1)

    m.hook_add(vmcore.HOOK_IO_IN, on_in, begin=port, end=port)
    code = asm(code_hex)
    m, _ = run_code(code, machine=m, regs=dict(eax=0x11111111, edx=0xABCD0000 | PORT16, eflags=FIXED1 | ARITH))
    assert seen == [(port, size)]
    assert_regs(m, code, eax=reg_after, edx=0xABCD0000 | PORT16, eflags=FIXED1 | ARITH)


@pytest.mark.parametrize("code_hex,port,size,value", [
    ("e6 80", PORT8, 1, 0xA1),               # e6 80                 out 0x80, al
    ("66 e7 80", PORT8, 2, 0xB2A1),          # 66 e7 80              out 0x80, ax
    ("e7 80", PORT8, 4, 0xD4C3B2A1),         # e7 80                 out 0x80, eax
    ("ee", PORT16, 1, 0xA1),                 # ee                    out dx, al
    ("66 ef", PORT16, 2, 0xB2A1),            # 66 ef                 out dx, ax
    ("ef", PORT16, 4, 0xD4C3B2A1),           # ef                    out dx, eax
])
def test_out_forms(code_hex, port, size, value):
    m = new_machine()
    seen = []
    m.hook_add(vmcore.HOOK_IO_OUT, lambda mach, p, sz, v: seen.append((p, sz, v)), begin=port, end=port)
    code = asm(code_hex)
    m, _ = run_code(code, machine=m, regs=dict(eax=0xD4C3B2A1, edx=PORT16, eflags=FIXED1 | ARITH))
    assert seen == [(port, size, value)]
    assert_regs(m, code, eax=0xD4C3B2A1, eflags=FIXED1 | ARITH)


def test_io_hook_range_and_sequence():
    m = new_machine()
    log = []
    m.hook_add(vmcore.HOOK_IO_OUT, lambda mach, p, sz, v: log.append(("out", p, v)), begin=0x300, end=0x30F)
    m.hook_add(vmcore.HOOK_IO_IN, lambda mach, p, sz: (log.append(("in", p)), p & 0xFF)[1], begin=0x300, end=0x30F)
    code = prog(
        "ba 00 03 00 00",       # ba 00 03 00 00        mov edx, 0x300
        "b0 41",                # b0 41                 mov al, 0x41
        "ee",                   # ee                    out dx, al
        "42",                   # 42                    inc edx
        "ec",                   # ec                    in al, dx
        "ee",                   # ee                    out dx, al
        "ba 10 03 00 00",       # ba 10 03 00 00        mov edx, 0x310 ; outside the hooks' range
        "ee",                   # ee                    out dx, al
    )
    m, _ = run_code(code, machine=m)
    assert log == [("out", 0x300, 0x41), ("in", 0x301), ("out", 0x301, 0x01)]


def test_unclaimed_port_reads_all_ones():
    code = prog(
        "ba 34 12 00 00",       # ba 34 12 00 00        mov edx, 0x1234
        "ed",                   # ed                    in eax, dx
    )
    m, _ = run_code(code, machine=new_machine())
    assert_regs(m, code, eax=0xFFFFFFFF)


def test_debug_console_port():
    code = prog(
        "b0 48",                # b0 48                 mov al, 0x48
        "e6 e9",                # e6 e9                 out 0xe9, al
        "b0 69",                # b0 69                 mov al, 0x69
        "e6 e9",                # e6 e9                 out 0xe9, al
    )
    m, r = run_code(code, machine=new_machine())
    assert r.console == "Hi"


# ---------------------------------------------------------------------------
# HLT, budget, until
# ---------------------------------------------------------------------------

def test_hlt_exit_eip_and_count():
    code = prog(
        "90",                   # 90                    nop
        "f4",                   # f4                    hlt
        "40",                   # 40                    inc eax ; after the first HLT
    )
    m, r = run_code(code, expect=None)
    assert r.exit == vmcore.Exit.HLT
    assert r.instructions == 2, "HLT counts as one instruction"
    assert_regs(m, code, eip=CODE_GPA + 2, eax=0)
    r = m.run()                 # resumes after the HLT
    assert r.exit == vmcore.Exit.HLT
    assert r.instructions == 2
    assert_regs(m, code, eip=CODE_GPA + 4, eax=1)


def test_budget_and_until():
    code = prog(
        "40",                   # 40                    inc eax
        "40",                   # 40                    inc eax
        "40",                   # 40                    inc eax
        "40",                   # 40                    inc eax
        "43",                   # 43                    inc ebx
    )
    m, r = run_code(code, count=3, machine=new_machine())
    assert r.exit == vmcore.Exit.BUDGET
    assert r.instructions == 3
    assert_regs(m, code, eax=3, eip=CODE_GPA + 3)
    r = m.run(until=CODE_GPA + 4)
    assert r.exit == vmcore.Exit.UNTIL
    assert r.instructions == 1
    assert_regs(m, code, eax=4, ebx=0, eip=CODE_GPA + 4)
    r = m.run()
    assert r.exit == vmcore.Exit.HLT
    assert_regs(m, code, ebx=1, eip=CODE_GPA + 6)
    assert m.stats["instructions"] >= 6


def test_single_step_matches_block_execution():
    code = prog(
        "b9 05 00 00 00",       # b9 05 00 00 00        mov ecx, 5
        "01 c8",                # 01 c8                 add eax, ecx
        "d1 e0",                # d1 e0                 shl eax, 1
        "e2 fa",                # e2 fa                 loop $-4
        "0f 9c c3",             # 0f 9c c3              setl bl
    )
    m1, r1 = run_code(code, machine=new_machine())
    m2 = new_machine()
    run_code(code, machine=m2, count=1)
    steps = 1
    while True:
        r = m2.run(count=1)
        steps += 1
        if r.exit == vmcore.Exit.HLT:
            break
        assert r.exit == vmcore.Exit.BUDGET and r.instructions == 1
        assert steps < 100
    assert steps == r1.instructions
    for name in ("eax", "ebx", "ecx", "edx", "esp", "eip", "eflags"):
        assert m1.reg_read(name) == m2.reg_read(name), name


# ---------------------------------------------------------------------------
# Undefined opcodes: #UD (vector 6), reported at the instruction's own EIP
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("code_hex", [
    "0f 0b",                    # 0f 0b                 ud2
    "0f ff c0",                 # 0f ff c0              (invalid) ud0 eax, eax
    "0f b9 c0",                 # 0f b9 c0              (invalid) ud1 eax, eax
    "fe d0",                    # fe d0                 (invalid) FE /2
    "ff f8",                    # ff f8                 (invalid) FF /7
    "f0 01 d8",                 # f0 01 d8              (invalid) lock add eax, ebx: LOCK needs a memory destination
    "f0 90",                    # f0 90                 (invalid) lock nop
    "f0 8b 03",                 # f0 8b 03              (invalid) lock mov eax, [ebx]: MOV is not lockable
])
def test_undefined_opcode(code_hex):
    code = prog(
        "40",                   # 40                    inc eax
        "90",                   # 90                    nop
    ) + asm(code_hex)
    m, r = run_fault(code, 6, fault_eip=CODE_GPA + 2, regs=dict(ebx=DATA_GPA))
    assert r.exception[1] is None, "#UD has no error code"
    assert_regs(m, code, eax=1)
    assert r.instructions == 2


# ---------------------------------------------------------------------------
# ARPL (SDM Vol. 2 ARPL): raise a selector's RPL; ZF says whether it changed
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dest,src,after,zf", [
    (0x0010, 0x0003, 0x0013, True),     # RPL 0 < 3: raised
    (0x0013, 0x0001, 0x0013, False),    # RPL 3 >= 1: kept
    (0x0012, 0x0002, 0x0012, False),    # equal: kept
    (0xFFF0, 0x1231, 0xFFF1, True),     # only the RPL bits of the source count
])
def test_arpl(dest, src, after, zf):
    code = asm("63 d8")         # 63 d8                 arpl ax, bx
    m, _ = run_code(code, regs=dict(eax=0xABCD0000 | dest, ebx=src, eflags=FIXED1 | CF | (0 if zf else ZF)))
    assert_regs(m, code, eax=0xABCD0000 | after)
    assert_flags(m, CF | (ZF if zf else 0), code=code)      # only ZF changes

    code = asm("63 0b")         # 63 0b                 arpl word ptr [ebx], cx
    m, _ = run_code(code, regs=dict(ebx=DATA_GPA, ecx=src), mem={DATA_GPA: le32(0x55660000 | dest)})
    want = (0x55660000 | dest) if (dest & 3) >= (src & 3) else (0x55660000 | (dest & 0xFFFC) | (src & 3))
    assert read32(m, DATA_GPA) == want
    assert_flags(m, ZF if (dest & 3) < (src & 3) else 0, mask=ZF, code=code)


# ---------------------------------------------------------------------------
# Flag control
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("code_hex,flags_in,flags_out", [
    ("f8", FIXED1 | ARITH, FIXED1 | (ARITH & ~CF)),         # f8                    clc
    ("f9", FIXED1, FIXED1 | CF),                            # f9                    stc
    ("f5", FIXED1 | ZF, FIXED1 | ZF | CF),                  # f5                    cmc
    ("f5", FIXED1 | CF | OF, FIXED1 | OF),                  # f5                    cmc
    ("fc", FIXED1 | DF | ARITH, FIXED1 | ARITH),            # fc                    cld
    ("fd", FIXED1 | SF, FIXED1 | SF | DF),                  # fd                    std
])
def test_flag_control(code_hex, flags_in, flags_out):
    code = asm(code_hex)
    m, _ = run_code(code, regs=dict(eflags=flags_in))
    assert_regs(m, code, eflags=flags_out)


def test_flags_after_arith_then_cmc():
    code = prog(
        "83 e8 01",             # 83 e8 01              sub eax, 1
        "f5",                   # f5                    cmc
    )
    m, _ = run_code(code, regs=dict(eax=0))
    assert_flags(m, SF | AF | PF, code=code)                 # the borrow (CF=1) complemented


# ---------------------------------------------------------------------------
# Prefixes
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("code_hex", [
    "2e 8b 03",                 # 2e 8b 03              mov eax, dword ptr cs:[ebx]
    "36 8b 03",                 # 36 8b 03              mov eax, dword ptr ss:[ebx]
    "3e 8b 03",                 # 3e 8b 03              mov eax, dword ptr ds:[ebx]
    "26 8b 03",                 # 26 8b 03              mov eax, dword ptr es:[ebx]
    "64 8b 03",                 # 64 8b 03              mov eax, dword ptr fs:[ebx]
    "65 8b 03",                 # 65 8b 03              mov eax, dword ptr gs:[ebx]
    "2e 3e 8b 03",              # 2e 3e 8b 03           mov eax, dword ptr ds:[ebx] ; the last override wins
    "66 66 8b 03",              # 66 66 8b 03           mov ax, word ptr [ebx]
    "67 67 8b 07",              # 67 67 8b 07           mov eax, dword ptr [bx]
])
def test_segment_and_size_prefixes(code_hex):
    code = asm(code_hex)
    m, _ = run_code(code, regs=dict(eax=0x11111111, ebx=0xFFFF0000 | DATA_GPA if "67" in code_hex else DATA_GPA),
                    mem={DATA_GPA: le32(0xCAFEF00D)})
    want = 0x1111F00D if code_hex.startswith("66") else 0xCAFEF00D
    assert_regs(m, code, eax=want)


@pytest.mark.parametrize("code_hex,before,after", [
    ("f0 01 03", 0x10, 0x15),               # f0 01 03              lock add dword ptr [ebx], eax
    ("f0 ff 03", 0x10, 0x11),               # f0 ff 03              lock inc dword ptr [ebx]
    ("f0 f7 13", 0x0F, 0xFFFFFFF0),         # f0 f7 13              lock not dword ptr [ebx]
    ("f0 0f ab 03", 0x0, 0x20),             # f0 0f ab 03           lock bts dword ptr [ebx], eax
    ("f0 87 03", 0x10, 0x5),                # f0 87 03              lock xchg dword ptr [ebx], eax
    ("f0 66 01 03", 0xAAAA0010, 0xAAAA0015),    # f0 66 01 03           lock add word ptr [ebx], ax
    ("66 f0 01 03", 0xAAAA0010, 0xAAAA0015),    # 66 f0 01 03           lock add word ptr [ebx], ax
    ("3e f0 29 03", 0x10, 0x0B),            # 3e f0 29 03           lock sub dword ptr ds:[ebx], eax
])
def test_lock_prefix_on_memory_forms(code_hex, before, after):
    code = asm(code_hex)
    m, _ = run_code(code, regs=dict(eax=5, ebx=DATA_GPA), mem={DATA_GPA: le32(before)})
    assert read32(m, DATA_GPA) == after


@pytest.mark.parametrize("code_hex", [
    "2e 89 03",                 # 2e 89 03              mov dword ptr cs:[ebx], eax
    "2e ff 03",                 # 2e ff 03              inc dword ptr cs:[ebx]
    "2e a3 00 40 00 00",        # 2e a3 00 40 00 00     mov dword ptr cs:[0x4000], eax
])
def test_write_through_cs_is_a_general_protection_fault(code_hex):
    """Protected mode: code segments are never writable; a write through CS raises #GP(0)
    (SDM Vol. 3 §5.5; MOV/INC "Protected Mode Exceptions": destination in a non-writable segment)."""
    code = asm(code_hex)
    m, r = run_fault(code, 13, error_code=0, regs=dict(eax=0x12345678, ebx=DATA_GPA),
                     mem={DATA_GPA: le32(0x11111111)})
    assert read32(m, DATA_GPA) == 0x11111111, "the faulting write must not happen"


def test_prefix_and_opcode_across_a_page_boundary():
    """An instruction whose bytes straddle two pages is fetched whole."""
    start = 0x2000 - 3
    m = new_machine()
    m.mem_write(start, bytes.fromhex("66 81 c0 34 12 f4"))      # add ax, 0x1234; hlt
    m.reg_write("eip", start)
    m.reg_write("eax", 0xAAAA0001)
    r = m.run()
    assert r.exit == vmcore.Exit.HLT
    assert m.reg_read("eax") == 0xAAAA1235


# ---------------------------------------------------------------------------
# Self-modifying code
# ---------------------------------------------------------------------------

def test_store_into_the_next_instruction():
    """A store that changes an instruction later in the same straight-line run takes effect
    (SDM Vol. 3 §8.1.3: the processor snoops stores against instructions already fetched)."""
    target = CODE_GPA + 7 + 1          # the imm32 of the mov below
    code = asm("c6 05 id ib", target, 0x2A) + prog(
        "b8 00 00 00 00",       # b8 00 00 00 00        mov eax, 0 ; patched to mov eax, 0x2a
    )
    # c6 05 id ib    mov byte ptr [target], 0x2a
    m, _ = run_code(code)
    assert_regs(m, code, eax=0x2A)


def test_patching_a_block_that_already_ran():
    code = prog(
        "b9 02 00 00 00",       # b9 02 00 00 00        mov ecx, 2
        "b8 01 00 00 00",       # b8 01 00 00 00        mov eax, 1 ; at +5: patched on the first pass
        "01 c3",                # 01 c3                 add ebx, eax
        "c6 05 06 10 00 00 10",     # c6 05 06 10 00 00 10  mov byte ptr [0x1006], 0x10
        "e2 f0",                # e2 f0                 loop $-14 ; back to the mov eax
    )
    m, _ = run_code(code)
    assert_regs(m, code, ebx=0x11, ecx=0)
