"""Random user-mode IA-32 instruction sequences for the host-CPU differential test.

Every program must run unchanged as user code in a 32-bit Linux process (tests/hostdiff/
runner.c) and in vmcore, from the same bytes at the same addresses, so the generator keeps to
what user mode allows and what is defined:

* memory operands only inside the two data pages or the two stack pages (some straddle the
  page boundary), with 32-bit addressing only (a 67-prefixed 16-bit address lies below 64 KiB,
  which the host cannot map); segment overrides only ES/SS/DS, and CS for operands that are only
  read (FS/GS have other bases on the host); LOCK and XCHG-with-memory only on naturally aligned
  operands (a locked access split over two cache lines is a #AC split-lock trap or a slow path
  on the host);
* no I/O, INT, HLT, CLI/STI, CPUID, RDTSC; POPFD only with images that keep IF = 1, TF = AC =
  NT = 0 and IOPL = 0 (user mode could not change IF or IOPL; vmcore runs at CPL 0 and would);
* no fault but the one a few programs end with on purpose (``Gen.fault_tail``: #DE, #UD, #BP,
  #OF, #BR -- compared as the host's signal against vmcore's vector, at the same EIP and state):
  DIV/IDIV operands are constructed so that the quotient fits, AAM's base is nonzero,
  BSF/BSR only on a nonzero source, SHLD/SHRD only with counts up to the operand size, BSWAP
  only 32-bit: no register ever holds an undefined value;
* flags: the generator tracks, per status flag, whether the last writer left it undefined
  (Intel SDM Vol. 2 "Flags Affected": MUL/IMUL SF ZF AF PF; DIV/IDIV all six; AND/OR/XOR/TEST
  AF; shifts AF, OF unless the masked count is 1, and CF for SHL/SHR when the count is >= the
  operand size; rotates OF unless the count is 1; BSF/BSR all but ZF; BT* OF SF AF PF; SHLD/SHRD
  AF, OF unless the count is 1; AAA/AAS OF SF ZF PF; DAA/DAS OF; AAM/AAD OF AF CF), masks them
  in the comparison, and inserts a CMP before any instruction that would read one of them.

Control flow: forward Jcc/JMP/JECXZ/LOOPcc/indirect jumps over short blocks, CALL/RET to
subroutines, ENTER/LEAVE frames, and backward loops of a few iterations (counter in memory
or ECX) that start every iteration with all flags defined.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# ---------------------------------------------------------------------------
# Layout: the same linear addresses natively (MAP_FIXED_NOREPLACE) and in the guest
# ---------------------------------------------------------------------------

CODE = 0x00100000
CODE_SIZE = 0x10000
DATA = 0x00200000       # two pages: some operands straddle the boundary at DATA + 0x1000
DATA_SIZE = 0x2000
STACK = 0x00300000      # two pages: the initial ESP is at or a little above STACK + 0x1000,
STACK_SIZE = 0x2000     # so pushes and pops cross the boundary; never deeper than 0x400 below
COUNTER = DATA          # backward-loop counters (DATA .. DATA+0x3F is never a random operand)
LO = DATA + 0x40        # random memory operands lie in LO .. HI
HI = DATA + DATA_SIZE - 0x40
PAGE_EDGE = DATA + 0x1000

CF, PF, AF, ZF, SF, DF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x400, 0x800
ARITH = CF | PF | AF | ZF | SF | OF
FLAG_NAMES = {"CF": CF, "PF": PF, "AF": AF, "ZF": ZF, "SF": SF, "DF": DF, "OF": OF}

REG32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI = range(8)

# condition code -> status flags it reads (SDM Vol. 2 Appendix B)
CC_READS = [OF, OF, CF, CF, ZF, ZF, CF | ZF, CF | ZF, SF, SF, PF, PF, SF | OF, SF | OF, ZF | SF | OF, ZF | SF | OF]

# Families the generator draws from. To exclude one temporarily because of an engine bug, add
# it to EXCLUDED with a comment naming the bug (and report it); the harness prints the set.
FAMILIES = ("alu", "unary", "shift", "shxd", "muldiv", "div", "move", "movx", "lea", "xchg", "xadd_cmpxchg",
            "cmpxchg8b", "bswap", "convert", "xlat", "lahf_sahf", "flagop", "nop", "setcc", "cmov", "bt",
            "bsf_bsr", "bcd", "string", "bound_into")
EXCLUDED: dict[str, str] = {}
# Faulting last instructions left out (see Gen.fault_tail), each with the engine bug that makes
# vmcore differ; re-enable when fixed:
EXCLUDED_FAULTS: dict[str, str] = {}     # kind -> the engine bug that keeps it out of the campaigns
FAULT_TAIL_RATE = 0.05          # share of programs that end with a faulting instruction


def flag_names(v: int) -> str:
    return " ".join(n for n, b in FLAG_NAMES.items() if v & b) or "-"


def le(v: int, n: int) -> bytes:
    return (v & ((1 << (8 * n)) - 1)).to_bytes(n, "little")


@dataclass
class Item:
    """One instruction: its bytes (with label references), the status flags it reads, defines
    and leaves undefined, and the labels placed at it."""

    pieces: list                    # bytes, or ("rel8" | "rel32" | "abs32", label)
    reads: int = 0
    defs: int = 0
    undefs: int = 0
    family: str = ""
    labels: list = field(default_factory=list)
    addr: int = 0
    size: int = 0

    def effect(self, undef: int) -> int:
        return (undef & ~self.defs) | self.undefs


class Regen(Exception):
    """The program does not lay out (a short jump too far): make another."""


class Gen:
    def __init__(self, rng: random.Random, excluded=()):
        self.rng = rng
        self.items: list[Item] = []
        self.undef = 0
        self.esp0 = STACK + 0x1000 + rng.choice((0, 0, 2, 4, 6, 8, 0x10, 0x22, 0x80, 0x100))   # initial ESP
        self.depth = 0                  # bytes pushed below esp0
        self.protect: set[int] = {ESP}  # registers that must not be written
        self.no_stack = False           # inside a loop, call body or frame: no PUSH/POP groups
        self.in_call = False            # inside a call body: no ESP-relative operands (the return address)
        self.nlabel = 0
        self.pending: list[str] = []
        self.family = ""
        self.families = [f for f in FAMILIES if f not in EXCLUDED and f not in excluded]
        self.straight_line = False      # only simple steps: no stack groups, branches, calls or loops

    # -- emission -------------------------------------------------------------------------
    def label(self) -> str:
        self.nlabel += 1
        return f"L{self.nlabel}"

    def place(self, name: str) -> None:
        self.pending.append(name)

    def emit(self, *pieces, reads=0, defs=0, undefs=0) -> Item:
        if reads & self.undef:
            self.define_flags()
        item = Item(list(pieces), reads, defs, undefs, self.family, self.pending)
        self.pending = []
        self.items.append(item)
        self.undef = item.effect(self.undef)
        return item

    def define_flags(self) -> None:
        """CMP r32, r32 or CMP r32, imm8: defines all six status flags."""
        rng = self.rng
        if rng.random() < 0.7:
            self.emit(bytes([0x39, 0xC0 | rng.randrange(8) << 3 | rng.randrange(8)]), defs=ARITH)
        else:
            self.emit(bytes([0x83, 0xF8 | rng.randrange(8), rng.getrandbits(8)]), defs=ARITH)

    # -- registers ---------------------------------------------------------------------------
    def r32_of(self, r: int, size: int) -> int:
        return r & 3 if size == 1 else r

    def dst(self, size: int) -> int:
        """A register number (in the encoding for ``size``) that may be written."""
        while True:
            r = self.rng.randrange(8)
            if self.r32_of(r, size) not in self.protect:
                return r

    def any_reg(self) -> int:
        return self.rng.randrange(8)

    def free32(self, avoid=()) -> int:
        while True:
            r = self.rng.randrange(8)
            if r not in self.protect and r not in avoid:
                return r

    def mov_imm32(self, r: int, v: int) -> None:
        self.emit(bytes([0xB8 + r]) + le(v, 4))

    @staticmethod
    def osz(size: int) -> bytes:
        return b"\x66" if size == 2 else b""

    def seg(self, ro: bool = False) -> bytes:
        """A segment override now and then: ES, SS, DS, and CS only for an operand that is only
        read (Linux's user CS is execute/read: a write through it is #GP, SIGSEGV). FS and GS have
        other bases on the host."""
        if self.rng.random() < 0.1:
            return bytes([self.rng.choice((0x26, 0x2E, 0x36, 0x3E) if ro else (0x26, 0x36, 0x3E))])
        return b""

    # -- memory operands -------------------------------------------------------------------
    def addr(self, size: int, span: int = 0, align: bool = False) -> int:
        """A data address with room for ``size`` bytes and ``span`` on either side; now and
        then one whose operand straddles the page boundary (never a locked one)."""
        rng = self.rng
        if rng.random() < 0.12:
            a = PAGE_EDGE - rng.randrange(1, size + 1) + (rng.randrange(-8, 9) if span or rng.random() < 0.3 else 0)
        else:
            a = rng.randrange(LO + span, HI - size - span)
        if align:
            a &= ~(min(size, 8) - 1)
        return a

    def mem(self, size: int, avoid=(), span: int = 0, align: bool = False, a: int | None = None,
            allow_esp: bool = True, lock: bool = False, ro: bool = False):
        """Registers set up for a memory operand of ``size`` bytes at a random data address
        (or ``a``): returns (prefixes, encode(reg field) -> ModRM/SIB/disp bytes, address).
        ``ro``: the instruction only reads the operand (a CS override is allowed)."""
        rng = self.rng
        A = self.addr(size, span, align or lock) if a is None else a
        avoid = set(avoid) | self.protect
        kinds = ("abs", "b", "bd8", "bd32", "sib", "sib32", "sibnobase", "sibnoindex", "esp", "espidx")
        kind = rng.choice(kinds)
        if kind in ("esp", "espidx") and (not allow_esp or a is not None or span or align or lock or self.in_call):
            kind = "bd8"
        pre = self.seg(ro)
        if kind == "abs":
            return pre, (lambda reg: bytes([0x05 | reg << 3]) + le(A, 4)), A
        if kind == "esp":
            d = rng.randrange(0, 0x80)
            A = self.esp0 - self.depth + d
            return pre, (lambda reg: bytes([0x44 | reg << 3, 0x24, d])), A
        if kind == "espidx":
            i = self.free32(avoid)
            s = rng.randrange(4)
            d = rng.randrange(-0x80, 0x80)
            off = rng.randrange(0, 0x60)
            iv = ((off - d) >> s) if s else off - d
            A = self.esp0 - self.depth + d + (iv << s)
            self.mov_imm32(i, iv)
            return pre, (lambda reg: bytes([0x44 | reg << 3, s << 6 | i << 3 | 4, d & 0xFF])), A
        if kind in ("b", "bd8", "bd32"):
            b = self.free32(avoid | ({EBP} if kind == "b" else set()))
            d = {"b": 0, "bd8": rng.randrange(-128, 128), "bd32": rng.randrange(-0x40000000, 0x40000000)}[kind]
            self.mov_imm32(b, A - d)
            if kind == "b":
                return pre, (lambda reg: bytes([reg << 3 | b])), A
            if kind == "bd8":
                return pre, (lambda reg: bytes([0x40 | reg << 3 | b, d & 0xFF])), A
            return pre, (lambda reg: bytes([0x80 | reg << 3 | b]) + le(d, 4)), A
        if kind == "sibnoindex":
            # SIB with index field 100 (no index): the scale bits are ignored
            b = self.free32(avoid | {EBP})
            s = rng.randrange(4)
            self.mov_imm32(b, A)
            return pre, (lambda reg: bytes([0x04 | reg << 3, s << 6 | 4 << 3 | b])), A
        i = self.free32(avoid)
        s = rng.randrange(4)
        iv = rng.getrandbits(32) if rng.random() < 0.5 else rng.randrange(0, 64)
        self.mov_imm32(i, iv)
        if kind == "sibnobase":
            d = (A - (iv << s)) & 0xFFFFFFFF
            return pre, (lambda reg: bytes([0x04 | reg << 3, s << 6 | i << 3 | 5]) + le(d, 4)), A
        # base + index*scale + disp; the base may be the index register itself
        b = self.free32(avoid) if rng.random() < 0.9 else i
        if kind == "sib":
            d = rng.randrange(-128, 128)
            if b == i:
                return self._sib_same(pre, A, i, s, d, 1)
            self.mov_imm32(b, (A - (iv << s) - d) & 0xFFFFFFFF)
            return pre, (lambda reg: bytes([0x44 | reg << 3, s << 6 | i << 3 | b, d & 0xFF])), A
        d = rng.randrange(-0x40000000, 0x40000000)
        if b == i:
            return self._sib_same(pre, A, i, s, d, 2)
        self.mov_imm32(b, (A - (iv << s) - d) & 0xFFFFFFFF)
        return pre, (lambda reg: bytes([0x84 | reg << 3, s << 6 | i << 3 | b]) + le(d, 4)), A

    def _sib_same(self, pre, A, r, s, d, mod):
        """[r + r*scale + disp]: r * (1 + 2^s) + d = A (mod 2^32) needs an odd multiplier."""
        k = 1 + (1 << s)
        if k % 2 == 0:          # s = 0: k = 2 -- pick a disp with the right parity instead
            if (A - d) % 2:
                d += 1 if mod == 2 or d < 127 else -1
            v = ((A - d) // 2) & 0xFFFFFFFF
        else:
            v = ((A - d) * pow(k, -1, 1 << 32)) & 0xFFFFFFFF
        self.mov_imm32(r, v)
        if mod == 1:
            return pre, (lambda reg: bytes([0x44 | reg << 3, s << 6 | r << 3 | r, d & 0xFF])), A
        return pre, (lambda reg: bytes([0x84 | reg << 3, s << 6 | r << 3 | r]) + le(d, 4)), A

    # -- instruction families ----------------------------------------------------------------
    def alu(self):
        rng = self.rng
        n = rng.randrange(8)             # add or adc sbb and sub xor cmp
        size = rng.choice((1, 2, 4))
        w = 0 if size == 1 else 1
        fx = dict(reads=CF if n in (2, 3) else 0,
                  defs=ARITH & ~AF if n in (1, 4, 6) else ARITH, undefs=AF if n in (1, 4, 6) else 0)
        o = self.osz(size)
        form = rng.choice(("rr", "rr2", "mr", "rm", "ai", "ri", "mi"))
        if form in ("rr", "rr2"):
            if rng.random() < 0.1:          # redundant prefixes: segment overrides (ignored), 66 twice
                o = bytes([rng.choice((0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65))]) + o
                if size == 2 and rng.random() < 0.5:
                    o = b"\x66" + o
            d, s = (self.dst(size) if n != 7 else self.any_reg()), self.any_reg()
            if form == "rr":
                self.emit(o + bytes([8 * n + w, 0xC0 | s << 3 | d]), **fx)
            else:
                self.emit(o + bytes([8 * n + 2 + w, 0xC0 | d << 3 | s]), **fx)
        elif form == "rm":
            r = self.dst(size) if n != 7 else self.any_reg()
            pre, enc, _ = self.mem(size, avoid=(self.r32_of(r, size),), ro=True)
            self.emit(pre + o + bytes([8 * n + 2 + w]) + enc(r), **fx)
        elif form == "mr":
            lock = n != 7 and rng.random() < 0.2
            pre, enc, _ = self.mem(size, lock=lock, ro=n == 7)
            self.emit((b"\xf0" if lock else b"") + pre + o + bytes([8 * n + w]) + enc(self.any_reg()), **fx)
        elif form == "ai":
            if n != 7 and EAX in self.protect:
                return
            self.emit(o + bytes([8 * n + 4 + w]) + le(rng.getrandbits(32), size), **fx)
        else:
            op = rng.choice((0x80, 0x80, 0x82)) if size == 1 else rng.choice((0x81, 0x83))
            imm = le(rng.getrandbits(32), size if op == 0x81 else 1)
            if form == "ri":
                d = self.dst(size) if n != 7 else self.any_reg()
                self.emit(o + bytes([op, 0xC0 | n << 3 | d]) + imm, **fx)
            else:
                lock = n != 7 and rng.random() < 0.2
                pre, enc, _ = self.mem(size, lock=lock, ro=n == 7)
                self.emit((b"\xf0" if lock else b"") + pre + o + bytes([op]) + enc(n) + imm, **fx)

    def unary(self):
        """INC, DEC, NOT, NEG, TEST in all forms."""
        rng = self.rng
        size = rng.choice((1, 2, 4))
        o = self.osz(size)
        w = 0 if size == 1 else 1
        kind = rng.choice(("inc", "dec", "not", "neg", "test", "testi"))
        mem = rng.random() < 0.35
        lock = mem and kind in ("inc", "dec", "not", "neg") and rng.random() < 0.2
        lk = b"\xf0" if lock else b""
        if kind in ("inc", "dec"):
            sub = 0 if kind == "inc" else 1
            fx = dict(defs=ARITH & ~CF)
            if size != 1 and not mem and rng.random() < 0.5:
                self.emit(o + bytes([0x40 + 8 * sub + self.dst(size)]), **fx)
            elif mem:
                pre, enc, _ = self.mem(size, lock=lock)
                self.emit(lk + pre + o + bytes([0xFE + w]) + enc(sub), **fx)
            else:
                self.emit(o + bytes([0xFE + w, 0xC0 | sub << 3 | self.dst(size)]), **fx)
        elif kind in ("not", "neg"):
            sub = 2 if kind == "not" else 3
            fx = dict(defs=ARITH) if kind == "neg" else {}
            if mem:
                pre, enc, _ = self.mem(size, lock=lock)
                self.emit(lk + pre + o + bytes([0xF6 + w]) + enc(sub), **fx)
            else:
                self.emit(o + bytes([0xF6 + w, 0xC0 | sub << 3 | self.dst(size)]), **fx)
        elif kind == "test":
            fx = dict(defs=ARITH & ~AF, undefs=AF)
            if mem:
                pre, enc, _ = self.mem(size, ro=True)
                self.emit(pre + o + bytes([0x84 + w]) + enc(self.any_reg()), **fx)
            else:
                self.emit(o + bytes([0x84 + w, 0xC0 | self.any_reg() << 3 | self.any_reg()]), **fx)
        else:
            fx = dict(defs=ARITH & ~AF, undefs=AF)
            imm = le(rng.getrandbits(32), size)
            sub = 0 if rng.random() < 0.9 else 1          # F6/F7 /1 is an alias of /0
            r = rng.random()
            if r < 0.3:
                self.emit(o + bytes([0xA8 + w]) + imm, **fx)
            elif mem:
                pre, enc, _ = self.mem(size, ro=True)
                self.emit(pre + o + bytes([0xF6 + w]) + enc(sub) + imm, **fx)
            else:
                self.emit(o + bytes([0xF6 + w, 0xC0 | sub << 3 | self.any_reg()]) + imm, **fx)

    def shift(self):
        rng = self.rng
        size = rng.choice((1, 2, 4))
        bits = 8 * size
        o = self.osz(size)
        w = 0 if size == 1 else 1
        n = rng.choice((0, 1, 2, 3, 4, 5, 7, 4, 5, 7, 6))   # rol ror rcl rcr shl shr sar, /6 = shl alias
        form = rng.choice(("1", "cl", "imm", "imm"))
        if form == "1":
            count = 1
        elif rng.random() < 0.5:
            count = rng.choice((0, 1, 2, bits - 1, bits, bits + 1, 2 * bits, 2 * bits + 1, 9, 17, 31, 32, 33, 63))
        else:
            count = rng.randrange(256)
        if form == "cl" and ECX in self.protect:
            form = "imm"
        m = count & 0x1F
        reads = defs = undefs = 0
        if m:
            if n in (4, 5, 6, 7):
                defs, undefs = CF | SF | ZF | PF | (OF if m == 1 else 0), AF | (0 if m == 1 else OF)
                if n != 7 and m >= bits:
                    defs, undefs = defs & ~CF, undefs | CF
            else:
                defs, undefs = CF | (OF if m == 1 else 0), (0 if m == 1 else OF)
                if n in (2, 3):
                    reads = CF
        if form == "cl":
            self.emit(bytes([0xB1, count & 0xFF]))               # mov cl, count
        if rng.random() < 0.3:
            pre, enc, _ = self.mem(size, avoid=(ECX,) if form == "cl" else ())
            target = enc(n)
        else:
            d = self.dst(size)
            if form == "cl" and size == 1 and d == 1:
                d = 0                                             # not CL itself: keep the count
            pre, target = b"", bytes([0xC0 | n << 3 | d])
        fx = dict(reads=reads, defs=defs, undefs=undefs)
        if form == "1":
            self.emit(pre + o + bytes([0xD0 + w]) + target, **fx)
        elif form == "cl":
            self.emit(pre + o + bytes([0xD2 + w]) + target, **fx)
        else:
            self.emit(pre + o + bytes([0xC0 + w]) + target + bytes([count & 0xFF]), **fx)

    def shxd(self):
        rng = self.rng
        size = rng.choice((2, 4))
        bits = 8 * size
        o = self.osz(size)
        left = rng.random() < 0.5
        while True:
            count = rng.randrange(256) if rng.random() < 0.3 else rng.choice((0, 1, 2, 7, bits - 1, bits, 31, 32, 33))
            if (count & 0x1F) <= bits:
                break
        m = count & 0x1F
        defs = undefs = 0
        if m:
            defs, undefs = CF | SF | ZF | PF | (OF if m == 1 else 0), AF | (0 if m == 1 else OF)
        use_cl = rng.random() < 0.5 and ECX not in self.protect
        if use_cl:
            self.emit(bytes([0xB1, count & 0xFF]))               # mov cl, count
        src = self.any_reg()
        op = (0xA4 if left else 0xAC) + (1 if use_cl else 0)
        tail = b"" if use_cl else bytes([count & 0xFF])
        if rng.random() < 0.3:
            pre, enc, _ = self.mem(size, avoid=(ECX,) if use_cl else ())
            self.emit(pre + o + bytes([0x0F, op]) + enc(src) + tail, defs=defs, undefs=undefs)
        else:
            self.emit(o + bytes([0x0F, op, 0xC0 | src << 3 | self.dst(size)]) + tail, defs=defs, undefs=undefs)

    def muldiv(self):
        """MUL and IMUL: one-, two- and three-operand forms."""
        rng = self.rng
        size = rng.choice((1, 2, 4))
        o = self.osz(size)
        w = 0 if size == 1 else 1
        kind = rng.choice(("mul", "imul", "imul2", "imul3", "imul3"))
        fx = dict(defs=CF | OF, undefs=SF | ZF | AF | PF)
        mem = rng.random() < 0.3
        if kind in ("mul", "imul"):
            if {EAX, EDX} & self.protect:
                return
            sub = 4 if kind == "mul" else 5
            if mem:
                pre, enc, _ = self.mem(size, ro=True)
                self.emit(pre + o + bytes([0xF6 + w]) + enc(sub), **fx)
            else:
                self.emit(o + bytes([0xF6 + w, 0xC0 | sub << 3 | self.any_reg()]), **fx)
            return
        size = rng.choice((2, 4))
        o = self.osz(size)
        d = self.dst(size)
        if kind == "imul2":
            if mem:
                pre, enc, _ = self.mem(size, avoid=(d,), ro=True)
                self.emit(pre + o + b"\x0f\xaf" + enc(d), **fx)
            else:
                self.emit(o + bytes([0x0F, 0xAF, 0xC0 | d << 3 | self.any_reg()]), **fx)
        else:
            short = rng.random() < 0.5
            imm = le(rng.choice((rng.getrandbits(32), rng.randrange(-3, 4), 0x80, 0x7F, 0x8000)), 1 if short else size)
            opc = 0x6B if short else 0x69
            if mem:
                pre, enc, _ = self.mem(size, avoid=(d,), ro=True)
                self.emit(pre + o + bytes([opc]) + enc(d) + imm, **fx)
            else:
                self.emit(o + bytes([opc, 0xC0 | d << 3 | self.any_reg()]) + imm, **fx)

    def div(self):
        """DIV/IDIV with a dividend and divisor whose quotient fits (never #DE)."""
        rng = self.rng
        if {EAX, EDX} & self.protect:
            return
        size = rng.choice((1, 2, 4))
        bits = 8 * size
        o = self.osz(size)
        w = 0 if size == 1 else 1
        signed = rng.random() < 0.5
        n, d = div_operands(rng, bits, signed)
        mask = (1 << bits) - 1
        if size == 1:
            self.mov_imm32(EAX, rng.getrandbits(16) << 16 | n)
        else:
            lo, hi = n & mask, n >> bits
            self.mov_imm32(EAX, rng.getrandbits(16) << 16 | lo if size == 2 else lo)
            self.mov_imm32(EDX, rng.getrandbits(16) << 16 | hi if size == 2 else hi)
        sub = 7 if signed else 6
        if size == 1:
            regs = [r for r in (1, 2, 3, 5, 6, 7) if (r & 3) not in self.protect]   # cl dl bl ch dh bh
        else:
            regs = [r for r in (ECX, EBX, EBP, ESI, EDI) if r not in self.protect]
        if rng.random() < 0.3 or not regs:
            pre, enc, A = self.mem(size, avoid=(EAX, EDX), ro=True)
            self.emit(o + bytes([0xC6 + w, 0x05]) + le(A, 4) + le(d, size))     # mov [A], divisor
            self.emit(pre + o + bytes([0xF6 + w]) + enc(sub), undefs=ARITH)
        else:
            r = rng.choice(regs)
            if size == 1:
                shift = 8 * (r >> 2)
                self.mov_imm32(r & 3, rng.getrandbits(32) & ~(0xFF << shift) | d << shift)
            else:
                self.mov_imm32(r, rng.getrandbits(16) << 16 | d if size == 2 else d)
            self.emit(o + bytes([0xF6 + w, 0xC0 | sub << 3 | r]), undefs=ARITH)

    def move(self):
        rng = self.rng
        size = rng.choice((1, 2, 4))
        o = self.osz(size)
        w = 0 if size == 1 else 1
        kind = rng.choice(("rr", "rr2", "mr", "rm", "imm_r", "imm_rm", "imm_m", "moffs"))
        if kind == "rr":
            self.emit(o + bytes([0x88 + w, 0xC0 | self.any_reg() << 3 | self.dst(size)]))
        elif kind == "rr2":
            self.emit(o + bytes([0x8A + w, 0xC0 | self.dst(size) << 3 | self.any_reg()]))
        elif kind == "mr":
            pre, enc, _ = self.mem(size)
            self.emit(pre + o + bytes([0x88 + w]) + enc(self.any_reg()))
        elif kind == "rm":
            r = self.dst(size)
            pre, enc, _ = self.mem(size, avoid=(self.r32_of(r, size),), ro=True)
            self.emit(pre + o + bytes([0x8A + w]) + enc(r))
        elif kind == "imm_r":
            self.emit(o + bytes([(0xB0 if size == 1 else 0xB8) + self.dst(size)]) + le(rng.getrandbits(32), size))
        elif kind == "imm_rm":
            self.emit(o + bytes([0xC6 + w, 0xC0 | self.dst(size)]) + le(rng.getrandbits(32), size))
        elif kind == "imm_m":
            pre, enc, _ = self.mem(size)
            self.emit(pre + o + bytes([0xC6 + w]) + enc(0) + le(rng.getrandbits(32), size))
        else:
            if EAX in self.protect:
                return
            op = rng.choice((0xA0, 0xA2)) + w                 # mov al/ax/eax, moffs | mov moffs, al/ax/eax
            self.emit(self.seg(ro=op < 0xA2) + o + bytes([op]) + le(self.addr(size), 4))

    def movx(self):
        rng = self.rng
        src = rng.choice((1, 2))
        dsize = rng.choice((2, 4)) if src == 1 else rng.choice((4, 4, 2))
        op = rng.choice((0xB6, 0xBE)) + (src - 1)
        d = self.dst(dsize)
        if rng.random() < 0.4:
            pre, enc, _ = self.mem(src, avoid=(d,), ro=True)
            self.emit(pre + self.osz(dsize) + bytes([0x0F, op]) + enc(d))
        else:
            self.emit(self.osz(dsize) + bytes([0x0F, op, 0xC0 | d << 3 | self.any_reg()]))

    def lea(self):
        """LEA computes an address from the registers as they are: no memory access, so any
        ModRM/SIB, and 16-bit addressing (67) too."""
        rng = self.rng
        dsize = rng.choice((2, 4, 4))
        d = self.dst(dsize)
        o = self.osz(dsize)
        mod = rng.randrange(3)
        rm = rng.randrange(8)
        if rng.random() < 0.15:
            disp = b"" if mod == 0 and rm != 6 else (le(rng.getrandbits(8), 1) if mod == 1 else le(rng.getrandbits(16), 2))
            self.emit(b"\x67" + o + bytes([0x8D, mod << 6 | d << 3 | rm]) + disp)
            return
        body = bytes([mod << 6 | d << 3 | rm])
        if rm == 4:
            body += bytes([rng.getrandbits(8)])
            if mod == 0 and body[-1] & 7 == 5:
                body += le(rng.getrandbits(32), 4)
        if mod == 0 and rm == 5:
            body += le(rng.getrandbits(32), 4)
        elif mod == 1:
            body += le(rng.getrandbits(8), 1)
        elif mod == 2:
            body += le(rng.getrandbits(32), 4)
        self.emit(o + b"\x8d" + body)

    def xchg(self):
        rng = self.rng
        size = rng.choice((1, 2, 4))
        o = self.osz(size)
        w = 0 if size == 1 else 1
        r = rng.random()
        if r < 0.3 and size != 1:
            if EAX not in self.protect:
                self.emit(o + bytes([0x90 + self.dst(size)]))
        elif r < 0.65:
            self.emit(o + bytes([0x86 + w, 0xC0 | self.dst(size) << 3 | self.dst(size)]))
        else:
            a = self.dst(size)
            # XCHG with memory is locked: naturally aligned
            pre, enc, _ = self.mem(size, avoid=(self.r32_of(a, size),), lock=True)
            self.emit((b"\xf0" if rng.random() < 0.3 else b"") + pre + o + bytes([0x86 + w]) + enc(a))

    def xadd_cmpxchg(self):
        rng = self.rng
        size = rng.choice((1, 2, 4))
        o = self.osz(size)
        w = 0 if size == 1 else 1
        xadd = rng.random() < 0.5
        if not xadd and EAX in self.protect:
            return
        op = (0xC0 if xadd else 0xB0) + w
        a = self.dst(size)
        if rng.random() < 0.5:
            if not xadd and rng.random() < 0.3:
                # make it succeed sometimes: compare equal
                b = self.dst(size)
                self.emit(o + bytes([0x88 + w, 0xC0 | self.r32_of(0, size) << 3 | b]))   # mov b, al/ax/eax
            else:
                b = self.dst(size)
            self.emit(o + bytes([0x0F, op, 0xC0 | a << 3 | b]), defs=ARITH)
        else:
            lock = rng.random() < 0.3
            pre, enc, A = self.mem(size, avoid=(self.r32_of(a, size),), lock=lock)
            self.emit((b"\xf0" if lock else b"") + pre + o + bytes([0x0F, op]) + enc(a), defs=ARITH)

    def cmpxchg8b(self):
        rng = self.rng
        if {EAX, EDX} & self.protect:
            return
        lock = rng.random() < 0.3
        pre, enc, A = self.mem(8, avoid=(EAX, EDX, ECX, EBX), lock=lock)
        if rng.random() < 0.5:              # make it succeed: EDX:EAX = the memory qword
            lo, hi = rng.getrandbits(32), rng.getrandbits(32)
            self.emit(b"\xc7\x05" + le(A, 4) + le(lo, 4))
            self.emit(b"\xc7\x05" + le(A + 4, 4) + le(hi, 4))
            self.mov_imm32(EAX, lo)
            self.mov_imm32(EDX, hi)
        self.emit((b"\xf0" if lock else b"") + pre + b"\x0f\xc7" + enc(1), defs=ZF)

    def bswap(self):
        self.emit(bytes([0x0F, 0xC8 + self.dst(4)]))

    def convert(self):
        op = self.rng.choice((b"\x66\x98", b"\x98", b"\x66\x99", b"\x99"))
        if (op[-1] == 0x98 and EAX in self.protect) or (op[-1] == 0x99 and EDX in self.protect):
            return
        self.emit(op)

    def xlat(self):
        if {EAX, EBX} & self.protect:
            return
        self.mov_imm32(EBX, self.addr(256))
        self.emit(self.seg(ro=True) + b"\xd7")

    def lahf_sahf(self):
        """LAHF, SAHF, and SALC (D6: AL = CF ? FF : 00, undocumented but valid in 32-bit mode)."""
        r = self.rng.random()
        if r < 0.4:
            if EAX not in self.protect:
                self.emit(b"\x9f", reads=SF | ZF | AF | PF | CF)
        elif r < 0.85:
            self.emit(b"\x9e", defs=SF | ZF | AF | PF | CF)
        elif EAX not in self.protect:
            self.emit(b"\xd6", reads=CF)

    def flagop(self):
        op = self.rng.choice((0xF8, 0xF9, 0xF5, 0xFC, 0xFD))          # clc stc cmc cld std
        self.emit(bytes([op]), reads=CF if op == 0xF5 else 0, defs=CF if op in (0xF8, 0xF9, 0xF5) else 0)

    def nop(self):
        rng = self.rng
        r = rng.random()
        if r < 0.3:
            self.emit(b"\x90")
        elif r < 0.5:
            self.emit(b"\x66\x90")
        else:
            mod = rng.randrange(3)
            rm = rng.choice((0, 1, 2, 3, 6, 7))
            disp = b"" if mod == 0 else (le(rng.getrandbits(8), 1) if mod == 1 else le(rng.getrandbits(32), 4))
            self.emit(rng.choice((b"", b"\x66")) + bytes([0x0F, 0x1F, mod << 6 | rm]) + disp)

    def setcc(self):
        cc = self.rng.randrange(16)
        if self.rng.random() < 0.3:
            pre, enc, _ = self.mem(1)
            self.emit(pre + bytes([0x0F, 0x90 + cc]) + enc(0), reads=CC_READS[cc])
        else:
            self.emit(bytes([0x0F, 0x90 + cc, 0xC0 | self.dst(1)]), reads=CC_READS[cc])

    def cmov(self):
        rng = self.rng
        cc = rng.randrange(16)
        size = rng.choice((2, 4))
        d = self.dst(size)
        if rng.random() < 0.3:
            pre, enc, _ = self.mem(size, avoid=(d,), ro=True)
            self.emit(pre + self.osz(size) + bytes([0x0F, 0x40 + cc]) + enc(d), reads=CC_READS[cc])
        else:
            self.emit(self.osz(size) + bytes([0x0F, 0x40 + cc, 0xC0 | d << 3 | self.any_reg()]), reads=CC_READS[cc])

    def bt(self):
        rng = self.rng
        kind = rng.choice(("rr", "ri", "mi", "mr"))
        size = rng.choice((2, 4))
        o = self.osz(size)
        sub = rng.randrange(4)          # bt bts btr btc
        fx = dict(defs=CF, undefs=OF | SF | AF | PF)
        if kind == "rr":
            d = self.dst(size) if sub else self.any_reg()
            self.emit(o + bytes([0x0F, 0xA3 + 8 * sub, 0xC0 | self.any_reg() << 3 | d]), **fx)
        elif kind == "ri":
            d = self.dst(size) if sub else self.any_reg()
            self.emit(o + bytes([0x0F, 0xBA, 0xC0 | (4 + sub) << 3 | d, rng.getrandbits(8)]), **fx)
        elif kind == "mi":
            lock = sub != 0 and rng.random() < 0.3
            pre, enc, _ = self.mem(size, lock=lock, ro=sub == 0)
            self.emit((b"\xf0" if lock else b"") + pre + o + b"\x0f\xba" + enc(4 + sub) + bytes([rng.getrandbits(8)]), **fx)
        else:
            # bit string: a signed bit offset in a register selects a word near the address
            off = rng.randrange(-400, 400)
            r = self.free32()
            self.mov_imm32(r, (rng.getrandbits(16) << 16 | (off & 0xFFFF)) if size == 2 else off & 0xFFFFFFFF)
            lock = sub != 0 and rng.random() < 0.3
            pre, enc, _ = self.mem(size, avoid=(r,), span=64, lock=lock, ro=sub == 0)
            self.emit((b"\xf0" if lock else b"") + pre + o + bytes([0x0F, 0xA3 + 8 * sub]) + enc(r), **fx)

    def bsf_bsr(self):
        rng = self.rng
        size = rng.choice((2, 4))
        bits = 8 * size
        o = self.osz(size)
        op = rng.choice((0xBC, 0xBD))
        d = self.dst(size)
        nz = (rng.getrandbits(bits) if rng.random() < 0.5 else 0) | (1 << rng.randrange(bits))   # nonzero
        fx = dict(defs=ZF, undefs=CF | OF | SF | AF | PF)
        if rng.random() < 0.4:
            pre, enc, A = self.mem(size, avoid=(d,), ro=True)
            self.emit(o + b"\xc7\x05" + le(A, 4) + le(nz, size))          # mov [A], nonzero
            self.emit(pre + o + bytes([0x0F, op]) + enc(d), **fx)
        else:
            s = self.free32()
            self.mov_imm32(s, rng.getrandbits(16) << 16 | nz if size == 2 else nz)
            self.emit(o + bytes([0x0F, op, 0xC0 | d << 3 | s]), **fx)

    def bcd(self):
        rng = self.rng
        if EAX in self.protect:
            return
        if rng.random() < 0.5:              # interesting AL/AH values
            self.mov_imm32(EAX, rng.getrandbits(16) << 16 | rng.getrandbits(8) << 8 |
                           rng.choice((rng.getrandbits(8), 0x99, 0x9A, 0xF9, 0xFA, 0xFF, 0x0A, 0x00, 0x06, 0x60)))
            if rng.random() < 0.5:
                self.emit(b"\x9e", defs=SF | ZF | AF | PF | CF) if rng.random() < 0.5 else \
                    self.emit(b"\x04" + bytes([rng.getrandbits(8)]), defs=ARITH)     # add al, imm8
        op = rng.choice(("daa", "das", "aaa", "aas", "aam", "aad"))
        if op == "daa":
            self.emit(b"\x27", reads=CF | AF, defs=CF | AF | SF | ZF | PF, undefs=OF)
        elif op == "das":
            self.emit(b"\x2f", reads=CF | AF, defs=CF | AF | SF | ZF | PF, undefs=OF)
        elif op == "aaa":
            self.emit(b"\x37", reads=AF, defs=AF | CF, undefs=OF | SF | ZF | PF)
        elif op == "aas":
            self.emit(b"\x3f", reads=AF, defs=AF | CF, undefs=OF | SF | ZF | PF)
        elif op == "aam":
            self.emit(bytes([0xD4, rng.choice((10, 16, 1, 255, rng.randrange(1, 256)))]),
                      defs=SF | ZF | PF, undefs=OF | AF | CF)
        else:
            self.emit(bytes([0xD5, rng.choice((10, 16, 0, 255, rng.randrange(256)))]),
                      defs=SF | ZF | PF, undefs=OF | AF | CF)

    def string(self):
        """MOVS CMPS STOS LODS SCAS, with REP/REPE/REPNE and small counts; the direction flag is
        whatever it is (both directions have room)."""
        rng = self.rng
        if {ESI, EDI, ECX, EAX} & self.protect:
            return
        op = rng.choice(("movs", "cmps", "stos", "lods", "scas"))
        size = rng.choice((1, 2, 4))
        count = rng.choice((0, 1, 2, 3, 5, 8, 13)) if rng.random() < 0.85 else rng.randrange(14, 64)
        rep = rng.choice((None, "f3", "f2") if op in ("cmps", "scas") else (None, "f3", "f3"))
        mid = DATA + DATA_SIZE // 2         # the page boundary: copies cross it
        if rng.random() < 0.3:
            self.emit(bytes([rng.choice((0xFC, 0xFD))]))       # cld / std
        self.mov_imm32(ESI, mid - 0x300 + rng.randrange(0x400))
        self.mov_imm32(EDI, mid - 0x300 + rng.randrange(0x400))
        self.mov_imm32(ECX, count)
        base = {"movs": 0xA4, "cmps": 0xA6, "stos": 0xAA, "lods": 0xAC, "scas": 0xAE}[op]
        code = (bytes.fromhex(rep) if rep else b"") + (self.seg(ro=True) if op in ("movs", "cmps", "lods") else b"")
        code += self.osz(size) + bytes([base + (0 if size == 1 else 1)])
        defs = ARITH if op in ("cmps", "scas") and (count or rep is None) else 0
        self.emit(code, defs=defs)

    def bound_into(self):
        """BOUND with the index inside the bounds, INTO with OF = 0: checks that do not trap."""
        rng = self.rng
        if rng.random() < 0.3:
            self.emit(b"\x80\xf8\x00", defs=ARITH)             # cmp al, 0: OF = 0
            self.emit(b"\xce", reads=OF)                         # into: no trap
            return
        size = rng.choice((2, 4))
        r = self.free32()
        lo = rng.randrange(-(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1)
        hi = rng.randrange(lo, min(lo + rng.choice((1, 10, 1 << 20)), (1 << (8 * size - 1)) - 1) + 1)
        v = rng.choice((lo, hi, rng.randrange(lo, hi + 1)))
        pre, enc, A = self.mem(2 * size, avoid=(r,), ro=True)
        self.emit(b"\xc7\x05" + le(A, 4) + le(lo, size) + (le(hi, size) if size == 2 else b""))
        if size == 4:
            self.emit(b"\xc7\x05" + le(A + 4, 4) + le(hi, 4))
        self.mov_imm32(r, rng.getrandbits(16) << 16 | (v & 0xFFFF) if size == 2 else v)
        self.emit(pre + self.osz(size) + b"\x62" + enc(r))

    def fault_tail(self):
        """The last instruction of a few programs faults: compare where and in which state both
        stop (the host's signal against vmcore's exception vector, same EIP, same registers and
        memory). Kinds in EXCLUDED_FAULTS are left out: vmcore gets them wrong."""
        rng = self.rng
        kinds = [k for k in ("div0", "idiv_overflow", "div_overflow", "aam0", "ud2", "lock_reg", "lock_cmp",
                             "lea_reg", "cmpxchg8b_reg", "mov_cs", "int3", "int_3", "into", "bound", "cs_write",
                             "icebp")
                 if k not in EXCLUDED_FAULTS]
        kind = rng.choice(kinds)
        self.family = "fault:" + kind
        if EAX in self.protect or EDX in self.protect:
            kind = "ud2"
        if kind == "div0":
            size = rng.choice((1, 2, 4))
            r = rng.choice((ECX, EBX, ESI, EDI)) if size != 1 else rng.choice((ECX, EBX))
            self.emit(self.osz(size) + bytes([0x31 if size != 1 else 0x30, 0xC0 | r << 3 | r]), defs=ARITH & ~AF,
                      undefs=AF)                                         # xor r, r
            self.emit(self.osz(size) + bytes([0xF6 if size == 1 else 0xF7, 0xC0 | rng.choice((6, 7)) << 3 | r]))
        elif kind in ("idiv_overflow", "div_overflow"):
            size = rng.choice((1, 2, 4))
            bits = 8 * size
            if kind == "idiv_overflow":
                n, d = 1 << (2 * bits - 1), (1 << bits) - 1                 # most negative / -1
                if rng.random() < 0.5:
                    n, d = rng.getrandbits(2 * bits - 2) | 1 << (2 * bits - 3), rng.randrange(1, 4)
            else:
                d = rng.randrange(1, 1 << bits)
                n = (d << bits) + rng.randrange(d)                          # quotient >= 2^bits
            if size == 1:
                self.mov_imm32(EAX, n)
            else:
                self.mov_imm32(EAX, n & ((1 << bits) - 1))
                self.mov_imm32(EDX, n >> bits)
            self.mov_imm32(ECX, d)
            self.emit(self.osz(size) + bytes([0xF6 if size == 1 else 0xF7, 0xC0 | (7 if kind[0] == "i" else 6) << 3 | ECX]))
        elif kind == "aam0":
            self.emit(b"\xd4\x00")
        elif kind == "ud2":
            self.emit(b"\x0f\x0b")
        elif kind == "lock_reg":
            self.emit(b"\xf0" + bytes([8 * rng.randrange(7) + 1, 0xC0 | rng.randrange(64)]))   # lock add.. r, r
        elif kind == "lock_cmp":
            pre, enc, _ = self.mem(4, ro=True)
            self.emit(b"\xf0" + pre + b"\x39" + enc(rng.randrange(8)))      # lock cmp [m], r: #UD
        elif kind == "lea_reg":
            self.emit(bytes([0x8D, 0xC0 | rng.randrange(64)]))
        elif kind == "cmpxchg8b_reg":
            self.emit(bytes([0x0F, 0xC7, 0xC8 | rng.randrange(8)]))
        elif kind == "mov_cs":
            self.emit(bytes([0x8E, 0xC8 | rng.randrange(8)]))              # mov cs, r16
        elif kind == "int3":
            self.emit(b"\xcc")
        elif kind == "icebp":
            self.emit(b"\xf1")
        elif kind == "cs_write":
            size = rng.choice((1, 2, 4))
            _, enc, _ = self.mem(size)                                       # no other override
            self.emit(b"\x2e" + self.osz(size) + bytes([0x88 if size == 1 else 0x89]) + enc(rng.randrange(8)))
        elif kind == "int_3":
            self.emit(b"\xcd\x03")
        elif kind == "into":
            self.emit(b"\xb0\x7f")                                       # mov al, 7f
            self.emit(b"\x04\x01", defs=ARITH)                           # add al, 1: OF = 1
            self.emit(b"\xce", reads=OF)
        else:                                                               # bound, index out of range
            size = rng.choice((2, 4))
            lo = rng.randrange(-1000, 1000)
            hi = lo + rng.randrange(0, 100)
            v = rng.choice((lo - 1, hi + 1, lo - rng.randrange(1, 1 << 14), hi + rng.randrange(1, 1 << 14)))
            r = self.free32(avoid=(EAX,))
            pre, enc, A = self.mem(2 * size, avoid=(r,), ro=True)
            self.emit(b"\xc7\x05" + le(A, 4) + le(lo, size) + (le(hi, size) if size == 2 else b""))
            if size == 4:
                self.emit(b"\xc7\x05" + le(A + 4, 4) + le(hi, 4))
            self.mov_imm32(r, v)
            self.emit(pre + self.osz(size) + b"\x62" + enc(r))

    # -- stack --------------------------------------------------------------------------------
    def stack(self):
        rng = self.rng
        if self.no_stack:
            return self.simple()
        r = rng.random()
        if self.depth < 0x200 and r < 0.55:
            k = rng.randrange(15)
            if k == 0:
                self.emit(bytes([0x50 + self.any_reg()]))
                self.depth += 4
            elif k == 1:
                self.emit(bytes([0x66, 0x50 + self.any_reg()]))
                self.depth += 2
            elif k == 2:
                self.emit(b"\x68" + le(rng.getrandbits(32), 4))
                self.depth += 4
            elif k == 3:
                self.emit(bytes([0x6A, rng.getrandbits(8)]))
                self.depth += 4
            elif k == 4:
                size = rng.choice((4, 4, 2))
                pre, enc, _ = self.mem(size, ro=True)             # may be [esp+d]: read before the push
                self.emit(pre + self.osz(size) + b"\xff" + enc(6))
                self.depth += size
            elif k == 5:
                self.emit(b"\x60")                               # pushad
                self.depth += 32
            elif k == 6:
                self.emit(self.osz(rng.choice((4, 4, 2))) + b"\x9c", reads=ARITH)     # pushfd / pushf
                self.depth += 4 if self.items[-1].pieces[0] == b"\x9c" else 2
            elif k == 7:
                # a safe EFLAGS image: status flags and DF; IF = 1 as user mode keeps it
                v = 0x202 | rng.getrandbits(16) & (ARITH | DF)
                self.emit(b"\x68" + le(v, 4))
                self.emit(b"\x9d", defs=ARITH)                   # popfd
            elif k == 8:
                self.emit(b"\x54")                               # push esp (the old value)
                self.depth += 4
                if rng.random() < 0.5:
                    self.emit(b"\x5c")                           # pop esp: back where it was
                    self.depth -= 4
            elif k == 9:
                n = 4 * rng.randrange(1, 16)
                self.emit(b"\x83\xec" + bytes([n]), defs=ARITH)  # sub esp, n
                self.depth += n
            elif k == 11:
                self.emit(b"\x66\x60")                           # pusha (16-bit)
                self.depth += 16
            elif k == 12:
                self.emit(b"\x66\x68" + le(rng.getrandbits(16), 2))     # push imm16
                self.depth += 2
            elif k == 13:
                self.emit(b"\x66\x6a" + bytes([rng.getrandbits(8)]))   # push imm8 sign-extended to 16
                self.depth += 2
            elif k == 14:
                v = 0x202 | rng.getrandbits(16) & (ARITH | DF)
                self.emit(b"\x66\x68" + le(v, 2))
                self.emit(b"\x66\x9d", defs=ARITH)               # popf (16-bit)
            else:
                self.emit(b"\x6a" + bytes([rng.getrandbits(8)]))
                self.depth += 4
                d = rng.randrange(0, 0x40)
                self.emit(b"\x8f\x44\x24" + bytes([d]))          # pop dword [esp+d]: address after the pop
                self.depth -= 4
        elif self.depth >= 4:
            k = rng.randrange(6)
            if k in (0, 1):
                self.emit(bytes([0x58 + self.free32()]))
                self.depth -= 4
            elif k == 2 and self.depth >= 2:
                self.emit(bytes([0x66, 0x58 + self.free32()]))
                self.depth -= 2
            elif k == 3:
                pre, enc, _ = self.mem(4, allow_esp=False)
                self.emit(pre + b"\x8f" + enc(0))
                self.depth -= 4
            elif k == 4:
                n = 4 * rng.randrange(1, self.depth // 4 + 1)
                if n < 128:
                    self.emit(b"\x83\xc4" + bytes([n]), defs=ARITH)      # add esp, n
                else:
                    self.emit(b"\x81\xc4" + le(n, 4), defs=ARITH)
                self.depth -= n
            elif self.depth >= 32 and not self.protect - {ESP}:
                self.emit(b"\x61")                               # popad
                self.depth -= 32
            elif self.depth >= 16 and not self.protect - {ESP}:
                self.emit(b"\x66\x61")                           # popa (16-bit)
                self.depth -= 16
            else:
                self.emit(bytes([0x58 + self.free32()]))
                self.depth -= 4
        else:
            self.alu()

    # -- control flow ---------------------------------------------------------------------------
    def simple(self):
        """One instruction (with its setup) that keeps the stack and does not branch."""
        f = self.rng.choice(self.families)
        self.family = f
        getattr(self, f)()

    def skip_block(self, k: int) -> int:
        for _ in range(k):
            self.simple()
        return self.undef

    def jcc_forward(self):
        rng = self.rng
        self.family = "jump"
        kind = rng.choice(("jcc8", "jcc8", "jcc32", "jmp8", "jmp32", "jecxz", "jcxz", "loop", "loope", "loopne",
                           "ind_reg", "ind_mem"))
        target = self.label()
        if kind in ("jcc8", "jcc32"):
            cc = rng.randrange(16)
            piece = (bytes([0x70 + cc]), ("rel8", target)) if kind == "jcc8" else (bytes([0x0F, 0x80 + cc]), ("rel32", target))
            self.emit(*piece, reads=CC_READS[cc])
        elif kind in ("jmp8", "jmp32"):
            self.emit(b"\xeb", ("rel8", target)) if kind == "jmp8" else self.emit(b"\xe9", ("rel32", target))
        elif kind in ("jecxz", "jcxz"):
            if ECX not in self.protect and rng.random() < 0.5:
                self.mov_imm32(ECX, rng.choice((0, 0x10000, 1)))
            self.emit(b"\xe3" if kind == "jecxz" else b"\x67\xe3", ("rel8", target))
        elif kind in ("loop", "loope", "loopne"):
            if ECX in self.protect:
                return
            if rng.random() < 0.5:
                self.mov_imm32(ECX, rng.choice((1, 2, 0, 0x10001)))
            op = {"loop": 0xE2, "loope": 0xE1, "loopne": 0xE0}[kind]
            a16 = b"\x67" if rng.random() < 0.2 else b""                  # counts in CX
            self.emit(a16 + bytes([op]), ("rel8", target), reads=0 if kind == "loop" else ZF)
        else:
            r = self.free32()
            if kind == "ind_reg":
                self.emit(bytes([0xB8 + r]), ("abs32", target))
                self.emit(bytes([0xFF, 0xE0 | r]))
            else:
                A = self.addr(4)
                self.emit(b"\xc7\x05" + le(A, 4), ("abs32", target))    # mov dword [A], target
                pre, enc, _ = self.mem(4, a=A, ro=True)
                self.emit(pre + b"\xff" + enc(4))
        at_jump = self.undef
        conditional = kind not in ("jmp8", "jmp32", "ind_reg", "ind_mem")
        after = self.skip_block(rng.randrange(1, 4))
        # at the target a flag is undefined if it is on either path (dead code changes nothing)
        self.undef = (at_jump | after) if conditional else at_jump
        self.place(target)

    def call_group(self):
        """jmp over; sub: body; ret [n]; over: [push args]; call sub (direct or indirect). The body
        runs once, after the call, so flags are tracked through it in emission order."""
        if self.no_stack:
            return self.simple()
        rng = self.rng
        self.family = "call"
        sub, over = self.label(), self.label()
        nargs = rng.randrange(3)
        self.emit(b"\xe9", ("rel32", over))
        self.place(sub)
        self.no_stack = self.in_call = True
        self.depth += 4 * (nargs + 1)
        for _ in range(rng.randrange(1, 5)):
            self.simple()
        self.depth -= 4 * (nargs + 1)
        self.no_stack = self.in_call = False
        self.family = "call"
        self.emit(b"\xc2" + le(4 * nargs, 2) if nargs else b"\xc3")      # ret 4*n | ret
        self.place(over)
        for _ in range(nargs):
            self.emit(b"\x6a" + bytes([rng.getrandbits(8)]))
        r = rng.random()
        if r < 0.6:
            self.emit(b"\xe8", ("rel32", sub))
        elif r < 0.8:
            t = self.free32()
            self.emit(bytes([0xB8 + t]), ("abs32", sub))
            self.emit(bytes([0xFF, 0xD0 | t]))                # call t
        else:
            A = self.addr(4)
            self.emit(b"\xc7\x05" + le(A, 4), ("abs32", sub))
            pre, enc, _ = self.mem(4, a=A, ro=True)
            self.emit(pre + b"\xff" + enc(2))                 # call dword [A]

    def enter_group(self):
        if self.no_stack or EBP in self.protect:
            return self.simple()
        rng = self.rng
        self.family = "enter"
        level = rng.choice((0, 0, 1, 2, 3, rng.randrange(4, 32), rng.randrange(32, 256)))
        nest = level & 31                   # the CPU takes the level mod 32
        o16 = rng.random() < 0.2            # ENTER/LEAVE with a 16-bit operand size: BP, word pushes
        if nest or o16:
            # a frame chain to copy, below ESP (so nothing it reads has been pushed yet); for the
            # 16-bit forms EBP's upper half is the stack's, so that ESP = EBP at LEAVE either way
            self.mov_imm32(EBP, self.esp0 - self.depth - 0x20 + 4 * rng.randrange(8))
        alloc = rng.randrange(0, 0x40)
        self.emit(self.osz(2 if o16 else 4) + b"\xc8" + le(alloc, 2) + bytes([level]))
        saved = set(self.protect)
        frame = (2 + 2 * nest if o16 else 4 + 4 * nest) + alloc
        self.depth += frame
        self.no_stack = True
        self.protect |= {EBP}
        for _ in range(rng.randrange(0, 4)):
            self.simple()
        self.no_stack, self.protect = False, saved
        self.depth -= frame
        self.family = "enter"
        self.emit(self.osz(2 if o16 else 4) + b"\xc9")        # leave

    def backward_loop(self):
        """A few iterations of a short body; every iteration starts with a CMP, so the flags are
        all defined at the loop head whichever way it is reached. The counter is a dword in
        memory (dec; jnz) or ECX (loop)."""
        if self.no_stack:
            return self.simple()
        rng = self.rng
        n = rng.randrange(1, 9)
        use_ecx = ECX not in self.protect and rng.random() < 0.4
        self.family = "loop"
        if use_ecx:
            self.mov_imm32(ECX, n)
        else:
            self.emit(b"\xc7\x05" + le(COUNTER, 4) + le(n, 4))       # mov dword [COUNTER], n
        top = self.label()
        self.place(top)
        self.define_flags()
        saved = set(self.protect)
        self.no_stack = True
        if use_ecx:
            self.protect |= {ECX}
        for _ in range(rng.randrange(2, 9)):
            if rng.random() < 0.15:
                self.jcc_forward()
            else:
                self.simple()
        self.no_stack, self.protect = False, saved
        self.family = "loop"
        if use_ecx:
            self.emit(b"\xe2", ("rel8", top))                      # loop top
        else:
            self.emit(b"\xff\x0d" + le(COUNTER, 4), defs=ARITH & ~CF)   # dec dword [COUNTER]
            self.emit(b"\x75", ("rel8", top), reads=ZF)            # jnz top

    def step(self):
        r = self.rng.random()
        if self.straight_line or r < 0.64:
            self.simple()
        elif r < 0.76:
            self.family = "stack"
            self.stack()
        elif r < 0.86:
            self.jcc_forward()
        elif r < 0.91:
            self.call_group()
        elif r < 0.95:
            self.enter_group()
        else:
            self.backward_loop()


def div_operands(rng: random.Random, bits: int, signed: bool) -> tuple[int, int]:
    """(dividend of 2*bits, divisor of bits) as unsigned encodings, the quotient fitting in bits."""
    mask = (1 << bits) - 1
    if not signed:
        d = rng.choice((rng.getrandbits(bits), rng.randrange(1, 16), mask, 1 << (bits - 1))) or 1
        q = rng.choice((rng.getrandbits(bits), mask, 0, rng.randrange(16)))
        r = rng.randrange(d)
        return q * d + r, d
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    d = rng.choice((rng.randrange(lo, hi + 1), rng.randrange(-16, 17), lo, hi, -1)) or 1
    q = rng.choice((rng.randrange(lo, hi + 1), lo, hi, 0, rng.randrange(-16, 17)))
    r = rng.randrange(abs(d))
    n = q * d
    if n < 0 or (n == 0 and rng.random() < 0.5):
        r = -r                          # the remainder has the dividend's sign
    n += r
    if not (-(1 << (2 * bits - 1)) <= n < (1 << (2 * bits - 1))):
        return div_operands(rng, bits, signed)
    assert int(n / d) == q if abs(n) < 2 ** 52 else True
    return n & ((1 << (2 * bits)) - 1), d & mask


@dataclass
class Program:
    seed: int
    code: bytes             # without the tail (HLT in vmcore, a jump back natively)
    items: list
    final_undef: int
    regs: dict              # eax..edi, eflags
    data: bytes
    stack: bytes
    faults: bool = False    # ends with an instruction that faults (Gen.fault_tail)

    @property
    def end(self) -> int:
        return CODE + len(self.code)


def layout(items) -> bytes:
    addr = CODE
    where = {}
    for it in items:
        it.addr = addr
        for lab in it.labels:
            where[lab] = addr
        it.size = sum(len(p) if isinstance(p, bytes) else {"rel8": 1, "rel32": 4, "abs32": 4}[p[0]] for p in it.pieces)
        addr += it.size
    if addr + 16 > CODE + CODE_SIZE:
        raise Regen()
    out = bytearray()
    for it in items:
        end = it.addr + it.size
        for p in it.pieces:
            if isinstance(p, bytes):
                out += p
                continue
            kind, lab = p
            t = where[lab]
            if kind == "rel8":
                rel = t - end
                if not -128 <= rel <= 127:
                    raise Regen()
                out += le(rel, 1)
            elif kind == "rel32":
                out += le(t - end, 4)
            else:
                out += le(t, 4)
    return bytes(out)


def generate(seed: int, n_steps: int | None = None, excluded=(), straight_line: bool = False) -> Program:
    """The program for ``seed``: ~30-100 steps (each one instruction with its setup, or a small
    group), random registers, random status flags and DF, random data and stack pages."""
    for attempt in range(50):
        rng = random.Random(seed * 1000 + attempt)
        g = Gen(rng, excluded)
        g.straight_line = straight_line
        try:
            for _ in range(n_steps or rng.randrange(30, 101)):
                g.step()
            faults = n_steps is None and rng.random() < FAULT_TAIL_RATE
            if faults:
                g.fault_tail()
            end = g.label()
            g.place(end)
            g.family = "end"
            g.emit(b"\x90")                     # every label lands on an instruction
            code = layout(g.items)
        except Regen:
            continue
        regs = {r: rng.getrandbits(32) for r in REG32}
        regs["esp"] = g.esp0
        regs["eflags"] = 0x202 | (rng.getrandbits(12) & ARITH) | (DF if rng.random() < 0.2 else 0)
        return Program(seed, code, g.items, g.undef, regs, rng.randbytes(DATA_SIZE), rng.randbytes(STACK_SIZE), faults)
    raise RuntimeError(f"seed {seed}: could not lay out a program")
