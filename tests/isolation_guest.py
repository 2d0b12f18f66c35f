"""Malicious guest kernels for tests/test_isolation.py: a fuzzer that runs biased random bytes as
guest-kernel code, and small hand-written NASM kernels that attack the monitor's isolation.

Everything here uses only the public Machine API (mem_write, reg_write, load_multiboot, run, stats):
the guest sets up its own GDT, IDT and page tables with LGDT/LIDT/MOV CRn, so the same code runs
under every mode and nothing depends on how a mode keeps its virtual CPU.

Replaying a fuzz failure (the failure message prints this line with its numbers)::

    python tests/isolation_guest.py fuzz --mode bt --seed 1 --insns 1000000 --verbose

``--verbose`` prints each round before it runs (flushed), so a crash of the host process names its
round; ``--dump DIR --stop-round K`` writes round K's code and the RAM image (tables included) before
the run, and the state before and after it, to DIR.

``--twin bare`` runs every round in a second machine too and stops at the first round after which the
guests saw different things (registers, control registers, RAM, exit, instruction count). This is a
tool, not a test: random kernel code rewrites live page-table entries without INVLPG, and whether the
CPU then uses the old or the new translation is left open by the architecture (bare's own answer
depends on where run() slices the guest), so such rounds may differ without a bug.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import random
import struct
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

import vmcore
from vmcore import Exit, RunResult

import nasm_guests

# ---------------------------------------------------------------------------------------------
# assembling the NASM guests (sources live in this file; binaries are cached by source hash)
# ---------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    return nasm_guests.cache_dir("isolation")


def assemble(source: str, name: str) -> bytes:
    """The flat binary of a NASM source (``bits 32``, its own ``org``), from the cache or assembled now."""
    return nasm_guests.assemble_text(source, name, kind="isolation")


def image_path(source: str, name: str) -> Path:
    """An assembled multiboot image as a file (load_multiboot takes a path)."""
    binary = assemble(source, name)
    path = cache_dir() / f"{name}-{hashlib.sha256(binary).hexdigest()[:16]}.mb"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(binary)
        os.replace(tmp, path)
    return path


def stub_image_path() -> Path:
    """The fuzzer's multiboot stub."""
    return image_path(STUB_SRC, "fuzz-stub")


# ---------------------------------------------------------------------------------------------
# descriptors
# ---------------------------------------------------------------------------------------------


def descriptor(base: int, limit: int, access: int, flags: int = 0xC) -> bytes:
    """A segment descriptor; ``flags`` is the high nibble G, D/B, L, AVL (0xC: 4 KiB granular, 32-bit)."""
    return struct.pack("<HHBBBB", limit & 0xFFFF, base & 0xFFFF, (base >> 16) & 0xFF, access,
                       (flags << 4) | ((limit >> 16) & 0xF), (base >> 24) & 0xFF)


def gate(selector: int, offset: int, type_attr: int, params: int = 0) -> bytes:
    """An IDT/GDT gate: 0x8E interrupt gate DPL 0, 0xEE DPL 3, 0x8F trap gate, 0x85 task gate, 0xEC call gate."""
    return struct.pack("<HHBBH", offset & 0xFFFF, selector & 0xFFFF, params, type_attr, (offset >> 16) & 0xFFFF)


# ---------------------------------------------------------------------------------------------
# the fuzzer
# ---------------------------------------------------------------------------------------------
#
# Guest RAM (4 MiB) while fuzzing; every round starts from load_multiboot(stub), which puts the CPU in
# flat 32-bit protected mode at CPL 0 (as a new Machine) and jumps to the stub's `start`:
#
#   0x00000-0x0FFFF  random data (the real-mode IVT; the multiboot information at 0x9000)
#   0x10000          the stub image: multiboot header, start, refresh handler
#   0x10800          PARAMS: the round's GDTR, IDTR, CR0/CR3/CR4, EFLAGS, entry, ESP, LCG state, GPRs
#   0x11000          GDT (16 descriptors: flat ring 0/3 code and data, TSS, call gate, 0xFFC00000-based
#                    segments, random descriptors)
#   0x11800          IDT (256 gates into random code, into `refresh`, or garbage)
#   0x12000          TSS (ESP0/SS0 for interrupts from ring 3)
#   0x13000          page directory, 0x14000 page table 0 (identity over RAM, some entries perturbed)
#   0x20000          CODE: the round's random code (CODE_SIZE bytes)
#   0x30000-...      random data; the stacks at 0x6F000 (ESP) and 0x7F000 (ESP0)

STUB_GPA = 0x10000
PARAMS = 0x10800
GDT_GPA = 0x11000
IDT_GPA = 0x11800
TSS_GPA = 0x12000
PD_GPA = 0x13000
PT0_GPA = 0x14000
CODE_GPA = 0x20000
CODE_SIZE = 0x4000
STACK_TOP = 0x6F000
STACK0_TOP = 0x7F000
GDT_ENTRIES = 16

CR0_PE, CR0_ET, CR0_WP, CR0_PG = 1, 0x10, 1 << 16, 1 << 31
CR4_PSE, CR4_PGE = 0x10, 0x80

FLAT_GDT = """\
    dq 0                                        ; null
    dw 0xFFFF, 0x0000, 0x9A00, 0x00CF          ; 08: ring-0 code, base 0, 4 GiB
    dw 0xFFFF, 0x0000, 0x9200, 0x00CF          ; 10: ring-0 data, base 0, 4 GiB
"""

FLAT_ENTRY = """\
%macro ENTER_FLAT_GDT 0                 ; load GDTR from gdtr, then CS = 0x08, DS = SS = 0x10
    lgdt [gdtr]
    jmp 0x08:%%cs
%%cs:
    mov ax, 0x10
    mov ds, ax
    mov ss, ax
%endmacro
"""

IDENTITY_TABLES = """\
%macro CLEAR_TABLES_IDENTITY 1      ; zero %1 pages from PD on; PT0 maps the 4 MiB of RAM one to one
    mov edi, PD
    xor eax, eax
    mov ecx, %1 * 1024
    rep stosd
    mov edi, PT0
    mov eax, 0x003
%%ident:
    stosd
    add eax, 0x1000
    cmp eax, 0x400003
    jne %%ident
%endmacro
%macro PAGING_ON 0                  ; CR3 = PD, CR0.PG = 1, and a jump, as the SDM asks after it
    mov eax, PD
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax
    jmp %%paged
%%paged:
%endmacro
"""


STUB_SRC = f"""\
; The fuzzer's multiboot stub: loads the round's GDT/IDT/TR/CRs from PARAMS and jumps into random code.
bits 32
org {STUB_GPA:#x}
P_GDTR   equ {PARAMS:#x}
P_IDTR   equ {PARAMS + 8:#x}
P_CR0    equ {PARAMS + 16:#x}
P_CR3    equ {PARAMS + 20:#x}
P_CR4    equ {PARAMS + 24:#x}
P_EFLAGS equ {PARAMS + 28:#x}
P_ENTRY  equ {PARAMS + 32:#x}
P_ESP    equ {PARAMS + 36:#x}
P_LCG    equ {PARAMS + 40:#x}
P_REGS   equ {PARAMS + 44:#x}
MB_MAGIC equ 0x1BADB002
MB_FLAGS equ 0x00010000                 ; a.out kludge: the address fields below are valid
%macro FLAT_DATA_AND_STACK 0           ; ring-0 flat data segments and the stub's stack
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax
    mov esp, [P_ESP]
%endmacro
header:
    dd MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)
    dd header, header, image_end, 0, start
start:
    lgdt [P_GDTR]
    lidt [P_IDTR]
    jmp 0x08:.cs_loaded
.cs_loaded:
    FLAT_DATA_AND_STACK
    mov ax, 0x28
    ltr ax
    mov eax, [P_CR4]
    mov cr4, eax
    mov eax, [P_CR3]
    mov cr3, eax
    mov eax, [P_CR0]
    mov cr0, eax                        ; maybe paging on: the stub's pages are identity-mapped
    jmp .go
.go:
    push dword [P_EFLAGS]
    mov eax, [P_REGS + 0]
    mov ecx, [P_REGS + 4]
    mov edx, [P_REGS + 8]
    mov ebx, [P_REGS + 12]
    mov ebp, [P_REGS + 16]
    mov esi, [P_REGS + 20]
    mov edi, [P_REGS + 24]
    popfd
    jmp [P_ENTRY]

; an IDT target: flat ring-0 segments, a fresh stack, and a jump to a new pseudo-random place in CODE
refresh:
    FLAT_DATA_AND_STACK
    mov eax, [P_LCG]
    imul eax, eax, 1103515245
    add eax, 12345
    mov [P_LCG], eax
    mov ebx, eax
    mov esi, eax
    rol esi, 13
    shr eax, 7
    and eax, {CODE_SIZE - 1:#x}
    add eax, {CODE_GPA:#x}
    push dword 2
    popfd
    jmp eax
image_end:
"""

# where `refresh` lies in the stub: found from the assembled image (the code after `jmp [P_ENTRY]`)
_REFRESH_MARK = bytes.fromhex("66b81000 8ed8 8ec0".replace(" ", ""))


def refresh_gpa() -> int:
    binary = assemble(STUB_SRC, "fuzz-stub")
    at = binary.rfind(_REFRESH_MARK)
    assert at > 0 and binary[at - 6:at - 4] == b"\xff\x25", "the stub's refresh handler was not found"
    return STUB_GPA + at


# interesting values for addresses, selectors, ports and MSRs
RAM_END = 4 << 20
ADDRS = (0x0, 0x400, 0x7C00, 0x9000, STUB_GPA, PARAMS, GDT_GPA, IDT_GPA, TSS_GPA, PD_GPA, PT0_GPA, CODE_GPA,
         CODE_GPA + 0x1000, 0xA0000, 0xB8000, 0x100000, 0x3FF000, 0x3FFFFC, 0x3FFFFE, 0x400000, 0x400FFC,
         0x401000, 0x800000, 0x80000000, 0xE0000000, 0xF0000000, 0xFEC00000, 0xFEE00000, 0xFFC00000,
         0xFFC01000, 0xFFFF0000, 0xFFFFF000, 0xFFFFFFF0, 0xFFFFFFFC, 0xFFFFFFFF)
SELECTORS = (0x0, 0x3, 0x4, 0x8, 0xB, 0xC, 0x10, 0x13, 0x18, 0x1B, 0x20, 0x23, 0x28, 0x2B, 0x30, 0x33, 0x38,
             0x3B, 0x40, 0x43, 0x48, 0x50, 0x58, 0x60, 0x68, 0x70, 0x78, 0x7B, 0x80, 0xFFF8, 0xFFFF)
PORTS = (0x20, 0x21, 0x40, 0x41, 0x42, 0x43, 0x60, 0x61, 0x64, 0x70, 0x71, 0x80, 0x92, 0xA0, 0xA1, 0xE9,
         0x3F8, 0x3F9, 0x3FA, 0x3FB, 0x3FC, 0x3FD, 0x3FE, 0x3FF, 0x4D0, 0x4D1, 0xCF8, 0xCFC, 0x1F0, 0x0,
         0xFFFF, 0xF4)
MSRS = (0x10, 0x1B, 0x174, 0x175, 0x176, 0x179, 0x1A0, 0x277, 0x2FF, 0xC0000080, 0xC0000081, 0x0, 0xFFFFFFFF)
CREGS = (0, 0, 0, 2, 3, 3, 4, 4, 1, 5, 6, 7)          # MOV CRn: mostly real ones, some #UD


def _imm32(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.45:
        return rng.choice(ADDRS) + rng.choice((0, 0, 0, 4, -4, 8, 0x800, 0xFFC)) & 0xFFFFFFFF
    if r < 0.65:
        return rng.randrange(RAM_END)
    if r < 0.8:
        return rng.randrange(0x100)
    return rng.getrandbits(32)


def _modrm(rng: random.Random, reg: int, mem: bool | None = None) -> bytes:
    """A ModRM byte (with SIB and displacement as needed) whose reg field is ``reg``;
    ``mem`` True forces a memory operand, False a register, None picks either."""
    mod = 3 if mem is False else (rng.randrange(3) if mem else rng.randrange(4))
    rm = rng.randrange(8)
    out = bytearray([(mod << 6) | ((reg & 7) << 3) | rm])
    if mod == 3:
        return bytes(out)
    disp32 = mod == 2 or (mod == 0 and rm == 5)
    if rm == 4:
        sib = rng.randrange(256)
        out.append(sib)
        if mod == 0 and sib & 7 == 5:
            disp32 = True
    if disp32:
        out += struct.pack("<I", _imm32(rng))
    elif mod == 1:
        out.append(rng.randrange(256))
    return bytes(out)


def _mov_reg_imm(rng: random.Random, value: int | None = None, reg: int | None = None) -> bytes:
    """mov r32, imm32 (B8+r id)."""
    reg = rng.randrange(8) if reg is None else reg
    if reg == 4 and rng.random() < 0.8:           # mostly keep ESP usable
        reg = 0
    return bytes([0xB8 + reg]) + struct.pack("<I", _imm32(rng) if value is None else value & 0xFFFFFFFF)


def _selector(rng: random.Random) -> int:
    return rng.choice(SELECTORS) if rng.random() < 0.85 else rng.getrandbits(16)


def _code_addr(rng: random.Random) -> int:
    return CODE_GPA + rng.randrange(CODE_SIZE) if rng.random() < 0.85 else _imm32(rng)


def _t_mov_cr(rng):                      # mov crN, r32 / mov r32, crN (maybe with a value loaded first)
    reg, cr = rng.randrange(8), rng.choice(CREGS)
    out = b""
    if rng.random() < 0.5:
        reg = rng.choice((0, 1, 2, 3, 5, 6, 7))          # not ESP (_mov_reg_imm keeps it)
        value = rng.choice((CR0_PE | CR0_ET | CR0_PG, CR0_PE | CR0_ET, CR0_ET, CR0_PE | CR0_PG | CR0_WP, 0x8,
                            PD_GPA, PT0_GPA, CR4_PSE, CR4_PSE | CR4_PGE, 0x4, 0x200, 0x1)) \
            if rng.random() < 0.6 else _imm32(rng)
        out = _mov_reg_imm(rng, value, reg)
    return out + bytes([0x0F, rng.choice((0x20, 0x22, 0x22)), 0xC0 | (cr << 3) | reg])


def _t_paging_on(rng):                   # mov eax, cr3-value; mov cr3, eax; mov eax, cr0; or eax, PG; mov cr0, eax
    return (_mov_reg_imm(rng, rng.choice((PD_GPA, PD_GPA, _imm32(rng))) & ~0xFFF, 0) + b"\x0f\x22\xd8"
            + b"\x0f\x20\xc0" + b"\x0d\x00\x00\x00\x80" + b"\x0f\x22\xc0")


def _t_mov_dr(rng):
    return bytes([0x0F, rng.choice((0x21, 0x23)), 0xC0 | (rng.randrange(8) << 3) | rng.randrange(8)])


def _t_0f01(rng):                        # sgdt sidt lgdt lidt smsw lmsw invlpg (0F 01 /0../7)
    sub = rng.choice((0, 1, 2, 2, 3, 3, 4, 6, 7, 7))
    out = b""
    if sub in (2, 3) and rng.random() < 0.5:      # point a register at a plausible table first
        out = _mov_reg_imm(rng, rng.choice((GDT_GPA - 2, IDT_GPA - 2, PARAMS, PARAMS + 8, _imm32(rng))), 0)
        return out + bytes([0x0F, 0x01, (sub << 3) | 0])      # lgdt/lidt [eax]
    return out + b"\x0f\x01" + _modrm(rng, sub, mem=sub not in (4, 6))


def _t_0f00(rng):                        # sldt str lldt ltr verr verw (0F 00 /0../5)
    sub = rng.randrange(6)
    out = b""
    if sub in (2, 3, 4, 5) and rng.random() < 0.6:
        out = b"\x66" + _mov_reg_imm(rng, _selector(rng), 0)[:3]   # mov ax, sel
        return out + bytes([0x0F, 0x00, 0xC0 | (sub << 3)])
    return b"\x0f\x00" + _modrm(rng, sub)


def _t_lar_lsl(rng):
    return bytes([0x0F, rng.choice((0x02, 0x03))]) + _modrm(rng, rng.randrange(8))


def _t_mov_sreg(rng):                    # mov ax, sel; mov sreg, ax  /  mov sreg, r/m  /  mov r/m, sreg
    r = rng.random()
    if r < 0.55:
        sreg = rng.choice((0, 2, 3, 4, 5, 3, 0, 1, 6, 7))
        return b"\x66\xb8" + struct.pack("<H", _selector(rng)) + bytes([0x8E, 0xC0 | (sreg << 3)])
    if r < 0.8:
        return b"\x8e" + _modrm(rng, rng.randrange(8))
    return b"\x8c" + _modrm(rng, rng.randrange(8))


def _t_push_pop_seg(rng):
    return rng.choice((b"\x06", b"\x07", b"\x0e", b"\x16", b"\x17", b"\x1e", b"\x1f", b"\x0f\xa0", b"\x0f\xa1",
                       b"\x0f\xa8", b"\x0f\xa9", b"\x6a\x23\x1f", b"\x6a\x2b\x07", b"\x6a\x13\x17"))


def _t_load_far(rng):                    # lds les lss lfs lgs
    op = rng.choice((b"\xc5", b"\xc4", b"\x0f\xb2", b"\x0f\xb4", b"\x0f\xb5"))
    return op + _modrm(rng, rng.randrange(8), mem=True)


def _t_iret(rng):                        # iretd, often with a constructed frame (to ring 3 or ring 0)
    r = rng.random()
    if r < 0.5:
        eflags = rng.choice((0x2, 0x202, 0x3202, 0x20202, 0x246, 0x100, rng.getrandbits(32)))
        cs = rng.choice((0x1B, 0x1B, 0x08, 0x33, 0x3B, _selector(rng)))
        out = (b"\x68" + struct.pack("<I", rng.choice((0x23, 0x10, 0x2B, _selector(rng))))     # push ss
               + b"\x68" + struct.pack("<I", rng.choice((STACK_TOP - 0x100, 0x5F000, _imm32(rng))))
               + b"\x68" + struct.pack("<I", eflags) + b"\x68" + struct.pack("<I", cs)
               + b"\x68" + struct.pack("<I", _code_addr(rng)))
        return out + b"\xcf"
    return rng.choice((b"\xcf", b"\x66\xcf"))


def _t_retf(rng):
    r = rng.random()
    if r < 0.5:
        out = (b"\x68" + struct.pack("<I", rng.choice((0x08, 0x1B, 0x38, 0x30, _selector(rng))))
               + b"\x68" + struct.pack("<I", _code_addr(rng)))
        return out + b"\xcb"
    return rng.choice((b"\xcb", b"\xca" + struct.pack("<H", rng.choice((0, 4, 8, 0xFFFF))), b"\x66\xcb"))


def _t_far_jmp_call(rng):                # jmp/call ptr16:32, jmp/call far [mem]
    r = rng.random()
    if r < 0.7:
        return (rng.choice((b"\xea", b"\x9a")) + struct.pack("<I", _code_addr(rng))
                + struct.pack("<H", rng.choice((0x08, 0x08, 0x28, 0x30, 0x38, 0x1B, _selector(rng)))))
    return b"\xff" + _modrm(rng, rng.choice((3, 5)), mem=True)


def _t_flags(rng):                       # popf pushf, with chosen values
    r = rng.random()
    if r < 0.5:
        value = rng.choice((0x2, 0x202, 0x3002, 0x3202, 0x100, 0x40000, 0x200000, 0x24202, rng.getrandbits(32)))
        return b"\x68" + struct.pack("<I", value) + rng.choice((b"\x9d", b"\x66\x9d"))
    return rng.choice((b"\x9c", b"\x9d", b"\x66\x9c", b"\x9c\x58", b"\x9c\x9d"))


def _t_int(rng):
    r = rng.random()
    if r < 0.6:
        return b"\xcd" + bytes([rng.randrange(256)])
    return rng.choice((b"\xcc", b"\xce", b"\xf1", b"\x0f\x0b", b"\xcd\x08", b"\xcd\x0e", b"\xcd\x0d", b"\xcd\x80"))


def _t_msr(rng):                         # wrmsr rdmsr rdtsc rdpmc cpuid, with ECX set
    out = b""
    if rng.random() < 0.7:
        out = _mov_reg_imm(rng, rng.choice(MSRS), 1)
    return out + rng.choice((b"\x0f\x30", b"\x0f\x30", b"\x0f\x32", b"\x0f\x31", b"\x0f\x33", b"\x0f\xa2",
                             b"\x0f\x34", b"\x0f\x35"))


def _t_misc_priv(rng):                   # clts invd wbinvd cli sti hlt sysenter/sysexit (ARPL: not in the engine yet)
    return rng.choice((b"\x0f\x06", b"\x0f\x08", b"\x0f\x09", b"\xfa", b"\xfb", b"\xfb", b"\xfa\xf4", b"\xf4",
                       b"\x0f\x34", b"\x0f\x35"))


def _t_io(rng):                          # in/out imm8 and dx, ins/outs with rep
    port = rng.choice(PORTS) if rng.random() < 0.85 else rng.getrandbits(16)
    r = rng.random()
    if r < 0.35 and port < 0x100 and port != 0xF4:
        return bytes([rng.choice((0xE4, 0xE5, 0xE6, 0xE7)), port])
    out = b"\x66\xba" + struct.pack("<H", port if port != 0xF4 or rng.random() < 0.1 else 0xE9)
    if r < 0.85:
        return out + rng.choice((b"\xec", b"\xed", b"\xee", b"\xef", b"\x66\xed", b"\x66\xef"))
    return out + _mov_reg_imm(rng, rng.choice((0, 1, 4, 16, 0x100, 0xFFFFFFFF)), 1) + \
        rng.choice((b"\xf3\x6c", b"\xf3\x6d", b"\xf3\x6e", b"\xf3\x6f", b"\x6c", b"\x6f"))


def _t_mem_write(rng):                   # mov [addr], reg / rep stosd / rep movsd over interesting addresses
    r = rng.random()
    if r < 0.5:
        op = rng.choice((b"\x89", b"\x88", b"\xc7", b"\x01", b"\x31", b"\x8b"))
        out = op + bytes([0x05 | (0 if op == b"\xc7" else rng.randrange(8)) << 3]) + struct.pack("<I", _imm32(rng))
        return out + (struct.pack("<I", rng.getrandbits(32)) if op == b"\xc7" else b"")
    # 0x100000 elements cross many pages and REP chunk boundaries (the engine restarts a REP every
    # 64 Ki elements); a count near 4 G would take each run's whole budget (~6 s) in memory copies
    count = rng.choice((0, 1, 2, 16, 0x100, 0x400, 0x1000, 0x10001, 0x100000))
    string = rng.choice((b"\xab", b"\xa5", b"\xaa", b"\xa4", b"\xad", b"\xa7", b"\xaf", b"\x66\xa5"))
    rep = rng.choice((b"\xf3", b"\xf3", b"\xf2"))
    if rng.random() < 0.3:          # 16-bit addressing: CX, SI, DI (a REP of at most 64 Ki iterations)
        return _mov_reg_imm(rng, None, 7) + _mov_reg_imm(rng, None, 6) + rep + b"\x67" + string
    return (_mov_reg_imm(rng, None, 7) + _mov_reg_imm(rng, None, 6) + rng.choice((b"", b"\xfd", b"\xfc"))
            + _mov_reg_imm(rng, count, 1) + rep + string)


def _t_set_reg(rng):
    return _mov_reg_imm(rng)


# (template, weight): the privileged/sensitive mix next to plain random bytes
TEMPLATES = (
    (_t_mov_cr, 6), (_t_paging_on, 2), (_t_mov_dr, 1), (_t_0f01, 6), (_t_0f00, 3), (_t_lar_lsl, 2),
    (_t_mov_sreg, 7), (_t_push_pop_seg, 3), (_t_load_far, 2), (_t_iret, 5), (_t_retf, 3), (_t_far_jmp_call, 4),
    (_t_flags, 5), (_t_int, 5), (_t_msr, 3), (_t_misc_priv, 5), (_t_io, 5), (_t_mem_write, 6), (_t_set_reg, 6),
)
_TEMPLATE_FUNCS = [t for t, _ in TEMPLATES]
_TEMPLATE_WEIGHTS = [w for _, w in TEMPLATES]


def random_code(rng: random.Random, size: int, biased: float = 0.45) -> bytes:
    """``size`` bytes: chunks of plain random bytes (1-6 each) and, with probability ``biased`` per
    chunk, an encoding of a privileged or sensitive instruction with random operands."""
    out = bytearray()
    while len(out) < size:
        if rng.random() < biased:
            out += rng.choices(_TEMPLATE_FUNCS, _TEMPLATE_WEIGHTS)[0](rng)
        else:
            out += rng.randbytes(rng.randint(1, 6))
    return bytes(out[:size])


@dataclasses.dataclass
class Round:
    """What one fuzz round writes into guest RAM after load_multiboot(stub)."""

    index: int
    code: bytes
    gdt: bytes
    idt: bytes
    tss: bytes
    params: bytes
    page_dir: bytes | None
    page_table0: bytes | None
    scribble: tuple[int, bytes] | None     # fresh random data over part of RAM

    def writes(self):
        yield GDT_GPA, self.gdt
        yield IDT_GPA, self.idt
        yield TSS_GPA, self.tss
        if self.page_dir is not None:
            yield PD_GPA, self.page_dir
            yield PT0_GPA, self.page_table0
        if self.scribble is not None:
            yield self.scribble
        yield PARAMS, self.params
        yield CODE_GPA, self.code


_PROTECTED_PAGES = frozenset(range(STUB_GPA >> 12, (CODE_GPA + CODE_SIZE) >> 12)) | {STACK_TOP - 1 >> 12,
                                                                                        STACK0_TOP - 1 >> 12}


def make_round(rng: random.Random, index: int, refresh: int) -> Round:
    code = random_code(rng, CODE_SIZE)
    # GDT: 0 null, 08 code r0, 10 data r0, 18 code r3 (0x1B), 20 data r3 (0x23), 28 TSS, 30 call gate DPL 3,
    # 38 code base 0xFFC00000, 40 data base 0xFFC00000, 48 16-bit code, 50 expand-down data, 58.. random
    gdt = bytearray(bytes(8) + descriptor(0, 0xFFFFF, 0x9A) + descriptor(0, 0xFFFFF, 0x92)
                    + descriptor(0, 0xFFFFF, 0xFA) + descriptor(0, 0xFFFFF, 0xF2) + descriptor(TSS_GPA, 0x67, 0x89, 0)
                    + gate(0x08, _code_addr(rng), 0xEC, rng.randrange(4))
                    + descriptor(0xFFC00000, 0xFFFFF, 0x9A) + descriptor(0xFFC00000, 0xFFFFF, 0x92)
                    + descriptor(0, 0xFFFF, 0x9A, 0) + descriptor(0, 0xFFFF, 0x96, 0x4))
    while len(gdt) < GDT_ENTRIES * 8:
        if rng.random() < 0.5:
            gdt += descriptor(_imm32(rng), rng.getrandbits(20), rng.choice((0x9A, 0x92, 0xFA, 0xF2, 0xBA, 0xD2, 0x9E,
                                                                             0x89, 0x82, 0x8C, 0xE2)),
                              rng.randrange(16))
        else:
            gdt += rng.randbytes(8)
    idt = bytearray()
    for vector in range(256):
        r = rng.random()
        if vector in (8, 13, 14) and r < 0.8 or r < 0.3:
            idt += gate(0x08, refresh, rng.choice((0x8E, 0x8F, 0xEE)))
        elif r < 0.9:
            idt += gate(rng.choice((0x08, 0x08, 0x08, 0x38, 0x1B, 0x48)), _code_addr(rng),
                        rng.choice((0x8E, 0x8E, 0x8F, 0xEE, 0xEF, 0x86, 0x85, 0x0E)))
        else:
            idt += rng.randbytes(8)
    tss = bytearray(0x68)
    struct.pack_into("<II", tss, 4, STACK0_TOP, 0x10)
    paging = rng.random() < 0.35
    cr4 = rng.choice((0, 0, CR4_PSE, CR4_PSE | CR4_PGE))
    cr0 = CR0_PE | CR0_ET | (CR0_PG if paging else 0) | (CR0_WP if rng.random() < 0.3 else 0)
    page_dir = page_table0 = None
    if paging:
        pt0 = [(i << 12) | 0x3 | (0x4 if rng.random() < 0.5 else 0) for i in range(1024)]
        for _ in range(rng.randrange(4, 40)):
            i = rng.randrange(RAM_END >> 12)
            if i in _PROTECTED_PAGES:
                continue
            pt0[i] = (rng.choice((_imm32(rng), rng.randrange(RAM_END), 0xF0000000, RAM_END, 0xFFFFF000))
                      & ~0xFFF) | rng.getrandbits(12)
        pd = [0] * 1024
        pd[0] = PT0_GPA | 0x7
        for _ in range(rng.randrange(0, 24)):
            i = rng.randrange(1, 1024)
            kind = rng.random()
            if kind < 0.3:
                pd[i] = (rng.randrange(RAM_END) & ~0xFFF) | rng.getrandbits(12)      # random data as a page table
            elif kind < 0.55:
                pd[i] = (rng.choice((0xF0000000, RAM_END, 0xFFC00000, 0xFFFFF000)) & ~0xFFF) | 0x7
            elif kind < 0.85:                                                        # 4 MiB page (with CR4.PSE)
                pd[i] = rng.choice((0, RAM_END, 0xFFC00000, 0xF0000000, 0x80000000)) | 0x87
            else:
                pd[i] = PD_GPA | 0x3                                                 # recursive
        page_dir = struct.pack("<1024I", *pd)
        page_table0 = struct.pack("<1024I", *pt0)
    eflags = rng.choice((0x2, 0x2, 0x202, 0x3002, 0x246, 0x2 | 0x100))
    regs = [_imm32(rng) for _ in range(7)]
    # ECX: mostly a moderate count, as a REP met early in the round uses it (a REP of ~4 G elements
    # takes the run's whole budget, ~6 s of memory copies; random code still computes such counts)
    regs[1] = rng.choice((0, 1, 7, 0x100, 0x1000, 0x10001, 0x100000, regs[1]))
    params = struct.pack("<HI2xHI2x", GDT_ENTRIES * 8 - 1, GDT_GPA, 256 * 8 - 1, IDT_GPA)
    params += struct.pack("<10I", cr0, PD_GPA, cr4, eflags, CODE_GPA + rng.randrange(CODE_SIZE - 16),
                          STACK_TOP, rng.getrandbits(32), *regs[:3])
    params += struct.pack("<4I", *regs[3:])
    scribble = None
    if rng.random() < 0.3:
        gpa = rng.choice((0, 0x30000, 0x80000, 0x100000, 0x200000, 0x3F0000)) + (rng.randrange(16) << 12)
        size = min(rng.choice((0x1000, 0x4000, 0x10000)), RAM_END - gpa)
        if not (gpa < CODE_GPA + CODE_SIZE and STUB_GPA < gpa + size):
            scribble = (gpa, rng.randbytes(size))
    return Round(index, code, bytes(gdt), bytes(idt), bytes(tss), params, page_dir, page_table0, scribble)


class FuzzFailure(AssertionError):
    pass


@dataclasses.dataclass
class FuzzReport:
    mode: str
    seed: int
    rounds: int = 0
    instructions: int = 0
    progress: int = 0
    seconds: float = 0.0
    exits: Counter = dataclasses.field(default_factory=Counter)
    stats: dict = dataclasses.field(default_factory=dict)
    ring3_rounds: int = 0        # rounds that ended at CPL 3
    paging_rounds: int = 0
    slow_rounds: list = dataclasses.field(default_factory=list)    # (round, seconds, exit, reason)

    def summary(self) -> str:
        exits = ", ".join(f"{k}={v}" for k, v in sorted(self.exits.items()))
        return (f"mode={self.mode} seed={self.seed}: {self.instructions} guest instructions in {self.rounds} rounds, "
                f"{self.seconds:.1f} s; exits: {exits}; rounds ending at CPL 3: {self.ring3_rounds}; "
                f"rounds with paging: {self.paging_rounds}"
                + "".join(f"\n  slow round {i}: {sec:.1f} s, {ex}: {why}" for i, sec, ex, why in self.slow_rounds))


STAT_CEILING = 1 << 62


def check_stats(stats: dict, where: str) -> None:
    if not isinstance(stats, dict) or not stats:
        raise FuzzFailure(f"{where}: machine.stats is {stats!r}, not a non-empty dict")
    for key, value in stats.items():
        if type(value) is not int or not 0 <= value < STAT_CEILING:
            raise FuzzFailure(f"{where}: machine.stats[{key!r}] = {value!r} is not a sane counter "
                              f"(a non-negative int below 2**62)")


def check_result(r, count: int, where: str) -> None:
    if not isinstance(r, RunResult):
        raise FuzzFailure(f"{where}: run() returned {r!r}, not a RunResult")
    if not isinstance(r.exit, Exit):
        raise FuzzFailure(f"{where}: RunResult.exit is {r.exit!r}, not an Exit")
    if not isinstance(r.reason, str) or not r.reason:
        raise FuzzFailure(f"{where}: RunResult.reason is {r.reason!r}, not a non-empty string (exit {r.exit})")
    if type(r.instructions) is not int or not 0 <= r.instructions <= count:
        raise FuzzFailure(f"{where}: RunResult.instructions = {r.instructions!r} is not an int in 0..{count}")
    if r.exit is Exit.SHUTDOWN and (r.exception is not None and not isinstance(r.exception, tuple)):
        raise FuzzFailure(f"{where}: a SHUTDOWN's exception is {r.exception!r}")


def pattern(seed: int, size: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)


def machine_state(m: vmcore.Machine) -> dict:
    """What a guest can see of its CPU (through the public API)."""
    names = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip", "eflags",
             "cs", "ds", "es", "fs", "gs", "ss", "cr0", "cr2", "cr3", "cr4", "cpl")
    return {n: m.reg_read(n) for n in names}


def replay_command(mode: str, seed: int, insns: int, per_run: int, stop_round: int | None = None,
                   twin: str | None = None) -> str:
    cmd = f"python tests/isolation_guest.py fuzz --mode {mode} --seed {seed} --insns {insns} --per-run {per_run}"
    if twin:
        cmd += f" --twin {twin}"
    if stop_round is not None:
        cmd += f" --stop-round {stop_round} --dump /tmp/vmcore-fuzz-round{stop_round}"
    return cmd


class FuzzDivergence(FuzzFailure):
    """The same round showed the guest something different in two modes."""


def _start_round(m: vmcore.Machine, rnd: Round, stub: Path, where: str) -> None:
    try:
        m.load_multiboot(stub)
        for gpa, data in rnd.writes():
            m.mem_write(gpa, data)
    except Exception as e:       # noqa: BLE001 - any host-side error is a finding
        raise FuzzFailure(f"{where}: resetting the machine raised {type(e).__name__}: {e}") from e
    if m.reg_read("cpl") != 0 or m.reg_read("cr0") & CR0_PG:
        raise FuzzFailure(f"{where}: after load_multiboot the CPU is not at CPL 0 with paging off: "
                          f"{machine_state(m)}")


class _IoBudget:
    """Port I/O hooks that stop a run after ``limit`` port accesses. A REP INS/OUTS is one instruction
    whatever its count, and each element is an I/O exit: this bounds it by a count (deterministic,
    unlike a timeout) so that a replay sees the same rounds."""

    def __init__(self, m: vmcore.Machine, limit: int):
        self.limit = limit
        self.used = 0
        m.hook_add(vmcore.HOOK_IO_IN, self._in)
        m.hook_add(vmcore.HOOK_IO_OUT, self._out)

    def _in(self, m, port, size):
        self._out(m, port, size, None)
        return None                     # the device answers

    def _out(self, m, port, size, value):
        self.used += 1
        if self.used >= self.limit:
            m.stop()


def _run_round(m: vmcore.Machine, io: _IoBudget, per_run: int, run_timeout: float, where: str):
    io.used = 0
    try:
        r = m.run(count=per_run, timeout=run_timeout)
    except Exception as e:       # noqa: BLE001
        raise FuzzFailure(f"{where}: run() raised {type(e).__name__}: {e}; code at eip: {_code_at(m)}") from e
    check_result(r, per_run, where)
    check_stats(m.stats, where)
    return r


def _compare(a: vmcore.Machine, ra, b: vmcore.Machine, rb, where: str) -> None:
    """The guest's view after the same round in two machines: exit, exception, instruction count,
    registers, control registers and all of RAM."""
    diffs = []
    for name in ("exit", "exception", "instructions", "eip"):
        if getattr(ra, name) != getattr(rb, name):
            diffs.append(f"{name}: {a.mode}={getattr(ra, name)!r} {b.mode}={getattr(rb, name)!r}")
    sa, sb = machine_state(a), machine_state(b)
    diffs += [f"{k}: {a.mode}={sa[k]:#x} {b.mode}={sb[k]:#x}" for k in sa if sa[k] != sb[k]]
    where_mem = np.flatnonzero(a.memory != b.memory)
    if where_mem.size:
        diffs.append(f"RAM differs at {where_mem.size} bytes ({a.mode}/{b.mode}): " + ", ".join(
            f"{int(g):#x}: {int(a.memory[g]):#04x}/{int(b.memory[g]):#04x}" for g in where_mem[:8]))
    if diffs:
        raise FuzzDivergence(f"{where}: the guest saw different things in {a.mode} and {b.mode}: " + "; ".join(diffs)
                             + f"; reasons: {a.mode}: {ra.reason!r}, {b.mode}: {rb.reason!r}")


def fuzz(mode: str, seed: int, total_insns: int, *, per_run: int = 10_000, run_timeout: float = 10.0,
         memory_mb: int = 4, max_seconds: float | None = None, verbose: bool = False,
         stop_round: int | None = None, dump: Path | None = None, make_machine=None,
         twin: str | None = None) -> FuzzReport:
    """Run biased random guest-kernel code until ``total_insns`` guest instructions have executed,
    checking the isolation invariants after every run. Raises FuzzFailure with a reproducer.

    With ``twin`` (a mode), a second machine in that mode runs the same rounds in lockstep and every
    round must leave both guests seeing the same thing (FuzzDivergence otherwise); the comparison
    stops after a round that timed out in either (timing is not reproducible)."""
    assert memory_mb == RAM_END >> 20, "the fuzz layout is laid out for 4 MiB of guest RAM"
    make_machine = make_machine or (lambda **kw: vmcore.Machine(**kw))
    rng = random.Random(seed)
    report = FuzzReport(mode, seed)
    stub = stub_image_path()
    refresh = refresh_gpa()

    # another VM in the same process, and host memory next to the guest's, each holding a known pattern
    victim = make_machine(memory_mb=memory_mb, mode=mode)
    victim_pattern = pattern(seed ^ 0x5EED, victim.memory.size)
    victim.mem_write(0, victim_pattern.tobytes())
    victim_regs = machine_state(victim)
    victim_stats = victim.stats
    canary_before = pattern(seed ^ 0xC0FFEE, 4 << 20)
    m = make_machine(memory_mb=memory_mb, mode=mode)
    canary_after = pattern(seed ^ 0xFACADE, 4 << 20)
    canaries = [(canary_before, canary_before.copy()), (canary_after, canary_after.copy())]
    ram = pattern(seed, m.memory.size).tobytes()
    m.mem_write(0, ram)
    check_stats(m.stats, f"mode={mode} before the first run")
    io = _IoBudget(m, per_run)
    other = None
    if twin is not None:
        other = make_machine(memory_mb=memory_mb, mode=twin)
        other.mem_write(0, ram)
        io_other = _IoBudget(other, per_run)

    start = time.perf_counter()
    last_icount = m.stats.get("instructions", 0)
    while report.instructions < total_insns:
        rnd = make_round(rng, report.rounds, refresh)
        where = (f"mode={mode} seed={seed} round {rnd.index} (after {report.instructions} instructions); "
                 f"replay: {replay_command(mode, seed, total_insns, per_run, rnd.index, twin)}")
        if verbose:
            print(f"round {rnd.index}: {report.instructions} instructions so far", file=sys.stderr, flush=True)
        _start_round(m, rnd, stub, where)
        if dump is not None and rnd.index == stop_round:
            dump.mkdir(parents=True, exist_ok=True)
            (dump / "code.bin").write_bytes(rnd.code)
            (dump / "ram.bin").write_bytes(m.memory.tobytes())
            (dump / "round.txt").write_text(f"{where}\nstate before the run: {machine_state(m)}\n")
        r = _run_round(m, io, per_run, run_timeout, where)
        icount = m.stats.get("instructions", last_icount)
        if icount < last_icount:
            raise FuzzFailure(f"{where}: stats['instructions'] went down from {last_icount} to {icount}")
        last_icount = icount
        if other is not None:
            _start_round(other, rnd, stub, where + f" ({twin} twin)")
            r_other = _run_round(other, io_other, per_run, run_timeout, where + f" ({twin} twin)")
            if Exit.TIMEOUT in (r.exit, r_other.exit):
                other = None
            else:
                _compare(other, r_other, m, r, where)
        report.rounds += 1
        report.instructions += r.instructions
        report.exits[r.exit.value] += 1
        report.paging_rounds += rnd.page_dir is not None
        report.ring3_rounds += m.reg_read("cpl") == 3
        if r.seconds > 1.0:
            report.slow_rounds.append((rnd.index, r.seconds, r.exit.value, f"{r.reason}; stopped at {_code_at(m)}"))
        if verbose:
            print(f"  -> {r.exit.value} after {r.instructions} in {r.seconds:.3f} s: {r.reason}", file=sys.stderr,
                  flush=True)
        if dump is not None and rnd.index == stop_round:
            with open(dump / "round.txt", "a") as f:
                f.write(f"result: {r}\nstate after: {machine_state(m)}\n")
            break
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            raise FuzzFailure(f"mode={mode} seed={seed}: only {report.instructions} of {total_insns} instructions in "
                              f"{max_seconds} s ({report.rounds} rounds; exits {dict(report.exits)})")
    report.seconds = time.perf_counter() - start
    report.stats = m.stats

    if victim.memory.size != victim_pattern.size or not np.array_equal(victim.memory, victim_pattern):
        diff = np.flatnonzero(victim.memory != victim_pattern)
        raise FuzzFailure(f"mode={mode} seed={seed}: the other machine's RAM changed at {diff.size} bytes, "
                          f"first at gpa {int(diff[0]):#x}; replay: {replay_command(mode, seed, total_insns, per_run)}")
    if machine_state(victim) != victim_regs or victim.stats != victim_stats:
        raise FuzzFailure(f"mode={mode} seed={seed}: the other machine's CPU state or stats changed")
    for live, copy in canaries:
        if not np.array_equal(live, copy):
            raise FuzzFailure(f"mode={mode} seed={seed}: host memory next to the guest's RAM changed")
    return report


def _code_at(m: vmcore.Machine) -> str:
    try:
        eip = m.reg_read("eip")
        if eip + 16 <= m.memory.size:
            return f"eip={eip:#x}: {m.mem_read(eip, 16).hex(' ')}"
        return f"eip={eip:#x}"
    except Exception:           # noqa: BLE001
        return "?"


# ---------------------------------------------------------------------------------------------
# directed malicious kernels
# ---------------------------------------------------------------------------------------------
#
# Each is a flat binary at GUEST_GPA, started where a new Machine starts (flat 32-bit protected mode,
# CPL 0, no IDT), with ESP = GUEST_STACK. It builds its own tables, leaves its findings at RESULTS
# and stops with CLI; HLT. Python fills RAM with a known pattern first, so any byte the guest did
# not mean to write can be checked.

GUEST_GPA = 0x1000
GUEST_STACK = 0xF000
RESULTS = 0x3000
PARAM = 0x3F00            # a dword Python sets before the run (iterations, variant data)

# (a) page-table entries that point outside guest RAM (4 MiB): each PT1 slot maps linear
#     0x400000 + slot * 0x1000 to this gpa
PT_OUTSIDE_FRAMES = (0xF0000000, 0x00400000, 0x003FF000, 0x00400000, 0xFFFFF000, 0xFEE00000, 0xFFFF0000,
                     0x7FFFF000, 0x00400000, 0x00401000, 0x00402000, 0x00403000, 0x00404000, 0x00405000,
                     0x00406000, 0x00407000, 0xF0000000, 0xF0001000, 0xF0002000, 0xF0003000)
# linear addresses read, written and read again (paging on); all reach gpas outside RAM
PT_OUTSIDE_PROBES = (0x400000, 0x400FFC, 0x401000, 0x403000, 0x404000, 0x404FFC, 0x405000, 0x406000, 0x407000,
                     0x408000, 0x40F004, 0x413FFC,
                     0x800000, 0x800FFC, 0x9FF000,        # PD[2]: a page table outside RAM
                     0xC00000, 0xFFFFFC,                  # PD[3]: a 4 MiB page at gpa 0xFFC00000
                     0x1000000, 0x13FFFFC)                # PD[4]: a 4 MiB page at gpa 0x400000, past RAM
# physical addresses probed the same way with paging off
PHYS_PROBES = (0x400000, 0x400004, 0x7FFFFC, 0x80000000, 0xF0000000, 0xFEE00000, 0xFFC00000, 0xFFFF0000,
               0xFFFFFFF0, 0xFFFFFFFC)
PROBE_WRITE = 0x5A5A5A5A

PT_OUTSIDE_SRC = f"""\
; (a) page tables whose entries point outside guest RAM; read, write and read again through them.
bits 32
{IDENTITY_TABLES}org {GUEST_GPA:#x}
RES equ {RESULTS:#x}
PD  equ 0x10000
PT0 equ 0x11000
PT1 equ 0x12000
start:
    cld
    CLEAR_TABLES_IDENTITY 3   ; zero PD and the page tables after it; PT0: identity over 4 MiB
    mov esi, frames             ; PT1: the frames below
    mov edi, PT1
    mov ecx, (frames_end - frames) / 4
.pt1:
    lodsd
    or eax, 0x003
    stosd
    loop .pt1
    mov dword [PD + 0 * 4], PT0 | 3
    mov dword [PD + 1 * 4], PT1 | 3
    mov dword [PD + 2 * 4], 0xF0000000 | 3       ; a page table outside RAM
    mov dword [PD + 3 * 4], 0xFFC00000 | 0x83    ; 4 MiB page: gpa 0xFFC00000 (VMware's monitor area)
    mov dword [PD + 4 * 4], 0x00400000 | 0x83    ; 4 MiB page just past RAM
    mov eax, cr4
    or eax, 0x10                                 ; PSE
    mov cr4, eax
    PAGING_ON
    mov edi, RES
    mov esi, probes
    call probe_all
    ; bulk copies: 1 KiB from outside RAM into RAM at 0x5000; 48 KiB of stores past RAM
    push edi
    mov esi, 0x410000
    mov edi, 0x5000
    mov ecx, 256
    rep movsd
    mov edi, 0x408000
    mov eax, 0xDEADBEEF
    mov ecx, 12 * 1024
    rep stosd
    mov esi, 0x400000           ; and a string compare of two unmapped ranges
    mov edi, 0x800000
    mov ecx, 1024
    repe cmpsd
    pop edi
    mov [edi], ecx              ; 0: all equal
    add edi, 4
    ; dwords straddling RAM and not-RAM: gpa 0x3FFFFE..0x400001 and 0x400FFE..0x3FF001
    mov dword [0x402FFE], 0x11223344
    mov eax, [0x402FFE]
    stosd
    mov dword [0x401FFE], 0xAABBCCDD
    mov eax, [0x401FFE]
    stosd
    ; the page-table entries as the guest sees them now (accessed and dirty bits)
    mov esi, PT1
    mov ecx, (frames_end - frames) / 4
    rep movsd
    mov eax, [PD + 2 * 4]
    stosd
    mov eax, [PD + 3 * 4]
    stosd
    ; paging off: the same probes at physical addresses
    mov eax, cr0
    and eax, 0x7FFFFFFF
    mov cr0, eax
    jmp .unpaged
.unpaged:
    mov esi, phys_probes
    call probe_all
    mov [RES + 0xFFC], edi      ; where the results end
    cli
    hlt

; for each address at [esi] (0-terminated): read, write {PROBE_WRITE:#x}, read again, write a byte, read a word
probe_all:
    lodsd
    test eax, eax
    jz .done
    mov ebx, eax
    mov eax, [ebx]
    stosd
    mov dword [ebx], {PROBE_WRITE:#x}
    mov eax, [ebx]
    stosd
    mov byte [ebx + 1], 0x77
    movzx eax, word [ebx]
    stosd
    jmp probe_all
.done:
    ret

align 4
frames:
    dd {", ".join(f"{f:#x}" for f in PT_OUTSIDE_FRAMES)}
frames_end:
probes:
    dd {", ".join(f"{p:#x}" for p in PT_OUTSIDE_PROBES)}, 0
phys_probes:
    dd {", ".join(f"{p:#x}" for p in PHYS_PROBES)}, 0
"""

# (b) segments with base 0 / limit 4 GiB and base 0xFFC00000 / limit 4 GiB, used to write everywhere
SEG_FILL = 0xC0DEC0DE
SEG_MARK = 0x5EC0DE00
SEG_PAGE_START = 0x20000            # the guest's own pages below this are left alone
TOP_MARK = 0xB0000000

SEGMENTS_SRC = f"""\
; (b) DS/ES/FS/GS with base 0 and base 0xFFC00000 (limit 4 GiB), used to write everywhere they reach.
bits 32
{FLAT_ENTRY}{IDENTITY_TABLES}org {GUEST_GPA:#x}
RES equ {RESULTS:#x}
PD  equ 0x10000
PT0 equ 0x11000
PTT equ 0x12000             ; the page table of the top 4 MiB of linear space
start:
    cld
    ENTER_FLAT_GDT
    mov ax, 0x20                ; ES: base 0xFFC00000, limit 4 GiB
    mov es, ax
    mov ax, 0x18                ; GS: base 0, limit 4 GiB
    mov gs, ax
    mov fs, ax
    ; 1. paging off. Fill all of ES's first 4 MiB (linear 0xFFC00000..0xFFFFFFFF) and scan it back.
    xor edi, edi
    mov eax, {SEG_FILL:#x}
    mov ecx, 0x100000
    rep stosd
    xor edi, edi
    mov eax, 0xFFFFFFFF
    mov ecx, 0x100000
    repe scasd                  ; stops at the first dword that is not all-ones
    mov [RES + 0], ecx
    mov [RES + 4], edi
    ; ES offsets past 4 MiB wrap around to linear 0: into guest RAM
    mov dword [es:0x600000], 0x600DF00D        ; linear 0x200000
    mov dword [es:0x7FFFF0], 0x7A11F00D        ; linear 0x3FFFF0
    mov dword [es:0x3FFFFE], 0x11223344        ; linear 0xFFFFFFFE..0x00000001: wraps into gpa 0
    mov eax, [es:0x3FFFFE]
    mov [RES + 8], eax
    ; GS (base 0): one dword in every 4 KiB page from {SEG_PAGE_START:#x} to 0xFFFFF000, at an offset
    ; that moves through the page; then read them all back into a sum
    mov ebx, {SEG_PAGE_START:#x}
.write_pages:
    mov esi, ebx
    shr esi, 10
    and esi, 0xFFC
    mov eax, ebx
    xor eax, {SEG_MARK:#x}
    mov [gs:ebx + esi], eax
    add ebx, 0x1000
    jnz .write_pages
    xor edx, edx
    mov ebx, {SEG_PAGE_START:#x}
.read_pages:
    mov esi, ebx
    shr esi, 10
    and esi, 0xFFC
    add edx, [gs:ebx + esi]
    add ebx, 0x1000
    jnz .read_pages
    mov [RES + 12], edx
    ; 2. paging on, the top 4 MiB of linear space mapped: its first half to guest RAM at 0x200000,
    ; its second half outside RAM. Write through ES (base 0xFFC00000) at every page, read back.
    mov ax, 0x10                ; ES flat again to build the tables
    mov es, ax
    CLEAR_TABLES_IDENTITY 3   ; zero PD and the page tables after it; PT0: identity over 4 MiB
    mov edi, PTT
    mov eax, 0x200003
    mov ecx, 512
.low:
    stosd
    add eax, 0x1000
    loop .low
    mov eax, 0xF0000003
    mov ecx, 512
.high:
    stosd
    add eax, 0x1000
    loop .high
    mov dword [PD], PT0 | 3
    mov dword [PD + 1023 * 4], PTT | 3
    PAGING_ON
    mov ax, 0x20
    mov es, ax
    xor ebx, ebx
.top_write:
    mov eax, ebx
    shr eax, 12
    or eax, {TOP_MARK:#x}
    mov [es:ebx + 8], eax
    add ebx, 0x1000
    cmp ebx, 0x400000
    jne .top_write
    xor edx, edx
    xor ebx, ebx
.top_read:
    add edx, [es:ebx + 8]
    add ebx, 0x1000
    cmp ebx, 0x400000
    jne .top_read
    mov [RES + 16], edx
    mov eax, [gs:0xFFC00008]    ; the same place through GS (base 0)
    mov [RES + 20], eax
    ; 3. run code through CS base 0xFFC00000: offset 0x400000 + x wraps to linear x
    call 0x28:(0x400000 + wrapped)
    mov [RES + 24], eax
    mov [RES + 28], ecx
    cli
    hlt

wrapped:                        ; entered with CS = 0x28 (base 0xFFC00000): near targets are CS offsets
    call .inner
    mov ecx, [esp - 4]          ; the return offset .inner pushed: 0x400000 + linear
    retf
.inner:
    mov eax, 0x0FF5E7
    ret

align 8
gdt:
    dq 0
    dw 0xFFFF, 0x0000, 0x9A00, 0x00CF          ; 08: code, base 0, 4 GiB
    dw 0xFFFF, 0x0000, 0x9200, 0x00CF          ; 10: data, base 0, 4 GiB
    dw 0xFFFF, 0x0000, 0x9200, 0x00CF          ; 18: data, base 0, 4 GiB (GS, FS)
    dw 0xFFFF, 0x0000, 0x92C0, 0xFFCF          ; 20: data, base 0xFFC00000, 4 GiB (ES)
    dw 0xFFFF, 0x0000, 0x9AC0, 0xFFCF          ; 28: code, base 0xFFC00000, 4 GiB
gdt_end:
gdtr:
    dw gdt_end - gdt - 1
    dd gdt
"""

# (c) LGDT/LIDT garbage, then fault: every variant must end in a triple fault
GARBAGE_GDT_GPA = 0x20000            # Python fills 0x20000..0x3FFFF with random bytes
GARBAGE_IDT_GPA = 0x30000
GARBAGE_VARIANTS = {
    # name: (descriptor-table loads, the faulting tail)
    "idt_limit_0": ("lidt [t_zero]", "int3"),
    "idt_limit_0_ud2": ("lidt [t_zero]", "ud2"),
    "gdt_idt_outside_ram": ("lgdt [t_gdt_far]\n    lidt [t_idt_far]", "mov ax, 0x10\n    mov ds, ax\n    ud2"),
    "gdt_idt_random_bytes": ("lgdt [t_gdt_rand]\n    lidt [t_idt_rand]",
                             "mov ax, 0x10\n    mov ds, ax\n    mov ss, ax\n    int 0x21\n    ud2"),
    "gdt_limit_0_mov_ss": ("lgdt [t_zero]", "mov ax, 0x10\n    mov ss, ax\n    ud2"),
    "gdt_limit_0_far_jmp": ("lgdt [t_zero]\n    lidt [t_idt_rand]", "jmp 0x08:start"),
    "idt_gates_bad_selector": ("lgdt [t_gdt_ok]\n    lidt [t_idt_bad_sel]", "int 0x30"),
    "idt_wraps_4g": ("lidt [t_idt_wrap]", "int 0x40"),
    "gdt_random_then_iret": ("lgdt [t_gdt_rand]\n    lidt [t_idt_rand]",
                             "push dword 0x23\n    push dword 0x8000\n    push dword 0x202\n    push dword 0x1B\n"
                             "    push dword start\n    iretd"),
    "paging_random_cr3": ("lidt [t_idt_rand]",
                          "mov eax, 0x2A5000\n    mov cr3, eax\n    mov eax, cr0\n    or eax, 0x80000000\n"
                          "    mov cr0, eax\n    nop"),
}


def garbage_src(variant: str) -> str:
    loads, tail = GARBAGE_VARIANTS[variant]
    return f"""\
; (c) {variant}: load garbage descriptor-table registers, then fault.
bits 32
org {GUEST_GPA:#x}
start:
    {loads}
    {tail}
    cli
    hlt                         ; not reached: the fault above must end in a triple fault
align 8
gdt_ok:
{FLAT_GDT}gdt_ok_end:
idt_bad_sel:
%rep 256
    dw 0x1000, 0x0050, 0x8E00, 0x0000          ; interrupt gates whose CS selector is past the GDT limit
%endrep
idt_bad_sel_end:
t_zero:        dw 0
               dd 0
t_gdt_far:     dw 0xFFFF
               dd 0xDEAD0000
t_idt_far:     dw 0x7FF
               dd 0xF0000000
t_gdt_rand:    dw 0xFFFF
               dd {GARBAGE_GDT_GPA:#x}
t_idt_rand:    dw 0x7FF
               dd {GARBAGE_IDT_GPA:#x}
t_gdt_ok:      dw gdt_ok_end - gdt_ok - 1
               dd gdt_ok
t_idt_bad_sel: dw idt_bad_sel_end - idt_bad_sel - 1
               dd idt_bad_sel
t_idt_wrap:    dw 0x7FF
               dd 0xFFFFFE00                   ; vector 0x40 lies at linear 0: wrapped into RAM (random bytes)
"""


# a multiboot image that proves a machine still works: EAX = 0x600D, then HLT
ALIVE_SRC = f"""\
bits 32
{FLAT_ENTRY}org 0x100000
MB_MAGIC equ 0x1BADB002
MB_FLAGS equ 0x00010000
header:
    dd MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)
    dd header, header, image_end, 0, start
start:
    ENTER_FLAT_GDT
    mov esp, 0x90000
    push dword 0x600D
    pop eax
    cli
    hlt
align 8
gdt:
{FLAT_GDT}gdt_end:
gdtr:
    dw gdt_end - gdt - 1
    dd gdt
image_end:
"""


def alive_image_path() -> Path:
    return image_path(ALIVE_SRC, "alive")


# (d) a guest that rewrites its own page tables while running through them
TRACE_FRAMES = 0x100000             # 64 data frames
TRACE_NFRAMES = 64
TRACE_WINDOW = 0x400000             # 8 window pages whose PTEs the loop rewrites
TRACE_FUNC = 0x5000                 # a code page that flips between two frames holding different code
TRACE_FUNC_FRAMES = (0x6000, 0xA000)
TRACE_CODE_COPY = 0x9000            # a copy of the guest's own code page; the loop flips its PTE to it

TRACE_SRC = f"""\
; (d) tracing stress: rewrite page-table entries (through the recursive mapping at 0xFFC00000 and
; through the identity alias of the tables) in a loop while running through them.
bits 32
{IDENTITY_TABLES}org {GUEST_GPA:#x}
RES    equ {RESULTS:#x}
ITERS  equ {PARAM:#x}
PD     equ 0x10000
PT0    equ 0x11000
PT1    equ 0x12000
FRAMES equ {TRACE_FRAMES:#x}
WIN    equ {TRACE_WINDOW:#x}
FUNC   equ {TRACE_FUNC:#x}
RECUR  equ 0xFFC00000           ; PD[1023] = PD: page table n appears at RECUR + n * 0x1000
SCRATCH equ RES + 0x800
start:
    cld
    CLEAR_TABLES_IDENTITY 3   ; zero PD and the page tables after it; PT0: identity over 4 MiB
    mov edi, PT1                ; window slot n -> frame n
    mov eax, FRAMES | 3
    mov ecx, 8
.win:
    stosd
    add eax, 0x1000
    loop .win
    mov dword [PD + 0 * 4], PT0 | 3
    mov dword [PD + 1 * 4], PT1 | 3
    mov dword [PD + 1023 * 4], PD | 3
    mov esi, func_a             ; the two versions of FUNC
    mov edi, {TRACE_FUNC_FRAMES[0]:#x}
    mov ecx, func_a_end - func_a
    rep movsb
    mov esi, func_b
    mov edi, {TRACE_FUNC_FRAMES[1]:#x}
    mov ecx, func_b_end - func_b
    rep movsb
    mov esi, {GUEST_GPA:#x}     ; a copy of this code page
    mov edi, {TRACE_CODE_COPY:#x}
    mov ecx, 1024
    rep movsd
    mov dword [PT0 + (FUNC >> 12) * 4], {TRACE_FUNC_FRAMES[0]:#x} | 3
    PAGING_ON
    xor ebp, ebp                ; the checksum
    mov ebx, 12345              ; LCG state
    xor esi, esi                ; i
.loop:
    imul ebx, ebx, 1103515245
    add ebx, 12345
    mov eax, ebx
    shr eax, 16
    and eax, {TRACE_NFRAMES - 1}
    shl eax, 12
    add eax, FRAMES | 3         ; the new PTE: frame k
    mov ecx, esi
    and ecx, 7                  ; the window slot
    test esi, 1
    jnz .alias
    mov [RECUR + 1 * 0x1000 + ecx * 4], eax     ; through the recursive mapping
    jmp .written
.alias:
    mov [PT1 + ecx * 4], eax                    ; through the identity mapping of PT1
.written:
    mov edx, ecx
    shl edx, 12
    add edx, WIN
    invlpg [edx]
    mov eax, esi
    shl eax, 2
    and eax, 0xFFC
    mov edi, [edx + eax]        ; read the frame through the window
    rol ebp, 5
    xor ebp, edi
    add eax, 256
    and eax, 0xFFC
    mov [edx + eax], ebp        ; and write it
    test esi, 63
    jnz .no_func
    mov eax, esi                ; every 64: flip FUNC's frame (PT0 through the recursive mapping), call it
    shr eax, 6
    and eax, 1
    mov eax, [func_frames + eax * 4]
    or eax, 3
    mov [RECUR + 0 * 0x1000 + (FUNC >> 12) * 4], eax
    invlpg [FUNC]
    call FUNC
    add ebp, eax
.no_func:
    test esi, 127
    jnz .no_code
    mov eax, esi                ; every 128: run from the other copy of this code page
    shr eax, 7
    and eax, 1
    mov eax, [code_frames + eax * 4]
    or eax, 3
    mov [PT0 + ({GUEST_GPA} >> 12) * 4], eax
    invlpg [{GUEST_GPA:#x}]
.no_code:
    test esi, 255
    jnz .no_rep
    push esi                    ; every 256: all 8 window PTEs at once with REP MOVSD through the
    mov eax, ebx                ; recursive mapping (frames k0..k0+7), reload CR3, read each slot
    shr eax, 8
    and eax, {TRACE_NFRAMES - 1}
    mov edi, SCRATCH
    mov ecx, 8
.make_pte:
    mov edx, eax
    shl edx, 12
    add edx, FRAMES | 3
    mov [edi], edx
    add edi, 4
    inc eax
    and eax, {TRACE_NFRAMES - 1}
    loop .make_pte
    mov esi, SCRATCH
    mov edi, RECUR + 1 * 0x1000
    mov ecx, 8
    rep movsd
    mov eax, cr3
    mov cr3, eax
    mov edi, WIN
    mov ecx, 8
.read_slots:
    rol ebp, 5
    xor ebp, [edi]
    add edi, 0x1000
    loop .read_slots
    pop esi
.no_rep:
    test esi, 511
    jnz .next
    mov eax, [RECUR + 1023 * 0x1000 + 1 * 4]    ; every 512: toggle PD[1].U/S through the PD's own
    xor eax, 4                                  ; recursive mapping, and reload CR3
    mov [RECUR + 1023 * 0x1000 + 1 * 4], eax
    mov eax, cr3
    mov cr3, eax
.next:
    inc esi
    cmp esi, [ITERS]
    jb .loop
    mov [RES + 0], ebp
    mov [RES + 4], esi
    mov esi, PT1                ; the entries as the guest sees them (accessed, dirty bits)
    mov edi, RES + 8
    mov ecx, 8
    rep movsd
    mov eax, [PT0 + (FUNC >> 12) * 4]
    stosd
    mov eax, [PD + 4]
    stosd
    mov eax, [PD + 1023 * 4]
    stosd
    cli
    hlt

align 4
func_frames: dd {TRACE_FUNC_FRAMES[0]:#x}, {TRACE_FUNC_FRAMES[1]:#x}
code_frames: dd {GUEST_GPA:#x}, {TRACE_CODE_COPY:#x}
func_a:
    lea eax, [ebp + ebp * 2 + 1]
    ret
func_a_end:
func_b:
    lea eax, [ebp + ebp * 4 + 7]
    ret
func_b_end:
"""


def trace_frame_pattern() -> np.ndarray:
    """The initial contents of the data frames, as dwords: frame k, dword j = (k << 20) ^ (j * 0x9E3779B1)."""
    k = np.arange(TRACE_NFRAMES, dtype=np.uint64)[:, None]
    j = np.arange(1024, dtype=np.uint64)[None, :]
    return (((k << 20) ^ (j * 0x9E3779B1)) & 0xFFFFFFFF).astype(np.uint32)


def trace_model(iters: int) -> tuple[int, np.ndarray]:
    """What TRACE_SRC computes, in Python: (checksum, final frame contents)."""
    frames = trace_frame_pattern().copy()
    mask = 0xFFFFFFFF
    ebp, ebx = 0, 12345
    for i in range(iters):
        ebx = (ebx * 1103515245 + 12345) & mask
        k = (ebx >> 16) & (TRACE_NFRAMES - 1)
        off = (i * 4) & 0xFFC
        x = int(frames[k, off >> 2])
        ebp = (((ebp << 5) | (ebp >> 27)) & mask) ^ x
        frames[k, ((off + 256) & 0xFFC) >> 2] = ebp
        if i % 64 == 0:
            ebp = (ebp + ((ebp * 3 + 1) if (i >> 6) & 1 == 0 else (ebp * 5 + 7))) & mask
        if i % 256 == 0:
            k0 = (ebx >> 8) & (TRACE_NFRAMES - 1)
            for slot in range(8):
                ebp = (((ebp << 5) | (ebp >> 27)) & mask) ^ int(frames[(k0 + slot) & (TRACE_NFRAMES - 1), 0])
    return ebp, frames


# (e) port I/O at CPL 0 with paging on: the CPU reads the TSS (its I/O permission bitmap) only when
#     CPL > IOPL, so at CPL 0 the TSS page is not touched: neither its accessed bit is set nor does
#     it need to be mapped. A monitor that runs the kernel at real CPL 1 must not let that show.
IO_TSS_GPA = 0x12000
IO_TSS_VARIANTS = ("tss_mapped", "tss_unmapped")


def io_tss_src(variant: str) -> str:
    unmap = variant == "tss_unmapped"
    return f"""\
; (e) {variant}: LTR, paging on{", the TSS page unmapped" if unmap else ""}, then IN/OUT/INS/OUTS at CPL 0.
bits 32
{IDENTITY_TABLES}org {GUEST_GPA:#x}
RES equ {RESULTS:#x}
PD  equ 0x10000
PT0 equ 0x11000
TSS equ {IO_TSS_GPA:#x}
start:
    lgdt [gdtr]
    jmp 0x08:.cs
.cs:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    cld
    CLEAR_TABLES_IDENTITY 2   ; zero PD and the page tables after it; PT0: identity over 4 MiB
    mov dword [PD], PT0 | 3
    mov edi, TSS                ; a TSS with an I/O bitmap that denies every port
    mov ecx, 0x2000 / 4 + 0x68 / 4 + 1
    mov eax, 0xFFFFFFFF
    rep stosd
    mov dword [TSS + 4], 0xE000
    mov dword [TSS + 8], 0x10
    mov word [TSS + 0x66], 0x68
    mov ax, 0x18
    ltr ax
    {"mov dword [PT0 + (TSS >> 12) * 4], 0      ; TSS page (and the bitmap's first page) not present" if unmap else ""}
    {"mov dword [PT0 + (TSS >> 12) * 4 + 4], 0" if unmap else ""}
    PAGING_ON
    mov dx, 0x80
    in al, dx                   ; POST port
    mov [RES + 0], eax
    out dx, al
    mov dx, 0x1234
    in eax, dx                  ; an unclaimed port: all ones
    mov [RES + 4], eax
    mov edi, RES + 8
    mov ecx, 4
    rep insb
    mov esi, RES + 8
    mov ecx, 4
    rep outsb
    mov eax, cr2
    mov [RES + 12], eax
    cli
    hlt
align 8
gdt:
{FLAT_GDT}    dw 0x2068, TSS & 0xFFFF, 0x8900 | (TSS >> 16), 0x0000   ; 18: 32-bit TSS with an 8 KiB I/O bitmap
gdt_end:
gdtr:
    dw gdt_end - gdt - 1
    dd gdt
"""


@dataclasses.dataclass
class Outcome:
    """A directed guest's run, as the guest and the host see it."""

    mode: str
    exit: Exit
    reason: str
    exception: tuple | None
    eip: int
    instructions: int
    state: dict
    memory: np.ndarray
    stats: dict

    def guest_view(self) -> tuple:
        """Everything a guest can observe; bt must show exactly what bare shows."""
        return (self.exit, self.exception, self.eip, tuple(sorted(self.state.items())),
                hashlib.sha256(self.memory.tobytes()).hexdigest())

    def result(self, index: int) -> int:
        return int.from_bytes(self.memory[RESULTS + 4 * index:RESULTS + 4 * index + 4].tobytes(), "little")


def diff_outcomes(a: Outcome, b: Outcome) -> str:
    """What differs between two runs of the same guest, for a failure message."""
    lines = []
    for name in ("exit", "exception", "eip", "instructions"):
        if getattr(a, name) != getattr(b, name):
            lines.append(f"{name}: {a.mode}={getattr(a, name)!r} {b.mode}={getattr(b, name)!r}")
    for reg in a.state:
        if a.state[reg] != b.state[reg]:
            lines.append(f"{reg}: {a.mode}={a.state[reg]:#x} {b.mode}={b.state[reg]:#x}")
    where = np.flatnonzero(a.memory != b.memory)
    if where.size:
        shown = ", ".join(f"{int(g):#x}: {int(a.memory[g]):#04x}/{int(b.memory[g]):#04x}" for g in where[:8])
        lines.append(f"memory differs at {where.size} bytes ({a.mode}/{b.mode}): {shown}")
    if a.reason != b.reason:
        lines.append(f"reason: {a.mode}={a.reason!r} {b.mode}={b.reason!r}")
    return "; ".join(lines) or "no difference"


def ram_pattern(memory_mb: int = 4) -> np.ndarray:
    """What a directed guest's RAM holds before the guest is loaded."""
    return pattern(0xA11CE, memory_mb << 20)


def start_guest(m: vmcore.Machine, binary: bytes, *, fill=(), param: int | None = None) -> None:
    """Load a directed guest into a new machine: RAM pattern, extra fills (gpa, bytes), the binary."""
    m.mem_write(0, ram_pattern(m.memory.size >> 20).tobytes())
    for gpa, data in fill:
        m.mem_write(gpa, data)
    if param is not None:
        m.mem_write(PARAM, struct.pack("<I", param))
    m.mem_write(GUEST_GPA, binary)
    m.reg_write("esp", GUEST_STACK)
    m.reg_write("eip", GUEST_GPA)


def finish(m: vmcore.Machine, r) -> Outcome:
    return Outcome(m.mode, r.exit, r.reason, r.exception, r.eip, r.instructions, machine_state(m),
                   m.memory.copy(), m.stats)


# ---------------------------------------------------------------------------------------------
# command line: replay a fuzz run
# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fuzz", help="run the isolation fuzzer")
    f.add_argument("--mode", default="bt")
    f.add_argument("--seed", type=int, default=1)
    f.add_argument("--insns", type=int, default=1_000_000)
    f.add_argument("--per-run", type=int, default=10_000)
    f.add_argument("--verbose", action="store_true")
    f.add_argument("--stop-round", type=int)
    f.add_argument("--dump", type=Path)
    f.add_argument("--twin", help="run the same rounds in this mode too and compare after each")
    args = ap.parse_args(argv)
    report = fuzz(args.mode, args.seed, args.insns, per_run=args.per_run, verbose=args.verbose,
                  stop_round=args.stop_round, dump=args.dump, twin=args.twin)
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
