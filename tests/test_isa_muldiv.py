"""MUL IMUL DIV IDIV (SDM Vol. 2A/2B: MUL, IMUL, DIV, IDIV).

* MUL r/m: AX = AL*src, DX:AX = AX*src, EDX:EAX = EAX*src (unsigned). OF = CF = 1 when the
  upper half of the product is nonzero. SF ZF AF PF undefined.
* IMUL, one operand: the same registers, signed; OF = CF = 1 when the product does not fit
  the lower half as a signed number (significant bits carried into the upper half).
  Two and three operands: the destination gets the product truncated to the operand size;
  OF = CF = 1 when it had to be truncated. SF ZF AF PF undefined.
* DIV/IDIV: AL,AH = AX / src; AX,DX = DX:AX / src; EAX,EDX = EDX:EAX / src. IDIV truncates
  toward zero, the remainder has the dividend's sign. All six status flags undefined.
  #DE (vector 0) when the divisor is 0 or the quotient does not fit the destination (for
  IDIV: is outside -2^(n-1) .. 2^(n-1)-1). #DE is a fault: no register changes and it is
  reported at the DIV's own EIP.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # isa_harness, with or without tests/__init__.py

from isa_harness import (ARITH, CF, CODE_GPA, DF, FIXED1, MASK, MEM_GPA, OF, SIGN, Failures, asm,
                         assert_flags, assert_regs, edges, imm, merge, prog, run_code, run_fault,
                         sext, to_signed)

MULDIV_DEFINED = CF | OF        # after MUL/IMUL; nothing is defined after DIV/IDIV

ONE_OP = {
    ("mul", 8): "f6 e3",                    # f6 e3                 mul bl
    ("mul", 16): "66 f7 e3",                # 66 f7 e3              mul bx
    ("mul", 32): "f7 e3",                   # f7 e3                 mul ebx
    ("imul", 8): "f6 eb",                   # f6 eb                 imul bl
    ("imul", 16): "66 f7 eb",               # 66 f7 eb              imul bx
    ("imul", 32): "f7 eb",                  # f7 eb                 imul ebx
    ("div", 8): "f6 f3",                    # f6 f3                 div bl
    ("div", 16): "66 f7 f3",                # 66 f7 f3              div bx
    ("div", 32): "f7 f3",                   # f7 f3                 div ebx
    ("idiv", 8): "f6 fb",                   # f6 fb                 idiv bl
    ("idiv", 16): "66 f7 fb",               # 66 f7 fb              idiv bx
    ("idiv", 32): "f7 fb",                  # f7 fb                 idiv ebx
}
ONE_OP_MEM = {
    ("mul", 8): "f6 23",                    # f6 23                 mul byte ptr [ebx]
    ("mul", 16): "66 f7 23",                # 66 f7 23              mul word ptr [ebx]
    ("mul", 32): "f7 23",                   # f7 23                 mul dword ptr [ebx]
    ("imul", 8): "f6 2b",                   # f6 2b                 imul byte ptr [ebx]
    ("imul", 16): "66 f7 2b",               # 66 f7 2b              imul word ptr [ebx]
    ("imul", 32): "f7 2b",                  # f7 2b                 imul dword ptr [ebx]
    ("div", 8): "f6 33",                    # f6 33                 div byte ptr [ebx]
    ("div", 16): "66 f7 33",                # 66 f7 33              div word ptr [ebx]
    ("div", 32): "f7 33",                   # f7 33                 div dword ptr [ebx]
    ("idiv", 8): "f6 3b",                   # f6 3b                 idiv byte ptr [ebx]
    ("idiv", 16): "66 f7 3b",               # 66 f7 3b              idiv word ptr [ebx]
    ("idiv", 32): "f7 3b",                  # f7 3b                 idiv dword ptr [ebx]
}

EAX0 = 0xE1E2E3E4   # bits of EAX/EDX outside the operation's registers must survive
EDX0 = 0xD1D2D3D4
EBX_HI = 0xB0B1B200


def ref_mul(op, a, b, bits):
    """(low half, high half, CF/OF) of the one-operand MUL/IMUL."""
    if op == "mul":
        p = a * b
        ovf = (p >> bits) != 0
    else:
        p = to_signed(a, bits) * to_signed(b, bits)
        ovf = not -(1 << (bits - 1)) <= p < (1 << (bits - 1))
    p &= (1 << (2 * bits)) - 1
    return p & MASK[bits], p >> bits, (CF | OF) if ovf else 0


def ref_div(op, n, d, bits):
    """(quotient, remainder) of the 2*bits-bit dividend n by d, or None for #DE."""
    if d == 0:
        return None
    if op == "div":
        q, r = divmod(n, d)
        if q > MASK[bits]:
            return None
        return q, r
    sn, sd = to_signed(n, 2 * bits), to_signed(d, bits)
    q = abs(sn) // abs(sd)
    if (sn < 0) != (sd < 0):
        q = -q
    r = sn - q * sd                          # sign of the dividend, |r| < |d|
    if not -(1 << (bits - 1)) <= q <= (1 << (bits - 1)) - 1:
        return None
    return q & MASK[bits], r & MASK[bits]


HAND_MUL = [
    ("mul", 32, 0xFFFFFFFF, 0xFFFFFFFF, 0x00000001, 0xFFFFFFFE, CF | OF),
    ("mul", 8, 0x10, 0x0F, 0xF0, 0x00, 0),
    ("mul", 16, 0x8000, 0x0002, 0x0000, 0x0001, CF | OF),
    ("imul", 8, 0x80, 0xFF, 0x80, 0x00, CF | OF),       # -128 * -1 = 128: does not fit AL
    ("imul", 8, 0xFF, 0xFF, 0x01, 0x00, 0),             # -1 * -1 = 1
    ("imul", 32, 0xFFFFFFFF, 0x00000002, 0xFFFFFFFE, 0xFFFFFFFF, 0),
    ("imul", 16, 0x4000, 0x0002, 0x8000, 0x0000, CF | OF),  # 32768 does not fit a signed word
]


@pytest.mark.parametrize("op,bits,a,b,lo,hi,fl", HAND_MUL)
def test_mul_reference_matches_hand_worked_cases(op, bits, a, b, lo, hi, fl):
    assert ref_mul(op, a, b, bits) == (lo, hi, fl)


HAND_DIV = [
    ("div", 8, 0x00FF, 0x10, (0x0F, 0x0F)),
    ("div", 8, 0x0100, 0x01, None),                     # quotient 256 does not fit AL
    ("div", 32, 0x00000001_00000000, 0x2, (0x80000000, 0)),
    ("idiv", 8, 0xFFF9, 0x02, (0xFD, 0xFF)),            # -7 / 2 = -3 rem -1
    ("idiv", 8, 0x0007, 0xFE, (0xFD, 0x01)),            # 7 / -2 = -3 rem 1
    ("idiv", 8, 0xFF80, 0x01, (0x80, 0x00)),            # -128 fits
    ("idiv", 8, 0xFF80, 0xFF, None),                    # 128 does not
    ("idiv", 32, 0xFFFFFFFF_80000000, 0xFFFFFFFF, None),
    ("idiv", 16, 0x0000_0000, 0x0000, None),
]


@pytest.mark.parametrize("op,bits,n,d,want", HAND_DIV)
def test_div_reference_matches_hand_worked_cases(op, bits, n, d, want):
    assert ref_div(op, n, d, bits) == want


def _place_dividend(n, bits):
    """Registers holding the 2*bits-bit dividend (AX, DX:AX or EDX:EAX)."""
    if bits == 8:
        return dict(eax=merge(EAX0, n, 16), edx=EDX0)
    lo, hi = n & MASK[bits], n >> bits
    return dict(eax=merge(EAX0, lo, bits), edx=merge(EDX0, hi, bits))


def _expect_pair(lo, hi, bits):
    """EAX/EDX after a result whose low half goes to AL/AX/EAX and high half to AH/DX/EDX."""
    if bits == 8:
        return dict(eax=merge(EAX0, (hi << 8) | lo, 16), edx=EDX0)
    return dict(eax=merge(EAX0, lo, bits), edx=merge(EDX0, hi, bits))


def _run_one_op(op, bits, src, regs, mem_form):
    if mem_form:
        code = asm(ONE_OP_MEM[(op, bits)])
        regs = dict(regs, ebx=MEM_GPA)
        mem = {MEM_GPA: imm(src, bits)}
    else:
        code = asm(ONE_OP[(op, bits)])
        regs = dict(regs, ebx=merge(EBX_HI, src, bits))
        mem = {}
    return code, regs, mem


@pytest.mark.parametrize("op", ["mul", "imul"])
@pytest.mark.parametrize("bits", [8, 16, 32])
@pytest.mark.parametrize("mem_form", [False, True], ids=["reg", "mem"])
def test_mul_imul_one_operand(op, bits, mem_form):
    fails = Failures()
    vals = edges(bits) if not mem_form else [0, 1, SIGN[bits], MASK[bits], 0x12345678 & MASK[bits]]
    for a in vals:
        for b in vals:
            lo, hi, fl = ref_mul(op, a, b, bits)
            init = FIXED1 | DF | ((~fl) & ARITH)
            start = dict(_place_dividend(0, bits), eflags=init)
            start["eax"] = merge(EAX0, a, bits)
            code, regs, mem = _run_one_op(op, bits, b, start, mem_form)
            with fails.case(f"{op}{bits} {a:#x} * {b:#x}"):
                m, _ = run_code(code, regs=regs, mem=mem)
                assert_regs(m, code, ebx=regs["ebx"], **_expect_pair(lo, hi, bits))
                assert_flags(m, FIXED1 | DF | fl, mask=0xFFFFFFFF & ~(ARITH & ~MULDIV_DEFINED), code=code)
    fails.check()


IMUL_2_3 = {
    ("rr", 16): "66 0f af c3",              # 66 0f af c3           imul ax, bx
    ("rr", 32): "0f af c3",                 # 0f af c3              imul eax, ebx
    ("rm", 16): "66 0f af 03",              # 66 0f af 03           imul ax, word ptr [ebx]
    ("rm", 32): "0f af 03",                 # 0f af 03              imul eax, dword ptr [ebx]
    ("rri8", 16): "66 6b c3 ib",            # 66 6b c3 ib           imul ax, bx, simm8
    ("rri8", 32): "6b c3 ib",               # 6b c3 ib              imul eax, ebx, simm8
    ("rri", 16): "66 69 c3 iw",             # 66 69 c3 iw           imul ax, bx, imm16
    ("rri", 32): "69 c3 id",                # 69 c3 id              imul eax, ebx, imm32
    ("rmi", 32): "69 03 id",                # 69 03 id              imul eax, dword ptr [ebx], imm32
    ("rmi8", 16): "66 6b 03 ib",            # 66 6b 03 ib           imul ax, word ptr [ebx], simm8
}


def ref_imul_trunc(a, b, bits):
    p = to_signed(a, bits) * to_signed(b, bits)
    fits = -(1 << (bits - 1)) <= p < (1 << (bits - 1))
    return p & MASK[bits], 0 if fits else (CF | OF)


@pytest.mark.parametrize("form,bits", list(IMUL_2_3))
def test_imul_two_and_three_operands(form, bits):
    fails = Failures()
    vals = edges(bits)
    if form in ("rri8", "rmi8"):
        bvals = [sext(i, 8, bits) for i in (0, 1, 0x7F, 0x80, 0xFF, 0x03)]
    else:
        bvals = vals
    for a in vals:
        for b in bvals:
            res, fl = ref_imul_trunc(a, b, bits)
            init = FIXED1 | ((~fl) & ARITH)
            t = IMUL_2_3[(form, bits)]
            with fails.case(f"imul {form} {bits}: {a:#x} * {b:#x}"):
                if form == "rr":
                    code = asm(t)
                    regs = dict(eax=merge(EAX0, a, bits), ebx=merge(EBX_HI, b, bits), eflags=init)
                    m, _ = run_code(code, regs=regs)
                    assert_regs(m, code, eax=merge(EAX0, res, bits), ebx=regs["ebx"], edx=0)
                elif form == "rm":
                    code = asm(t)
                    regs = dict(eax=merge(EAX0, a, bits), ebx=MEM_GPA, eflags=init)
                    m, _ = run_code(code, regs=regs, mem={MEM_GPA: imm(b, bits)})
                    assert_regs(m, code, eax=merge(EAX0, res, bits), edx=0)
                elif form in ("rri8", "rri"):
                    code = asm(t, b & (0xFF if form == "rri8" else MASK[bits]))
                    # destination EAX gets EBX * imm: put a in EBX, garbage in EAX
                    regs = dict(eax=EAX0, ebx=merge(EBX_HI, a, bits), eflags=init)
                    m, _ = run_code(code, regs=regs)
                    assert_regs(m, code, eax=merge(EAX0, res, bits), ebx=regs["ebx"])
                else:   # rmi, rmi8
                    code = asm(t, b & (0xFF if form == "rmi8" else MASK[bits]))
                    regs = dict(eax=EAX0, ebx=MEM_GPA, eflags=init)
                    m, _ = run_code(code, regs=regs, mem={MEM_GPA: imm(a, bits)})
                    assert_regs(m, code, eax=merge(EAX0, res, bits))
                assert_flags(m, FIXED1 | fl, mask=0xFFFFFFFF & ~(ARITH & ~MULDIV_DEFINED), code=code)
    fails.check()


def test_mul_imul_hand_worked():
    code = asm("f7 e3")         # f7 e3                 mul ebx
    m, _ = run_code(code, regs=dict(eax=0xFFFFFFFF, ebx=0xFFFFFFFF))
    assert_regs(m, code, eax=0x00000001, edx=0xFFFFFFFE)
    assert_flags(m, CF | OF, mask=CF | OF, code=code)
    code = asm("f6 eb")         # f6 eb                 imul bl
    m, _ = run_code(code, regs=dict(eax=0x12345680, ebx=0xFF, edx=0x77))
    assert_regs(m, code, eax=0x12340080, edx=0x77)               # AX = 128; EDX untouched
    assert_flags(m, CF | OF, mask=CF | OF, code=code)
    code = asm("6b c3 ff")      # 6b c3 ff              imul eax, ebx, -1
    m, _ = run_code(code, regs=dict(ebx=0x80000000))
    assert_regs(m, code, eax=0x80000000)
    assert_flags(m, CF | OF, mask=CF | OF, code=code)
    code = asm("69 c3 e8 03 00 00")     # 69 c3 e8 03 00 00     imul eax, ebx, 0x3e8
    m, _ = run_code(code, regs=dict(ebx=0xFFFFFFFE))
    assert_regs(m, code, eax=0xFFFFF830)                         # -2 * 1000
    assert_flags(m, 0, mask=CF | OF, code=code)


def _dividends(bits, d):
    """Dividends around the edges for divisor d: fitting quotients, boundary ones and overflowing ones."""
    m = MASK[bits]
    full = (1 << (2 * bits)) - 1
    out = [0, 1, m, d * m if d else 0, d * (m + 1) - 1 if d else m, full, 1 << (2 * bits - 1),
           (1 << (2 * bits - 1)) - 1, (SIGN[bits] * d) & full if d else 2, ((-SIGN[bits] * d) & full) if d else 3,
           ((SIGN[bits] - 1) * d + (d - 1 if d else 0)) & full, 0x123456789ABCDEF0 & full, (-7) & full]
    seen = []
    for n in out:
        if n not in seen:
            seen.append(n & full)
    return seen


@pytest.mark.parametrize("op", ["div", "idiv"])
@pytest.mark.parametrize("bits", [8, 16, 32])
@pytest.mark.parametrize("mem_form", [False, True], ids=["reg", "mem"])
def test_div_idiv(op, bits, mem_form):
    fails = Failures()
    divisors = edges(bits) + [2, 3, MASK[bits] - 1, 10]
    if mem_form:
        divisors = [0, 1, 3, SIGN[bits], MASK[bits]]
    for d in dict.fromkeys(divisors):
        for n in _dividends(bits, d):
            want = ref_div(op, n, d, bits)
            start = dict(_place_dividend(n, bits), eflags=FIXED1 | DF | CF | OF)
            code, regs, mem = _run_one_op(op, bits, d, start, mem_form)
            with fails.case(f"{op}{bits} {n:#x} / {d:#x} -> {want}"):
                if want is None:
                    m, r = run_fault(code, 0, regs=regs, mem=mem)
                    # a fault changes nothing: the dividend is still there
                    assert_regs(m, code, eip=CODE_GPA, eax=regs["eax"], edx=regs["edx"], ebx=regs["ebx"])
                else:
                    q, rem = want
                    m, _ = run_code(code, regs=regs, mem=mem)
                    assert_regs(m, code, ebx=regs["ebx"], **_expect_pair(q, rem, bits))
                    assert_flags(m, FIXED1 | DF, mask=0xFFFFFFFF & ~ARITH, code=code)
    fails.check()


def test_div_hand_worked():
    code = asm("f6 f3")         # f6 f3                 div bl
    m, _ = run_code(code, regs=dict(eax=0xAAAA00FF, ebx=0x10))
    assert_regs(m, code, eax=0xAAAA0F0F)
    code = asm("f6 fb")         # f6 fb                 idiv bl
    m, _ = run_code(code, regs=dict(eax=0xFFF9, ebx=0x02))
    assert_regs(m, code, eax=0xFFFD)                             # AL = -3, AH = -1
    code = asm("f7 fb")         # f7 fb                 idiv ebx
    m, _ = run_code(code, regs=dict(edx=0xFFFFFFFF, eax=0xFFFFFF9C, ebx=7))
    assert_regs(m, code, eax=0xFFFFFFF2, edx=0xFFFFFFFE)         # -100 / 7 = -14 rem -2
    code = asm("66 f7 f3")      # 66 f7 f3              div bx
    m, _ = run_code(code, regs=dict(edx=0x12340001, eax=0x56780000, ebx=0x0002))
    assert_regs(m, code, eax=0x56788000, edx=0x12340000)         # 0x10000 / 2


@pytest.mark.parametrize("code_hex,regs", [
    ("f7 f3", dict(eax=5, edx=0, ebx=0)),                       # f7 f3     div ebx ; by zero
    ("f6 f3", dict(eax=0x0100, ebx=1)),                         # f6 f3     div bl ; 256 > 0xff
    ("f7 fb", dict(eax=0x80000000, edx=0xFFFFFFFF, ebx=0xFFFFFFFF)),  # f7 fb     idiv ebx ; INT_MIN / -1
    ("66 f7 fb", dict(eax=0x8000, edx=0xFFFF, ebx=0xFFFF)),     # 66 f7 fb  idiv bx ; -32768 / -1
    ("f6 fb", dict(eax=0x0080, ebx=1)),                         # f6 fb     idiv bl ; 128 > 127
])
def test_divide_error_is_a_fault_at_the_div(code_hex, regs):
    prefix = prog("90 90")      # 90 90                 nop; nop
    code = prefix + asm(code_hex)
    m, r = run_fault(code, 0, fault_eip=CODE_GPA + 2, regs=regs)
    assert r.exception[1] is None, "#DE has no error code"
    for name, value in regs.items():
        assert m.reg_read(name) == value, f"{name} changed by a faulting divide"
    assert r.instructions == 2, f"the two NOPs retired and the faulting DIV did not: {r.instructions}"
