"""String instructions MOVS CMPS STOS LODS SCAS (b/w/d) with REP/REPE/REPNE and DF both ways
(SDM Vol. 2A/2B: MOVS, CMPS, STOS, LODS, SCAS, REP/REPE/REPZ/REPNE/REPNZ).

* Each iteration moves ESI/EDI by the element size, forward when DF = 0, backward when DF = 1.
* REP repeats while ECX != 0, decrementing ECX after each iteration; ECX = 0 means no
  iteration at all (and no flag change). REPE/REPNE with CMPS/SCAS also stop after an
  iteration that leaves ZF = 0 / ZF = 1.
* CMPS sets the flags of [ESI] - ES:[EDI]; SCAS those of AL/AX/EAX - ES:[EDI]; the others
  affect no flag. With a 67 prefix the registers are SI, DI and CX.

``ref_string`` below executes the SDM's Operation sections one element at a time on a copy
of guest memory.
"""

import os
import random
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # isa_harness, with or without tests/__init__.py

from isa_harness import (AF, ARITH, CF, DF, FIXED1, MASK, OF, PF, ZF, Failures, asm, assert_flags,
                         assert_regs, disasm, le32, prog, run_code, szp, to_signed)

SRC = 0x4400
DST = 0x4C00
AREA = 0x4000, 0x5400           # the compared memory window
EAX0 = 0x5E5E5E5E

OPS = {
    ("movs", 1): "a4",                      # a4                    movsb byte ptr es:[edi], byte ptr [esi]
    ("movs", 2): "66 a5",                   # 66 a5                 movsw word ptr es:[edi], word ptr [esi]
    ("movs", 4): "a5",                      # a5                    movsd dword ptr es:[edi], dword ptr [esi]
    ("cmps", 1): "a6",                      # a6                    cmpsb byte ptr [esi], byte ptr es:[edi]
    ("cmps", 2): "66 a7",                   # 66 a7                 cmpsw word ptr [esi], word ptr es:[edi]
    ("cmps", 4): "a7",                      # a7                    cmpsd dword ptr [esi], dword ptr es:[edi]
    ("stos", 1): "aa",                      # aa                    stosb byte ptr es:[edi], al
    ("stos", 2): "66 ab",                   # 66 ab                 stosw word ptr es:[edi], ax
    ("stos", 4): "ab",                      # ab                    stosd dword ptr es:[edi], eax
    ("lods", 1): "ac",                      # ac                    lodsb al, byte ptr [esi]
    ("lods", 2): "66 ad",                   # 66 ad                 lodsw ax, word ptr [esi]
    ("lods", 4): "ad",                      # ad                    lodsd eax, dword ptr [esi]
    ("scas", 1): "ae",                      # ae                    scasb al, byte ptr es:[edi]
    ("scas", 2): "66 af",                   # 66 af                 scasw ax, word ptr es:[edi]
    ("scas", 4): "af",                      # af                    scasd eax, dword ptr es:[edi]
}
PREFIX = {
    None: "",
    "rep": "f3",                            # prefix f3: rep (movs stos lods), repe (cmps scas)
    "repne": "f2",                          # prefix f2: repne
}


def sub_flags(a, b, bits):
    """Status flags of a - b (CMP), from the SDM definitions."""
    res = (a - b) & MASK[bits]
    sr = to_signed(a, bits) - to_signed(b, bits)
    f = szp(res, bits)
    f |= CF if a < b else 0
    f |= AF if (a & 0xF) < (b & 0xF) else 0
    f |= OF if not -(1 << (bits - 1)) <= sr < (1 << (bits - 1)) else 0
    return f


def ref_string(op, size, rep, regs, mem, base, a16=False):
    """Run the SDM's Operation of one string instruction on ``mem`` (bytes from gpa ``base``)."""
    r = dict(regs)
    mem = bytearray(mem)
    fl = r["eflags"]
    delta = -size if fl & DF else size
    amask = 0xFFFF if a16 else 0xFFFFFFFF

    def addr(name):
        return r[name] & amask

    def step(name):
        r[name] = (r[name] & ~amask & 0xFFFFFFFF) | ((r[name] + delta) & amask)

    def rd(a):
        return int.from_bytes(mem[a - base:a - base + size], "little")

    def wr(a, v):
        mem[a - base:a - base + size] = (v & MASK[size * 8]).to_bytes(size, "little")

    def once():
        nonlocal fl
        if op == "movs":
            wr(addr("edi"), rd(addr("esi")))
            step("esi"), step("edi")
        elif op == "stos":
            wr(addr("edi"), r["eax"])
            step("edi")
        elif op == "lods":
            m = MASK[size * 8]
            r["eax"] = (r["eax"] & ~m & 0xFFFFFFFF) | rd(addr("esi"))
            step("esi")
        elif op == "cmps":
            fl = (fl & ~ARITH) | sub_flags(rd(addr("esi")), rd(addr("edi")), size * 8)
            step("esi"), step("edi")
        elif op == "scas":
            fl = (fl & ~ARITH) | sub_flags(r["eax"] & MASK[size * 8], rd(addr("edi")), size * 8)
            step("edi")

    if rep is None:
        once()
    else:
        cmask = 0xFFFF if a16 else 0xFFFFFFFF
        while r["ecx"] & cmask:
            once()
            r["ecx"] = (r["ecx"] & ~cmask & 0xFFFFFFFF) | ((r["ecx"] - 1) & cmask)
            if op in ("cmps", "scas"):
                if rep == "rep" and not fl & ZF:
                    break
                if rep == "repne" and fl & ZF:
                    break
    r["eflags"] = fl
    return r, bytes(mem)


def _memory(seed, size, count, df, op, plant):
    """Source/destination buffers: random, with the destination equal to the source for the first
    ``plant`` elements (so REPE runs a while and REPNE stops early), and EAX's value planted for SCAS."""
    rnd = random.Random(seed)
    area = bytearray(rnd.randrange(256) for _ in range(AREA[1] - AREA[0]))
    n = count * size
    s0 = SRC - (n - size if df else 0)          # lowest byte the iteration touches
    d0 = DST - (n - size if df else 0)
    order = range(count) if not df else range(count - 1, -1, -1)
    for k, i in enumerate(order):
        if k < plant:
            area[d0 - AREA[0] + i * size:d0 - AREA[0] + (i + 1) * size] = \
                area[s0 - AREA[0] + i * size:s0 - AREA[0] + (i + 1) * size]
    return bytes(area)


CASES = []
for op in ("movs", "cmps", "stos", "lods", "scas"):
    for size in (1, 2, 4):
        for rep in ((None, "rep", "repne") if op in ("cmps", "scas") else (None, "rep")):
            for df in (0, 1):
                CASES.append(pytest.param(op, size, rep, df, id=f"{PREFIX[rep] or 'norep'}-{op}{size}-df{df}"))


@pytest.mark.parametrize("op,size,rep,df", CASES)
def test_string_op(op, size, rep, df):
    code = asm(" ".join(x for x in (PREFIX[rep], OPS[(op, size)]) if x))
    fails = Failures()
    counts = (0, 1, 3, 9) if rep else (1,)
    for count in counts:
        for plant in sorted({0, 1, count // 2, count}):
            area = _memory(count * 131 + plant, size, count, df, op, plant)
            eax = EAX0
            if op == "scas":
                # AL/AX/EAX equal to the destination element `plant` (in iteration order)
                k = plant if plant < count else 0
                a = DST + (-k if df else k) * size
                eax = (EAX0 & ~MASK[size * 8]) | int.from_bytes(area[a - AREA[0]:a - AREA[0] + size], "little")
            for flags_in in (FIXED1 | (DF if df else 0), FIXED1 | (DF if df else 0) | ARITH):
                regs = dict(eax=eax, ecx=count if rep else 0x77, esi=SRC, edi=DST, ebx=0x1234, eflags=flags_in)
                want, want_mem = ref_string(op, size, rep, regs, area, AREA[0])
                with fails.case(f"count={count} plant={plant} eflags_in={flags_in:#x}"):
                    m, _ = run_code(code, regs=regs, mem={AREA[0]: area})
                    assert_regs(m, code, eax=want["eax"], ecx=want["ecx"], esi=want["esi"], edi=want["edi"])
                    got = m.mem_read(AREA[0], AREA[1] - AREA[0])
                    if got != want_mem:
                        bad = [hex(AREA[0] + i) for i in range(len(got)) if got[i] != want_mem[i]]
                        raise AssertionError(f"memory differs at {bad[:8]}\n{disasm(code)}")
                    assert_flags(m, want["eflags"], mask=0xFFFFFFFF, code=code)
    fails.check()


def test_rep_movsb_overlapping_forward_copy_replicates():
    """REP MOVSB is an element-by-element copy: with EDI = ESI + 1 it smears the first byte."""
    code = asm("f3 a4")         # f3 a4                 rep movsb byte ptr es:[edi], byte ptr [esi]
    m, _ = run_code(code, regs=dict(esi=SRC, edi=SRC + 1, ecx=16), mem={SRC: bytes(range(0x40, 0x60))})
    assert m.mem_read(SRC, 20) == bytes([0x40] * 17) + bytes([0x51, 0x52, 0x53])
    assert_regs(m, code, esi=SRC + 16, edi=SRC + 17, ecx=0)


def test_rep_movsd_backward_overlapping():
    code = prog(
        "fd",                   # fd                    std
        "f3 a5",                # f3 a5                 rep movsd dword ptr es:[edi], dword ptr [esi]
        "fc",                   # fc                    cld
    )
    data = b"".join(le32(0x11111111 * i) for i in range(8))
    # copy dwords 0..5 to 2..7, highest first (ESI/EDI point at the last element)
    m, _ = run_code(code, regs=dict(esi=SRC + 20, edi=SRC + 28, ecx=6), mem={SRC: data})
    want = b"".join(le32(0x11111111 * i) for i in (0, 1, 0, 1, 2, 3, 4, 5))
    assert m.mem_read(SRC, 32) == want
    assert_regs(m, code, esi=SRC - 4, edi=SRC + 4, ecx=0)


def test_rep_stosd_large_across_pages():
    code = asm("f3 ab")         # f3 ab                 rep stosd dword ptr es:[edi], eax
    m, r = run_code(code, regs=dict(eax=0xA5A5A5A5, edi=0x10000 - 8, ecx=0x2000))
    assert_regs(m, code, edi=0x10000 - 8 + 0x8000, ecx=0)
    assert m.mem_read(0x10000 - 8, 0x8000) == b"\xa5" * 0x8000
    assert m.mem_read(0x18000 - 8, 4) == bytes(4)


def test_rep_movs_cmps_large_and_equal():
    blob = bytes((i * 7 + 3) & 0xFF for i in range(0x3000))
    code = prog(
        "f3 a4",                # f3 a4                 rep movsb byte ptr es:[edi], byte ptr [esi]
        "be 00 00 02 00",       # be 00 00 02 00        mov esi, 0x20000
        "bf 00 00 03 00",       # bf 00 00 03 00        mov edi, 0x30000
        "b9 00 0c 00 00",       # b9 00 0c 00 00        mov ecx, 0xc00
        "f3 a7",                # f3 a7                 repe cmpsd dword ptr [esi], dword ptr es:[edi]
    )
    m, _ = run_code(code, regs=dict(esi=0x20000, edi=0x30000, ecx=0x3000), mem={0x20000: blob})
    assert m.mem_read(0x30000, 0x3000) == blob
    assert_regs(m, code, ecx=0, esi=0x23000, edi=0x33000)
    assert_flags(m, ZF | PF, code=code)


def test_repe_cmpsb_stops_at_first_difference():
    code = asm("f3 a6")         # f3 a6                 repe cmpsb byte ptr [esi], byte ptr es:[edi]
    m, _ = run_code(code, regs=dict(esi=SRC, edi=DST, ecx=10), mem={SRC: b"abcdefgh", DST: b"abcxefgh"})
    # the 4th comparison ('d' - 'x') fails: 4 iterations done
    assert_regs(m, code, esi=SRC + 4, edi=DST + 4, ecx=6)
    assert_flags(m, sub_flags(ord("d"), ord("x"), 8), code=code)


def test_repne_scasb_finds_the_terminator():
    code = asm("f2 ae")         # f2 ae                 repne scasb al, byte ptr es:[edi]
    m, _ = run_code(code, regs=dict(eax=0, edi=DST, ecx=0xFFFFFFFF), mem={DST: b"hello, world\x00"})
    assert_regs(m, code, edi=DST + 13, ecx=0xFFFFFFFF - 13)     # strlen = ~ECX - 1 = 12
    assert_flags(m, ZF | PF, code=code)


def test_rep_with_zero_count_changes_nothing():
    code = prog(
        "f3 a7",                # f3 a7                 repe cmpsd dword ptr [esi], dword ptr es:[edi]
        "f2 af",                # f2 af                 repne scasd eax, dword ptr es:[edi]
        "f3 ab",                # f3 ab                 rep stosd dword ptr es:[edi], eax
    )
    m, _ = run_code(code, regs=dict(ecx=0, esi=SRC, edi=DST, eflags=FIXED1 | CF | OF), mem={DST: bytes(8)})
    assert_regs(m, code, ecx=0, esi=SRC, edi=DST, eflags=FIXED1 | CF | OF)
    assert m.mem_read(DST, 8) == bytes(8)


def test_address_size_prefix_uses_si_di_cx():
    code = asm("67 f3 a4")      # 67 f3 a4              rep movsb byte ptr es:[di], byte ptr [si]
    # upper halves of ESI/EDI/ECX are ignored and preserved; SI wraps from 0xffff to 0
    m, _ = run_code(code, regs=dict(esi=0xABCDFFFF, edi=0x12344800, ecx=0x77770003),
                    mem={0xFFFF: b"\x11", 0x0000: b"\x22\x33", 0x4800: bytes(4)})
    assert m.mem_read(0x4800, 4) == b"\x11\x22\x33\x00"
    assert_regs(m, code, esi=0xABCD0002, edi=0x12344803, ecx=0x77770000)


@pytest.mark.parametrize("code_hex", [
    "26 a4",                    # 26 a4                 movsb byte ptr es:[edi], byte ptr es:[esi]
    "64 a4",                    # 64 a4                 movsb byte ptr es:[edi], byte ptr fs:[esi]
    "2e a4",                    # 2e a4                 movsb byte ptr es:[edi], byte ptr cs:[esi]
    "36 a4",                    # 36 a4                 movsb byte ptr es:[edi], byte ptr ss:[esi]
])
def test_source_segment_override(code_hex):
    code = asm(code_hex)
    m, _ = run_code(code, regs=dict(esi=SRC, edi=DST), mem={SRC: b"\x42", DST: b"\x00"})
    assert m.mem_read(DST, 1) == b"\x42"
    assert_regs(m, code, esi=SRC + 1, edi=DST + 1)


def test_lods_keeps_upper_bits_and_rep_lods_keeps_last():
    code = asm("f3 ac")         # f3 ac                 rep lodsb al, byte ptr [esi]
    m, _ = run_code(code, regs=dict(eax=0x12345678, esi=SRC, ecx=3), mem={SRC: b"\x01\x02\x03\x04"})
    assert_regs(m, code, eax=0x12345603, esi=SRC + 3, ecx=0)
