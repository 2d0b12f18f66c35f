"""The x87 FPU (SDM Vol. 1 Chapter 8, the Vol. 2 pages of FLD ... FYL2XP1, FXSAVE, FXRSTOR):
constants, loads and stores of every format, precision and rounding control, compares into
EFLAGS, FCMOVcc, stack overflow and underflow, the environment and state images (FNSTENV,
FNSAVE, FXSAVE in their 32- and 16-bit layouts), the pointers, #NM under CR0.EM/TS/MP, #MF
with CR0.NE at the next waiting instruction, and #UD for the reserved escape encodings.

Expected values are written from the SDM (the constants' 80-bit encodings, the rounding of
1/3 at each precision, the image layouts of Figures 8-9 to 8-12, Table 3-53) and from IEEE 754
arithmetic; none comes from the engine. Every program starts with FNINIT, so no state is
carried over from the test before (the harness reuses one machine).
"""

import os
import struct
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # isa_harness, with or without tests/__init__.py

from isa_harness import (ARITH, CF, CODE_GPA, DATA_GPA, FIXED1, PF, ZF, assert_flags, new_machine, prog,
                         read16, read32, run_code, run_fault, vmcore)

M = DATA_GPA            # the memory operands: [0x4000] ...
EXC_NM, EXC_MF, EXC_UD, EXC_GP = 7, 16, 6, 13
CR0_MP, CR0_EM, CR0_TS, CR0_NE = 0x2, 0x4, 0x8, 0x20

FNINIT = "db e3"        # db e3                 fninit


def f80(m, gpa=M) -> str:
    """The 80-bit value at gpa as 'EEEE MMMMMMMMMMMMMMMM' (sign+exponent, significand)."""
    mant, se = struct.unpack("<QH", m.mem_read(gpa, 10))
    return f"{se:04X} {mant:016X}"


def fpu(m) -> dict:
    """CW, SW, TW (the full tag word) and ST0-ST7 from the engine's FNSAVE image."""
    img = m._engine.fpu_fnsave()
    cw, sw, tw = (struct.unpack_from("<H", img, k)[0] for k in (0, 4, 8))
    st = []
    for k in range(8):
        mant, se = struct.unpack_from("<QH", img, 28 + 10 * k)
        st.append(f"{se:04X} {mant:016X}")
    return dict(cw=cw, sw=sw, tw=tw, st=st)


def cw_word(value: int) -> bytes:
    return struct.pack("<H", value)


# ---------------------------------------------------------------------------
# Constants (SDM Vol. 1 §8.3.8; the 66-bit internal constants rounded per RC)
# ---------------------------------------------------------------------------

CONSTANTS = [
    ("d9 e8", "3FFF 8000000000000000"),     # d9 e8                 fld1
    ("d9 e9", "4000 D49A784BCD1B8AFE"),     # d9 e9                 fldl2t
    ("d9 ea", "3FFF B8AA3B295C17F0BC"),     # d9 ea                 fldl2e
    ("d9 eb", "4000 C90FDAA22168C235"),     # d9 eb                 fldpi
    ("d9 ec", "3FFD 9A209A84FBCFF799"),     # d9 ec                 fldlg2
    ("d9 ed", "3FFE B17217F7D1CF79AC"),     # d9 ed                 fldln2
    ("d9 ee", "0000 0000000000000000"),     # d9 ee                 fldz
]


@pytest.mark.parametrize("code_hex,want", CONSTANTS, ids=[c for c, _ in CONSTANTS])
def test_constants(code_hex, want):
    code = prog(
        FNINIT,
        code_hex,
        "db 3d 00 40 00 00",    # db 3d 00 40 00 00     fstp xword ptr [0x4000]
    )
    m, _ = run_code(code)
    assert f80(m) == want
    assert fpu(m)["sw"] == 0 and fpu(m)["tw"] == 0xFFFF, "popped: the stack is empty again, no flag set"


def test_fldpi_rounds_per_rc():
    """pi = C90FDAA22168C234 C4C6...: nearest and up give ...C235, down and chop ...C234."""
    for rc, want in ((0, "C235"), (1, "C234"), (2, "C235"), (3, "C234")):
        code = prog(
            FNINIT,
            "d9 2d 10 40 00 00",    # d9 2d 10 40 00 00     fldcw word ptr [0x4010]
            "d9 eb",                # d9 eb                 fldpi
            "db 3d 00 40 00 00",    # db 3d 00 40 00 00     fstp xword ptr [0x4000]
        )
        m, _ = run_code(code, mem={M + 0x10: cw_word(0x037F | (rc << 10))})
        assert f80(m) == "4000 C90FDAA22168" + want, f"RC={rc}"


# ---------------------------------------------------------------------------
# Precision and rounding control: 1 / 3
# ---------------------------------------------------------------------------

THIRD = [
    (0x037F, "3FFD AAAAAAAAAAAAAAAB"),      # extended, nearest
    (0x027F, "3FFD AAAAAAAAAAAAA800"),      # double (53 bits), nearest: 0x3FD5555555555555
    (0x007F, "3FFD AAAAAB0000000000"),      # single (24 bits), nearest: 0x3EAAAAAB
    (0x077F, "3FFD AAAAAAAAAAAAAAAA"),      # extended, down
    (0x0B7F, "3FFD AAAAAAAAAAAAAAAB"),      # extended, up
    (0x0F7F, "3FFD AAAAAAAAAAAAAAAA"),      # extended, chop
    (0x047F, "3FFD AAAAAA0000000000"),      # single, down
    (0x067F, "3FFD AAAAAAAAAAAAA800"),      # double, down: ...5555 (the 54th bit is 0)
]


@pytest.mark.parametrize("cw,want", THIRD, ids=[f"cw{c:04x}" for c, _ in THIRD])
def test_one_third_at_each_precision_and_rounding(cw, want):
    code = prog(
        FNINIT,
        "d9 2d 10 40 00 00",    # d9 2d 10 40 00 00     fldcw word ptr [0x4010]
        "d9 e8",                # d9 e8                 fld1
        "da 35 14 40 00 00",    # da 35 14 40 00 00     fidiv dword ptr [0x4014]
        "db 3d 00 40 00 00",    # db 3d 00 40 00 00     fstp xword ptr [0x4000]
    )
    m, _ = run_code(code, mem={M + 0x10: cw_word(cw) + bytes(2) + struct.pack("<i", 3)})
    assert f80(m) == want
    assert fpu(m)["sw"] & 0x3F == 0x20, "PE (inexact) only"


# ---------------------------------------------------------------------------
# Stores: m32fp, m64fp, integers (rounded per RC), packed BCD
# ---------------------------------------------------------------------------

def test_store_real_formats():
    code = prog(
        FNINIT,
        "d9 eb",                # d9 eb                 fldpi
        "d9 15 00 40 00 00",    # d9 15 00 40 00 00     fst dword ptr [0x4000]
        "dd 15 08 40 00 00",    # dd 15 08 40 00 00     fst qword ptr [0x4008]
        "dd 1d 10 40 00 00",    # dd 1d 10 40 00 00     fstp qword ptr [0x4010]
    )
    m, _ = run_code(code)
    assert read32(m, M) == 0x40490FDB
    assert struct.unpack("<Q", m.mem_read(M + 8, 8))[0] == 0x400921FB54442D18
    assert fpu(m)["tw"] == 0xFFFF


@pytest.mark.parametrize("rc,half_up,neg_half", [(0, 2, -2), (1, 2, -3), (2, 3, -2), (3, 2, -2)])
def test_fist_rounds_per_rc(rc, half_up, neg_half):
    """2.5 and -2.5 to integers: nearest-even 2/-2, down 2/-3, up 3/-2, chop 2/-2."""
    code = prog(
        FNINIT,
        "d9 2d 10 40 00 00",    # d9 2d 10 40 00 00     fldcw word ptr [0x4010]
        "dd 05 18 40 00 00",    # dd 05 18 40 00 00     fld qword ptr [0x4018]
        "df 15 00 40 00 00",    # df 15 00 40 00 00     fist word ptr [0x4000]
        "d9 e0",                # d9 e0                 fchs
        "db 1d 04 40 00 00",    # db 1d 04 40 00 00     fistp dword ptr [0x4004]
    )
    m, _ = run_code(code, mem={M + 0x10: cw_word(0x037F | (rc << 10)), M + 0x18: struct.pack("<d", 2.5)})
    assert read16(m, M) == half_up & 0xFFFF
    assert read32(m, M + 4) == neg_half & 0xFFFFFFFF


def test_fistp_out_of_range_stores_the_integer_indefinite():
    code = prog(
        FNINIT,
        "dd 05 18 40 00 00",    # dd 05 18 40 00 00     fld qword ptr [0x4018]
        "df 1d 00 40 00 00",    # df 1d 00 40 00 00     fistp word ptr [0x4000]
    )
    m, _ = run_code(code, mem={M + 0x18: struct.pack("<d", 40000.0)})
    assert read16(m, M) == 0x8000
    assert fpu(m)["sw"] & 0x3F == 0x01, "IE (masked)"


def test_bcd_load_and_store():
    code = prog(
        FNINIT,
        "df 25 10 40 00 00",    # df 25 10 40 00 00     fbld tbyte ptr [0x4010]
        "d9 c0",                # d9 c0                 fld st(0)
        "db 3d 20 40 00 00",    # db 3d 20 40 00 00     fstp xword ptr [0x4020]
        "d9 e0",                # d9 e0                 fchs
        "df 35 00 40 00 00",    # df 35 00 40 00 00     fbstp tbyte ptr [0x4000]
    )
    bcd = bytes.fromhex("9078563412") + bytes(5)        # +1234567890
    m, _ = run_code(code, mem={M + 0x10: bcd})
    assert m.mem_read(M, 10) == bytes.fromhex("9078563412") + bytes(4) + b"\x80"
    # 1234567890 = 0x499602D2 = 1.0010011001..b x 2^30
    assert f80(m, M + 0x20) == "401D 932C05A400000000"


def test_integer_loads():
    code = prog(
        FNINIT,
        "df 05 10 40 00 00",    # df 05 10 40 00 00     fild word ptr [0x4010]
        "db 05 14 40 00 00",    # db 05 14 40 00 00     fild dword ptr [0x4014]
        "df 2d 18 40 00 00",    # df 2d 18 40 00 00     fild qword ptr [0x4018]
        "db 3d 00 40 00 00",    # db 3d 00 40 00 00     fstp xword ptr [0x4000]
        "db 3d 20 40 00 00",    # db 3d 20 40 00 00     fstp xword ptr [0x4020]
        "db 3d 30 40 00 00",    # db 3d 30 40 00 00     fstp xword ptr [0x4030]
    )
    mem = {M + 0x10: struct.pack("<hxxiq", -1, 0x7FFFFFFF, -(1 << 63))}
    m, _ = run_code(code, mem=mem)
    assert f80(m, M) == "C03E 8000000000000000"          # -2^63
    assert f80(m, M + 0x20) == "401D FFFFFFFE00000000"   # 2^31 - 1
    assert f80(m, M + 0x30) == "BFFF 8000000000000000"   # -1


# ---------------------------------------------------------------------------
# Compares into EFLAGS, FCMOVcc
# ---------------------------------------------------------------------------

FCOMI_CASES = [
    # ST(0), ST(1), instruction, ZF PF CF
    (0.0, 1.0, "db f1", CF),                # db f1                 fcomi st(1)
    (1.0, 0.0, "db f1", 0),                 # db f1                 fcomi st(1)
    (2.0, 2.0, "db f1", ZF),                # db f1                 fcomi st(1)
    (2.0, 2.0, "df e9", ZF),                # df e9                 fucompi st(1)
    (0.0, 1.0, "db e9", CF),                # db e9                 fucomi st(1)
]


@pytest.mark.parametrize("a,b,code_hex,want", FCOMI_CASES)
def test_fcomi_sets_zf_pf_cf_and_clears_of_sf_af(a, b, code_hex, want):
    code = prog(
        FNINIT,
        "dd 05 18 40 00 00",    # dd 05 18 40 00 00     fld qword ptr [0x4018]
        "dd 05 10 40 00 00",    # dd 05 10 40 00 00     fld qword ptr [0x4010]
        code_hex,
    )
    m, _ = run_code(code, regs=dict(eflags=FIXED1 | ARITH), mem={M + 0x10: struct.pack("<dd", a, b)})
    assert_flags(m, FIXED1 | want, mask=0xFFFFFFFF, code=code)


def test_fcomi_unordered_quiet_and_signalling():
    """A QNaN: ZF PF CF = 111; FCOMI raises IE, FUCOMI does not (SDM Vol. 2 FCOMI)."""
    for insn, ie in (("db f1", 1),              # db f1                 fcomi st(1)
                     ("db e9", 0)):             # db e9                 fucomi st(1)
        code = prog(
            FNINIT,
            "d9 e8",                # d9 e8                 fld1
            "dd 05 10 40 00 00",    # dd 05 10 40 00 00     fld qword ptr [0x4010]
            insn,
        )
        m, _ = run_code(code, mem={M + 0x10: struct.pack("<Q", 0x7FF8000000000000)})
        assert_flags(m, FIXED1 | ZF | PF | CF, mask=0xFFFFFFFF, code=code)
        assert fpu(m)["sw"] & 1 == ie


def test_fcom_condition_codes_and_fnstsw_ax():
    code = prog(
        FNINIT,
        "d9 e8",                # d9 e8                 fld1
        "d9 ee",                # d9 ee                 fldz
        "d8 d1",                # d8 d1                 fcom st(1)
        "df e0",                # df e0                 fnstsw ax
    )
    m, _ = run_code(code)
    assert m.reg_read("ax") == 0x3100, "C0 (ST0 < ST1), TOP 6"


def test_fcmov_reads_the_flags():
    code = prog(
        FNINIT,
        "d9 e8",                # d9 e8                 fld1
        "d9 ee",                # d9 ee                 fldz
        "f9",                   # f9                    stc
        "da c1",                # da c1                 fcmovb st(0), st(1)
        "d9 c0",                # d9 c0                 fld st(0)
        "d9 ee",                # d9 ee                 fldz
        "f8",                   # f8                    clc
        "da c1",                # da c1                 fcmovb st(0), st(1)
    )
    m, _ = run_code(code)
    st = fpu(m)["st"]
    assert st[0] == "0000 0000000000000000", "CF = 0: not moved"
    assert st[1] == "3FFF 8000000000000000", "CF = 1: 1.0 moved"


# ---------------------------------------------------------------------------
# Stack faults, exceptions in the status word
# ---------------------------------------------------------------------------

def test_stack_overflow_sets_ie_sf_c1_and_loads_the_indefinite():
    code = prog(FNINIT, *["d9 e8"] * 9)     # d9 e8                 fld1
    m, _ = run_code(code)
    s = fpu(m)
    assert s["sw"] == 0x3A41, f"SW {s['sw']:#x}: TOP 7, C1 (overflow), SF, IE"
    assert s["st"][0] == "FFFF C000000000000000", "the masked response: the real indefinite"
    assert s["tw"] == 0x8000, "R7 (the new ST0) special, the rest valid"


def test_stack_underflow_sets_ie_sf_clears_c1():
    code = prog(
        FNINIT,
        "d8 c1",                # d8 c1                 fadd st(1)
    )
    m, _ = run_code(code)
    s = fpu(m)
    assert s["sw"] == 0x0041, "IE, SF; C1 = 0: underflow"
    assert s["st"][0] == "FFFF C000000000000000" and s["tw"] == 0xFFFE, "the indefinite, tagged special"


def test_divide_by_zero_masked_gives_infinity():
    code = prog(
        FNINIT,
        "d9 e8",                # d9 e8                 fld1
        "d9 ee",                # d9 ee                 fldz
        "de f9",                # de f9                 fdivp st(1)
    )
    m, _ = run_code(code)
    s = fpu(m)
    assert s["st"][0] == "7FFF 8000000000000000" and s["sw"] == 0x3804


# ---------------------------------------------------------------------------
# The environment and the state images, the pointers
# ---------------------------------------------------------------------------

def test_fnstenv_32bit_protected_layout():
    """Figure 8-9: CW SW TW in the low halves (FFFFh above), FIP, FOP:FCS, FDP, FDS; the last
    non-control instruction is the FLD m64 at CODE_GPA + 2; FNSTENV then masks every exception."""
    code = prog(
        FNINIT,
        "dd 05 10 40 00 00",    # dd 05 10 40 00 00     fld qword ptr [0x4010]
        "d9 2d 18 40 00 00",    # d9 2d 18 40 00 00     fldcw word ptr [0x4018]
        "d9 35 00 41 00 00",    # d9 35 00 41 00 00     fnstenv [0x4100]
        "d9 3d 20 40 00 00",    # d9 3d 20 40 00 00     fnstcw word ptr [0x4020]
    )
    m, _ = run_code(code, mem={M + 0x10: struct.pack("<dH", 1.0, 0x0B72)})
    env = struct.unpack("<7I", m.mem_read(M + 0x100, 28))
    assert env[0] == 0xFFFF0B72 and env[1] == 0xFFFF3800 and env[2] == 0xFFFF3FFF
    assert env[3] == CODE_GPA + 2, "FIP: the FLD (FLDCW is a control instruction)"
    assert env[4] == (0x505 << 16) | m.reg_read("cs"), "FOP dd 05 -> 505h, FCS"
    assert env[5] == M + 0x10 and env[6] == 0xFFFF0000 | m.reg_read("ds")
    assert read16(m, M + 0x20) == 0x0B7F, "FNSTENV masked all exceptions"


def test_fnstenv_16bit_layout():
    code = prog(
        FNINIT,
        "d9 e8",                # d9 e8                 fld1
        "66 d9 35 00 41 00 00",  # 66 d9 35 00 41 00 00  fnstenv [0x4100]
    )
    m, _ = run_code(code, mem={M + 0x100: b"\xAA" * 32})
    env = struct.unpack("<7H", m.mem_read(M + 0x100, 14))
    assert env == (0x037F, 0x3800, 0x3FFF, (CODE_GPA + 2) & 0xFFFF, m.reg_read("cs"), 0, 0)
    assert m.mem_read(M + 0x10E, 2) == b"\xAA\xAA", "14 bytes only"


def test_fnsave_frstor_round_trip_and_fninit():
    code = prog(
        FNINIT,
        "d9 eb",                # d9 eb                 fldpi
        "d9 e8",                # d9 e8                 fld1
        "dd 35 00 41 00 00",    # dd 35 00 41 00 00     fnsave dword ptr [0x4100]
        "df e0",                # df e0                 fnstsw ax
        "89 c3",                # 89 c3                 mov ebx, eax
        "dd 25 00 41 00 00",    # dd 25 00 41 00 00     frstor dword ptr [0x4100]
        "de c1",                # de c1                 faddp st(1)
        "db 3d 00 40 00 00",    # db 3d 00 40 00 00     fstp xword ptr [0x4000]
    )
    m, _ = run_code(code)
    img = m.mem_read(M + 0x100, 108)
    assert struct.unpack_from("<I", img, 8)[0] == 0xFFFF0FFF, "R6, R7 valid; the rest empty"
    assert img[28:38] == bytes.fromhex("0000000000000080ff3f"), "ST0 = 1.0"
    assert img[38:48] == bytes.fromhex("35c26821a2da0fc90040"), "ST1 = pi"
    assert m.reg_read("bx") == 0, "FNSAVE reinitialised the FPU"
    # pi (C90FDAA22168C235 x 2^-62) + 1: significand 1090FDAA22168C235 x 2^-62, one bit too
    # many: exactly halfway, rounded to the even 8487ED5110B4611A x 2^-61
    exact = 0xC90FDAA22168C235 + (1 << 62)
    assert exact & 1 and (exact >> 1) & 1 == 0
    assert f80(m) == f"4001 {exact >> 1:016X}"


def test_fxsave_layout_and_fxrstor():
    """Table 3-53: FCW FSW, abridged FTW (one bit per physical register), FOP, FIP FCS, FDP FDS,
    MXCSR, ST0-ST7 in 16-byte slots."""
    code = prog(
        FNINIT,
        "d9 05 10 40 00 00",    # d9 05 10 40 00 00     fld dword ptr [0x4010]
        "0f ae 05 00 42 00 00",  # 0f ae 05 00 42 00 00  fxsave [0x4200]
        "db e3",                # db e3                 fninit
        "0f ae 0d 00 42 00 00",  # 0f ae 0d 00 42 00 00  fxrstor [0x4200]
        "d9 c0",                # d9 c0                 fld st(0)
        "de c1",                # de c1                 faddp st(1)
        "db 3d 00 40 00 00",    # db 3d 00 40 00 00     fstp xword ptr [0x4000]
    )
    m, _ = run_code(code, mem={M + 0x10: struct.pack("<f", 1.5)})
    fx = m.mem_read(M + 0x200, 48)
    cw, sw, ftw, fop, fip, fcs, fdp, fds, mxcsr = struct.unpack_from("<HHBxHIHxxIHxxI", fx)
    assert (cw, sw, ftw) == (0x037F, 0x3800, 0x80)
    assert fop == 0x105 and fip == CODE_GPA + 2 and fcs == m.reg_read("cs")
    assert fdp == M + 0x10 and fds == m.reg_read("ds") and mxcsr == 0x1F80
    assert fx[32:48] == bytes.fromhex("00000000000000c0ff3f") + bytes(6)
    assert f80(m) == "4000 C000000000000000", "1.5 + 1.5 after FXRSTOR"


def test_fxsave_unaligned_is_gp():
    code = prog(
        FNINIT,
        "0f ae 05 08 42 00 00",  # 0f ae 05 08 42 00 00  fxsave [0x4208]
    )
    run_fault(code, EXC_GP, fault_eip=CODE_GPA + 2, error_code=0)


# ---------------------------------------------------------------------------
# #NM (CR0.EM, TS, MP), #MF (CR0.NE), #UD
# ---------------------------------------------------------------------------

def _with_cr0(bits):
    m = new_machine()
    m.reg_write("cr0", m.reg_read("cr0") | bits)
    return m


@pytest.mark.parametrize("bits", [CR0_EM, CR0_TS, CR0_EM | CR0_MP])
def test_escape_is_nm_under_em_or_ts(bits):
    code = prog("d9 e8")        # d9 e8                 fld1
    run_fault(code, EXC_NM, machine=_with_cr0(bits))


def test_fxsave_is_nm_under_ts():
    code = prog("0f ae 05 00 42 00 00")  # 0f ae 05 00 42 00 00  fxsave [0x4200]
    run_fault(code, EXC_NM, machine=_with_cr0(CR0_TS))


def test_wait_is_nm_only_with_mp_and_ts():
    code = prog("9b")           # 9b                    wait
    run_fault(code, EXC_NM, machine=_with_cr0(CR0_MP | CR0_TS))
    run_code(code, machine=_with_cr0(CR0_TS))
    run_code(code, machine=_with_cr0(CR0_EM))


def test_mf_at_the_next_waiting_instruction():
    """An unmasked divide by zero sets ES; the FDIVP itself completes, FNSTSW (no wait) reads
    the status, and the next waiting instruction raises #MF (CR0.NE = 1) before it runs."""
    code = prog(
        FNINIT,
        "d9 2d 10 40 00 00",    # d9 2d 10 40 00 00     fldcw word ptr [0x4010]
        "d9 e8",                # d9 e8                 fld1
        "d9 ee",                # d9 ee                 fldz
        "de f9",                # de f9                 fdivp st(1)
        "df e0",                # df e0                 fnstsw ax
        "d9 d0",                # d9 d0                 fnop
    )
    m, _ = run_fault(code, EXC_MF, fault_eip=CODE_GPA + 16, mem={M + 0x10: cw_word(0x037B)},
                     machine=_with_cr0(CR0_NE))
    assert m.reg_read("ax") == 0xB084, "B ES ZE, TOP 6"
    s = fpu(m)
    assert s["st"][:2] == ["0000 0000000000000000", "3FFF 8000000000000000"] and s["tw"] == 0x1FFF, \
        "an unmasked #Z changes neither the operands nor TOP (SDM Vol. 1 §8.5.3)"


def test_fwait_raises_mf_and_fnclex_clears_it():
    code = prog(
        FNINIT,
        "d9 2d 10 40 00 00",    # d9 2d 10 40 00 00     fldcw word ptr [0x4010]
        "d9 ee",                # d9 ee                 fldz
        "d9 ee",                # d9 ee                 fldz
        "de f9",                # de f9                 fdivp st(1)
        "db e2",                # db e2                 fnclex
        "9b",                   # 9b                    wait
        "dd 05 20 40 00 00",    # dd 05 20 40 00 00     fld qword ptr [0x4020]
        "9b",                   # 9b                    wait
    )
    # 0/0 with IM unmasked: #IA pending; FNCLEX clears it; then an SNaN load, #IA again, at the WAIT
    mem = {M + 0x10: cw_word(0x037E), M + 0x20: struct.pack("<Q", 0x7FF0000000000001)}
    run_fault(code, EXC_MF, fault_eip=CODE_GPA + len(code) - 1, mem=mem, machine=_with_cr0(CR0_NE))


UD_CASES = [
    "d9 d1",                    # d9 d1                 (invalid) reserved D9 D1
    "d9 e2",                    # d9 e2                 (invalid) reserved D9 E2
    "d9 ef",                    # d9 ef                 (invalid) reserved D9 EF
    "da e8",                    # da e8                 (invalid) reserved DA E8
    "db e6",                    # db e6                 (invalid) reserved DB E6
    "dd f0",                    # dd f0                 (invalid) reserved DD F0
    "de d8",                    # de d8                 (invalid) reserved DE D8
    "df e1",                    # df e1                 (invalid) reserved DF E1
    "df f8",                    # df f8                 (invalid) reserved DF F8
    "d9 0d 00 40 00 00",        # d9 0d 00 40 00 00     (invalid) reserved D9 /1
    "db 25 00 40 00 00",        # db 25 00 40 00 00     (invalid) reserved DB /4
]


@pytest.mark.parametrize("code_hex", UD_CASES)
def test_reserved_escape_encodings_are_ud(code_hex):
    run_fault(prog(code_hex), EXC_UD)


def test_fisttp_is_ud_without_sse3():
    run_fault(prog("db 0d 00 40 00 00"), EXC_UD)    # db 0d 00 40 00 00     fisttp dword ptr [0x4000]


def test_aliases_run_as_what_they_alias():
    """D9 D8+i (FSTP1), DD C8+i (FXCH4), DF C0+i (FFREEP): a P6 executes them."""
    code = prog(
        FNINIT,
        "d9 e8",                # d9 e8                 fld1
        "d9 ee",                # d9 ee                 fldz
        # FXCH4 ST(1) (dd c9), an alias that capstone does not decode:
        "dd c9",
        "d9 d9",                # d9 d9                 fstpnce st(1), st(0)
    )
    m, _ = run_code(code)
    s = fpu(m)
    assert s["st"][0] == "3FFF 8000000000000000" and s["tw"] == 0x3FFF


def test_cpuid_reports_fpu_and_fxsr():
    m, _ = run_code(prog("0f a2"), regs=dict(eax=1))    # 0f a2                 cpuid
    edx = m.reg_read("edx")
    assert edx & 1 and edx & (1 << 24), f"EDX {edx:#x}: FPU (bit 0) and FXSR (bit 24)"
    assert not edx & ((1 << 23) | (1 << 25) | (1 << 26)), "no MMX, SSE, SSE2"


def test_reset_state_is_table_9_1():
    """After RESET: CW 0040H, SW 0, TW 5555H (every register +0.0, tagged zero) (SDM Vol. 3 Table 9-1)."""
    m = new_machine()
    m._engine.reset_real()
    s = fpu(m)
    assert (s["cw"], s["sw"], s["tw"]) == (0x0040, 0, 0x5555)
    m._engine.reset_flat32()
    s = fpu(m)
    assert (s["cw"], s["sw"], s["tw"]) == (0x037F, 0, 0xFFFF)


def test_real_mode_fnstenv_layout():
    """Figure 8-10: in real-address mode the pointers are 20-bit linear addresses."""
    m = new_machine()
    m._engine.reset_real()
    m._engine.seg_set(1, 0x0100, 0x1000, 0xFFFF, 0x009B)    # CS = 0100h, base 1000h
    m.reg_write("eip", 0)
    # 16-bit code (capstone's 32-bit listing would not match): fninit; fld qword ptr [0x4010];
    # fnstenv with an operand-size prefix (the 32-bit format) to [0x4100]; hlt
    code = prog(FNINIT, "dd 06 10 40", "66 d9 36 00 41", "f4")
    m.mem_write(0x1000, code)
    m.mem_write(0x4010, struct.pack("<d", 1.0))
    r = m.run(count=10)
    env = struct.unpack("<7I", m.mem_read(0x4100, 28))
    assert env[3] == 0xFFFF0000 | 0x1002, "FIP 15..0 of linear 1002h"
    # FOP dd 06 -> 506h; FIP 31..16 (0) in bits 12-27; FDP 15..0, FDP 31..16 (0)
    assert env[4] == 0x506 and env[5] == 0xFFFF0000 | 0x4010 and env[6] == 0


# ---------------------------------------------------------------------------
# CR0.NE = 0: FERR# -> IRQ 13, port F0h (SDM Vol. 1 Appendix D)
# ---------------------------------------------------------------------------

def test_ferr_with_ne_clear_raises_irq13_and_the_instruction_goes_on():
    """NE = 0, IF = 0: the waiting FNOP asserts FERR# (IRQ 13 up, latched) and, the interrupt
    not being takeable, runs ignoring the exception; OUT F0h drops IRQ 13 (IGNNE#); after FNCLEX
    the next waiting instruction releases IGNNE#."""
    m = new_machine()
    code = prog(
        FNINIT,
        "d9 2d 10 40 00 00",    # d9 2d 10 40 00 00     fldcw word ptr [0x4010]
        "d9 e8",                # d9 e8                 fld1
        "d9 ee",                # d9 ee                 fldz
        "de f9",                # de f9                 fdivp st(1)
        "d9 d0",                # d9 d0                 fnop
        "d9 e8",                # d9 e8                 fld1
        "df e0",                # df e0                 fnstsw ax
    )
    run_code(code, machine=m, mem={M + 0x10: cw_word(0x037B)})
    assert m.fpu_ports.irq.level and m._engine.fpu_ferr == 1
    assert m.reg_read("ax") & 0x80FF == 0x8084, "the exception is still pending (ES, ZE)"
    assert fpu(m)["st"][0] == "3FFF 8000000000000000", "the FLD after the FNOP ran"
    code2 = prog(
        "e6 f0",                # e6 f0                 out 0xf0, al
        "db e2",                # db e2                 fnclex
        "d9 d0",                # d9 d0                 fnop
    )
    run_code(code2, machine=m)
    assert not m.fpu_ports.irq.level and m._engine.fpu_ferr == 0


def test_ferr_irq13_handler_runs_before_the_waiting_instruction():
    """Real mode, NE = 0, the PICs programmed (slave base 70h: IRQ 13 is vector 75h) and IF = 1:
    the FNOP that finds the #Z pending is interrupted before it runs; the handler writes F0h,
    clears the exception, sends EOIs and counts in BX; the FNOP then runs without an exception."""
    m = new_machine()
    m._engine.reset_real()
    m._engine.seg_set(1, 0, 0, 0xFFFF, 0x009B)      # CS = 0
    m.reg_write("eip", 0x1000)
    m.reg_write("esp", 0x8000)
    # 16-bit code, so written without capstone listing comments (capstone decodes 32-bit here):
    # master: ICW1 11h, ICW2 08h, ICW3 04h, ICW4 01h, OCW1 FBh; slave: 11h, 70h, 02h, 01h, DFh
    pic = "b0 11 e6 20 b0 08 e6 21 b0 04 e6 21 b0 01 e6 21 b0 fb e6 21 "
    pic += "b0 11 e6 a0 b0 70 e6 a1 b0 02 e6 a1 b0 01 e6 a1 b0 df e6 a1 "
    # fninit; fldcw [4010h]; fld1; fldz; fdivp st(1); sti; fnop; cli; fnstsw ax; hlt
    body = "db e3 d9 2e 10 40 d9 e8 d9 ee de f9 fb d9 d0 fa df e0 f4"
    # the handler at 2000h: out F0h, al; fnclex; mov al, 20h; out A0h, al; out 20h, al; inc bx; iret
    handler = "e6 f0 db e2 b0 20 e6 a0 e6 20 43 cf"
    m.mem_write(0x1000, bytes.fromhex(pic + body))
    m.mem_write(0x2000, bytes.fromhex(handler))
    m.mem_write(0x75 * 4, struct.pack("<HH", 0x2000, 0))
    m.mem_write(0x4010, cw_word(0x037B))
    r = m.run(count=200)
    assert r.exit.name == "HLT", r
    assert m.reg_read("bx") == 1, "IRQ 13 delivered once"
    assert m.reg_read("ax") & 0x00FF == 0, "the handler's FNCLEX cleared ZE; the FNOP raised nothing"
    assert not m.fpu_ports.irq.level and m._engine.fpu_ferr == 0


@pytest.mark.parametrize("mode", ["bt", "trap"])
def test_pointers_under_the_monitor_hold_the_guests_selectors(mode):
    """Under bt the guest kernel runs at real CPL 1 with RPL 1 in CS and SS; FNSTENV must show the
    selectors the guest loaded (RPL 0), as PUSH CS does."""
    m = vmcore.Machine(memory_mb=16, mode=mode)
    code = prog(
        FNINIT,
        "dd 44 24 f0",          # dd 44 24 f0           fld qword ptr [esp - 0x10]
        "d9 35 00 41 00 00",    # d9 35 00 41 00 00     fnstenv [0x4100]
        "f4",                   # f4                    hlt
    )
    m.mem_write(CODE_GPA, code)
    m.mem_write(0x8000 - 0x10, struct.pack("<d", 2.0))
    m.reg_write("eip", CODE_GPA)
    m.reg_write("esp", 0x8000)
    r = m.run(count=100)
    assert r.exit.name == "HLT"
    env = struct.unpack("<7I", m.mem_read(0x4100, 28))
    assert env[4] == (0x544 << 16) | m.reg_read("cs") and m.reg_read("cs") & 3 == 0
    assert env[5] == 0x8000 - 0x10 and env[6] == 0xFFFF0000 | m.reg_read("ss")


# ---------------------------------------------------------------------------
# Arithmetic with exact results, transcendentals at exact points, FXAM, FTST
# ---------------------------------------------------------------------------

def _two_operands(a: float, b: float, *insns):
    """ST(1) = a, ST(0) = b, then insns; returns (machine, the FPU state)."""
    code = prog(
        FNINIT,
        "dd 05 10 40 00 00",    # dd 05 10 40 00 00     fld qword ptr [0x4010]
        "dd 05 18 40 00 00",    # dd 05 18 40 00 00     fld qword ptr [0x4018]
        *insns,
    )
    m, _ = run_code(code, mem={M + 0x10: struct.pack("<dd", a, b)})
    return m, fpu(m)


ONE, TWO, THREE, EIGHT, ZERO = ("3FFF 8000000000000000", "4000 8000000000000000", "4000 C000000000000000",
                                "4002 8000000000000000", "0000 0000000000000000")


def test_fsqrt_is_correctly_rounded():
    # floor(sqrt(2) x 2^63) = B504F333F9DE6484, and the rest is below one half: rounded down
    m, s = _two_operands(0.0, 2.0, "d9 fa")     # d9 fa                 fsqrt
    assert s["st"][0] == "3FFF B504F333F9DE6484" and s["sw"] & 0x3F == 0x20


def test_fprem_and_fprem1_with_the_quotient_bits():
    """10 rem 3: FPREM 1 (quotient 3 = 011b: C3 = 1, C1 = 1, C0 = 0); 11 rem 3: FPREM 2 (truncated
    quotient 3), FPREM1 -1 (rounded quotient 4 = 100b: C0 = 1)."""
    m, s = _two_operands(3.0, 10.0, "d9 f8")    # d9 f8                 fprem
    assert s["st"][0] == ONE and s["sw"] & 0x4700 == 0x4200
    m, s = _two_operands(3.0, 11.0, "d9 f8")    # d9 f8                 fprem
    assert s["st"][0] == TWO
    m, s = _two_operands(3.0, 11.0, "d9 f5")    # d9 f5                 fprem1
    assert s["st"][0] == "BFFF 8000000000000000" and s["sw"] & 0x4700 == 0x0100


def test_fscale_fxtract_frndint():
    m, s = _two_operands(3.5, 1.0, "d9 fd")     # d9 fd                 fscale
    assert s["st"][0] == EIGHT, "the scale is truncated to 3"
    m, s = _two_operands(0.0, 10.0, "d9 f4")    # d9 f4                 fxtract
    assert s["st"][0] == "3FFF A000000000000000" and s["st"][1] == THREE, "1.25 and exponent 3"
    m, s = _two_operands(0.0, 2.5, "d9 fc")     # d9 fc                 frndint
    assert s["st"][0] == TWO, "to nearest even"


def test_transcendentals_at_exact_points():
    m, s = _two_operands(8.0, 1.0,
                         "d9 c9",               # d9 c9                 fxch st(1)
                         "d9 f1")               # d9 f1                 fyl2x
    assert s["st"][0] == THREE, "1 x log2(8)"
    m, s = _two_operands(1.0, 0.0, "d9 f9")     # d9 f9                 fyl2xp1
    assert s["st"][0] == ZERO, "1 x log2(1 + 0)"
    m, s = _two_operands(0.0, -1.0, "d9 f0")    # d9 f0                 f2xm1
    assert s["st"][0] == "BFFE 8000000000000000", "2^-1 - 1"
    m, s = _two_operands(0.0, 0.0, "d9 fe")     # d9 fe                 fsin
    assert s["st"][0] == ZERO
    m, s = _two_operands(0.0, 0.0, "d9 ff")     # d9 ff                 fcos
    assert s["st"][0] == ONE
    m, s = _two_operands(0.0, 0.0, "d9 fb")     # d9 fb                 fsincos
    assert s["st"][:2] == [ONE, ZERO], "ST0 = cos, ST1 = sin"
    m, s = _two_operands(5.0, 0.0, "d9 f2")     # d9 f2                 fptan
    assert s["st"][:2] == [ONE, ZERO] and s["sw"] & 0x0400 == 0, "tan, then 1.0 pushed; C2 = 0: in range"
    m, s = _two_operands(0.0, 1.0, "d9 f3")     # d9 f3                 fpatan
    assert s["st"][0] == ZERO, "atan(0 / 1)"


FXAM_CASES = [
    # ST(0) as (mantissa, sign+exponent), C3 C2 C1 C0 in SW bits 14 10 9 8
    ((0, 0x0000), 0x4000),                      # +0: zero
    ((0, 0x8000), 0x4200),                      # -0: zero, C1 = sign
    ((1 << 63, 0x7FFF), 0x0500),                # +infinity
    ((3 << 62, 0xFFFF), 0x0300),                # -QNaN
    ((1 << 63, 0x3FFF), 0x0400),                # +1.0: normal
    ((1, 0x0000), 0x4400),                      # denormal
    ((1 << 62, 0x3FFF), 0x0000),                # unnormal: unsupported
]


@pytest.mark.parametrize("value,codes", FXAM_CASES)
def test_fxam_classifies(value, codes):
    code = prog(
        FNINIT,
        "db 2d 10 40 00 00",    # db 2d 10 40 00 00     fld xword ptr [0x4010]
        "d9 e5",                # d9 e5                 fxam
    )
    m, _ = run_code(code, mem={M + 0x10: struct.pack("<QH", *value)})
    assert fpu(m)["sw"] & 0x4700 == codes


def test_fxam_of_an_empty_register():
    code = prog(FNINIT, "d9 e5")                # d9 e5                 fxam
    m, _ = run_code(code)
    assert fpu(m)["sw"] & 0x4500 == 0x4100, "C3 C0: empty"


def test_ftst_and_fucompp():
    m, s = _two_operands(0.0, -2.0, "d9 e4")    # d9 e4                 ftst
    assert s["sw"] & 0x4500 == 0x0100, "C0: ST0 < 0"
    m, s = _two_operands(2.0, 2.0, "da e9")     # da e9                 fucompp
    assert s["sw"] & 0x4500 == 0x4000 and s["tw"] == 0xFFFF, "C3: equal; both popped"


def test_fincstp_fdecstp_ffree():
    m, s = _two_operands(1.0, 2.0,
                         "d9 f7",               # d9 f7                 fincstp
                         "dd c1",               # dd c1                 ffree st(1)
                         "d9 f6")               # d9 f6                 fdecstp
    # FINCSTP: TOP 6 -> 7 (ST0 = the 1.0, R7); FFREE ST(1) = R0, already empty; FDECSTP: TOP 6
    assert (s["sw"] >> 11) & 7 == 6 and s["tw"] == 0x0FFF and s["st"][:2] == [TWO, ONE]
    m, s = _two_operands(1.0, 2.0, "dd c1")     # dd c1                 ffree st(1)
    assert s["tw"] == 0xCFFF, "R7 (ST1) empty, R6 (ST0) valid"


def test_ferr_path_keeps_the_pending_exception_when_the_operand_faults():
    """NE = 0, #Z pending, the waiting FLD's operand runs past 4 GiB (#GP): the exception flags are
    as they were when the #GP is delivered."""
    code = prog(
        FNINIT,
        "d9 2d 10 40 00 00",    # d9 2d 10 40 00 00     fldcw word ptr [0x4010]
        "d9 e8",                # d9 e8                 fld1
        "d9 ee",                # d9 ee                 fldz
        "de f9",                # de f9                 fdivp st(1)
        "dd 05 fc ff ff ff",    # dd 05 fc ff ff ff     fld qword ptr [0xfffffffc]
    )
    m, _ = run_fault(code, EXC_GP, fault_eip=CODE_GPA + 14, error_code=0, mem={M + 0x10: cw_word(0x037B)},
                     machine=new_machine())
    assert fpu(m)["sw"] & 0x80FF == 0x8084, "B ES ZE still set"
    assert m._engine.fpu_ferr == 1 and m.fpu_ports.irq.level
