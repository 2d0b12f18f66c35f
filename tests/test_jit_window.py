"""The JIT's foundation (issue 10): the guest window over a RAM memfd, window faults as exits, the emitter.

JitProbe emits straight-line guest operations between the JIT's entry and exit sequences and runs
them on the host CPU: guest memory operands are gs: + addr32 into the window, guest registers are
pinned to host registers (guest ESP in r8d). The ALU operations are checked against the interpreter
(the reference) on random operands.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import vmcore
from vmcore._core._core import JitProbe

RAM_SIZE = 1 << 20
PAGE = 4096
EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI = range(8)
ARITH_FLAGS = 0x8D5         # CF PF AF ZF SF OF


@pytest.fixture
def ram():
    """Guest RAM as the JIT wants it: a memfd, with a numpy view of the same pages."""
    fd = os.memfd_create("vmcore-test-ram")
    os.ftruncate(fd, RAM_SIZE)
    view = mmap.mmap(fd, RAM_SIZE)
    array = np.frombuffer(view, dtype=np.uint8)
    yield fd, array
    os.close(fd)            # the mapping goes with the last view of it


def dword(array, gpa):
    return int(array[gpa:gpa + 4].view(np.uint32)[0])


def put_dword(array, gpa, value):
    array[gpa:gpa + 4] = np.frombuffer(value.to_bytes(4, "little"), dtype=np.uint8)


def regs(**values):
    names = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
    return [values.get(n, 0) for n in names]


def test_loads_and_stores_reach_the_ram_pages_through_the_window(ram):
    fd, array = ram
    probe = JitProbe(fd, RAM_SIZE // PAGE)
    probe.map(0x400, 2, True)                          # gla 0x400000 -> gpa 0x2000
    put_dword(array, 0x2000, 0x12345678)
    r = probe.run([("load", EAX, EBX, 0x400000),        # mov eax, [ebx + 0x400000]
                   ("store", EAX, ESP, 8)],             # mov [esp + 8], eax   (guest ESP is host r8d)
                  regs(esp=0x400000))
    assert r["exit"] == "end"
    assert r["regs"][EAX] == 0x12345678
    assert dword(array, 0x2008) == 0x12345678           # the numpy view sees the window's store


def test_effective_address_wraps_at_4_gib(ram):
    fd, array = ram
    probe = JitProbe(fd, RAM_SIZE // PAGE)
    probe.map(0, 5, True)                               # gla 0 -> gpa 0x5000
    put_dword(array, 0x5010, 0xCAFEF00D)
    r = probe.run([("load", ECX, EBX, 0x20)], regs(ebx=0xFFFFFFF0))   # 0xFFFFFFF0 + 0x20 = 0x10 (mod 2**32)
    assert r["exit"] == "end" and r["regs"][ECX] == 0xCAFEF00D


def test_an_unmapped_page_is_a_window_fault_at_the_faulting_operation(ram):
    fd, array = ram
    probe = JitProbe(fd, RAM_SIZE // PAGE)
    probe.map(0x400, 2, True)
    r = probe.run([("load", EAX, EBX, 0x400000),
                   ("add", EAX, EAX),
                   ("load", EDX, EBX, 0x401004),        # gla 0x401004: not mapped
                   ("load", ESI, EBX, 0x400000)],
                  regs(ebx=0, edx=0x77))
    assert r["exit"] == "fault"
    assert (r["fault_index"], r["fault_gla"], r["fault_write"]) == (2, 0x401004, False)
    assert r["regs"][EDX] == 0x77                       # precise: the faulting load wrote nothing
    assert probe.stats["window_faults"] == 1


def test_a_write_to_a_read_only_page_faults_and_writes_nothing(ram):
    fd, array = ram
    probe = JitProbe(fd, RAM_SIZE // PAGE)
    probe.map(0x10, 3, True)
    probe.protect(0x10, False)                          # traced: a page-table page, or translated code
    put_dword(array, 0x3040, 0x11111111)
    r = probe.run([("load", EAX, EBX, 0x10040), ("store", ECX, EBX, 0x10040)], regs(ecx=0x22222222))
    assert r["exit"] == "fault"
    assert (r["fault_index"], r["fault_gla"], r["fault_write"]) == (1, 0x10040, True)
    assert r["regs"][EAX] == 0x11111111 and dword(array, 0x3040) == 0x11111111
    probe.protect(0x10, True)
    assert probe.run([("store", ECX, EBX, 0x10040)], regs(ecx=0x22222222))["exit"] == "end"
    assert dword(array, 0x3040) == 0x22222222


def test_unmap_returns_the_page_to_not_filled(ram):
    fd, array = ram
    probe = JitProbe(fd, RAM_SIZE // PAGE)
    probe.map(0x20, 4, True)
    assert probe.run([("load", EAX, EBX, 0x20000)], regs())["exit"] == "end"
    probe.unmap(0x20)
    assert probe.run([("load", EAX, EBX, 0x20000)], regs())["exit"] == "fault"
    put_dword(array, 0x4000, 5)                          # RAM itself is untouched by the unmap
    assert dword(array, 0x4000) == 5


def test_the_guard_above_4_gib_faults_and_a_canary_beside_the_window_is_untouched(ram):
    fd, array = ram
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    MAP_PRIVATE, MAP_ANONYMOUS, MAP_NORESERVE, MAP_FIXED_NOREPLACE = 0x02, 0x20, 0x4000, 0x100000
    span = (1 << 32) + 0x10000          # the window and its guard
    # find a free host range for the window and one page above it, then put the canary there
    PROT_NONE = 0
    hole = libc.mmap(None, span + PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
    assert hole not in (None, ctypes.c_void_p(-1).value)
    libc.munmap(hole, span + PAGE)
    canary = libc.mmap(hole + span, PAGE, mmap.PROT_READ | mmap.PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0)
    assert canary == hole + span
    try:
        ctypes.memset(canary, 0xA5, PAGE)
        probe = JitProbe(fd, RAM_SIZE // PAGE, window_at=hole)
        assert probe.window_base + probe.window_size == canary
        probe.map(0xFFFFF, 1, True)                      # the top page of the window -> gpa 0x1000
        for disp in (0xFFFFFFFE, 0xFFFFFFFF):            # mov [ebx + disp], eax: bytes past 4 GiB, in the guard
            r = probe.run([("store", EAX, EBX, disp)], regs(eax=0xDEADBEEF))
            assert r["exit"] == "fault" and r["fault_write"], disp
        assert not array[0x1FFC:0x2000].any()            # a store that faults writes nothing
        assert ctypes.string_at(canary, PAGE) == b"\xA5" * PAGE
    finally:
        libc.munmap(canary, PAGE)


def test_bad_window_arguments_are_refused(ram):
    fd, _ = ram
    probe = JitProbe(fd, RAM_SIZE // PAGE)
    with pytest.raises(ValueError):
        probe.map(0x10, RAM_SIZE // PAGE, True)         # past the end of RAM
    with pytest.raises(ValueError):
        probe.map(1 << 20, 0, True)                      # past 4 GiB
    with pytest.raises(ValueError):
        probe.run([("load", 8, 0, 0)], regs())           # no guest register 8
    with pytest.raises(ValueError):
        probe.run([("jmp", 0, 0)], regs())


# the interpreter as the reference: op r/m32, r32 with mod = 3
ALU_OPCODES = {"add": 0x01, "or": 0x09, "and": 0x21, "sub": 0x29, "xor": 0x31, "cmp": 0x39}


def interpreter_alu(machine, op, dst, src, values):
    code = bytes([ALU_OPCODES[op], 0xC0 | (src << 3) | dst, 0xF4])     # op dst, src; hlt
    machine.mem_write(0x1000, code)
    for name, value in zip(("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"), values):
        machine.reg_write(name, value)
    machine.reg_write("eflags", 0x2)
    machine.reg_write("eip", 0x1000)
    r = machine.run(count=10)
    assert r.exit == vmcore.Exit.HLT
    return ([machine.reg_read(n) for n in ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")],
            machine.reg_read("eflags") & ARITH_FLAGS)


def test_alu_instructions_match_the_interpreter_on_random_operands(ram):
    fd, _ = ram
    probe = JitProbe(fd, RAM_SIZE // PAGE)
    machine = vmcore.Machine(memory_mb=2, mode="bare", devices=False)
    rng = random.Random(10)
    edges = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x0000FFFF, 0x80)
    for _ in range(400):
        op = rng.choice(sorted(ALU_OPCODES))
        dst, src = rng.randrange(8), rng.randrange(8)
        values = [rng.choice(edges) if rng.random() < 0.3 else rng.getrandbits(32) for _ in range(8)]
        want_regs, want_flags = interpreter_alu(machine, op, dst, src, values)
        r = probe.run([(op, dst, src)], values)
        assert r["exit"] == "end"
        assert (r["regs"], r["eflags"] & ARITH_FLAGS) == (want_regs, want_flags), (op, dst, src, values)


def test_a_host_fault_outside_emitted_code_still_ends_the_process():
    """The handler is installed for the run only, and chains: a host bug after a run is not swallowed."""
    script = textwrap.dedent("""
        import ctypes, faulthandler, os
        from vmcore._core._core import JitProbe
        faulthandler.enable()
        fd = os.memfd_create("r"); os.ftruncate(fd, 1 << 16)
        p = JitProbe(fd, 16)
        assert p.run([("load", 0, 0, 0x1000)], [0] * 8)["exit"] == "fault"
        print("ran", flush=True)
        ctypes.string_at(0)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.stdout == "ran\n"
    assert proc.returncode == -11, proc.stderr
    assert "Segmentation fault" in proc.stderr          # faulthandler's report: the chain reached it
