"""ADD ADC SUB SBB CMP INC DEC NEG (SDM Vol. 2A/2B: ADD, ADC, SUB, SBB, CMP, INC, DEC, NEG).

Flags (SDM "Flags Affected"): ADD ADC SUB SBB CMP NEG write all six status flags
(OF SF ZF AF PF CF) according to the result; INC and DEC write OF SF ZF AF PF and
leave CF unchanged; NEG sets CF unless the source is 0. None of them leaves a
status flag undefined, so every test checks the whole EFLAGS register.

Expected values come from ``ref_arith`` below, written from the SDM's definitions
(CF: unsigned carry/borrow out of the operand; OF: the signed result does not fit;
AF: carry/borrow out of bit 3), using Python's unbounded integers rather than the
bit tricks an implementation uses, and cross-checked against hand-worked cases in
``HAND``.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # isa_harness, with or without tests/__init__.py

from isa_harness import (AF, ARITH, CF, DF, EAX_UPPER, FIXED1, GUARD, MASK, MEM_GPA, OF, PF, SF,
                         SIGN, ZF, asm, assert_flags, assert_regs, disasm, edges, flag_names, flags,
                         imm, merge, prog, read_sized, run_binop, run_code, sext, szp, to_signed)

def ref_arith(op, a, b, bits, cin=0):
    """(result, status flags) of ``op a, b`` on ``bits``-bit operands, per the SDM definitions."""
    m = MASK[bits]
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    sa, sb = to_signed(a, bits), to_signed(b, bits)
    if op in ("add", "adc"):
        c = cin if op == "adc" else 0
        u = a + b + c                               # exact unsigned sum
        s = sa + sb + c                             # exact signed sum
        cf = u > m
        af = (a & 0xF) + (b & 0xF) + c > 0xF        # carry out of bit 3
    elif op in ("sub", "sbb", "cmp"):
        c = cin if op == "sbb" else 0
        u = a - b - c
        s = sa - sb - c
        cf = u < 0                                  # borrow
        af = (a & 0xF) - (b & 0xF) - c < 0          # borrow out of bit 4 into bit 3
    else:
        raise ValueError(op)
    res = u & m
    return res, szp(res, bits) | flags(cf=cf, af=af, of=not lo <= s <= hi)


# Hand-worked cases (SDM definitions applied by hand), to check ref_arith itself.
#  op,   bits, a,          b,          cin, result,     flags
HAND = [
    ("add", 8, 0x7F, 0x01, 0, 0x80, OF | SF | AF),                # 0111_1111 + 1: signed overflow, nibble carry
    ("add", 8, 0xFF, 0x01, 0, 0x00, CF | ZF | AF | PF),
    ("add", 32, 0xFFFFFFFF, 0x1, 0, 0x0, CF | ZF | AF | PF),
    ("add", 32, 0x80000000, 0x80000000, 0, 0x0, CF | OF | ZF | PF),
    ("add", 16, 0x1234, 0x4321, 0, 0x5555, PF),                   # 0x55 = 0101_0101: four ones
    ("adc", 16, 0xFFFF, 0x0000, 1, 0x0000, CF | ZF | AF | PF),
    ("adc", 8, 0x7F, 0x00, 1, 0x80, OF | SF | AF),
    ("adc", 32, 0xFFFFFFFF, 0xFFFFFFFF, 1, 0xFFFFFFFF, CF | SF | AF | PF),
    ("sub", 8, 0x80, 0x01, 0, 0x7F, OF | AF),                     # -128 - 1 overflows
    ("sub", 32, 0x1, 0x2, 0, 0xFFFFFFFF, CF | SF | AF | PF),
    ("sub", 16, 0x8000, 0x8000, 0, 0x0, ZF | PF),
    ("sbb", 32, 0x0, 0x0, 1, 0xFFFFFFFF, CF | SF | AF | PF),
    ("sbb", 8, 0x80, 0x7F, 1, 0x00, OF | ZF | AF | PF),           # -128 - 127 - 1 = -256
    ("cmp", 32, 0x7FFFFFFF, 0xFFFFFFFF, 0, 0x80000000, OF | SF | CF | PF),
    ("cmp", 8, 0x10, 0x01, 0, 0x0F, AF | PF),                     # 0x0f: four ones
]


@pytest.mark.parametrize("op,bits,a,b,cin,res,fl", HAND)
def test_reference_formula_matches_hand_worked_cases(op, bits, a, b, cin, res, fl):
    assert ref_arith(op, a, b, bits, cin) == (res, fl), (
        f"ref_arith({op}) = {ref_arith(op, a, b, bits, cin)}, hand-worked {res:#x} {flag_names(fl)}")


# Every ALU form of ADD ADC SUB SBB CMP: (op, form, operand size) -> listing template.
# E,G / G,E: register forms with destination EAX/AX/AL and source EBX/BX/BL;
# "mem" forms address [ebx]; ib/iw/id are the immediate, simm8 a sign-extended imm8.
# 82 /n ib is the 32-bit-mode alias of 80 /n ib (SDM Vol. 2 Appendix A, opcode map note).
FORMS = {
    ("add", "E,G", 8): "00 d8",             # 00 d8                 add al, bl
    ("add", "G,E", 8): "02 c3",             # 02 c3                 add al, bl
    ("add", "E,G mem", 8): "00 03",         # 00 03                 add byte ptr [ebx], al
    ("add", "G,E mem", 8): "02 03",         # 02 03                 add al, byte ptr [ebx]
    ("add", "A,I", 8): "04 ib",             # 04 ib                 add al, imm8
    ("add", "80", 8): "80 c0 ib",           # 80 c0 ib              add al, imm8
    ("add", "82", 8): "82 c0 ib",           # 82 c0 ib              add al, imm8
    ("add", "80 mem", 8): "80 03 ib",       # 80 03 ib              add byte ptr [ebx], imm8
    ("add", "E,G", 16): "66 01 d8",         # 66 01 d8              add ax, bx
    ("add", "G,E", 16): "66 03 c3",         # 66 03 c3              add ax, bx
    ("add", "E,G mem", 16): "66 01 03",     # 66 01 03              add word ptr [ebx], ax
    ("add", "G,E mem", 16): "66 03 03",     # 66 03 03              add ax, word ptr [ebx]
    ("add", "A,I", 16): "66 05 iw",         # 66 05 iw              add ax, imm16
    ("add", "81", 16): "66 81 c0 iw",       # 66 81 c0 iw           add ax, imm16
    ("add", "83", 16): "66 83 c0 ib",       # 66 83 c0 ib           add ax, simm8
    ("add", "81 mem", 16): "66 81 03 iw",   # 66 81 03 iw           add word ptr [ebx], imm16
    ("add", "83 mem", 16): "66 83 03 ib",   # 66 83 03 ib           add word ptr [ebx], simm8
    ("add", "E,G", 32): "01 d8",            # 01 d8                 add eax, ebx
    ("add", "G,E", 32): "03 c3",            # 03 c3                 add eax, ebx
    ("add", "E,G mem", 32): "01 03",        # 01 03                 add dword ptr [ebx], eax
    ("add", "G,E mem", 32): "03 03",        # 03 03                 add eax, dword ptr [ebx]
    ("add", "A,I", 32): "05 id",            # 05 id                 add eax, imm32
    ("add", "81", 32): "81 c0 id",          # 81 c0 id              add eax, imm32
    ("add", "83", 32): "83 c0 ib",          # 83 c0 ib              add eax, simm8
    ("add", "81 mem", 32): "81 03 id",      # 81 03 id              add dword ptr [ebx], imm32
    ("add", "83 mem", 32): "83 03 ib",      # 83 03 ib              add dword ptr [ebx], simm8
    ("adc", "E,G", 8): "10 d8",             # 10 d8                 adc al, bl
    ("adc", "G,E", 8): "12 c3",             # 12 c3                 adc al, bl
    ("adc", "E,G mem", 8): "10 03",         # 10 03                 adc byte ptr [ebx], al
    ("adc", "G,E mem", 8): "12 03",         # 12 03                 adc al, byte ptr [ebx]
    ("adc", "A,I", 8): "14 ib",             # 14 ib                 adc al, imm8
    ("adc", "80", 8): "80 d0 ib",           # 80 d0 ib              adc al, imm8
    ("adc", "82", 8): "82 d0 ib",           # 82 d0 ib              adc al, imm8
    ("adc", "80 mem", 8): "80 13 ib",       # 80 13 ib              adc byte ptr [ebx], imm8
    ("adc", "E,G", 16): "66 11 d8",         # 66 11 d8              adc ax, bx
    ("adc", "G,E", 16): "66 13 c3",         # 66 13 c3              adc ax, bx
    ("adc", "E,G mem", 16): "66 11 03",     # 66 11 03              adc word ptr [ebx], ax
    ("adc", "G,E mem", 16): "66 13 03",     # 66 13 03              adc ax, word ptr [ebx]
    ("adc", "A,I", 16): "66 15 iw",         # 66 15 iw              adc ax, imm16
    ("adc", "81", 16): "66 81 d0 iw",       # 66 81 d0 iw           adc ax, imm16
    ("adc", "83", 16): "66 83 d0 ib",       # 66 83 d0 ib           adc ax, simm8
    ("adc", "81 mem", 16): "66 81 13 iw",   # 66 81 13 iw           adc word ptr [ebx], imm16
    ("adc", "83 mem", 16): "66 83 13 ib",   # 66 83 13 ib           adc word ptr [ebx], simm8
    ("adc", "E,G", 32): "11 d8",            # 11 d8                 adc eax, ebx
    ("adc", "G,E", 32): "13 c3",            # 13 c3                 adc eax, ebx
    ("adc", "E,G mem", 32): "11 03",        # 11 03                 adc dword ptr [ebx], eax
    ("adc", "G,E mem", 32): "13 03",        # 13 03                 adc eax, dword ptr [ebx]
    ("adc", "A,I", 32): "15 id",            # 15 id                 adc eax, imm32
    ("adc", "81", 32): "81 d0 id",          # 81 d0 id              adc eax, imm32
    ("adc", "83", 32): "83 d0 ib",          # 83 d0 ib              adc eax, simm8
    ("adc", "81 mem", 32): "81 13 id",      # 81 13 id              adc dword ptr [ebx], imm32
    ("adc", "83 mem", 32): "83 13 ib",      # 83 13 ib              adc dword ptr [ebx], simm8
    ("sub", "E,G", 8): "28 d8",             # 28 d8                 sub al, bl
    ("sub", "G,E", 8): "2a c3",             # 2a c3                 sub al, bl
    ("sub", "E,G mem", 8): "28 03",         # 28 03                 sub byte ptr [ebx], al
    ("sub", "G,E mem", 8): "2a 03",         # 2a 03                 sub al, byte ptr [ebx]
    ("sub", "A,I", 8): "2c ib",             # 2c ib                 sub al, imm8
    ("sub", "80", 8): "80 e8 ib",           # 80 e8 ib              sub al, imm8
    ("sub", "82", 8): "82 e8 ib",           # 82 e8 ib              sub al, imm8
    ("sub", "80 mem", 8): "80 2b ib",       # 80 2b ib              sub byte ptr [ebx], imm8
    ("sub", "E,G", 16): "66 29 d8",         # 66 29 d8              sub ax, bx
    ("sub", "G,E", 16): "66 2b c3",         # 66 2b c3              sub ax, bx
    ("sub", "E,G mem", 16): "66 29 03",     # 66 29 03              sub word ptr [ebx], ax
    ("sub", "G,E mem", 16): "66 2b 03",     # 66 2b 03              sub ax, word ptr [ebx]
    ("sub", "A,I", 16): "66 2d iw",         # 66 2d iw              sub ax, imm16
    ("sub", "81", 16): "66 81 e8 iw",       # 66 81 e8 iw           sub ax, imm16
    ("sub", "83", 16): "66 83 e8 ib",       # 66 83 e8 ib           sub ax, simm8
    ("sub", "81 mem", 16): "66 81 2b iw",   # 66 81 2b iw           sub word ptr [ebx], imm16
    ("sub", "83 mem", 16): "66 83 2b ib",   # 66 83 2b ib           sub word ptr [ebx], simm8
    ("sub", "E,G", 32): "29 d8",            # 29 d8                 sub eax, ebx
    ("sub", "G,E", 32): "2b c3",            # 2b c3                 sub eax, ebx
    ("sub", "E,G mem", 32): "29 03",        # 29 03                 sub dword ptr [ebx], eax
    ("sub", "G,E mem", 32): "2b 03",        # 2b 03                 sub eax, dword ptr [ebx]
    ("sub", "A,I", 32): "2d id",            # 2d id                 sub eax, imm32
    ("sub", "81", 32): "81 e8 id",          # 81 e8 id              sub eax, imm32
    ("sub", "83", 32): "83 e8 ib",          # 83 e8 ib              sub eax, simm8
    ("sub", "81 mem", 32): "81 2b id",      # 81 2b id              sub dword ptr [ebx], imm32
    ("sub", "83 mem", 32): "83 2b ib",      # 83 2b ib              sub dword ptr [ebx], simm8
    ("sbb", "E,G", 8): "18 d8",             # 18 d8                 sbb al, bl
    ("sbb", "G,E", 8): "1a c3",             # 1a c3                 sbb al, bl
    ("sbb", "E,G mem", 8): "18 03",         # 18 03                 sbb byte ptr [ebx], al
    ("sbb", "G,E mem", 8): "1a 03",         # 1a 03                 sbb al, byte ptr [ebx]
    ("sbb", "A,I", 8): "1c ib",             # 1c ib                 sbb al, imm8
    ("sbb", "80", 8): "80 d8 ib",           # 80 d8 ib              sbb al, imm8
    ("sbb", "82", 8): "82 d8 ib",           # 82 d8 ib              sbb al, imm8
    ("sbb", "80 mem", 8): "80 1b ib",       # 80 1b ib              sbb byte ptr [ebx], imm8
    ("sbb", "E,G", 16): "66 19 d8",         # 66 19 d8              sbb ax, bx
    ("sbb", "G,E", 16): "66 1b c3",         # 66 1b c3              sbb ax, bx
    ("sbb", "E,G mem", 16): "66 19 03",     # 66 19 03              sbb word ptr [ebx], ax
    ("sbb", "G,E mem", 16): "66 1b 03",     # 66 1b 03              sbb ax, word ptr [ebx]
    ("sbb", "A,I", 16): "66 1d iw",         # 66 1d iw              sbb ax, imm16
    ("sbb", "81", 16): "66 81 d8 iw",       # 66 81 d8 iw           sbb ax, imm16
    ("sbb", "83", 16): "66 83 d8 ib",       # 66 83 d8 ib           sbb ax, simm8
    ("sbb", "81 mem", 16): "66 81 1b iw",   # 66 81 1b iw           sbb word ptr [ebx], imm16
    ("sbb", "83 mem", 16): "66 83 1b ib",   # 66 83 1b ib           sbb word ptr [ebx], simm8
    ("sbb", "E,G", 32): "19 d8",            # 19 d8                 sbb eax, ebx
    ("sbb", "G,E", 32): "1b c3",            # 1b c3                 sbb eax, ebx
    ("sbb", "E,G mem", 32): "19 03",        # 19 03                 sbb dword ptr [ebx], eax
    ("sbb", "G,E mem", 32): "1b 03",        # 1b 03                 sbb eax, dword ptr [ebx]
    ("sbb", "A,I", 32): "1d id",            # 1d id                 sbb eax, imm32
    ("sbb", "81", 32): "81 d8 id",          # 81 d8 id              sbb eax, imm32
    ("sbb", "83", 32): "83 d8 ib",          # 83 d8 ib              sbb eax, simm8
    ("sbb", "81 mem", 32): "81 1b id",      # 81 1b id              sbb dword ptr [ebx], imm32
    ("sbb", "83 mem", 32): "83 1b ib",      # 83 1b ib              sbb dword ptr [ebx], simm8
    ("cmp", "E,G", 8): "38 d8",             # 38 d8                 cmp al, bl
    ("cmp", "G,E", 8): "3a c3",             # 3a c3                 cmp al, bl
    ("cmp", "E,G mem", 8): "38 03",         # 38 03                 cmp byte ptr [ebx], al
    ("cmp", "G,E mem", 8): "3a 03",         # 3a 03                 cmp al, byte ptr [ebx]
    ("cmp", "A,I", 8): "3c ib",             # 3c ib                 cmp al, imm8
    ("cmp", "80", 8): "80 f8 ib",           # 80 f8 ib              cmp al, imm8
    ("cmp", "82", 8): "82 f8 ib",           # 82 f8 ib              cmp al, imm8
    ("cmp", "80 mem", 8): "80 3b ib",       # 80 3b ib              cmp byte ptr [ebx], imm8
    ("cmp", "E,G", 16): "66 39 d8",         # 66 39 d8              cmp ax, bx
    ("cmp", "G,E", 16): "66 3b c3",         # 66 3b c3              cmp ax, bx
    ("cmp", "E,G mem", 16): "66 39 03",     # 66 39 03              cmp word ptr [ebx], ax
    ("cmp", "G,E mem", 16): "66 3b 03",     # 66 3b 03              cmp ax, word ptr [ebx]
    ("cmp", "A,I", 16): "66 3d iw",         # 66 3d iw              cmp ax, imm16
    ("cmp", "81", 16): "66 81 f8 iw",       # 66 81 f8 iw           cmp ax, imm16
    ("cmp", "83", 16): "66 83 f8 ib",       # 66 83 f8 ib           cmp ax, simm8
    ("cmp", "81 mem", 16): "66 81 3b iw",   # 66 81 3b iw           cmp word ptr [ebx], imm16
    ("cmp", "83 mem", 16): "66 83 3b ib",   # 66 83 3b ib           cmp word ptr [ebx], simm8
    ("cmp", "E,G", 32): "39 d8",            # 39 d8                 cmp eax, ebx
    ("cmp", "G,E", 32): "3b c3",            # 3b c3                 cmp eax, ebx
    ("cmp", "E,G mem", 32): "39 03",        # 39 03                 cmp dword ptr [ebx], eax
    ("cmp", "G,E mem", 32): "3b 03",        # 3b 03                 cmp eax, dword ptr [ebx]
    ("cmp", "A,I", 32): "3d id",            # 3d id                 cmp eax, imm32
    ("cmp", "81", 32): "81 f8 id",          # 81 f8 id              cmp eax, imm32
    ("cmp", "83", 32): "83 f8 ib",          # 83 f8 ib              cmp eax, simm8
    ("cmp", "81 mem", 32): "81 3b id",      # 81 3b id              cmp dword ptr [ebx], imm32
    ("cmp", "83 mem", 32): "83 3b ib",      # 83 3b ib              cmp dword ptr [ebx], simm8
}

ARITH_OPS = ("add", "adc", "sub", "sbb", "cmp")


def _cases_full():
    for op in ARITH_OPS:
        for bits in (8, 16, 32):
            for a in edges(bits):
                for b in edges(bits):
                    for cin in ((0, 1) if op in ("adc", "sbb") else (0,)):
                        yield pytest.param(op, bits, a, b, cin, id=f"{op}{bits}-{a:#x}-{b:#x}-c{cin}")


def _initial_flags(op, expected_flags, cin):
    """Start with every status flag opposite to its expected value (so each one must be written),
    CF = carry-in for ADC/SBB, and DF set (it must survive)."""
    f = (~expected_flags) & ARITH
    if op in ("adc", "sbb"):
        f = (f & ~CF) | (CF if cin else 0)
    return FIXED1 | DF | f


def run_alu(op, form, bits, a, b, cin=0):
    res, fl = ref_arith(op, a, b, bits, cin)
    return run_binop(FORMS[(op, form, bits)], form, bits, a, b, result=res, status=fl,
                     init_flags=_initial_flags(op, fl, cin), writes=op != "cmp", what=f"{op} cf_in={cin} ")


@pytest.mark.parametrize("op,bits,a,b,cin", list(_cases_full()))
def test_alu_reg_reg_edge_values(op, bits, a, b, cin):
    """``op eax/ax/al, ebx/bx/bl`` over every pair of edge values."""
    run_alu(op, "E,G", bits, a, b, cin)


def _small_pairs(bits):
    m, s = MASK[bits], SIGN[bits]
    return [(0, 0), (1, m), (s - 1, 1), (s, 1), (s, s), (m, m), (0x12345678 & m, 0x9ABCDEF1 & m), (0x0F, 0x01)]


def _cases_forms():
    for (op, form, bits) in FORMS:
        if form == "E,G":
            continue
        if form in ("83", "83 mem"):
            pairs = [(a, sext(i, 8, bits)) for a in (0, 1, SIGN[bits] - 1, SIGN[bits], MASK[bits])
                     for i in (0x01, 0x7F, 0x80, 0xFF)]
        else:
            pairs = _small_pairs(bits)
        for a, b in pairs:
            for cin in ((0, 1) if op in ("adc", "sbb") else (0,)):
                yield pytest.param(op, form, bits, a, b, cin, id=f"{op}-{form.replace(' ', '_')}-{bits}-{a:#x}-{b:#x}-c{cin}")


@pytest.mark.parametrize("op,form,bits,a,b,cin", list(_cases_forms()))
def test_alu_every_form(op, form, bits, a, b, cin):
    """Every encoding (G,E / memory / AL,Ib / eAX,Iz / 80 81 82 83 groups) computes the same thing."""
    run_alu(op, form, bits, a, b, cin)


def test_alu_high_byte_registers():
    code = asm("00 fc")         # 00 fc                 add ah, bh
    m, _ = run_code(code, regs=dict(eax=0x11228833, ebx=0x44559966))
    assert_regs(m, code, eax=0x11222133, ebx=0x44559966)     # 0x88 + 0x99 = 0x121
    assert_flags(m, CF | AF | PF | OF, code=code)               # 0x21: two ones; -120 + -103 < -128
    code = asm("28 e7")         # 28 e7                 sub bh, ah
    m, _ = run_code(code, regs=dict(eax=0x0000FF00, ebx=0x00000100))
    assert_regs(m, code, ebx=0x00000200, eax=0x0000FF00)     # 1 - (-1) = 2
    assert_flags(m, CF | AF, code=code)                         # 0x01 < 0xff: borrow; 0x1 < 0xf: AF


def test_add_adc_chain_is_64_bit_add():
    code = prog(
        "01 c8",                # 01 c8                 add eax, ecx
        "11 da",                # 11 da                 adc edx, ebx
    )
    a, b = 0x00000001_FFFFFFFF, 0x00000002_00000001
    m, _ = run_code(code, regs=dict(eax=a & 0xFFFFFFFF, edx=a >> 32, ecx=b & 0xFFFFFFFF, ebx=b >> 32))
    s = a + b
    assert_regs(m, code, eax=s & 0xFFFFFFFF, edx=s >> 32)


def test_sub_sbb_chain_is_64_bit_sub():
    code = prog(
        "29 c8",                # 29 c8                 sub eax, ecx
        "19 da",                # 19 da                 sbb edx, ebx
    )
    a, b = 0x00000005_00000000, 0x00000002_00000001
    m, _ = run_code(code, regs=dict(eax=a & 0xFFFFFFFF, edx=a >> 32, ecx=b & 0xFFFFFFFF, ebx=b >> 32))
    d = a - b
    assert_regs(m, code, eax=d & 0xFFFFFFFF, edx=d >> 32)


def test_sub_reg_from_itself():
    code = asm("29 c0")         # 29 c0                 sub eax, eax
    m, _ = run_code(code, regs=dict(eax=0x12345678, eflags=FIXED1 | CF | SF | OF | AF))
    assert_regs(m, code, eax=0)
    assert_flags(m, ZF | PF, code=code)


@pytest.mark.parametrize("cin", [0, 1])
def test_sbb_reg_from_itself_is_minus_cf(cin):
    code = asm("19 c9")         # 19 c9                 sbb ecx, ecx
    m, _ = run_code(code, regs=dict(ecx=0xDEADBEEF, eflags=FIXED1 | cin))
    assert_regs(m, code, ecx=0xFFFFFFFF if cin else 0)
    assert_flags(m, (CF | SF | AF | PF) if cin else (ZF | PF), code=code)


# ---------------------------------------------------------------------------
# INC / DEC: OF SF ZF AF PF as ADD/SUB of 1; CF unchanged
# ---------------------------------------------------------------------------

INCDEC = {
    ("inc", 8): "fe c0",                    # fe c0                 inc al
    ("inc", 16): "66 40",                   # 66 40                 inc ax
    ("inc", 32): "40",                      # 40                    inc eax
    ("dec", 8): "fe c8",                    # fe c8                 dec al
    ("dec", 16): "66 48",                   # 66 48                 dec ax
    ("dec", 32): "48",                      # 48                    dec eax
}
INCDEC_ALT = {   # the ModRM encodings of the same register forms
    ("inc", 16): "66 ff c0",                # 66 ff c0              inc ax
    ("inc", 32): "ff c0",                   # ff c0                 inc eax
    ("dec", 16): "66 ff c8",                # 66 ff c8              dec ax
    ("dec", 32): "ff c8",                   # ff c8                 dec eax
}
INCDEC_MEM = {
    ("inc", 8): "fe 03",                    # fe 03                 inc byte ptr [ebx]
    ("inc", 16): "66 ff 03",                # 66 ff 03              inc word ptr [ebx]
    ("inc", 32): "ff 03",                   # ff 03                 inc dword ptr [ebx]
    ("dec", 8): "fe 0b",                    # fe 0b                 dec byte ptr [ebx]
    ("dec", 16): "66 ff 0b",                # 66 ff 0b              dec word ptr [ebx]
    ("dec", 32): "ff 0b",                   # ff 0b                 dec dword ptr [ebx]
}


def _incdec_expect(op, a, bits, cf_in):
    res, fl = ref_arith("add" if op == "inc" else "sub", a, 1, bits)
    return res, (fl & ~CF) | (CF if cf_in else 0)


@pytest.mark.parametrize("cf_in", [0, 1])
@pytest.mark.parametrize("op,bits,form", [(op, bits, form) for form, table in
                                          (("short", INCDEC), ("modrm", INCDEC_ALT), ("mem", INCDEC_MEM))
                                          for (op, bits) in table])
def test_inc_dec(op, bits, cf_in, form):
    table = {"short": INCDEC, "modrm": INCDEC_ALT, "mem": INCDEC_MEM}[form]
    code = asm(table[(op, bits)])
    for a in edges(bits):
        res, fl = _incdec_expect(op, a, bits, cf_in)
        init = FIXED1 | ((~fl) & ARITH & ~CF) | (CF if cf_in else 0)
        if form == "mem":
            m, _ = run_code(code, regs=dict(ebx=MEM_GPA, eflags=init), mem={MEM_GPA: imm(a, bits) + GUARD})
            got = read_sized(m, MEM_GPA, bits)
            assert got == res, f"{op} [mem] {a:#x}: {got:#x}, expected {res:#x}\n{disasm(code)}"
            assert m.mem_read(MEM_GPA + bits // 8, 4) == GUARD
        else:
            m, _ = run_code(code, regs=dict(eax=merge(EAX_UPPER, a, bits), eflags=init))
            assert_regs(m, code, eax=merge(EAX_UPPER, res, bits))
        assert_flags(m, FIXED1 | fl, mask=0xFFFFFFFF, what=f"{op}{bits} {a:#x} cf={cf_in}: ", code=code)


# 40+r / 48+r for every register, including ESP
INC_R32 = ["40", "41", "42", "43", "44", "45", "46", "47"]   # 40..47  inc eax..inc edi
DEC_R32 = ["48", "49", "4a", "4b", "4c", "4d", "4e", "4f"]   # 48..4f  dec eax..dec edi
REGS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")


@pytest.mark.parametrize("r", range(8))
def test_inc_dec_every_register(r):
    init = {name: 0x1000 * (i + 1) + i for i, name in enumerate(REGS)}
    code = prog(INC_R32[r], INC_R32[r], DEC_R32[r])       # inc r; inc r; dec r
    m, _ = run_code(code, regs=init)
    want = dict(init)
    want[REGS[r]] += 1
    assert_regs(m, code, **want)


# ---------------------------------------------------------------------------
# NEG: 0 - src; CF = (src != 0); flags otherwise as SUB 0, src
# ---------------------------------------------------------------------------

NEG = {
    8: "f6 d8",                             # f6 d8                 neg al
    16: "66 f7 d8",                         # 66 f7 d8              neg ax
    32: "f7 d8",                            # f7 d8                 neg eax
}
NEG_MEM = {
    8: "f6 1b",                             # f6 1b                 neg byte ptr [ebx]
    16: "66 f7 1b",                         # 66 f7 1b              neg word ptr [ebx]
    32: "f7 1b",                            # f7 1b                 neg dword ptr [ebx]
}


def ref_neg(a, bits):
    res, fl = ref_arith("sub", 0, a, bits)
    assert bool(fl & CF) == (a != 0)        # the SDM's own statement of CF for NEG
    return res, fl


@pytest.mark.parametrize("bits", [8, 16, 32])
@pytest.mark.parametrize("mem", [False, True], ids=["reg", "mem"])
def test_neg(bits, mem):
    for a in edges(bits):
        res, fl = ref_neg(a, bits)
        init = FIXED1 | ((~fl) & ARITH)
        if mem:
            code = asm(NEG_MEM[bits])
            m, _ = run_code(code, regs=dict(ebx=MEM_GPA, eflags=init), mem={MEM_GPA: imm(a, bits) + GUARD})
            assert read_sized(m, MEM_GPA, bits) == res
            assert m.mem_read(MEM_GPA + bits // 8, 4) == GUARD
        else:
            code = asm(NEG[bits])
            m, _ = run_code(code, regs=dict(eax=merge(EAX_UPPER, a, bits), eflags=init))
            assert_regs(m, code, eax=merge(EAX_UPPER, res, bits))
        assert_flags(m, FIXED1 | fl, mask=0xFFFFFFFF, what=f"neg{bits} {a:#x}: ", code=code)


def test_neg_hand_worked():
    code = asm(NEG[32])
    m, _ = run_code(code, regs=dict(eax=0x80000000))
    assert_regs(m, code, eax=0x80000000)                 # -(-2^31) does not fit
    assert_flags(m, CF | OF | SF | PF, code=code)
    m, _ = run_code(code, regs=dict(eax=0, eflags=FIXED1 | CF))
    assert_regs(m, code, eax=0)
    assert_flags(m, ZF | PF, code=code)                  # source 0: CF cleared
    code = asm(NEG[8])
    m, _ = run_code(code, regs=dict(eax=0x01))
    assert_regs(m, code, eax=0xFF)
    assert_flags(m, CF | SF | AF | PF, code=code)
