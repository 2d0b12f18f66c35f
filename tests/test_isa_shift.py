"""SHL SHR SAR ROL ROR RCL RCR SHLD SHRD (SDM Vol. 2B: SAL/SAR/SHL/SHR, RCL/RCR/ROL/ROR, SHLD, SHRD).

What the SDM defines, and what these tests therefore check:

* The count is masked to 5 bits (0..31). A masked count of 0 changes nothing, flags included.
* SHL/SHR/SAR: CF = last bit shifted out (undefined for SHL/SHR when the count is >= the
  operand size, so masked there; SAR's stays defined: it is the sign), SF ZF PF from the
  result, OF only for a count of 1 (SHL: MSB(result) xor CF; SAR: 0; SHR: MSB of the
  original), AF undefined for a nonzero count.
* ROL/ROR: rotate by count mod size; when the masked count is nonzero CF = LSB (ROL) or
  MSB (ROR) of the result, even when count mod size is 0; OF only for a count of 1
  (ROL: MSB xor CF; ROR: xor of the two most significant bits). SF ZF AF PF unaffected.
* RCL/RCR: rotate through CF by (count & 31) mod 9 (8-bit), mod 17 (16-bit), or count & 31
  (32-bit); OF only for a count of 1 (RCL: MSB(result) xor CF after; RCR: MSB(original) xor
  CF before). SF ZF AF PF unaffected.
* SHLD/SHRD: count 0 changes nothing; for 1 <= count <= operand size CF = last bit shifted
  out of the destination, SF ZF PF from the result, OF for a count of 1 (sign change), AF
  undefined. A count greater than the operand size (16-bit forms, counts 17..31) leaves
  result and flags undefined and is not tested.

The ``ref_*`` functions below follow the SDM's "Operation" pseudo-code bit by bit.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # isa_harness, with or without tests/__init__.py

from isa_harness import (AF, ARITH, CF, DF, EAX_UPPER, FIXED1, GUARD, MASK, MEM_GPA, OF, PF, SF,
                         SIGN, ZF, Failures, asm, assert_flags, assert_regs, disasm, imm, merge,
                         read_sized, run_code, szp)


def _msb(v, bits):
    return (v >> (bits - 1)) & 1


def ref_shift(op, dest, count, bits, eflags_in):
    """(result, status flags, defined status flags) per the SDM's Operation sections."""
    m = MASK[bits]
    masked = count & 0x1F
    if masked == 0:
        return dest, eflags_in & ARITH, ARITH
    cf = eflags_in & CF
    d = dest
    if op in ("shl", "shr", "sar"):
        for _ in range(masked):
            if op == "shl":
                cf = _msb(d, bits)
                d = (d << 1) & m
            elif op == "shr":
                cf = d & 1
                d >>= 1
            else:
                cf = d & 1
                d = (d >> 1) | (d & SIGN[bits])
        status = szp(d, bits) | (CF if cf else 0)
        defined = CF | SF | ZF | PF
        if masked == 1:
            of = {"shl": _msb(d, bits) ^ cf, "sar": 0, "shr": _msb(dest, bits)}[op]
            status |= OF if of else 0
            defined |= OF
        if op in ("shl", "shr") and masked >= bits:
            defined &= ~CF
        return d, status, defined
    keep = eflags_in & (SF | ZF | AF | PF)       # rotates leave these alone
    if op in ("rol", "ror"):
        for _ in range(masked % bits):
            if op == "rol":
                d = ((d << 1) & m) | _msb(d, bits)
            else:
                d = (d >> 1) | ((d & 1) << (bits - 1))
        cf = d & 1 if op == "rol" else _msb(d, bits)
        of = _msb(d, bits) ^ cf if op == "rol" else _msb(d, bits) ^ ((d >> (bits - 2)) & 1)
    elif op in ("rcl", "rcr"):
        temp = masked % (bits + 1) if bits < 32 else masked
        if op == "rcr":
            of = _msb(dest, bits) ^ cf
        for _ in range(temp):
            if op == "rcl":
                out = _msb(d, bits)
                d = ((d << 1) & m) | cf
            else:
                out = d & 1
                d = (d >> 1) | (cf << (bits - 1))
            cf = out
        if op == "rcl":
            of = _msb(d, bits) ^ cf
    else:
        raise ValueError(op)
    status = keep | (CF if cf else 0)
    defined = ARITH & ~OF
    if masked == 1:
        status |= OF if of else 0
        defined |= OF
    return d, status, defined


def ref_shxd(op, dest, src, count, bits, eflags_in):
    """SHLD/SHRD: (result, status, defined); None for the undefined counts."""
    masked = count & 0x1F
    if masked == 0:
        return dest, eflags_in & ARITH, ARITH
    if masked > bits:
        return None
    d = [(dest >> i) & 1 for i in range(bits)]
    s = [(src >> i) & 1 for i in range(bits)]
    if op == "shld":
        cf = d[bits - masked]
        r = [0] * bits
        for i in range(bits - 1, masked - 1, -1):
            r[i] = d[i - masked]
        for i in range(masked - 1, -1, -1):
            r[i] = s[i - masked + bits]
    else:
        cf = d[masked - 1]
        r = [0] * bits
        for i in range(0, bits - masked):
            r[i] = d[i + masked]
        for i in range(bits - masked, bits):
            r[i] = s[i + masked - bits]
    res = sum(b << i for i, b in enumerate(r))
    status = szp(res, bits) | (CF if cf else 0)
    defined = CF | SF | ZF | PF
    if masked == 1:
        status |= OF if _msb(res, bits) != _msb(dest, bits) else 0
        defined |= OF
    return res, status, defined


# Hand-worked cases, to check the reference functions themselves.
#  op,  bits, dest,  count, cf_in, result, status (defined bits only), defined
HAND = [
    ("shl", 8, 0x80, 1, 0, 0x00, CF | OF | ZF | PF, CF | OF | SF | ZF | PF),
    ("shl", 32, 0x40000000, 1, 0, 0x80000000, OF | SF | PF, CF | OF | SF | ZF | PF),
    ("shr", 8, 0x81, 1, 0, 0x40, CF | OF, CF | OF | SF | ZF | PF),
    ("sar", 32, 0x80000000, 31, 0, 0xFFFFFFFF, SF | PF, CF | SF | ZF | PF),
    ("sar", 8, 0x80, 20, 0, 0xFF, CF | SF | PF, CF | SF | ZF | PF),
    ("shl", 8, 0xFF, 9, 0, 0x00, ZF | PF, SF | ZF | PF),
    ("rol", 8, 0x80, 8, 0, 0x80, 0, ARITH & ~OF),            # rotate by 8 = identity; CF = LSB = 0
    ("rol", 16, 0x8001, 16, 0, 0x8001, CF, ARITH & ~OF),
    ("rol", 32, 0x80000000, 1, 0, 0x00000001, CF | OF, ARITH),
    ("ror", 32, 0x00000001, 1, 0, 0x80000000, CF | OF, ARITH),
    ("rcr", 8, 0x01, 1, 1, 0x80, CF | OF, ARITH),
    ("rcl", 8, 0x80, 1, 0, 0x00, CF | OF, ARITH),
    ("rcl", 8, 0x55, 9, 1, 0x55, CF, ARITH & ~OF),           # 9 mod 9 = 0: nothing moves
    ("rcl", 32, 0x00000001, 31, 1, 0xC0000000, 0, ARITH & ~OF),
]


@pytest.mark.parametrize("op,bits,dest,count,cf_in,res,status,defined", HAND)
def test_reference_formula_matches_hand_worked_cases(op, bits, dest, count, cf_in, res, status, defined):
    r, st, df = ref_shift(op, dest, count, bits, FIXED1 | cf_in)
    assert (r, st & df, df) == (res, status, defined), f"ref {r:#x} {st:#x} {df:#x}"


SHXD_HAND = [
    ("shld", 32, 0x12345678, 0x9ABCDEF0, 4, 0x23456789, CF, CF | SF | ZF | PF),       # bit 28 of dest: 1; 0x89 odd
    ("shrd", 32, 0x12345678, 0x9ABCDEF0, 4, 0x01234567, CF, CF | SF | ZF | PF),       # bit 3 of dest: 1
    ("shld", 16, 0x8001, 0x1234, 16, 0x1234, CF, CF | SF | ZF | PF),    # CF = bit 0 of dest; 0x34 odd
    ("shrd", 16, 0x8001, 0x1234, 16, 0x1234, CF, CF | SF | ZF | PF),    # CF = bit 15 of dest
    ("shld", 32, 0x40000000, 0x0, 1, 0x80000000, OF | SF | PF, ARITH & ~AF),
]


@pytest.mark.parametrize("op,bits,dest,src,count,res,status,defined", SHXD_HAND)
def test_shxd_reference_matches_hand_worked_cases(op, bits, dest, src, count, res, status, defined):
    r, st, df = ref_shxd(op, dest, src, count, bits, FIXED1)
    assert (r, st & df, df) == (res, status, defined)


FORMS = {
    ("rol", "1", 8): "d0 c0",               # d0 c0                 rol al, 1
    ("rol", "cl", 8): "d2 c0",              # d2 c0                 rol al, cl
    ("rol", "imm", 8): "c0 c0 ib",          # c0 c0 ib              rol al, imm8
    ("rol", "1 mem", 8): "d0 03",           # d0 03                 rol byte ptr [ebx], 1
    ("rol", "cl mem", 8): "d2 03",          # d2 03                 rol byte ptr [ebx], cl
    ("rol", "imm mem", 8): "c0 03 ib",      # c0 03 ib              rol byte ptr [ebx], imm8
    ("rol", "1", 16): "66 d1 c0",           # 66 d1 c0              rol ax, 1
    ("rol", "cl", 16): "66 d3 c0",          # 66 d3 c0              rol ax, cl
    ("rol", "imm", 16): "66 c1 c0 ib",      # 66 c1 c0 ib           rol ax, imm8
    ("rol", "1 mem", 16): "66 d1 03",       # 66 d1 03              rol word ptr [ebx], 1
    ("rol", "cl mem", 16): "66 d3 03",      # 66 d3 03              rol word ptr [ebx], cl
    ("rol", "imm mem", 16): "66 c1 03 ib",  # 66 c1 03 ib           rol word ptr [ebx], imm8
    ("rol", "1", 32): "d1 c0",              # d1 c0                 rol eax, 1
    ("rol", "cl", 32): "d3 c0",             # d3 c0                 rol eax, cl
    ("rol", "imm", 32): "c1 c0 ib",         # c1 c0 ib              rol eax, imm8
    ("rol", "1 mem", 32): "d1 03",          # d1 03                 rol dword ptr [ebx], 1
    ("rol", "cl mem", 32): "d3 03",         # d3 03                 rol dword ptr [ebx], cl
    ("rol", "imm mem", 32): "c1 03 ib",     # c1 03 ib              rol dword ptr [ebx], imm8
    ("ror", "1", 8): "d0 c8",               # d0 c8                 ror al, 1
    ("ror", "cl", 8): "d2 c8",              # d2 c8                 ror al, cl
    ("ror", "imm", 8): "c0 c8 ib",          # c0 c8 ib              ror al, imm8
    ("ror", "1 mem", 8): "d0 0b",           # d0 0b                 ror byte ptr [ebx], 1
    ("ror", "cl mem", 8): "d2 0b",          # d2 0b                 ror byte ptr [ebx], cl
    ("ror", "imm mem", 8): "c0 0b ib",      # c0 0b ib              ror byte ptr [ebx], imm8
    ("ror", "1", 16): "66 d1 c8",           # 66 d1 c8              ror ax, 1
    ("ror", "cl", 16): "66 d3 c8",          # 66 d3 c8              ror ax, cl
    ("ror", "imm", 16): "66 c1 c8 ib",      # 66 c1 c8 ib           ror ax, imm8
    ("ror", "1 mem", 16): "66 d1 0b",       # 66 d1 0b              ror word ptr [ebx], 1
    ("ror", "cl mem", 16): "66 d3 0b",      # 66 d3 0b              ror word ptr [ebx], cl
    ("ror", "imm mem", 16): "66 c1 0b ib",  # 66 c1 0b ib           ror word ptr [ebx], imm8
    ("ror", "1", 32): "d1 c8",              # d1 c8                 ror eax, 1
    ("ror", "cl", 32): "d3 c8",             # d3 c8                 ror eax, cl
    ("ror", "imm", 32): "c1 c8 ib",         # c1 c8 ib              ror eax, imm8
    ("ror", "1 mem", 32): "d1 0b",          # d1 0b                 ror dword ptr [ebx], 1
    ("ror", "cl mem", 32): "d3 0b",         # d3 0b                 ror dword ptr [ebx], cl
    ("ror", "imm mem", 32): "c1 0b ib",     # c1 0b ib              ror dword ptr [ebx], imm8
    ("rcl", "1", 8): "d0 d0",               # d0 d0                 rcl al, 1
    ("rcl", "cl", 8): "d2 d0",              # d2 d0                 rcl al, cl
    ("rcl", "imm", 8): "c0 d0 ib",          # c0 d0 ib              rcl al, imm8
    ("rcl", "1 mem", 8): "d0 13",           # d0 13                 rcl byte ptr [ebx]
    ("rcl", "cl mem", 8): "d2 13",          # d2 13                 rcl byte ptr [ebx], cl
    ("rcl", "imm mem", 8): "c0 13 ib",      # c0 13 ib              rcl byte ptr [ebx], imm8
    ("rcl", "1", 16): "66 d1 d0",           # 66 d1 d0              rcl ax, 1
    ("rcl", "cl", 16): "66 d3 d0",          # 66 d3 d0              rcl ax, cl
    ("rcl", "imm", 16): "66 c1 d0 ib",      # 66 c1 d0 ib           rcl ax, imm8
    ("rcl", "1 mem", 16): "66 d1 13",       # 66 d1 13              rcl word ptr [ebx]
    ("rcl", "cl mem", 16): "66 d3 13",      # 66 d3 13              rcl word ptr [ebx], cl
    ("rcl", "imm mem", 16): "66 c1 13 ib",  # 66 c1 13 ib           rcl word ptr [ebx], imm8
    ("rcl", "1", 32): "d1 d0",              # d1 d0                 rcl eax, 1
    ("rcl", "cl", 32): "d3 d0",             # d3 d0                 rcl eax, cl
    ("rcl", "imm", 32): "c1 d0 ib",         # c1 d0 ib              rcl eax, imm8
    ("rcl", "1 mem", 32): "d1 13",          # d1 13                 rcl dword ptr [ebx]
    ("rcl", "cl mem", 32): "d3 13",         # d3 13                 rcl dword ptr [ebx], cl
    ("rcl", "imm mem", 32): "c1 13 ib",     # c1 13 ib              rcl dword ptr [ebx], imm8
    ("rcr", "1", 8): "d0 d8",               # d0 d8                 rcr al, 1
    ("rcr", "cl", 8): "d2 d8",              # d2 d8                 rcr al, cl
    ("rcr", "imm", 8): "c0 d8 ib",          # c0 d8 ib              rcr al, imm8
    ("rcr", "1 mem", 8): "d0 1b",           # d0 1b                 rcr byte ptr [ebx], 1
    ("rcr", "cl mem", 8): "d2 1b",          # d2 1b                 rcr byte ptr [ebx], cl
    ("rcr", "imm mem", 8): "c0 1b ib",      # c0 1b ib              rcr byte ptr [ebx], imm8
    ("rcr", "1", 16): "66 d1 d8",           # 66 d1 d8              rcr ax, 1
    ("rcr", "cl", 16): "66 d3 d8",          # 66 d3 d8              rcr ax, cl
    ("rcr", "imm", 16): "66 c1 d8 ib",      # 66 c1 d8 ib           rcr ax, imm8
    ("rcr", "1 mem", 16): "66 d1 1b",       # 66 d1 1b              rcr word ptr [ebx], 1
    ("rcr", "cl mem", 16): "66 d3 1b",      # 66 d3 1b              rcr word ptr [ebx], cl
    ("rcr", "imm mem", 16): "66 c1 1b ib",  # 66 c1 1b ib           rcr word ptr [ebx], imm8
    ("rcr", "1", 32): "d1 d8",              # d1 d8                 rcr eax, 1
    ("rcr", "cl", 32): "d3 d8",             # d3 d8                 rcr eax, cl
    ("rcr", "imm", 32): "c1 d8 ib",         # c1 d8 ib              rcr eax, imm8
    ("rcr", "1 mem", 32): "d1 1b",          # d1 1b                 rcr dword ptr [ebx], 1
    ("rcr", "cl mem", 32): "d3 1b",         # d3 1b                 rcr dword ptr [ebx], cl
    ("rcr", "imm mem", 32): "c1 1b ib",     # c1 1b ib              rcr dword ptr [ebx], imm8
    ("shl", "1", 8): "d0 e0",               # d0 e0                 shl al, 1
    ("shl", "cl", 8): "d2 e0",              # d2 e0                 shl al, cl
    ("shl", "imm", 8): "c0 e0 ib",          # c0 e0 ib              shl al, imm8
    ("shl", "1 mem", 8): "d0 23",           # d0 23                 shl byte ptr [ebx], 1
    ("shl", "cl mem", 8): "d2 23",          # d2 23                 shl byte ptr [ebx], cl
    ("shl", "imm mem", 8): "c0 23 ib",      # c0 23 ib              shl byte ptr [ebx], imm8
    ("shl", "1", 16): "66 d1 e0",           # 66 d1 e0              shl ax, 1
    ("shl", "cl", 16): "66 d3 e0",          # 66 d3 e0              shl ax, cl
    ("shl", "imm", 16): "66 c1 e0 ib",      # 66 c1 e0 ib           shl ax, imm8
    ("shl", "1 mem", 16): "66 d1 23",       # 66 d1 23              shl word ptr [ebx], 1
    ("shl", "cl mem", 16): "66 d3 23",      # 66 d3 23              shl word ptr [ebx], cl
    ("shl", "imm mem", 16): "66 c1 23 ib",  # 66 c1 23 ib           shl word ptr [ebx], imm8
    ("shl", "1", 32): "d1 e0",              # d1 e0                 shl eax, 1
    ("shl", "cl", 32): "d3 e0",             # d3 e0                 shl eax, cl
    ("shl", "imm", 32): "c1 e0 ib",         # c1 e0 ib              shl eax, imm8
    ("shl", "1 mem", 32): "d1 23",          # d1 23                 shl dword ptr [ebx], 1
    ("shl", "cl mem", 32): "d3 23",         # d3 23                 shl dword ptr [ebx], cl
    ("shl", "imm mem", 32): "c1 23 ib",     # c1 23 ib              shl dword ptr [ebx], imm8
    ("shr", "1", 8): "d0 e8",               # d0 e8                 shr al, 1
    ("shr", "cl", 8): "d2 e8",              # d2 e8                 shr al, cl
    ("shr", "imm", 8): "c0 e8 ib",          # c0 e8 ib              shr al, imm8
    ("shr", "1 mem", 8): "d0 2b",           # d0 2b                 shr byte ptr [ebx], 1
    ("shr", "cl mem", 8): "d2 2b",          # d2 2b                 shr byte ptr [ebx], cl
    ("shr", "imm mem", 8): "c0 2b ib",      # c0 2b ib              shr byte ptr [ebx], imm8
    ("shr", "1", 16): "66 d1 e8",           # 66 d1 e8              shr ax, 1
    ("shr", "cl", 16): "66 d3 e8",          # 66 d3 e8              shr ax, cl
    ("shr", "imm", 16): "66 c1 e8 ib",      # 66 c1 e8 ib           shr ax, imm8
    ("shr", "1 mem", 16): "66 d1 2b",       # 66 d1 2b              shr word ptr [ebx], 1
    ("shr", "cl mem", 16): "66 d3 2b",      # 66 d3 2b              shr word ptr [ebx], cl
    ("shr", "imm mem", 16): "66 c1 2b ib",  # 66 c1 2b ib           shr word ptr [ebx], imm8
    ("shr", "1", 32): "d1 e8",              # d1 e8                 shr eax, 1
    ("shr", "cl", 32): "d3 e8",             # d3 e8                 shr eax, cl
    ("shr", "imm", 32): "c1 e8 ib",         # c1 e8 ib              shr eax, imm8
    ("shr", "1 mem", 32): "d1 2b",          # d1 2b                 shr dword ptr [ebx], 1
    ("shr", "cl mem", 32): "d3 2b",         # d3 2b                 shr dword ptr [ebx], cl
    ("shr", "imm mem", 32): "c1 2b ib",     # c1 2b ib              shr dword ptr [ebx], imm8
    ("sar", "1", 8): "d0 f8",               # d0 f8                 sar al, 1
    ("sar", "cl", 8): "d2 f8",              # d2 f8                 sar al, cl
    ("sar", "imm", 8): "c0 f8 ib",          # c0 f8 ib              sar al, imm8
    ("sar", "1 mem", 8): "d0 3b",           # d0 3b                 sar byte ptr [ebx], 1
    ("sar", "cl mem", 8): "d2 3b",          # d2 3b                 sar byte ptr [ebx], cl
    ("sar", "imm mem", 8): "c0 3b ib",      # c0 3b ib              sar byte ptr [ebx], imm8
    ("sar", "1", 16): "66 d1 f8",           # 66 d1 f8              sar ax, 1
    ("sar", "cl", 16): "66 d3 f8",          # 66 d3 f8              sar ax, cl
    ("sar", "imm", 16): "66 c1 f8 ib",      # 66 c1 f8 ib           sar ax, imm8
    ("sar", "1 mem", 16): "66 d1 3b",       # 66 d1 3b              sar word ptr [ebx], 1
    ("sar", "cl mem", 16): "66 d3 3b",      # 66 d3 3b              sar word ptr [ebx], cl
    ("sar", "imm mem", 16): "66 c1 3b ib",  # 66 c1 3b ib           sar word ptr [ebx], imm8
    ("sar", "1", 32): "d1 f8",              # d1 f8                 sar eax, 1
    ("sar", "cl", 32): "d3 f8",             # d3 f8                 sar eax, cl
    ("sar", "imm", 32): "c1 f8 ib",         # c1 f8 ib              sar eax, imm8
    ("sar", "1 mem", 32): "d1 3b",          # d1 3b                 sar dword ptr [ebx], 1
    ("sar", "cl mem", 32): "d3 3b",         # d3 3b                 sar dword ptr [ebx], cl
    ("sar", "imm mem", 32): "c1 3b ib",     # c1 3b ib              sar dword ptr [ebx], imm8
}

OPS = ("shl", "shr", "sar", "rol", "ror", "rcl", "rcr")
ECX_UPPER = 0x5A5A5A00
PATTERNS = (FIXED1, FIXED1 | DF | (ARITH & ~CF))     # status flags all clear / all set (CF separately)


def _values(bits):
    m, s = MASK[bits], SIGN[bits]
    return [0, 1, s, m, s - 1, s | 1, 0xA5C3F00F & m, 0x5A5A5A5A & m]


def _counts(bits):
    out = []
    for c in (0, 1, 2, bits - 1, bits, bits + 1, 17, 31, 32, 33, 0xFF, 0xE0):
        if c not in out:
            out.append(c)
    return out


def check_shift(fails, op, form, bits, count, value, eflags_in):
    template = FORMS[(op, form, bits)]
    res, status, defined = ref_shift(op, value, 1 if form.startswith("1") else count, bits, eflags_in)
    code = asm(template, count) if form.startswith("imm") else asm(template)
    regs = dict(eflags=eflags_in, ecx=ECX_UPPER | (count & 0xFF))
    with fails.case(f"{op} {form} {bits}-bit value={value:#x} count={count} eflags_in={eflags_in:#x}"):
        if "mem" in form:
            regs["ebx"] = MEM_GPA
            m, _ = run_code(code, regs=regs, mem={MEM_GPA: imm(value, bits) + GUARD})
            got = read_sized(m, MEM_GPA, bits)
            assert got == res, f"result {got:#x}, expected {res:#x}\n{disasm(code)}"
            assert m.mem_read(MEM_GPA + bits // 8, 4) == GUARD, "bytes after the operand changed"
        else:
            regs["eax"] = merge(EAX_UPPER, value, bits)
            m, _ = run_code(code, regs=regs)
            assert_regs(m, code, eax=merge(EAX_UPPER, res, bits))
        assert_regs(m, code, ecx=regs["ecx"])
        want = (eflags_in & ~ARITH) | status
        assert_flags(m, want, mask=0xFFFFFFFF & ~(ARITH & ~defined), code=code)


def _cases():
    for op in OPS:
        for bits in (8, 16, 32):
            yield pytest.param(op, bits, "1", 1, id=f"{op}{bits}-by1")
            for c in _counts(bits):
                yield pytest.param(op, bits, "cl", c, id=f"{op}{bits}-cl-{c}")
                yield pytest.param(op, bits, "imm", c, id=f"{op}{bits}-imm-{c}")


@pytest.mark.parametrize("op,bits,form,count", list(_cases()))
def test_shift_rotate(op, bits, form, count):
    fails = Failures()
    for value in _values(bits):
        for pattern in PATTERNS:
            for cf_in in (0, CF):
                check_shift(fails, op, form, bits, count, value, pattern | cf_in)
    fails.check()


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("bits", [8, 16, 32])
def test_shift_rotate_memory(op, bits):
    fails = Failures()
    for value in (SIGN[bits] | 1, 0x5A5A5A5A & MASK[bits], 1):
        for cf_in in (0, CF):
            check_shift(fails, op, "1 mem", bits, 1, value, FIXED1 | cf_in)
            for count in (0, 1, 3, bits - 1, bits + 1):
                check_shift(fails, op, "cl mem", bits, count, value, FIXED1 | cf_in)
                check_shift(fails, op, "imm mem", bits, count, value, FIXED1 | DF | (ARITH & ~CF) | cf_in)
    fails.check()


def test_shift_hand_worked():
    code = asm("c1 e0 04")      # c1 e0 04              shl eax, 4
    m, _ = run_code(code, regs=dict(eax=0x1234567F))
    assert_regs(m, code, eax=0x234567F0)
    assert_flags(m, CF | PF, mask=CF | SF | ZF | PF, code=code)  # bit 28 (1) shifted out last; 0xf0 even
    code = asm("d1 f8")         # d1 f8                 sar eax, 1
    m, _ = run_code(code, regs=dict(eax=0xFFFFFFFF, eflags=FIXED1 | OF))
    assert_regs(m, code, eax=0xFFFFFFFF)
    assert_flags(m, CF | SF | PF, mask=ARITH & ~AF, code=code)   # SAR by 1 clears OF
    code = asm("66 d3 c8")      # 66 d3 c8              ror ax, cl
    m, _ = run_code(code, regs=dict(eax=0xAAAA0001, ecx=4, eflags=FIXED1 | ZF | PF))
    assert_regs(m, code, eax=0xAAAA1000)
    assert_flags(m, ZF | PF, mask=ARITH & ~OF, code=code)        # CF = MSB = 0; ZF PF kept
    code = asm("d0 d0")         # d0 d0                 rcl al, 1
    m, _ = run_code(code, regs=dict(eax=0x40, eflags=FIXED1 | CF))
    assert_regs(m, code, eax=0x81)
    assert_flags(m, OF, mask=ARITH, code=code)                   # CF = old MSB 0; OF = 1 xor 0


# ---------------------------------------------------------------------------
# SHLD / SHRD
# ---------------------------------------------------------------------------

SHXD = {
    ("shld", "imm", 16): "66 0f a4 d8 ib",  # 66 0f a4 d8 ib        shld ax, bx, imm8
    ("shld", "cl", 16): "66 0f a5 d8",      # 66 0f a5 d8           shld ax, bx, cl
    ("shld", "imm", 32): "0f a4 d8 ib",     # 0f a4 d8 ib           shld eax, ebx, imm8
    ("shld", "cl", 32): "0f a5 d8",         # 0f a5 d8              shld eax, ebx, cl
    ("shrd", "imm", 16): "66 0f ac d8 ib",  # 66 0f ac d8 ib        shrd ax, bx, imm8
    ("shrd", "cl", 16): "66 0f ad d8",      # 66 0f ad d8           shrd ax, bx, cl
    ("shrd", "imm", 32): "0f ac d8 ib",     # 0f ac d8 ib           shrd eax, ebx, imm8
    ("shrd", "cl", 32): "0f ad d8",         # 0f ad d8              shrd eax, ebx, cl
    ("shld", "imm mem", 16): "66 0f a4 03 ib",  # 66 0f a4 03 ib    shld word ptr [ebx], ax, imm8
    ("shld", "cl mem", 32): "0f a5 03",     # 0f a5 03              shld dword ptr [ebx], eax, cl
    ("shrd", "imm mem", 32): "0f ac 03 ib", # 0f ac 03 ib           shrd dword ptr [ebx], eax, imm8
    ("shrd", "cl mem", 16): "66 0f ad 03",  # 66 0f ad 03           shrd word ptr [ebx], ax, cl
}


def _shxd_cases():
    for (op, form, bits) in SHXD:
        counts = [0, 1, 2, 4, bits - 1, bits, 31, 32, 33] if bits == 32 else [0, 1, 2, 7, 15, 16, 32, 33, 48]
        for c in counts:
            if ref_shxd(op, 0, 0, c, bits, FIXED1) is None:
                continue
            yield pytest.param(op, form, bits, c, id=f"{op}-{form.replace(' ', '_')}-{bits}-{c}")


@pytest.mark.parametrize("op,form,bits,count", list(_shxd_cases()))
def test_shld_shrd(op, form, bits, count):
    template = SHXD[(op, form, bits)]
    code = asm(template, count) if form.startswith("imm") else asm(template)
    fails = Failures()
    vals = [0, 1, SIGN[bits], MASK[bits], 0x12345678 & MASK[bits], 0x9ABCDEF0 & MASK[bits], 0x40000000 >> (32 - bits)]
    for dest in vals:
        for src in (0, MASK[bits], 0xDEADBEEF & MASK[bits]):
            for pattern in PATTERNS + (FIXED1 | CF, FIXED1 | DF | ARITH):
                res, status, defined = ref_shxd(op, dest, src, count, bits, pattern)
                with fails.case(f"{op} {form} {bits} dest={dest:#x} src={src:#x} count={count} eflags_in={pattern:#x}"):
                    regs = dict(eflags=pattern, ecx=ECX_UPPER | (count & 0xFF))
                    if "mem" in form:
                        regs.update(ebx=MEM_GPA, eax=merge(EAX_UPPER, src, bits))
                        m, _ = run_code(code, regs=regs, mem={MEM_GPA: imm(dest, bits) + GUARD})
                        got = read_sized(m, MEM_GPA, bits)
                        assert got == res, f"result {got:#x}, expected {res:#x}\n{disasm(code)}"
                        assert m.mem_read(MEM_GPA + bits // 8, 4) == GUARD
                        assert_regs(m, code, eax=regs["eax"])
                    else:
                        regs.update(eax=merge(EAX_UPPER, dest, bits), ebx=merge(0x77770000, src, bits))
                        m, _ = run_code(code, regs=regs)
                        assert_regs(m, code, eax=merge(EAX_UPPER, res, bits), ebx=regs["ebx"])
                    assert_regs(m, code, ecx=regs["ecx"])
                    want = (pattern & ~ARITH) | status
                    assert_flags(m, want, mask=0xFFFFFFFF & ~(ARITH & ~defined), code=code)
    fails.check()
