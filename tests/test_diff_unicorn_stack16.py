"""Differential test of the push/pop families on a 16-bit stack in 16-bit protected mode
(issue 12), against Unicorn 2 (QEMU's TCG x86, whose SET_ESP keeps ESP's high word with a
16-bit SS). A seeded generator writes straight-line 16-bit code over PUSH/POP (r16, r32, imm,
Sreg), PUSHA/POPA, PUSHF/POPF, near CALL/RET imm16, far CALL/RETF imm16, ENTER (levels 0-3)/
LEAVE, in both operand sizes, with SP moved around the 0000/FFFF wrap and ESP's high word set
to random values. The stack segment is SS = base 20000h, limit FFFFh, B = 0. It tracks SP so a
dword is never pushed across the wrap (that is #SS on both, covered by test_stack16.py).
GPRs, EIP, the status flags and the whole stack segment must agree.

Unicorn turns INT n into a host hook rather than an IDT delivery, so INT/IRET and gates are
checked by the raw-byte tests in test_stack16.py, not here.
"""
from __future__ import annotations

import os
import random
import struct

import pytest

unicorn = pytest.importorskip("unicorn")
import vmcore  # noqa: E402
from unicorn import x86_const as ux  # noqa: E402

GDT, CODE16_ADDR, START = 0x500, 0x2000, 0x1000
CODE32, DATA32, CODE16, STK16 = 0x08, 0x10, 0x18, 0x20
STACK_BASE = 0x20000
REG16 = ("ax", "cx", "dx", "bx", "sp", "bp", "si", "di")
REG32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
UC_REGS = {n: getattr(ux, f"UC_X86_REG_{n.upper()}") for n in REG32 + ("eip", "eflags")}
FLAGS_COMPARED = 0x0CD5         # CF PF AF ZF SF IF DF OF
SEEDS = int(os.environ.get("VMCORE_STACK16_SEEDS", "24"))
ITEMS = 160


def descriptor(base, limit, access, flags):
    return struct.pack("<HHBBBB", limit & 0xFFFF, base & 0xFFFF, (base >> 16) & 0xFF, access,
                       (flags << 4) | ((limit >> 16) & 0xF), base >> 24)


GDT_BYTES = (bytes(8) + descriptor(0, 0xFFFFF, 0x9A, 0xC) + descriptor(0, 0xFFFFF, 0x92, 0xC)
             + descriptor(0, 0xFFFF, 0x9A, 0x0) + descriptor(STACK_BASE, 0xFFFF, 0x92, 0x0))


def prologue(esp):
    return (bytes.fromhex("66 b8 10 00 8e d8"           # mov ax, DATA32 ; mov ds, ax
                          "66 b8 20 00 8e d0")          # mov ax, STK16 ; mov ss, ax
            + b"\xbc" + struct.pack("<I", esp)          # mov esp, imm32
            + b"\xea" + struct.pack("<IH", CODE16_ADDR, CODE16))   # jmp far CODE16:2000


class Gen:
    """Emits 16-bit code at CODE16_ADDR while tracking SP (and BP where it is known)."""

    def __init__(self, seed):
        self.r = random.Random(seed)
        self.code = bytearray()
        self.sp = self.r.choice([0x0000, 0x0002, 0x0004, 0x0008, 0xFFFC, 0xFFFE, 0x0010])
        self.esp = (self.r.getrandbits(16) << 16) | self.sp
        self.bp = None

    @property
    def ip(self):
        return CODE16_ADDR + len(self.code)

    def emit(self, hexstr=b"", raw=b""):
        self.code += bytes.fromhex(hexstr) if isinstance(hexstr, str) else b""
        self.code += raw

    def push(self, n):
        self.sp = (self.sp - n) & 0xFFFF

    def pop(self, n):
        self.sp = (self.sp + n) & 0xFFFF

    def item(self):
        r = self.r
        aligned = self.sp % 4 == 0
        k = r.randrange(17)
        reg = r.choice([0, 1, 2, 3, 6, 7])              # not SP; BP separately
        if k == 0:
            self.emit(raw=bytes([0x50 + r.randrange(8)]))                 # push r16 (push sp too)
            self.push(2)
        elif k == 1:
            self.emit(raw=bytes([0x58 + reg]))                            # pop r16
            self.pop(2)
        elif k == 2 and aligned:
            self.emit(raw=bytes([0x66, 0x50 + r.randrange(8)]))           # push r32
            self.push(4)
        elif k == 3 and aligned:
            self.emit(raw=bytes([0x66, 0x58 + reg]))                      # pop r32
            self.pop(4)
        elif k == 4:
            if r.random() < 0.5:
                self.emit(raw=b"\x6a" + bytes([r.getrandbits(8)]))        # push imm8
            else:
                self.emit(raw=b"\x68" + struct.pack("<H", r.getrandbits(16)))   # push imm16
            self.push(2)
        elif k == 5:
            if aligned and r.random() < 0.5:
                self.emit("66 60")                                        # pushad
                self.push(32)
                if r.random() < 0.7:
                    self.emit("66 61")                                    # popad
                    self.pop(32)
                    self.bp = None
            else:
                self.emit("60")                                           # pusha
                self.push(16)
                if r.random() < 0.7:
                    self.emit("61")                                       # popa
                    self.pop(16)
                    self.bp = None
        elif k == 6:
            # popf of a value with only status flags (and IF = 0): no trap, no IOPL/NT change
            v = (r.getrandbits(16) & 0x08D5) | 0x0002
            self.emit(raw=b"\x68" + struct.pack("<H", v) + b"\x9d")       # push imm16 ; popf
            if aligned:
                self.emit("66 9c 66 9d")                                  # pushfd ; popfd
            self.emit("9c")                                               # pushf
            self.push(2)
        elif k == 7:
            if aligned and r.random() < 0.5:
                self.emit("66 1e 66 07")                                  # push ds ; pop es (o32)
            else:
                self.emit("1e 07")                                        # push ds ; pop es
        elif k == 8:
            n = r.choice([0, 2, 4, 6])
            if aligned and r.random() < 0.5:
                # call rel32 (pushes EIP) to a RET n that returns onto a jump over it
                self.emit("66 e8 02 00 00 00 eb 04")
                self.emit(raw=b"\x66\xc2" + struct.pack("<H", n))
                self.pop(n)
            else:
                self.emit("e8 02 00 eb 03")                               # call +2 ; jmp over
                self.emit(raw=b"\xc2" + struct.pack("<H", n))             # ret n
                self.pop(n)
        elif k == 9:
            n = r.choice([0, 2, 4])
            if aligned and r.random() < 0.5:
                # o32 call far CODE16:target ; jmp over ; target: o32 retf n
                target = self.ip + 8 + 2
                self.emit(raw=b"\x66\x9a" + struct.pack("<IH", target, CODE16) + b"\xeb\x04"
                          + b"\x66\xca" + struct.pack("<H", n))
            else:
                target = self.ip + 5 + 2
                self.emit(raw=b"\x9a" + struct.pack("<HH", target, CODE16) + b"\xeb\x03"
                          + b"\xca" + struct.pack("<H", n))
            self.pop(n)
        elif k == 10:
            self.emit(raw=b"\x0e\x68" + struct.pack("<H", self.ip + 5) + b"\xcb")   # push cs ; push ip ; retf
        elif k == 11:
            d = r.choice([2, 4, 6, 8, 16, 0x20])
            if r.random() < 0.5:
                self.emit(raw=b"\x83\xec" + bytes([d]))                   # sub sp, d
                self.push(d)
            else:
                self.emit(raw=b"\x83\xc4" + bytes([d]))                   # add sp, d
                self.pop(d)
        elif k == 12:
            hi = r.getrandbits(16)
            self.emit(raw=b"\x66\x81\xc4" + struct.pack("<I", hi << 16))  # add esp, hi << 16
        elif k in (13, 14):
            self.enter_leave(aligned)
        elif k == 15:
            self.emit("89 e5")                                            # mov bp, sp
            self.bp = self.sp
        elif k == 16 and self.bp is not None:
            self.emit("c9")                                               # leave
            self.sp = (self.bp + 2) & 0xFFFF
            self.bp = None

    def enter_leave(self, aligned):
        r = self.r
        o32 = aligned and r.random() < 0.5
        step = 4 if o32 else 2
        level = r.choice([0, 0, 1, 2, 3])
        # an o32 ENTER's frame size stays a multiple of 4: vmcore probes a dword write at the final
        # ESP (SDM ENTER #SS/#PF "a write using the final value", as Bochs), QEMU does not probe
        size = r.choice([0, 4, 8, 0x10] if o32 else [0, 2, 4, 8, 0x10])
        if level > 1:
            self.emit("89 e5")        # mov bp, sp: the level reads at BP - step*k are aligned
            self.bp = self.sp
        self.emit(raw=(b"\x66" if o32 else b"") + b"\xc8" + struct.pack("<HB", size, level))
        self.push(step)
        frame = self.sp
        if level:
            self.push(step * level)
        self.push(size)
        for _ in range(r.randrange(3)):
            self.item_simple()
        self.emit(raw=(b"\x66" if o32 else b"") + b"\xc9")                # leave
        self.sp = (frame + step) & 0xFFFF
        self.bp = None

    def item_simple(self):
        if self.sp % 4 == 0 and self.r.random() < 0.5:
            self.emit("66 53")                                            # push ebx
            self.push(4)
        else:
            self.emit("51")                                               # push cx
            self.push(2)

    def program(self):
        for _ in range(ITEMS):
            self.item()
        self.emit("f4")                                                   # hlt
        return bytes(self.code)


def initial(seed):
    g = Gen(seed)
    code = g.program()
    r = random.Random(seed ^ 0x5EED)
    regs = [r.getrandbits(32) for _ in range(8)]
    regs[4] = g.esp
    stack = bytes(r.getrandbits(8) for _ in range(0x10000))
    return code, regs, stack


def run_vmcore(mode, code, regs, stack):
    m = vmcore.Machine(memory_mb=4, mode=mode)
    m.mem_write(GDT, GDT_BYTES)
    m._engine.gdtr_set(GDT, len(GDT_BYTES) - 1)
    m.mem_write(START, prologue(regs[4]))
    m.mem_write(CODE16_ADDR, code)
    m.mem_write(STACK_BASE, stack)
    for n, v in zip(REG32, regs):
        if n != "esp":
            m.reg_write(n, v)
    m.reg_write("eflags", 0x2)
    m.reg_write("eip", START)
    r = m.run(count=100000)
    assert r.exit is vmcore.Exit.HLT, (r.exit, r.reason)
    state = {n: m.reg_read(n) for n in REG32}
    state["eip"] = m.reg_read("eip")
    state["eflags"] = m.reg_read("eflags") & FLAGS_COMPARED
    return state, bytes(m.mem_read(STACK_BASE, 0x10000))


def run_unicorn(code, regs, stack):
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)
    uc.mem_map(0, 0x100000)
    uc.mem_write(GDT, GDT_BYTES)
    uc.reg_write(ux.UC_X86_REG_GDTR, (0, GDT, len(GDT_BYTES) - 1, 0))
    uc.mem_write(START, prologue(regs[4]))
    uc.mem_write(CODE16_ADDR, code)
    uc.mem_write(STACK_BASE, stack)
    for n, v in zip(REG32, regs):
        if n != "esp":
            uc.reg_write(UC_REGS[n], v)
    uc.reg_write(UC_REGS["eflags"], 0x2)
    hlt = CODE16_ADDR + len(code) - 1
    uc.emu_start(START, hlt)
    state = {n: uc.reg_read(UC_REGS[n]) for n in REG32}
    state["eip"] = uc.reg_read(UC_REGS["eip"])
    state["eflags"] = uc.reg_read(UC_REGS["eflags"]) & FLAGS_COMPARED
    return state, bytes(uc.mem_read(STACK_BASE, 0x10000))


def test_generator_reaches_both_wraps():
    """The tracked SP crosses 0000 <-> FFFF in most programs (the point of the test)."""
    crossings = 0
    for seed in range(SEEDS):
        g = Gen(seed)
        prev, crossed = g.sp, False
        for _ in range(ITEMS):
            g.item()
            if abs(g.sp - prev) > 0x8000:
                crossed = True
            prev = g.sp
        crossings += crossed
    assert crossings >= SEEDS // 2


@pytest.mark.parametrize("mode", ["bare", "bt"])
@pytest.mark.parametrize("seed", range(SEEDS))
def test_push_pop_families_on_a_16bit_stack_match_unicorn(mode, seed):
    code, regs, stack = initial(seed)
    want, want_mem = run_unicorn(code, regs, stack)
    # the hlt: Unicorn stops before it, vmcore after it
    want["eip"] += 1
    got, got_mem = run_vmcore(mode, code, regs, stack)
    diffs = [f"{n}: vmcore {got[n]:#010x} unicorn {want[n]:#010x}" for n in want if got[n] != want[n]]
    if got_mem != want_mem:
        first = next(k for k in range(0x10000) if got_mem[k] != want_mem[k])
        diffs.append(f"stack differs first at SS:{first:04x}: vmcore {got_mem[first]:#04x} "
                     f"unicorn {want_mem[first]:#04x}")
    assert not diffs, f"seed {seed}:\n" + "\n".join(diffs)
