"""BCD adjustments DAA DAS AAA AAS AAM AAD (SDM Vol. 2A: pages of the same names).

Defined flags (SDM "Flags Affected"):
* DAA/DAS: CF AF from the adjustment, SF ZF PF from AL; OF undefined.
* AAA/AAS: CF = AF = decimal carry/borrow; OF SF ZF PF undefined.
* AAM/AAD: SF ZF PF from AL; OF AF CF undefined. AAM with an immediate of 0 raises #DE.

The ``ref_*`` functions transcribe the Operation sections; DAA/DAS and AAA/AAS run over all
256 AL values with every AF/CF combination.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # isa_harness, with or without tests/__init__.py

from isa_harness import (AF, ARITH, CF, CODE_GPA, DF, FIXED1, OF, PF, SF, ZF, Failures, asm,
                         assert_flags, assert_regs, prog, run_code, run_fault, szp)


def ref_daa(al, fl):
    old_al, old_cf = al, bool(fl & CF)
    cf = False
    if (al & 0x0F) > 9 or fl & AF:
        cf = old_cf or al + 6 > 0xFF
        al = (al + 6) & 0xFF
        af = True
    else:
        af = False
    if old_al > 0x99 or old_cf:
        al = (al + 0x60) & 0xFF
        cf = True
    else:
        cf = False
    return al, szp(al, 8) | (CF if cf else 0) | (AF if af else 0)


def ref_das(al, fl):
    old_al, old_cf = al, bool(fl & CF)
    cf = False
    if (al & 0x0F) > 9 or fl & AF:
        cf = old_cf or al < 6
        al = (al - 6) & 0xFF
        af = True
    else:
        af = False
    if old_al > 0x99 or old_cf:
        al = (al - 0x60) & 0xFF
        cf = True
    return al, szp(al, 8) | (CF if cf else 0) | (AF if af else 0)


def ref_aaa(ax, fl):
    if (ax & 0x0F) > 9 or fl & AF:
        ax = (ax + 0x106) & 0xFFFF
        f = AF | CF
    else:
        f = 0
    return ax & 0xFF0F, f


def ref_aas(ax, fl):
    if (ax & 0x0F) > 9 or fl & AF:
        ax = (ax - 6) & 0xFFFF
        ax = (ax - 0x100) & 0xFFFF
        f = AF | CF
    else:
        f = 0
    return ax & 0xFF0F, f


# The SDM's own examples (DAA and DAS pages) and a few by hand.
def test_reference_matches_sdm_examples():
    # ADD AL, BL with 79h + 35h = AEh (AF = CF = 0) then DAA: AL = 14h, SF ZF AF PF CF = 0 0 1 1 1
    assert ref_daa(0xAE, 0) == (0x14, AF | PF | CF)
    # 2Eh then DAA: AL = 34h, AF = 1, CF = 0 (0x34 has odd parity). The SDM's example line shows
    # CF = 1 here, which contradicts its own Operation section (old_AL <= 99h and old_CF = 0 give
    # CF = 0); the Operation section is what is followed.
    assert ref_daa(0x2E, 0) == (0x34, AF)
    # SUB AL, BL with 35h - 47h = EEh (AF = CF = 1) then DAS: AL = 88h, SF ZF AF PF CF = 1 0 1 1 1
    assert ref_das(0xEE, AF | CF) == (0x88, SF | AF | PF | CF)
    # 7 + 8 = 0Fh, AAA: AX = 0105h, AF = CF = 1
    assert ref_aaa(0x000F, 0) == (0x0105, AF | CF)
    # AX + 106h carries into AH twice when AL >= FAh (the SDM's "AX <- AX + 106H")
    assert ref_aaa(0x00FA, 0) == (0x0200, AF | CF)
    # 3 - 5 = FEh, AAS: AX = FF08h (AH - 1 and the borrow of AX - 6)
    assert ref_aas(0x00FE, AF | CF) == (0xFF08, AF | CF)
    assert ref_aas(0x0102, AF) == (0xFF0C, AF | CF)


ADJ = {
    "daa": ("27", ref_daa, CF | AF | SF | ZF | PF),     # 27                    daa
    "das": ("2f", ref_das, CF | AF | SF | ZF | PF),     # 2f                    das
    "aaa": ("37", ref_aaa, CF | AF),                    # 37                    aaa
    "aas": ("3f", ref_aas, CF | AF),                    # 3f                    aas
}


@pytest.mark.parametrize("name", list(ADJ))
@pytest.mark.parametrize("af", [0, AF])
@pytest.mark.parametrize("cf", [0, CF])
def test_decimal_adjust_exhaustive(name, af, cf):
    hexcode, ref, defined = ADJ[name]
    code = asm(hexcode)
    fails = Failures(limit=8)
    for al in range(256):
        for ah in ((0x00,) if name in ("daa", "das") else (0x00, 0x7F, 0xFF)):
            fl = FIXED1 | af | cf | (DF if al & 1 else 0) | (OF | SF | ZF | PF if al & 2 else 0)
            eax = 0xABCD0000 | (ah << 8) | al
            if name in ("daa", "das"):
                res, status = ref(al, fl)
                want_eax = (eax & ~0xFF) | res
            else:
                res, status = ref((ah << 8) | al, fl)
                want_eax = 0xABCD0000 | res
            with fails.case(f"{name} ax={(ah << 8) | al:#06x} af={bool(af)} cf={bool(cf)}"):
                m, _ = run_code(code, regs=dict(eax=eax, eflags=fl))
                assert_regs(m, code, eax=want_eax)
                want = (fl & ~ARITH) | status
                assert_flags(m, want, mask=0xFFFFFFFF & ~(ARITH & ~defined), code=code)
    fails.check()


def ref_aam(al, base):
    return (al // base) << 8 | (al % base)


def ref_aad(ax, base):
    return ((ax & 0xFF) + (ax >> 8) * base) & 0xFF


AAM = "d4 ib"                   # d4 ib                 aam imm8
AAD = "d5 ib"                   # d5 ib                 aad imm8


@pytest.mark.parametrize("base", [10, 16, 7, 1, 2, 0xFF])
def test_aam(base):
    code = asm(AAM, base)
    fails = Failures(limit=8)
    for al in range(256):
        ax = ref_aam(al, base)
        with fails.case(f"aam {base}: al={al:#x}"):
            m, _ = run_code(code, regs=dict(eax=0x12345600 | al, eflags=FIXED1 | DF))
            assert_regs(m, code, eax=0x12340000 | ax)
            assert_flags(m, FIXED1 | DF | szp(ax & 0xFF, 8), mask=0xFFFFFFFF & ~(OF | AF | CF), code=code)
    fails.check()


@pytest.mark.parametrize("base", [10, 16, 0, 1, 0xFF])
def test_aad(base):
    code = asm(AAD, base)
    fails = Failures(limit=8)
    for ax in (0x0000, 0x0109, 0x0909, 0x0FFF, 0xFF01, 0x8080, 0x1234, 0x00FF, 0xFFFF, 0x0A0A):
        al = ref_aad(ax, base)
        with fails.case(f"aad {base}: ax={ax:#x}"):
            m, _ = run_code(code, regs=dict(eax=0x56780000 | ax, eflags=FIXED1 | ARITH))
            assert_regs(m, code, eax=0x56780000 | al)                # AH = 0
            assert_flags(m, FIXED1 | szp(al, 8), mask=0xFFFFFFFF & ~(OF | AF | CF), code=code)
    fails.check()


def test_aam_aad_default_base_hand_worked():
    code = prog(
        "d4 0a",                # d4 0a                 aam 0xa
    )
    m, _ = run_code(code, regs=dict(eax=63))
    assert_regs(m, code, eax=0x0603)
    code = prog(
        "d5 0a",                # d5 0a                 aad 0xa
    )
    m, _ = run_code(code, regs=dict(eax=0x0603))
    assert_regs(m, code, eax=63)


def test_aam_zero_raises_divide_error():
    code = prog(
        "90",                   # 90                    nop
        "d4 00",                # d4 00                 aam 0
    )
    m, r = run_fault(code, 0, fault_eip=CODE_GPA + 1, regs=dict(eax=0x1234))
    assert r.exception[1] is None
    assert_regs(m, code, eax=0x1234)
