"""BT BTS BTR BTC, BSF BSR, SETcc, CMOVcc (SDM Vol. 2A/2B pages of the same names).

* BT/BTS/BTR/BTC: CF = the selected bit (then set/cleared/complemented). ZF unaffected;
  OF SF AF PF undefined. A register bit base takes the offset modulo the operand size; an
  immediate offset is masked to 5 (32-bit) or 4 (16-bit) bits, for memory too; a register
  offset with a memory bit base is a signed bit index into the bit string that starts at
  bit 0 of the addressed byte (it may reach below it).
* BSF/BSR: source 0 -> ZF = 1 and the destination is undefined; otherwise ZF = 0 and the
  destination is the index of the lowest/highest set bit. CF OF SF AF PF undefined.
* SETcc / CMOVcc: no flags affected. SETcc writes 1 or 0 to a byte; CMOVcc moves only when
  the condition holds (32-bit mode: a false condition leaves the destination alone).
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # isa_harness, with or without tests/__init__.py

from isa_harness import (AF, ARITH, CF, DATA_GPA, DF, FIXED1, OF, PF, SF, ZF, Failures, asm,
                         assert_flags, assert_regs, disasm, le16, le32, merge, read16, read32,
                         run_code)

MEM = DATA_GPA + 0x200          # bit strings live here (with room below for negative offsets)


def condition(cc, fl):
    """The SDM's Jcc/SETcc/CMOVcc condition table (Vol. 2 Appendix B), by name."""
    cf, pf, zf, sf, of = (bool(fl & b) for b in (CF, PF, ZF, SF, OF))
    base = [of,                 # O
            cf,                 # B / C / NAE
            zf,                 # E / Z
            cf or zf,           # BE / NA
            sf,                 # S
            pf,                 # P / PE
            sf != of,           # L / NGE
            zf or sf != of,     # LE / NG
            ][cc >> 1]
    return base if cc % 2 == 0 else not base


def flag_combos():
    """All 32 combinations of CF PF ZF SF OF (AF and DF toggled along to show they do not matter)."""
    out = []
    for i in range(32):
        f = FIXED1
        for k, b in enumerate((CF, PF, ZF, SF, OF)):
            if i >> k & 1:
                f |= b
        if i & 3 == 1:
            f |= AF | DF
        out.append(f)
    return out


SETCC = [
    "0f 90 c0",                             # 0f 90 c0              seto al
    "0f 91 c0",                             # 0f 91 c0              setno al
    "0f 92 c0",                             # 0f 92 c0              setb al
    "0f 93 c0",                             # 0f 93 c0              setae al
    "0f 94 c0",                             # 0f 94 c0              sete al
    "0f 95 c0",                             # 0f 95 c0              setne al
    "0f 96 c0",                             # 0f 96 c0              setbe al
    "0f 97 c0",                             # 0f 97 c0              seta al
    "0f 98 c0",                             # 0f 98 c0              sets al
    "0f 99 c0",                             # 0f 99 c0              setns al
    "0f 9a c0",                             # 0f 9a c0              setp al
    "0f 9b c0",                             # 0f 9b c0              setnp al
    "0f 9c c0",                             # 0f 9c c0              setl al
    "0f 9d c0",                             # 0f 9d c0              setge al
    "0f 9e c0",                             # 0f 9e c0              setle al
    "0f 9f c0",                             # 0f 9f c0              setg al
]
CMOVCC = [
    "0f 40 c3",                             # 0f 40 c3              cmovo eax, ebx
    "0f 41 c3",                             # 0f 41 c3              cmovno eax, ebx
    "0f 42 c3",                             # 0f 42 c3              cmovb eax, ebx
    "0f 43 c3",                             # 0f 43 c3              cmovae eax, ebx
    "0f 44 c3",                             # 0f 44 c3              cmove eax, ebx
    "0f 45 c3",                             # 0f 45 c3              cmovne eax, ebx
    "0f 46 c3",                             # 0f 46 c3              cmovbe eax, ebx
    "0f 47 c3",                             # 0f 47 c3              cmova eax, ebx
    "0f 48 c3",                             # 0f 48 c3              cmovs eax, ebx
    "0f 49 c3",                             # 0f 49 c3              cmovns eax, ebx
    "0f 4a c3",                             # 0f 4a c3              cmovp eax, ebx
    "0f 4b c3",                             # 0f 4b c3              cmovnp eax, ebx
    "0f 4c c3",                             # 0f 4c c3              cmovl eax, ebx
    "0f 4d c3",                             # 0f 4d c3              cmovge eax, ebx
    "0f 4e c3",                             # 0f 4e c3              cmovle eax, ebx
    "0f 4f c3",                             # 0f 4f c3              cmovg eax, ebx
]


@pytest.mark.parametrize("cc", range(16))
def test_setcc_all_flag_combinations(cc):
    code = asm(SETCC[cc])
    fails = Failures()
    for fl in flag_combos():
        with fails.case(f"{SETCC[cc]} flags={fl:#x}"):
            m, _ = run_code(code, regs=dict(eax=0xAAAAAA55, eflags=fl))
            assert_regs(m, code, eax=0xAAAAAA00 | int(condition(cc, fl)), eflags=fl)
    fails.check()


@pytest.mark.parametrize("code_hex,reg,where", [
    ("0f 94 c4", "eax", 8),         # 0f 94 c4              sete ah
    ("0f 95 c7", "ebx", 8),         # 0f 95 c7              setne bh
    ("0f 94 c1", "ecx", 0),         # 0f 94 c1              sete cl
])
def test_setcc_byte_registers(code_hex, reg, where):
    code = asm(code_hex)
    for zf in (0, ZF):
        m, _ = run_code(code, regs={reg: 0x5A5A5A5A, "eflags": FIXED1 | zf})
        bit = int(bool(zf)) if "94" in code_hex else int(not zf)
        want = (0x5A5A5A5A & ~(0xFF << where)) | (bit << where)
        assert_regs(m, code, **{reg: want})


def test_setcc_memory():
    code = asm("0f 9c 03")      # 0f 9c 03              setl byte ptr [ebx]
    m, _ = run_code(code, regs=dict(ebx=MEM, eflags=FIXED1 | SF), mem={MEM: b"\x77\x77"})
    assert m.mem_read(MEM, 2) == b"\x01\x77"
    m, _ = run_code(code, regs=dict(ebx=MEM, eflags=FIXED1 | SF | OF), mem={MEM: b"\x77\x77"})
    assert m.mem_read(MEM, 2) == b"\x00\x77"


@pytest.mark.parametrize("cc", range(16))
def test_cmovcc_all_flag_combinations(cc):
    code = asm(CMOVCC[cc])
    fails = Failures()
    for fl in flag_combos():
        with fails.case(f"{CMOVCC[cc]} flags={fl:#x}"):
            m, _ = run_code(code, regs=dict(eax=0x11111111, ebx=0x22222222, eflags=fl))
            want = 0x22222222 if condition(cc, fl) else 0x11111111
            assert_regs(m, code, eax=want, ebx=0x22222222, eflags=fl)
    fails.check()


def test_cmovcc_16_bit_and_memory():
    code = asm("66 0f 44 c3")   # 66 0f 44 c3           cmove ax, bx
    m, _ = run_code(code, regs=dict(eax=0x11111111, ebx=0x22222222, eflags=FIXED1 | ZF))
    assert_regs(m, code, eax=0x11112222)
    m, _ = run_code(code, regs=dict(eax=0x11111111, ebx=0x22222222, eflags=FIXED1))
    assert_regs(m, code, eax=0x11111111)
    code = asm("0f 4f 03")      # 0f 4f 03              cmovg eax, dword ptr [ebx]
    m, _ = run_code(code, regs=dict(eax=1, ebx=MEM, eflags=FIXED1), mem={MEM: le32(0xABCDEF01)})
    assert_regs(m, code, eax=0xABCDEF01)
    m, _ = run_code(code, regs=dict(eax=1, ebx=MEM, eflags=FIXED1 | ZF), mem={MEM: le32(0xABCDEF01)})
    assert_regs(m, code, eax=1)


# ---------------------------------------------------------------------------
# BT BTS BTR BTC
# ---------------------------------------------------------------------------

BT_OPS = ("bt", "bts", "btr", "btc")
BT_DEFINED = CF                 # plus ZF, which must be unchanged
BT_RR = {
    ("bt", 32): "0f a3 d8",                 # 0f a3 d8              bt eax, ebx
    ("bts", 32): "0f ab d8",                # 0f ab d8              bts eax, ebx
    ("btr", 32): "0f b3 d8",                # 0f b3 d8              btr eax, ebx
    ("btc", 32): "0f bb d8",                # 0f bb d8              btc eax, ebx
    ("bt", 16): "66 0f a3 d8",              # 66 0f a3 d8           bt ax, bx
    ("bts", 16): "66 0f ab d8",             # 66 0f ab d8           bts ax, bx
    ("btr", 16): "66 0f b3 d8",             # 66 0f b3 d8           btr ax, bx
    ("btc", 16): "66 0f bb d8",             # 66 0f bb d8           btc ax, bx
}
BT_RI = {
    ("bt", 32): "0f ba e0 ib",              # 0f ba e0 ib           bt eax, imm8
    ("bts", 32): "0f ba e8 ib",             # 0f ba e8 ib           bts eax, imm8
    ("btr", 32): "0f ba f0 ib",             # 0f ba f0 ib           btr eax, imm8
    ("btc", 32): "0f ba f8 ib",             # 0f ba f8 ib           btc eax, imm8
    ("bt", 16): "66 0f ba e0 ib",           # 66 0f ba e0 ib        bt ax, imm8
    ("bts", 16): "66 0f ba e8 ib",          # 66 0f ba e8 ib        bts ax, imm8
    ("btr", 16): "66 0f ba f0 ib",          # 66 0f ba f0 ib        btr ax, imm8
    ("btc", 16): "66 0f ba f8 ib",          # 66 0f ba f8 ib        btc ax, imm8
}
BT_MR = {
    ("bt", 32): "0f a3 0b",                 # 0f a3 0b              bt dword ptr [ebx], ecx
    ("bts", 32): "0f ab 0b",                # 0f ab 0b              bts dword ptr [ebx], ecx
    ("btr", 32): "0f b3 0b",                # 0f b3 0b              btr dword ptr [ebx], ecx
    ("btc", 32): "0f bb 0b",                # 0f bb 0b              btc dword ptr [ebx], ecx
    ("bt", 16): "66 0f a3 0b",              # 66 0f a3 0b           bt word ptr [ebx], cx
    ("bts", 16): "66 0f ab 0b",             # 66 0f ab 0b           bts word ptr [ebx], cx
    ("btr", 16): "66 0f b3 0b",             # 66 0f b3 0b           btr word ptr [ebx], cx
    ("btc", 16): "66 0f bb 0b",             # 66 0f bb 0b           btc word ptr [ebx], cx
}
BT_MI = {
    ("bt", 32): "0f ba 23 ib",              # 0f ba 23 ib           bt dword ptr [ebx], imm8
    ("bts", 32): "0f ba 2b ib",             # 0f ba 2b ib           bts dword ptr [ebx], imm8
    ("btr", 32): "0f ba 33 ib",             # 0f ba 33 ib           btr dword ptr [ebx], imm8
    ("btc", 32): "0f ba 3b ib",             # 0f ba 3b ib           btc dword ptr [ebx], imm8
    ("bt", 16): "66 0f ba 23 ib",           # 66 0f ba 23 ib        bt word ptr [ebx], imm8
    ("bts", 16): "66 0f ba 2b ib",          # 66 0f ba 2b ib        bts word ptr [ebx], imm8
    ("btr", 16): "66 0f ba 33 ib",          # 66 0f ba 33 ib        btr word ptr [ebx], imm8
    ("btc", 16): "66 0f ba 3b ib",          # 66 0f ba 3b ib        btc word ptr [ebx], imm8
}


def ref_bt(op, value, bit):
    """(new value, CF) for the selected bit of ``value``."""
    cf = (value >> bit) & 1
    new = {"bt": value, "bts": value | (1 << bit), "btr": value & ~(1 << bit), "btc": value ^ (1 << bit)}[op]
    return new, cf


def _bt_flag_patterns():
    # ZF both ways (it must be kept), CF opposite ways, the undefined ones set or clear
    return (FIXED1, FIXED1 | ZF | CF, FIXED1 | ZF | DF | OF | SF | AF | PF, FIXED1 | CF)


@pytest.mark.parametrize("op", BT_OPS)
@pytest.mark.parametrize("bits", [16, 32])
@pytest.mark.parametrize("form", ["reg", "imm"])
def test_bt_register_base(op, bits, form):
    fails = Failures()
    value = 0xA5C3F00F & ((1 << bits) - 1)
    for offset in (0, 1, 3, 4, bits - 1, bits, bits + 1, 31, 32, 63, 0xFF, 0x80000000 | 5, 0xFFFFFFFF):
        if form == "imm" and offset > 0xFF:
            continue
        bit = offset % bits if form == "reg" else offset & (bits - 1)
        new, cf = ref_bt(op, value, bit)
        for fl in _bt_flag_patterns():
            table = BT_RR if form == "reg" else BT_RI
            code = asm(table[(op, bits)]) if form == "reg" else asm(table[(op, bits)], offset)
            with fails.case(f"{op}{bits} {form} value={value:#x} offset={offset:#x} eflags={fl:#x}"):
                ebx = merge(0, offset, bits) if form == "reg" else 0x12345678
                m, _ = run_code(code, regs=dict(eax=merge(0xEEEE0000, value, bits), ebx=ebx, eflags=fl))
                assert_regs(m, code, eax=merge(0xEEEE0000, new, bits), ebx=ebx)
                want = (fl & ~CF) | (CF if cf else 0)
                assert_flags(m, want, mask=0xFFFFFFFF & ~(OF | SF | AF | PF), code=code)
    fails.check()


def _bit_string():
    return bytes((0x5A ^ (i * 37)) & 0xFF for i in range(64))


@pytest.mark.parametrize("op", BT_OPS)
@pytest.mark.parametrize("bits", [16, 32])
def test_bt_memory_bit_string_register_offset(op, bits):
    """The register offset is a signed bit index from bit 0 of [ebx]; it may reach outside the
    operand-sized word at [ebx], forward and backward."""
    base = MEM + 32
    fails = Failures()
    offsets = [0, 1, 7, 8, 15, 16, 17, 31, 32, 33, 100, 255, -1, -8, -9, -16, -17, -32, -33, -200]
    for off in offsets:
        string = bytearray(_bit_string())
        pos = 32 * 8 + off                          # bit index inside the 64-byte string
        cf = (string[pos // 8] >> (pos % 8)) & 1
        if op == "bts":
            string[pos // 8] |= 1 << (pos % 8)
        elif op == "btr":
            string[pos // 8] &= ~(1 << (pos % 8)) & 0xFF
        elif op == "btc":
            string[pos // 8] ^= 1 << (pos % 8)
        code = asm(BT_MR[(op, bits)])
        ecx = merge(0xCCCC0000, off, bits) if bits == 16 else off & 0xFFFFFFFF
        for fl in (FIXED1 | ZF, FIXED1 | CF):
            with fails.case(f"{op}{bits} [ebx], offset {off}"):
                m, _ = run_code(code, regs=dict(ebx=base, ecx=ecx, eflags=fl), mem={MEM: _bit_string()})
                got = m.mem_read(MEM, 64)
                assert got == bytes(string), (
                    f"bit string differs at bytes {[i for i in range(64) if got[i] != string[i]]} "
                    f"(selected bit {pos} = byte {pos // 8} bit {pos % 8})\n{disasm(code)}")
                want = (fl & ~CF) | (CF if cf else 0)
                assert_flags(m, want, mask=0xFFFFFFFF & ~(OF | SF | AF | PF), code=code)
                assert_regs(m, code, ebx=base, ecx=ecx)
    fails.check()


@pytest.mark.parametrize("op", BT_OPS)
@pytest.mark.parametrize("bits", [16, 32])
def test_bt_memory_immediate_offset_is_masked(op, bits):
    fails = Failures()
    for imm8 in (0, 1, 7, 8, bits - 1, bits, bits + 3, 0x7F, 0xFF):
        bit = imm8 & (bits - 1)
        word = 0xA5C3F00F & ((1 << bits) - 1)
        new, cf = ref_bt(op, word, bit)
        code = asm(BT_MI[(op, bits)], imm8)
        with fails.case(f"{op}{bits} [ebx], {imm8:#x}"):
            m, _ = run_code(code, regs=dict(ebx=MEM, eflags=FIXED1 | ZF),
                            mem={MEM: (le16 if bits == 16 else le32)(word) + b"\x99" * 8})
            got = (read16 if bits == 16 else read32)(m, MEM)
            assert got == new, f"{got:#x}, expected {new:#x}\n{disasm(code)}"
            assert m.mem_read(MEM + bits // 8, 8) == b"\x99" * 8, "the immediate offset reached past the operand"
            assert_flags(m, FIXED1 | ZF | (CF if cf else 0), mask=0xFFFFFFFF & ~(OF | SF | AF | PF), code=code)
    fails.check()


def test_lock_bts_memory():
    code = asm("f0 0f ab 0b")   # f0 0f ab 0b           lock bts dword ptr [ebx], ecx
    m, _ = run_code(code, regs=dict(ebx=MEM, ecx=35), mem={MEM: bytes(8)})
    assert m.mem_read(MEM, 8) == bytes([0, 0, 0, 0, 0x08, 0, 0, 0])
    assert_flags(m, 0, mask=CF, code=code)


# ---------------------------------------------------------------------------
# BSF / BSR
# ---------------------------------------------------------------------------

BSX = {
    ("bsf", 32): "0f bc c3",                # 0f bc c3              bsf eax, ebx
    ("bsr", 32): "0f bd c3",                # 0f bd c3              bsr eax, ebx
    ("bsf", 16): "66 0f bc c3",             # 66 0f bc c3           bsf ax, bx
    ("bsr", 16): "66 0f bd c3",             # 66 0f bd c3           bsr ax, bx
}
BSX_MEM = {
    ("bsf", 32): "0f bc 03",                # 0f bc 03              bsf eax, dword ptr [ebx]
    ("bsr", 32): "0f bd 03",                # 0f bd 03              bsr eax, dword ptr [ebx]
    ("bsf", 16): "66 0f bc 03",             # 66 0f bc 03           bsf ax, word ptr [ebx]
    ("bsr", 16): "66 0f bd 03",             # 66 0f bd 03           bsr ax, word ptr [ebx]
}


def ref_bsx(op, v, bits):
    if v == 0:
        return None
    idx = [i for i in range(bits) if v >> i & 1]
    return idx[0] if op == "bsf" else idx[-1]


@pytest.mark.parametrize("op", ["bsf", "bsr"])
@pytest.mark.parametrize("bits", [16, 32])
@pytest.mark.parametrize("mem", [False, True], ids=["reg", "mem"])
def test_bsf_bsr(op, bits, mem):
    fails = Failures()
    vals = [0, 1, 2, 0x80, 0x8000, 0x8001, 0x0110, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x00F0F000, 0x10000]
    for v in vals:
        v &= (1 << bits) - 1
        want = ref_bsx(op, v, bits)
        for fl in (FIXED1, FIXED1 | ARITH | DF):
            with fails.case(f"{op}{bits} {v:#x} eflags={fl:#x}"):
                if mem:
                    code = asm(BSX_MEM[(op, bits)])
                    m, _ = run_code(code, regs=dict(eax=0xEEEEEEEE, ebx=MEM, eflags=fl),
                                    mem={MEM: le32(v if bits == 32 else v | 0xFFFF0000)})
                else:
                    code = asm(BSX[(op, bits)])
                    m, _ = run_code(code, regs=dict(eax=0xEEEEEEEE, ebx=merge(0xFFFF0000, v, bits), eflags=fl))
                if want is not None:
                    assert_regs(m, code, eax=merge(0xEEEEEEEE, want, bits))
                else:   # destination undefined; only the upper half of a 16-bit destination is known
                    if bits == 16:
                        assert m.reg_read("eax") >> 16 == 0xEEEE
                zf = ZF if want is None else 0
                assert_flags(m, (fl & ~ZF) | zf, mask=0xFFFFFFFF & ~(CF | OF | SF | AF | PF), code=code)
    fails.check()
