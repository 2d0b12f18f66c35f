"""Decode-time classification under bt (issue 13): the engine classifies guest-kernel
instructions from vmcore/_core/sensitive_table.h, generated from the one table of sensitive
instructions (vmcore/monitor/sensitive.py). The Python scanner with capstone is the independent
check: the committed table is what the generator makes now, and engine and scanner agree on
real kernel code (the Linux image's own .text) and on hand-picked encodings."""
from __future__ import annotations

import lzma
import os
import pathlib
import struct

import capstone
import pytest

from vmcore import Machine
from vmcore._core import gen_sensitive
from vmcore.monitor.scanner import classify
from vmcore.monitor.supervisor import ACT_CALLOUT, ACT_IDENT, ACT_TRAP, action_code

REPO = pathlib.Path(__file__).resolve().parent.parent
HEADER = REPO / "vmcore" / "_core" / "sensitive_table.h"
LINUX = pathlib.Path(os.environ.get("VMCORE_LINUX_CACHE", REPO / "build" / "linux"))


@pytest.fixture(scope="module")
def engine():
    return Machine(memory_mb=2, mode="bt")._engine


def scanner_action(code: bytes, code32: bool) -> int:
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32 if code32 else capstone.CS_MODE_16)
    md.detail = True
    insn = next(md.disasm(code, 0), None)
    return ACT_TRAP if insn is None else action_code(classify(insn).action)


def test_committed_table_is_the_generators_output():
    top, subs = gen_sensitive.build_tables()
    assert HEADER.read_text() == gen_sensitive.render(top, subs), \
        "sensitive_table.h is stale: run python vmcore/_core/gen_sensitive.py"


# (bytes, disassembly, 32-bit code): each a class of the sensitive table, and innocuous neighbours
CASES = [
    ("fa", "cli", True), ("fb", "sti", True), ("9c", "pushfd", True), ("9d", "popfd", True),
    ("cf", "iretd", True), ("0e", "push cs", True), ("16", "push ss", True), ("1f", "pop ds", True),
    ("8c c8", "mov eax, cs", True), ("8e d8", "mov ds, eax", True), ("8b c8", "mov ecx, eax", True),
    ("0f 01 00", "sgdt [eax]", True), ("0f 01 08", "sidt [eax]", True), ("0f 00 c0", "sldt eax", True),
    ("0f 00 c8", "str eax", True), ("0f 01 e0", "smsw eax", True), ("0f 02 c0", "lar eax, eax", True),
    ("0f 03 c0", "lsl eax, eax", True), ("0f 00 e0", "verr ax", True), ("0f 00 e8", "verw ax", True),
    ("c5 00", "lds eax, [eax]", True), ("0f b2 00", "lss eax, [eax]", True), ("ea 00 00 00 00 08 00", "ljmp 8:0", True),
    ("9a 00 00 00 00 08 00", "lcall 8:0", True), ("cb", "retf", True), ("cd 80", "int 0x80", True),
    ("ce", "into", True), ("0f 34", "sysenter", True), ("f4", "hlt", True), ("0f 22 d8", "mov cr3, eax", True),
    ("0f 20 c0", "mov eax, cr0", True), ("0f 01 38", "invlpg [eax]", True), ("e6 80", "out 0x80, al", True),
    ("ec", "in al, dx", True), ("0f 30", "wrmsr", True), ("0f 32", "rdmsr", True), ("0f 06", "clts", True),
    ("0f 0b", "ud2", True), ("90", "nop", True), ("66 9c", "pushf (16)", True), ("f3 90", "pause", True),
    ("26 8c c8", "mov eax, cs (es:)", True), ("66 8c c8", "mov ax, cs", True),
    ("9c", "pushf", False), ("cf", "iret", False), ("0e", "push cs", False), ("8c c8", "mov ax, cs", False),
    ("66 cf", "iretd", False), ("ea 00 00 08 00", "ljmp 8:0", False), ("8e d0", "mov ss, ax", False),
]


@pytest.mark.parametrize("hexbytes,disasm,code32", CASES, ids=[f"{c[1]}/{32 if c[2] else 16}" for c in CASES])
def test_engine_and_scanner_agree_on_each_class(engine, hexbytes, disasm, code32):
    code = bytes.fromhex(hexbytes) + bytes(8)
    assert engine.classify(code, code32) == scanner_action(code, code32), disasm


def test_sensitive_classes_are_not_identity(engine):
    # the classification distinguishes: these are callouts or traps, a register move is not
    for hexbytes in ("fa", "9c", "cf", "0e", "0f 01 00", "0f 22 d8", "f4"):
        assert engine.classify(bytes.fromhex(hexbytes) + bytes(8), True) >= ACT_TRAP, hexbytes
    assert engine.classify(bytes.fromhex("8b c8") + bytes(8), True) == ACT_IDENT
    assert engine.classify(bytes.fromhex("fa"), True) >= ACT_CALLOUT


def _vmlinux_text() -> tuple[bytes, int] | None:
    """The Linux image's .text (the bzImage's xz payload, decompressed): bytes and its address."""
    bz = LINUX / "bzImage"
    if not bz.exists():
        return None
    data = bz.read_bytes()
    setup_sects = data[0x1F1] or 4
    pm = data[(setup_sects + 1) * 512:]
    payload_offset, payload_length = struct.unpack_from("<II", data, 0x248)
    elf = lzma.decompress(pm[payload_offset:payload_offset + payload_length])
    shoff, = struct.unpack_from("<I", elf, 0x20)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x2E)
    sections = [struct.unpack_from("<IIIIIIIIII", elf, shoff + k * shentsize) for k in range(shnum)]
    strtab = sections[shstrndx]
    for name, _type, _flags, addr, offset, size, *_ in sections:
        sname = elf[strtab[4] + name:elf.index(b"\0", strtab[4] + name)]
        if sname == b".text":
            return elf[offset:offset + size], addr
    return None


def test_engine_and_scanner_agree_on_the_linux_kernel_text(engine):
    text = _vmlinux_text()
    if text is None:
        pytest.skip(f"no Debian kernel in {LINUX} (tools/fetch_linux.py fetches it)")
    code, addr = text
    from vmcore.monitor.scanner import FORM_DEPENDENT_IDS
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    md.skipdata = True          # a linear sweep: bytes capstone cannot decode are stepped over
    md_detail = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    md_detail.detail = True     # operands, only where the scanner's class depends on them
    offsets, scanner = [], []
    for insn in md.disasm(code, 0):
        if insn.id == 0:        # skipped data
            continue
        off = insn.address
        if insn.id in FORM_DEPENDENT_IDS:
            insn = next(md_detail.disasm(code[off:off + 15], off))
        offsets.append(off)
        scanner.append(action_code(classify(insn).action))
    actions = engine.classify_at(code, offsets, True)
    disagreements = [(hex(addr + off), code[off:off + 8].hex(), got, want)
                     for off, got, want in zip(offsets, actions, scanner) if got != want]
    assert len(offsets) > 2_000_000             # the whole .text, not a fragment of it
    assert sum(a != ACT_IDENT for a in scanner) > 10_000
    assert disagreements[:20] == [] and len(disagreements) == 0
