"""AND OR XOR TEST NOT (SDM Vol. 2A/2B: AND, OR, XOR, TEST, NOT).

Flags (SDM "Flags Affected"): AND OR XOR TEST clear OF and CF, set SF ZF PF
according to the result, and leave AF undefined (masked here). NOT affects no
flags. TEST writes no operand.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # isa_harness, with or without tests/__init__.py

from isa_harness import (AF, ARITH, CF, DF, EAX_UPPER, FIXED1, GUARD, MASK, MEM_GPA, OF, PF, SF,
                         SIGN, ZF, asm, assert_flags, assert_regs, edges, imm, merge, prog,
                         read_sized, run_binop, run_code, sext, szp)

LOGIC_DEFINED = ARITH & ~AF     # AF is undefined after AND/OR/XOR/TEST


def ref_logic(op, a, b, bits):
    """(result, flags): bitwise result; OF = CF = 0; SF ZF PF from the result."""
    res = {"and": a & b, "or": a | b, "xor": a ^ b, "test": a & b}[op] & MASK[bits]
    return res, szp(res, bits)


# Hand-worked cases, to check ref_logic itself.
HAND = [
    ("and", 8, 0xF0, 0x0F, 0x00, ZF | PF),
    ("or", 8, 0x80, 0x01, 0x81, SF | PF),            # 1000_0001: two ones
    ("xor", 32, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, SF | PF),
    ("xor", 16, 0x1234, 0x1234, 0x0000, ZF | PF),
    ("or", 32, 0x00000100, 0x00000000, 0x00000100, PF),  # low byte 0: even parity
    ("and", 16, 0x8001, 0x8003, 0x8001, SF),          # low byte 0x01: odd
]


@pytest.mark.parametrize("op,bits,a,b,res,fl", HAND)
def test_reference_formula_matches_hand_worked_cases(op, bits, a, b, res, fl):
    assert ref_logic(op, a, b, bits) == (res, fl)


FORMS = {
    ("or", "E,G", 8): "08 d8",              # 08 d8                 or al, bl
    ("or", "G,E", 8): "0a c3",              # 0a c3                 or al, bl
    ("or", "E,G mem", 8): "08 03",          # 08 03                 or byte ptr [ebx], al
    ("or", "G,E mem", 8): "0a 03",          # 0a 03                 or al, byte ptr [ebx]
    ("or", "A,I", 8): "0c ib",              # 0c ib                 or al, imm8
    ("or", "80", 8): "80 c8 ib",            # 80 c8 ib              or al, imm8
    ("or", "82", 8): "82 c8 ib",            # 82 c8 ib              or al, imm8
    ("or", "80 mem", 8): "80 0b ib",        # 80 0b ib              or byte ptr [ebx], imm8
    ("or", "E,G", 16): "66 09 d8",          # 66 09 d8              or ax, bx
    ("or", "G,E", 16): "66 0b c3",          # 66 0b c3              or ax, bx
    ("or", "E,G mem", 16): "66 09 03",      # 66 09 03              or word ptr [ebx], ax
    ("or", "G,E mem", 16): "66 0b 03",      # 66 0b 03              or ax, word ptr [ebx]
    ("or", "A,I", 16): "66 0d iw",          # 66 0d iw              or ax, imm16
    ("or", "81", 16): "66 81 c8 iw",        # 66 81 c8 iw           or ax, imm16
    ("or", "83", 16): "66 83 c8 ib",        # 66 83 c8 ib           or ax, simm8
    ("or", "81 mem", 16): "66 81 0b iw",    # 66 81 0b iw           or word ptr [ebx], imm16
    ("or", "83 mem", 16): "66 83 0b ib",    # 66 83 0b ib           or word ptr [ebx], simm8
    ("or", "E,G", 32): "09 d8",             # 09 d8                 or eax, ebx
    ("or", "G,E", 32): "0b c3",             # 0b c3                 or eax, ebx
    ("or", "E,G mem", 32): "09 03",         # 09 03                 or dword ptr [ebx], eax
    ("or", "G,E mem", 32): "0b 03",         # 0b 03                 or eax, dword ptr [ebx]
    ("or", "A,I", 32): "0d id",             # 0d id                 or eax, imm32
    ("or", "81", 32): "81 c8 id",           # 81 c8 id              or eax, imm32
    ("or", "83", 32): "83 c8 ib",           # 83 c8 ib              or eax, simm8
    ("or", "81 mem", 32): "81 0b id",       # 81 0b id              or dword ptr [ebx], imm32
    ("or", "83 mem", 32): "83 0b ib",       # 83 0b ib              or dword ptr [ebx], simm8
    ("and", "E,G", 8): "20 d8",             # 20 d8                 and al, bl
    ("and", "G,E", 8): "22 c3",             # 22 c3                 and al, bl
    ("and", "E,G mem", 8): "20 03",         # 20 03                 and byte ptr [ebx], al
    ("and", "G,E mem", 8): "22 03",         # 22 03                 and al, byte ptr [ebx]
    ("and", "A,I", 8): "24 ib",             # 24 ib                 and al, imm8
    ("and", "80", 8): "80 e0 ib",           # 80 e0 ib              and al, imm8
    ("and", "82", 8): "82 e0 ib",           # 82 e0 ib              and al, imm8
    ("and", "80 mem", 8): "80 23 ib",       # 80 23 ib              and byte ptr [ebx], imm8
    ("and", "E,G", 16): "66 21 d8",         # 66 21 d8              and ax, bx
    ("and", "G,E", 16): "66 23 c3",         # 66 23 c3              and ax, bx
    ("and", "E,G mem", 16): "66 21 03",     # 66 21 03              and word ptr [ebx], ax
    ("and", "G,E mem", 16): "66 23 03",     # 66 23 03              and ax, word ptr [ebx]
    ("and", "A,I", 16): "66 25 iw",         # 66 25 iw              and ax, imm16
    ("and", "81", 16): "66 81 e0 iw",       # 66 81 e0 iw           and ax, imm16
    ("and", "83", 16): "66 83 e0 ib",       # 66 83 e0 ib           and ax, simm8
    ("and", "81 mem", 16): "66 81 23 iw",   # 66 81 23 iw           and word ptr [ebx], imm16
    ("and", "83 mem", 16): "66 83 23 ib",   # 66 83 23 ib           and word ptr [ebx], simm8
    ("and", "E,G", 32): "21 d8",            # 21 d8                 and eax, ebx
    ("and", "G,E", 32): "23 c3",            # 23 c3                 and eax, ebx
    ("and", "E,G mem", 32): "21 03",        # 21 03                 and dword ptr [ebx], eax
    ("and", "G,E mem", 32): "23 03",        # 23 03                 and eax, dword ptr [ebx]
    ("and", "A,I", 32): "25 id",            # 25 id                 and eax, imm32
    ("and", "81", 32): "81 e0 id",          # 81 e0 id              and eax, imm32
    ("and", "83", 32): "83 e0 ib",          # 83 e0 ib              and eax, simm8
    ("and", "81 mem", 32): "81 23 id",      # 81 23 id              and dword ptr [ebx], imm32
    ("and", "83 mem", 32): "83 23 ib",      # 83 23 ib              and dword ptr [ebx], simm8
    ("xor", "E,G", 8): "30 d8",             # 30 d8                 xor al, bl
    ("xor", "G,E", 8): "32 c3",             # 32 c3                 xor al, bl
    ("xor", "E,G mem", 8): "30 03",         # 30 03                 xor byte ptr [ebx], al
    ("xor", "G,E mem", 8): "32 03",         # 32 03                 xor al, byte ptr [ebx]
    ("xor", "A,I", 8): "34 ib",             # 34 ib                 xor al, imm8
    ("xor", "80", 8): "80 f0 ib",           # 80 f0 ib              xor al, imm8
    ("xor", "82", 8): "82 f0 ib",           # 82 f0 ib              xor al, imm8
    ("xor", "80 mem", 8): "80 33 ib",       # 80 33 ib              xor byte ptr [ebx], imm8
    ("xor", "E,G", 16): "66 31 d8",         # 66 31 d8              xor ax, bx
    ("xor", "G,E", 16): "66 33 c3",         # 66 33 c3              xor ax, bx
    ("xor", "E,G mem", 16): "66 31 03",     # 66 31 03              xor word ptr [ebx], ax
    ("xor", "G,E mem", 16): "66 33 03",     # 66 33 03              xor ax, word ptr [ebx]
    ("xor", "A,I", 16): "66 35 iw",         # 66 35 iw              xor ax, imm16
    ("xor", "81", 16): "66 81 f0 iw",       # 66 81 f0 iw           xor ax, imm16
    ("xor", "83", 16): "66 83 f0 ib",       # 66 83 f0 ib           xor ax, simm8
    ("xor", "81 mem", 16): "66 81 33 iw",   # 66 81 33 iw           xor word ptr [ebx], imm16
    ("xor", "83 mem", 16): "66 83 33 ib",   # 66 83 33 ib           xor word ptr [ebx], simm8
    ("xor", "E,G", 32): "31 d8",            # 31 d8                 xor eax, ebx
    ("xor", "G,E", 32): "33 c3",            # 33 c3                 xor eax, ebx
    ("xor", "E,G mem", 32): "31 03",        # 31 03                 xor dword ptr [ebx], eax
    ("xor", "G,E mem", 32): "33 03",        # 33 03                 xor eax, dword ptr [ebx]
    ("xor", "A,I", 32): "35 id",            # 35 id                 xor eax, imm32
    ("xor", "81", 32): "81 f0 id",          # 81 f0 id              xor eax, imm32
    ("xor", "83", 32): "83 f0 ib",          # 83 f0 ib              xor eax, simm8
    ("xor", "81 mem", 32): "81 33 id",      # 81 33 id              xor dword ptr [ebx], imm32
    ("xor", "83 mem", 32): "83 33 ib",      # 83 33 ib              xor dword ptr [ebx], simm8
}


def _initial(status):
    """Every defined status flag opposite to its expected value, AF and DF set."""
    return FIXED1 | DF | AF | ((~status) & LOGIC_DEFINED)


def run_logic(op, form, bits, a, b):
    res, fl = ref_logic(op, a, b, bits)
    return run_binop(FORMS[(op, form, bits)], form, bits, a, b, result=res, status=fl,
                     init_flags=_initial(fl), writes=op != "test", defined=LOGIC_DEFINED, what=f"{op} ")


def _cases_full():
    for op in ("and", "or", "xor"):
        for bits in (8, 16, 32):
            for a in edges(bits):
                for b in edges(bits):
                    yield pytest.param(op, bits, a, b, id=f"{op}{bits}-{a:#x}-{b:#x}")


@pytest.mark.parametrize("op,bits,a,b", list(_cases_full()))
def test_logic_reg_reg_edge_values(op, bits, a, b):
    run_logic(op, "E,G", bits, a, b)


def _cases_forms():
    for (op, form, bits) in FORMS:
        if form == "E,G":
            continue
        if form in ("83", "83 mem"):
            pairs = [(a, sext(i, 8, bits)) for a in (0, SIGN[bits], MASK[bits], 0x12345678 & MASK[bits])
                     for i in (0x01, 0x7F, 0x80, 0xFF)]
        else:
            m, s = MASK[bits], SIGN[bits]
            pairs = [(0, 0), (m, m), (s, s - 1), (s, m), (0x12345678 & m, 0x0F0F0F0F & m), (0x55 & m, 0xAA & m)]
        for a, b in pairs:
            yield pytest.param(op, form, bits, a, b, id=f"{op}-{form.replace(' ', '_')}-{bits}-{a:#x}-{b:#x}")


@pytest.mark.parametrize("op,form,bits,a,b", list(_cases_forms()))
def test_logic_every_form(op, form, bits, a, b):
    run_logic(op, form, bits, a, b)


# ---------------------------------------------------------------------------
# TEST: AND without writing the result
# ---------------------------------------------------------------------------

TEST_FORMS = {
    ("test", "E,G", 8): "84 d8",            # 84 d8                 test al, bl
    ("test", "E,G", 16): "66 85 d8",        # 66 85 d8              test ax, bx
    ("test", "E,G", 32): "85 d8",           # 85 d8                 test eax, ebx
    ("test", "E,G mem", 8): "84 03",        # 84 03                 test byte ptr [ebx], al
    ("test", "E,G mem", 16): "66 85 03",    # 66 85 03              test word ptr [ebx], ax
    ("test", "E,G mem", 32): "85 03",       # 85 03                 test dword ptr [ebx], eax
    ("test", "A,I", 8): "a8 ib",            # a8 ib                 test al, imm8
    ("test", "A,I", 16): "66 a9 iw",        # 66 a9 iw              test ax, imm16
    ("test", "A,I", 32): "a9 id",           # a9 id                 test eax, imm32
    ("test", "80", 8): "f6 c0 ib",          # f6 c0 ib              test al, imm8
    ("test", "81", 16): "66 f7 c0 iw",      # 66 f7 c0 iw           test ax, imm16
    ("test", "81", 32): "f7 c0 id",         # f7 c0 id              test eax, imm32
    ("test", "80 mem", 8): "f6 03 ib",      # f6 03 ib              test byte ptr [ebx], imm8
    ("test", "81 mem", 16): "66 f7 03 iw",  # 66 f7 03 iw           test word ptr [ebx], imm16
    ("test", "81 mem", 32): "f7 03 id",     # f7 03 id              test dword ptr [ebx], imm32
}


def _cases_test():
    for (op, form, bits) in TEST_FORMS:
        vals = edges(bits)
        pairs = [(a, b) for a in vals for b in vals] if form == "E,G" else \
            [(0, 0), (MASK[bits], SIGN[bits]), (SIGN[bits] - 1, SIGN[bits]), (0x12345678 & MASK[bits], 0x0F0F0F0F & MASK[bits])]
        for a, b in pairs:
            yield pytest.param(form, bits, a, b, id=f"test-{form.replace(' ', '_')}-{bits}-{a:#x}-{b:#x}")


@pytest.mark.parametrize("form,bits,a,b", list(_cases_test()))
def test_test(form, bits, a, b):
    res, fl = ref_logic("test", a, b, bits)
    run_binop(TEST_FORMS[("test", form, bits)], form, bits, a, b, result=res, status=fl,
              init_flags=_initial(fl), writes=False, defined=LOGIC_DEFINED, what="test ")


def test_test_hand_worked():
    code = asm("85 c0")         # 85 c0                 test eax, eax
    m, _ = run_code(code, regs=dict(eax=0x80000000, eflags=FIXED1 | CF | OF | ZF))
    assert_regs(m, code, eax=0x80000000)
    assert_flags(m, SF | PF, mask=LOGIC_DEFINED, code=code)
    code = asm("a8 01")         # a8 01                 test al, 1
    m, _ = run_code(code, regs=dict(eax=0xFFFFFF00))
    assert_flags(m, ZF | PF, mask=LOGIC_DEFINED, code=code)


# ---------------------------------------------------------------------------
# NOT: one's complement, no flags affected
# ---------------------------------------------------------------------------

NOT = {
    8: "f6 d0",                             # f6 d0                 not al
    16: "66 f7 d0",                         # 66 f7 d0              not ax
    32: "f7 d0",                            # f7 d0                 not eax
}
NOT_MEM = {
    8: "f6 13",                             # f6 13                 not byte ptr [ebx]
    16: "66 f7 13",                         # 66 f7 13              not word ptr [ebx]
    32: "f7 13",                            # f7 13                 not dword ptr [ebx]
}


@pytest.mark.parametrize("bits", [8, 16, 32])
@pytest.mark.parametrize("init", [FIXED1, FIXED1 | ARITH | DF], ids=["flags-clear", "flags-set"])
def test_not(bits, init):
    for a in edges(bits):
        want = ~a & MASK[bits]
        code = asm(NOT[bits])
        m, _ = run_code(code, regs=dict(eax=merge(EAX_UPPER, a, bits), eflags=init))
        assert_regs(m, code, eax=merge(EAX_UPPER, want, bits))
        assert_flags(m, init, mask=0xFFFFFFFF, code=code)
        code = asm(NOT_MEM[bits])
        m, _ = run_code(code, regs=dict(ebx=MEM_GPA, eflags=init), mem={MEM_GPA: imm(a, bits) + GUARD})
        assert read_sized(m, MEM_GPA, bits) == want
        assert m.mem_read(MEM_GPA + bits // 8, 4) == GUARD
        assert_flags(m, init, mask=0xFFFFFFFF, code=code)


def test_xor_self_zeroes_and_clears_cf_of():
    code = prog(
        "f9",                   # f9                    stc
        "31 db",                # 31 db                 xor ebx, ebx
    )
    m, _ = run_code(code, regs=dict(ebx=0xFFFFFFFF, eflags=FIXED1 | OF | SF))
    assert_regs(m, code, ebx=0)
    assert_flags(m, ZF | PF, mask=LOGIC_DEFINED, code=code)


def test_logic_high_byte_registers():
    code = asm("20 fc")         # 20 fc                 and ah, bh
    m, _ = run_code(code, regs=dict(eax=0x1122F033, ebx=0x44553C66))
    assert_regs(m, code, eax=0x11223033, ebx=0x44553C66)
    assert_flags(m, PF, mask=LOGIC_DEFINED, code=code)
    code = asm("30 c4")         # 30 c4                 xor ah, al
    m, _ = run_code(code, regs=dict(eax=0x0000FF7F))
    assert_regs(m, code, eax=0x0000807F)
    assert_flags(m, SF, mask=LOGIC_DEFINED, code=code)
