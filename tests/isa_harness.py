"""Helpers for the engine's instruction-level test suites (tests/test_isa_*.py).

Each test is a tiny guest program: raw IA-32 bytes placed at gpa ``CODE_GPA`` and
followed by a HLT, run on a fresh ``vmcore.Machine`` in its initial flat 32-bit
protected mode (paging off, every segment base 0 / limit 4 GiB), until the HLT.
The test then checks the destination and every flag the instruction defines.

Expected values never come from the engine: they are derived by hand from the
Intel SDM Vol. 2 instruction pages, or computed by the small pure-Python
reference formulas in each test file, written from the SDM's "Operation" and
"Flags Affected" sections.

Listings in the test files are written one instruction a line as
``"<hex bytes>",   # <hex bytes>   <disassembly>``; ``listing_mismatches``
checks every such comment against capstone (see test_isa_system.py), so a
comment can never silently disagree with the bytes beside it.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import struct

import pytest

vmcore = pytest.importorskip("vmcore")

# ---------------------------------------------------------------------------
# Guest layout (guest physical == guest linear: paging is off, bases are 0)
# ---------------------------------------------------------------------------

CODE_GPA = 0x1000       # first instruction of every test program
DATA_GPA = 0x4000       # scratch data area tests point memory operands at
STACK_TOP = 0x8000      # initial ESP (the stack grows down from here)
MEMORY_MB = 16
HLT = b"\xf4"           # f4    hlt

# ---------------------------------------------------------------------------
# EFLAGS bits (SDM Vol. 1 §3.4.3)
# ---------------------------------------------------------------------------

CF = 0x0001
PF = 0x0004
AF = 0x0010
ZF = 0x0040
SF = 0x0080
TF = 0x0100
IF = 0x0200
DF = 0x0400
OF = 0x0800
FIXED1 = 0x0002         # reserved bit 1 always reads as 1
ARITH = CF | PF | AF | ZF | SF | OF   # the six status flags

FLAG_BITS = {"CF": CF, "PF": PF, "AF": AF, "ZF": ZF, "SF": SF, "TF": TF, "IF": IF, "DF": DF, "OF": OF}

GPRS32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
GPRS16 = ("ax", "cx", "dx", "bx", "sp", "bp", "si", "di")
GPRS8 = ("al", "cl", "dl", "bl", "ah", "ch", "dh", "bh")

MASK = {8: 0xFF, 16: 0xFFFF, 32: 0xFFFFFFFF}
SIGN = {8: 0x80, 16: 0x8000, 32: 0x80000000}

# The edge values the tables are built from (masked to the operand size).
EDGE32 = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def edges(bits: int) -> list[int]:
    """The edge values of EDGE32 as ``bits``-bit operands, without repeats, in order."""
    out: list[int] = []
    for v in EDGE32:
        v &= MASK[bits]
        if v not in out:
            out.append(v)
    # the size-specific extremes (0x7f/0x80 for 8, 0x7fff/0x8000 for 16, ...) plus one
    # value that is none of them, with mixed nibbles
    for v in (SIGN[bits] - 1, SIGN[bits], MASK[bits], 0x5A5A5A5A & MASK[bits], 0x12345678 & MASK[bits]):
        if v not in out:
            out.append(v)
    return out


def flag_names(value: int, mask: int = 0xFFFFFFFF) -> str:
    """'CF ZF ...' for the flags set in ``value & mask``; '-' when none."""
    names = [n for n, b in FLAG_BITS.items() if value & mask & b]
    return " ".join(names) if names else "-"


def flags(cf=0, pf=0, af=0, zf=0, sf=0, of=0) -> int:
    """EFLAGS bits from six truth values."""
    return ((CF if cf else 0) | (PF if pf else 0) | (AF if af else 0) |
            (ZF if zf else 0) | (SF if sf else 0) | (OF if of else 0))


def parity_even(value: int) -> bool:
    """PF: set when the least significant byte has an even number of 1 bits (SDM Vol. 1 §3.4.3.1)."""
    return bin(value & 0xFF).count("1") % 2 == 0


def szp(result: int, bits: int) -> int:
    """SF, ZF and PF of a ``bits``-bit result."""
    result &= MASK[bits]
    return flags(sf=result & SIGN[bits], zf=result == 0, pf=parity_even(result))


def to_signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def sext(value: int, from_bits: int, to_bits: int = 32) -> int:
    return to_signed(value, from_bits) & MASK[to_bits]


def le8(v: int) -> bytes:
    return struct.pack("<B", v & 0xFF)


def le16(v: int) -> bytes:
    return struct.pack("<H", v & 0xFFFF)


def le32(v: int) -> bytes:
    return struct.pack("<I", v & 0xFFFFFFFF)


def imm(v: int, bits: int) -> bytes:
    return {8: le8, 16: le16, 32: le32}[bits](v)


def h(text: str) -> bytes:
    """Bytes from a hex listing such as '66 01 d8'."""
    return bytes.fromhex(text)


def asm(template: str, *imms: int) -> bytes:
    """Bytes from a listing template: hex bytes, and ``ib``/``iw``/``id`` filled in order from
    ``imms``: asm("66 81 c0 iw", 0x1234)."""
    out = bytearray()
    values = list(imms)
    sizes = {"ib": 8, "iw": 16, "id": 32}
    for tok in template.split():
        if tok in sizes:
            out += imm(values.pop(0), sizes[tok])
        else:
            out += bytes.fromhex(tok)
    assert not values, f"unused immediates {values} for {template!r}"
    return bytes(out)


def prog(*parts) -> bytes:
    """A program from listing lines: each part is a hex string ("01 d8") or bytes (from asm())."""
    return b"".join(bytes.fromhex(p) if isinstance(p, str) else bytes(p) for p in parts)


def merge(old: int, new: int, bits: int) -> int:
    """A 32-bit register after writing ``new`` to its low ``bits`` bits (upper bits preserved)."""
    return (old & ~MASK[bits] & 0xFFFFFFFF) | (new & MASK[bits])


# ---------------------------------------------------------------------------
# Disassembly (for failure messages and the listing check)
# ---------------------------------------------------------------------------

def disasm(code: bytes, address: int = CODE_GPA) -> str:
    try:
        import capstone
    except ImportError:     # pragma: no cover - capstone is a vmcore dependency
        return code.hex(" ")
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    lines = []
    end = address
    for insn in md.disasm(code, address):
        lines.append(f"  {insn.address:08x}  {insn.bytes.hex(' '):<30} {insn.mnemonic} {insn.op_str}".rstrip())
        end = insn.address + insn.size
    if end < address + len(code):
        lines.append(f"  {end:08x}  {code[end - address:].hex(' ')}  (undecodable)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Running test programs
# ---------------------------------------------------------------------------

def new_machine():
    return vmcore.Machine(memory_mb=MEMORY_MB, mode="bare")


# Test programs run on one reused machine, scrubbed between runs (its first SCRUB bytes of RAM
# zeroed through mem_write, which also drops decoded blocks there; GPRs zeroed, EFLAGS = 2):
# a fresh Machine per run costs milliseconds, mostly in garbage collection, and the suites run
# tens of thousands of programs. A machine that ended a run any other way than HLT is dropped.
# VMCORE_TEST_FRESH=1 uses a fresh machine for every run instead (slow; to rule the reuse out).
SCRUB = 0x40000
FRESH = os.environ.get("VMCORE_TEST_FRESH") == "1"
_pool: dict = {"m": None}


def _pooled_machine():
    m = _pool["m"]
    if m is None or FRESH:
        m = new_machine()
        _pool["m"] = None if FRESH else m
        return m
    m.mem_write(0, bytes(SCRUB))
    for name in GPRS32:
        m.reg_write(name, 0)
    m.reg_write("eflags", FIXED1)
    return m


def regs_of(m) -> dict[str, int]:
    return {r: m.reg_read(r) for r in GPRS32 + ("eip", "eflags")}


def dump(m) -> str:
    r = regs_of(m)
    s = "  ".join(f"{k}={r[k]:08x}" for k in GPRS32)
    return f"{s}\n  eip={r['eip']:08x} eflags={r['eflags']:08x} ({flag_names(r['eflags'])})"


def load(m, code: bytes, *, regs=None, mem=None, hlt: bool = True):
    """Put ``code`` (and a HLT) at CODE_GPA, apply ``mem`` {gpa: bytes} and ``regs`` {name: value}."""
    m.mem_write(CODE_GPA, bytes(code) + (HLT if hlt else b""))
    for gpa, data in (mem or {}).items():
        m.mem_write(gpa, bytes(data))
    m.reg_write("esp", STACK_TOP)
    m.reg_write("eip", CODE_GPA)
    for name, value in (regs or {}).items():
        m.reg_write(name, value & 0xFFFFFFFF)


_DEFAULT = object()


def run_code(code: bytes, *, regs=None, mem=None, count=None, expect=_DEFAULT, machine=None):
    """Run ``code`` + HLT at CODE_GPA on a scrubbed machine (see SCRUB); return ``(machine, result)``.

    ``regs``: initial registers by name (ESP defaults to STACK_TOP, EIP to CODE_GPA;
    ``eflags`` may be given). ``mem``: {gpa: bytes} written before the run.
    ``count``: instruction budget passed to ``run``.
    ``expect``: the ``vmcore.Exit`` the run must end with; by default HLT when no
    ``count`` is given (and EIP must then be just after the appended HLT), no check
    otherwise. Pass ``expect=None`` to skip the check.
    """
    pooled = machine is None
    m = _pooled_machine() if pooled else machine
    load(m, code, regs=regs, mem=mem)
    _pool["m"] = None                       # not reusable until this run ends in HLT
    r = m.run(count=count) if count is not None else m.run()
    if pooled and r.exit == vmcore.Exit.HLT and not FRESH:
        _pool["m"] = m
    if expect is _DEFAULT:
        expect = vmcore.Exit.HLT if count is None else None
    if expect is not None:
        assert r.exit == expect, (
            f"exit {r.exit!r}, expected {expect!r} (exception {getattr(r, 'exception', None)!r})\n"
            f"{disasm(code)}\n{dump(m)}")
        if expect == vmcore.Exit.HLT and count is None:
            hlt_end = CODE_GPA + len(code) + 1
            assert m.reg_read("eip") == hlt_end, (
                f"stopped at HLT with eip {m.reg_read('eip'):#x}, expected {hlt_end:#x} "
                f"(the program jumped somewhere unexpected)\n{disasm(code)}\n{dump(m)}")
    return m, r


def run_fault(code: bytes, vector: int, *, fault_eip: int | None = None, error_code=None, **kw):
    """Run ``code`` that must raise exception ``vector``; with IDTR.limit 0 that ends in SHUTDOWN.

    ``r.exception`` must name the FIRST exception: (vector, error_code_or_None, eip of the
    faulting instruction). ``fault_eip`` defaults to CODE_GPA.
    """
    m, r = run_code(code, expect=vmcore.Exit.SHUTDOWN, **kw)
    want_eip = CODE_GPA if fault_eip is None else fault_eip
    assert r.exception is not None, f"SHUTDOWN without r.exception\n{disasm(code)}\n{dump(m)}"
    assert r.exception[0] == vector, (
        f"first exception {r.exception!r}, expected vector {vector}\n{disasm(code)}\n{dump(m)}")
    assert r.exception[2] == want_eip, (
        f"exception reported at eip {r.exception[2]:#x}, expected {want_eip:#x} (faults report the "
        f"faulting instruction)\n{disasm(code)}\n{dump(m)}")
    if error_code is not None:
        assert r.exception[1] == error_code
    return m, r


# ---------------------------------------------------------------------------
# Assertions
# ---------------------------------------------------------------------------

def assert_flags(m_or_eflags, expected: int, mask: int = ARITH, what: str = "", code: bytes | None = None):
    """Check ``eflags & mask == expected & mask``; name the flags that differ."""
    actual = m_or_eflags if isinstance(m_or_eflags, int) else m_or_eflags.reg_read("eflags")
    if (actual ^ expected) & mask:
        diff = (actual ^ expected) & mask
        msg = (f"{what}flags {flag_names(actual, mask)} (eflags={actual:#x}), expected "
               f"{flag_names(expected, mask)}; wrong: {flag_names(diff)}")
        if code is not None:
            msg += "\n" + disasm(code)
        raise AssertionError(msg)


def assert_eflags_fixed(m):
    """Bit 1 of EFLAGS reads as 1; bits 3, 5, 15 and 22-31 read as 0."""
    v = m.reg_read("eflags")
    assert v & FIXED1, f"EFLAGS bit 1 must read as 1 (eflags={v:#x})"
    assert v & 0xFFC08028 == 0, f"reserved EFLAGS bits set (eflags={v:#x})"


def assert_regs(m, code: bytes | None = None, **expected):
    """Check registers by name: assert_regs(m, eax=1, bx=2)."""
    bad = []
    for name, want in expected.items():
        got = m.reg_read(name)
        if got != want:
            bad.append(f"{name}={got:#x}, expected {want:#x}")
    if bad:
        msg = "; ".join(bad) + "\n" + dump(m)
        if code is not None:
            msg = msg + "\n" + disasm(code)
        raise AssertionError(msg)


def read32(m, gpa: int) -> int:
    return struct.unpack("<I", m.mem_read(gpa, 4))[0]


def read16(m, gpa: int) -> int:
    return struct.unpack("<H", m.mem_read(gpa, 2))[0]


def read8(m, gpa: int) -> int:
    return m.mem_read(gpa, 1)[0]


def read_sized(m, gpa: int, bits: int) -> int:
    return {8: read8, 16: read16, 32: read32}[bits](m, gpa)


class Failures:
    """Collects assertion failures over a loop of cases so one test reports every failing case.

        fails = Failures()
        for a in values:
            with fails.case(f"a={a:#x}"):
                ...asserts...
        fails.check()
    """

    def __init__(self, limit: int = 12):
        self.items: list[str] = []
        self.count = 0
        self.limit = limit

    @contextlib.contextmanager
    def case(self, label: str = ""):
        try:
            yield
        except AssertionError as e:
            self.count += 1
            if len(self.items) < self.limit:
                self.items.append(f"[{label}] {e}")

    def check(self):
        if self.count:
            more = f"\n... and {self.count - len(self.items)} more" if self.count > len(self.items) else ""
            raise AssertionError(f"{self.count} failing case(s):\n" + "\n\n".join(self.items) + more)


# ---------------------------------------------------------------------------
# Listing check: "# <hex>  <disassembly>" comments against capstone
# ---------------------------------------------------------------------------

_HEX = r"[0-9a-f]{2}(?: [0-9a-f]{2})*"
_COMMENT = re.compile(r"#\s+(" + _HEX + r")\s{2,}(\S.*?)\s*$")
_QUOTED = re.compile(r'"(' + _HEX + r')"')


def _norm(text: str) -> str:
    return re.sub(r"\s+", "", text.lower())


def listing_mismatches(path: pathlib.Path) -> list[str]:
    return listing_check(path)[1]


def listing_check(path: pathlib.Path) -> tuple[int, list[str]]:
    """Lines whose ``# <hex>  <asm>`` comment disagrees with capstone, or with the quoted bytes beside it.

    Only comments whose byte field is entirely concrete hex are checked (``04 ib`` is a
    template and skipped). Relative branch targets are written ``$+n``/``$-n`` (relative to
    the instruction's own address). Text after ``;`` in the disassembly is a remark.
    An encoding the SDM makes #UD is written ``(invalid) <what it would be>``.
    """
    import capstone

    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    md.detail = True
    bad = []
    checked = 0
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        mc = _COMMENT.search(line)
        if not mc:
            continue
        checked += 1
        hexbytes, asm = mc.group(1), mc.group(2).split(";")[0].strip()
        mq = _QUOTED.search(line[: mc.start()])
        if mq and not hexbytes.startswith(mq.group(1)):     # bytes(...) + le32(...) lines quote a prefix
            bad.append(f"{path.name}:{lineno}: bytes {mq.group(1)!r} but comment says {hexbytes!r}")
            continue
        code = bytes.fromhex(hexbytes)
        insns = list(md.disasm(code, 0x1000))
        if asm.startswith("(invalid)"):
            # an encoding the SDM makes #UD; capstone must not decode it as a whole either
            if sum(i.size for i in insns) == len(code) and len(insns) == 1:
                bad.append(f"{path.name}:{lineno}: {hexbytes!r} marked invalid but decodes as "
                           f"'{insns[0].mnemonic} {insns[0].op_str}'")
            continue
        if sum(i.size for i in insns) != len(code) or len(insns) != 1:
            # a comment may describe more than one instruction: "f3 a4  rep movsb ..." is one,
            # "f8 f5  clc; cmc" is two, written with ';' between them
            parts = [p.strip() for p in mc.group(2).split(";")]
            if sum(i.size for i in insns) != len(code) or len(insns) != len(parts):
                bad.append(f"{path.name}:{lineno}: {hexbytes!r} does not decode as {len(parts)} instruction(s)")
                continue
        else:
            parts = [asm]
        for insn, want in zip(insns, parts):
            ops = insn.op_str
            if capstone.x86.X86_GRP_BRANCH_RELATIVE in insn.groups:
                target = insn.operands[0].imm
                delta = target - insn.address
                ops = f"$+{delta}" if delta >= 0 else f"$-{-delta}"
            got = f"{insn.mnemonic} {ops}"
            if _norm(got) != _norm(want):
                bad.append(f"{path.name}:{lineno}: {insn.bytes.hex(' ')!r} is '{got.strip()}', comment says '{want}'")
    return checked, bad


# ---------------------------------------------------------------------------
# Two-operand ALU forms (shared by the arith and logic suites)
# ---------------------------------------------------------------------------

EAX_UPPER = 0xC0DE1200      # garbage above the operand size: must survive 8/16-bit ops
EBX_UPPER = 0x5EED3400
MEM_GPA = DATA_GPA + 0x10   # memory operands: [ebx] with EBX = MEM_GPA
GUARD = bytes([0xA5]) * 4   # bytes around a memory operand must not change


def run_binop(template: str, form: str, bits: int, a: int, b: int, *, result: int, status: int,
              init_flags: int, writes: bool = True, defined: int = ARITH, what: str = ""):
    """Run one two-operand form computing ``op a, b`` and check it.

    ``form`` says where a (the destination) and b (the source) live:
    "E,G"/"G,E": EAX/AX/AL and EBX/BX/BL; "E,G mem": [ebx] and EAX; "G,E mem": EAX and [ebx];
    "A,I" "80" "82" "81": EAX and the immediate; "83": EAX and a sign-extended imm8;
    "80 mem" "81 mem" "83 mem": [ebx] and the immediate.
    Checks the destination (``result``, or ``a`` when not ``writes``), that the source and the
    bytes around a memory operand are unchanged, and that EFLAGS equals ``init_flags`` with the
    ``defined`` status flags replaced by ``status`` (flags outside ``defined`` are not checked).
    """
    regs = {"eflags": init_flags}
    mem = {}
    if form in ("E,G", "G,E"):
        code = asm(template)
        regs.update(eax=merge(EAX_UPPER, a, bits), ebx=merge(EBX_UPPER, b, bits))
    elif form == "E,G mem":
        code = asm(template)
        regs.update(eax=merge(EAX_UPPER, b, bits), ebx=MEM_GPA)
        mem[MEM_GPA - 4] = GUARD + imm(a, bits) + GUARD
    elif form == "G,E mem":
        code = asm(template)
        regs.update(eax=merge(EAX_UPPER, a, bits), ebx=MEM_GPA)
        mem[MEM_GPA - 4] = GUARD + imm(b, bits) + GUARD
    elif form in ("A,I", "80", "82", "81"):
        code = asm(template, b)
        regs.update(eax=merge(EAX_UPPER, a, bits))
    elif form == "83":
        assert sext(b & 0xFF, 8, bits) == b, "83 forms take a sign-extended imm8"
        code = asm(template, b & 0xFF)
        regs.update(eax=merge(EAX_UPPER, a, bits))
    elif form in ("80 mem", "81 mem", "83 mem"):
        if form == "83 mem":
            assert sext(b & 0xFF, 8, bits) == b, "83 forms take a sign-extended imm8"
        code = asm(template, b & (0xFF if form == "83 mem" else MASK[bits]))
        regs.update(ebx=MEM_GPA)
        mem[MEM_GPA - 4] = GUARD + imm(a, bits) + GUARD
    else:
        raise ValueError(form)
    m, _ = run_code(code, regs=regs, mem=mem)
    where = f"{what}{form} {bits}-bit a={a:#x} b={b:#x} eflags_in={init_flags:#x}: "
    if form in ("E,G mem", "80 mem", "81 mem", "83 mem"):
        got = read_sized(m, MEM_GPA, bits)
        want = result if writes else a
        assert got == want, f"{where}memory result {got:#x}, expected {want:#x}\n{disasm(code)}"
    else:
        assert_regs(m, code, eax=merge(EAX_UPPER, result if writes else a, bits))
    if "mem" in form:
        around = m.mem_read(MEM_GPA - 4, 4) + m.mem_read(MEM_GPA + bits // 8, 4)
        assert around == GUARD * 2, f"{where}bytes next to the operand changed\n{disasm(code)}"
        if form == "G,E mem":
            assert read_sized(m, MEM_GPA, bits) == b, f"{where}source operand in memory changed"
    if "ebx" in regs:
        assert_regs(m, code, ebx=regs["ebx"])
    want_flags = (init_flags & ~defined) | (status & defined)
    assert_flags(m, want_flags, mask=0xFFFFFFFF & ~(ARITH & ~defined), what=where, code=code)
    return m
