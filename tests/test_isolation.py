"""Isolation (ARCHITECTURE.md, requirement 1): a malicious guest kernel cannot read or write outside its
own memory, change another machine or the host, or crash or hang the host process, in ``bt`` and
in ``bare``; and where ``bt`` is tested, the guest sees exactly what ``bare`` shows it.

1. Fuzz: biased random bytes run as guest-kernel code (CPL 0, flat 32-bit protected mode, as a new
   Machine starts), with an IDT whose gates land back in random code or in a handler that jumps to
   fresh random code. Every run must return a RunResult with a known Exit and a reason; the stats
   stay sane counters; another Machine created before holds exactly its RAM pattern afterwards, and
   so do host arrays allocated around the guest's RAM. The rounds and the stub are in
   tests/isolation_guest.py. VMCORE_FUZZ_INSNS raises the instruction total (at least 1,000,000),
   VMCORE_FUZZ_SEED picks the seed; ``-m slow`` runs a longer campaign over several seeds. A failure
   prints the command line that replays it (``python tests/isolation_guest.py fuzz ...``).
2. Directed malicious kernels (NASM sources in tests/isolation_guest.py):
   (a) page-table entries pointing outside guest RAM (gpa 0xF0000000, just past RAM, a page table
       outside RAM, 4 MiB pages at 0xFFC00000 and past RAM): reads give all ones, writes vanish;
   (b) segments with base 0 and base 0xFFC00000 (4 GiB limits) writing everywhere they reach, with
       and without paging, and code run through the wrapping CS;
   (c) garbage LGDT/LIDT, then a fault: a clean triple fault with a reason, and the machine still
       works afterwards;
   (d) a kernel that rewrites its own page tables while running through them (shadow tracing stress):
       its checksum equals a Python model of it, in bare and in bt.
   (e) port I/O at CPL 0 with paging on: the TSS (its I/O bitmap) is not consulted, so its page's
       accessed bit stays clear and it need not be mapped (bt runs the kernel at real CPL 1);
   (f) a REP INSB that overwrites itself (each element an I/O exit): a guest event, not an exception.
   Each runs in bare and bt; the bt run is compared with the bare run of the same guest: exit,
   exception, EIP, registers, control registers and all of RAM.
3. No guest holds run() past its timeout (a 4 G-element REP STOSD loop; a fault loop that rewrites
   its own handler's code), checked in a child process with a hard time limit.
4. Single-stepping (EFLAGS.TF) over the instructions the monitor emulates: #DB right after each, as
   in hardware (a late trap shows the guest that it runs deprivileged; found by the fuzz).
"""
from __future__ import annotations

import faulthandler
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import vmcore
from vmcore import Exit

import isolation_guest as ig

MODES = ("bare", "bt")
MEMORY_MB = 4
RAM_END = MEMORY_MB << 20
FUZZ_MIN_INSNS = 1_000_000
FUZZ_PER_RUN = 10_000
FUZZ_RUN_TIMEOUT = 10.0   # a guard against hangs only: REP I/O is bounded by a count of port accesses
DIRECTED_COUNT = 50_000_000
DIRECTED_TIMEOUT = 60.0
ALL_ONES = 0xFFFFFFFF


def new_machine(mode: str, memory_mb: int = MEMORY_MB, **kw) -> vmcore.Machine:
    return vmcore.Machine(memory_mb=memory_mb, mode=mode, **kw)


@pytest.fixture(params=MODES)
def mode(request):
    return request.param


@pytest.fixture
def victim(mode):
    """Another machine in the same process, with a known RAM pattern; checked after the test."""
    m = new_machine(mode)
    data = ig.pattern(0x71C71E, m.memory.size)
    m.mem_write(0, data.tobytes())
    state = ig.machine_state(m)
    yield m
    assert np.array_equal(m.memory, data), (
        f"the other machine's RAM changed at {np.count_nonzero(m.memory != data)} bytes, first at gpa "
        f"{int(np.flatnonzero(m.memory != data)[0]):#x}")
    assert ig.machine_state(m) == state, "the other machine's CPU state changed"


def watchdog(seconds: float):
    """A host hang is a failure too: dump every thread's stack and end the process after ``seconds``
    (a guest that keeps run() from returning cannot be stopped any other way)."""
    faulthandler.dump_traceback_later(seconds, exit=True)


def check_run(r, count: int = DIRECTED_COUNT) -> None:
    ig.check_result(r, count, "directed guest")


def check_sane_stats(m) -> None:
    ig.check_stats(m.stats, f"mode={m.mode}")


def run_directed(mode: str, binary: bytes, *, fill=(), param=None, count=DIRECTED_COUNT) -> ig.Outcome:
    m = new_machine(mode)
    ig.start_guest(m, binary, fill=fill, param=param)
    r = m.run(count=count, timeout=DIRECTED_TIMEOUT)
    check_run(r, count)
    check_sane_stats(m)
    return ig.finish(m, r)


def same_as_bare(out: ig.Outcome, binary: bytes, **kw) -> None:
    """bt must show the guest exactly what bare shows it."""
    if out.mode == "bare":
        return
    bare = run_directed("bare", binary, **kw)
    assert out.guest_view() == bare.guest_view(), ig.diff_outcomes(bare, out)


# ---- 1. fuzz -----------------------------------------------------------------------------------

def fuzz_insns() -> int:
    return max(FUZZ_MIN_INSNS, int(float(os.environ.get("VMCORE_FUZZ_INSNS", FUZZ_MIN_INSNS))))


def fuzz_seed() -> int:
    return int(os.environ.get("VMCORE_FUZZ_SEED", "20240601"), 0)


def _fuzz(mode: str, seed: int, insns: int):
    watchdog(120 + insns / 20_000)      # 1e6 instructions: ~13 s in bare, ~20 s in bt; a hang ends the session
    try:
        report = ig.fuzz(mode, seed, insns, per_run=FUZZ_PER_RUN, run_timeout=FUZZ_RUN_TIMEOUT,
                         memory_mb=MEMORY_MB, make_machine=lambda **kw: new_machine(**kw))
    finally:
        faulthandler.cancel_dump_traceback_later()
    print(report.summary())
    assert report.instructions >= insns
    # the fuzz reached what it is meant to: paging, triple faults, runs to the end of their budget
    assert report.paging_rounds > 0
    assert report.exits["shutdown"] > 0 and report.exits["budget"] > 0
    return report


def test_fuzz_random_kernel_code(mode):
    _fuzz(mode, fuzz_seed(), fuzz_insns())


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzz_random_kernel_code_long(mode, seed):
    """~2-4 minutes per seed and mode."""
    _fuzz(mode, seed, max(fuzz_insns(), 10_000_000))


def test_fuzz_round_is_reproducible():
    """A failure names its seed and round: the same seed must give the same rounds."""
    import random

    a = [ig.make_round(random.Random(7), i, ig.refresh_gpa()) for i in range(3)]
    b = [ig.make_round(random.Random(7), i, ig.refresh_gpa()) for i in range(3)]
    assert a == b


def test_fuzz_code_is_biased_towards_sensitive_instructions():
    """The random code holds the privileged and sensitive instructions often, next to plain bytes."""
    import random

    import capstone

    rng = random.Random(11)
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    wanted = {"mov": 0, "lgdt": 0, "lidt": 0, "iretd": 0, "retf": 0, "ljmp": 0, "lcall": 0, "popfd": 0,
              "int": 0, "invlpg": 0, "wrmsr": 0, "out": 0, "in": 0, "pushfd": 0, "sgdt": 0, "cli": 0,
              "sti": 0, "hlt": 0}
    for _ in range(20):
        code = ig.random_code(rng, ig.CODE_SIZE)
        for offset in range(0, len(code), 64):        # decode from many starting points
            for insn in md.disasm(code[offset:offset + 64], 0):
                if insn.mnemonic in wanted:
                    wanted[insn.mnemonic] += 1
    missing = [name for name, n in wanted.items() if n < 5]
    assert not missing, f"too rare in the fuzz code: {missing} ({wanted})"


# ---- 2a. page tables pointing outside RAM ------------------------------------------------------

def test_page_tables_pointing_outside_ram(mode, victim):
    binary = ig.assemble(ig.PT_OUTSIDE_SRC, "pt-outside-ram")
    m = new_machine(mode)
    ig.start_guest(m, binary)
    before = m.stats
    r = m.run(count=DIRECTED_COUNT, timeout=DIRECTED_TIMEOUT)
    check_run(r)
    assert r.exit is Exit.HLT, r.reason
    after = m.stats
    check_sane_stats(m)
    out = ig.finish(m, r)

    # every probe, paged and physical: read all ones, the write vanished, a byte write too
    n = len(ig.PT_OUTSIDE_PROBES)
    results = [out.result(i) for i in range(3 * n)]
    for k, addr in enumerate(ig.PT_OUTSIDE_PROBES):
        assert results[3 * k:3 * k + 3] == [ALL_ONES, ALL_ONES, 0xFFFF], f"paged probe at linear {addr:#x}"
    i = 3 * n
    assert out.result(i) == 0, "repe cmpsd found two unmapped ranges different"
    assert out.result(i + 1) == 0xFFFF3344, "dword straddling the end of RAM (RAM half first)"
    assert out.result(i + 2) == 0xAABBFFFF, "dword straddling into the last RAM page (RAM half second)"
    i += 3 + len(ig.PT_OUTSIDE_FRAMES) + 2                    # the PTEs and PDEs: compared with bare below
    for k, addr in enumerate(ig.PHYS_PROBES):
        assert [out.result(i + 3 * k + j) for j in range(3)] == [ALL_ONES, ALL_ONES, 0xFFFF], \
            f"physical probe at {addr:#x}"
    end = i + 3 * len(ig.PHYS_PROBES)
    assert out.result(0x3FF) == ig.RESULTS + 4 * end

    # RAM: only what the guest wrote on purpose changed
    expect = ig.ram_pattern().copy()
    expect[ig.GUEST_GPA:ig.GUEST_GPA + len(binary)] = np.frombuffer(binary, np.uint8)
    changed = np.flatnonzero(out.memory != expect)
    allowed = [(ig.RESULTS, ig.RESULTS + 0x1000), (0x10000, 0x13000), (ig.GUEST_STACK - 0x100, ig.GUEST_STACK),
               (0x5000, 0x5400), (0x3FFFFE, 0x400000), (0x3FF000, 0x3FF002)]
    stray = [int(g) for g in changed if not any(lo <= g < hi for lo, hi in allowed)]
    assert not stray, f"guest RAM changed outside what the guest wrote: {[hex(g) for g in stray[:8]]}"
    assert (out.memory[0x5000:0x5400] == 0xFF).all(), "rep movsd from outside RAM did not read all ones"
    assert out.memory[0x3FFFFE:0x400000].tobytes() == b"\x44\x33"
    assert out.memory[0x3FF000:0x3FF002].tobytes() == b"\xbb\xaa"

    # the monitor counted the accesses that went nowhere
    probes = len(ig.PT_OUTSIDE_PROBES) + len(ig.PHYS_PROBES)
    assert after["unmapped_reads"] - before["unmapped_reads"] >= 3 * probes
    assert after["unmapped_writes"] - before["unmapped_writes"] >= 2 * probes
    same_as_bare(out, binary)


# ---- 2b. segments that reach everywhere ---------------------------------------------------------

def test_segments_base_0_and_0xffc00000_write_everywhere(mode, victim):
    binary = ig.assemble(ig.SEGMENTS_SRC, "segments")
    out = run_directed(mode, binary)
    assert out.exit is Exit.HLT, out.reason
    mask = 0xFFFFFFFF

    # 1. paging off: the top 4 MiB of linear space is not RAM; ES offsets past it wrap into RAM
    assert out.result(0) == 0, f"the top 4 MiB did not read back all ones ({out.result(0)} dwords left)"
    assert out.result(2) == 0x1122FFFF, "a dword at linear 0xFFFFFFFE wraps into gpa 0"
    assert out.memory[0:2].tobytes() == b"\x22\x11"
    page_sum = 0
    for page in range(ig.SEG_PAGE_START, 1 << 32, 0x1000):
        page_sum += ((page ^ ig.SEG_MARK) if page < RAM_END else ALL_ONES)
    # 2. paging on: the top 4 MiB's first half is guest RAM at 0x200000, the second half nothing
    top_sum = sum(ig.TOP_MARK | i for i in range(512)) + 512 * ALL_ONES
    assert out.result(3) == page_sum & mask, "the sum over every page through GS (base 0)"
    assert out.result(4) == top_sum & mask, "the sum over the top 4 MiB through ES (base 0xFFC00000)"
    assert out.result(5) == ig.TOP_MARK, "the same RAM through GS at linear 0xFFC00008"
    # 3. code through CS base 0xFFC00000 (offsets wrap to linear addresses in RAM)
    assert out.result(6) == 0x0FF5E7
    assert out.result(7) >= 0x400000 + ig.GUEST_GPA

    words = out.memory.view(np.uint32)
    for page in range(ig.SEG_PAGE_START, RAM_END, 0x1000):
        if 0x200000 <= page < 0x400000 and ((page >> 12) & 0x3FF) * 4 == 8:
            continue                                      # overwritten by phase 2
        at = page + ((page >> 12) & 0x3FF) * 4
        assert words[at >> 2] == page ^ ig.SEG_MARK, f"the phase-1 write to page {page:#x}"
    for i in range(512):
        assert words[(0x200000 + i * 0x1000 + 8) >> 2] == ig.TOP_MARK | i, f"top 4 MiB page {i}"
    assert words[0x200000 >> 2] == 0x600DF00D and words[0x3FFFF0 >> 2] == 0x7A11F00D
    same_as_bare(out, binary)


# ---- 2c. garbage descriptor tables, then a fault ---------------------------------------------------

def garbage_fill():
    rng = np.random.default_rng(0x6A5BA6E)
    return [(ig.GARBAGE_GDT_GPA, rng.integers(0, 256, 0x20000, dtype=np.uint8).tobytes())]


@pytest.mark.parametrize("variant", sorted(ig.GARBAGE_VARIANTS))
def test_garbage_descriptor_tables_end_in_triple_fault(mode, variant, victim):
    binary = ig.assemble(ig.garbage_src(variant), f"garbage-{variant}")
    m = new_machine(mode)
    ig.start_guest(m, binary, fill=garbage_fill())
    r = m.run(count=1_000_000, timeout=DIRECTED_TIMEOUT)
    check_run(r, 1_000_000)
    assert r.exit is Exit.SHUTDOWN, f"{r.exit}: {r.reason}"
    assert "triple fault" in r.reason
    assert r.exception is not None and isinstance(r.exception, tuple)
    check_sane_stats(m)
    out = ig.finish(m, r)
    same_as_bare(out, binary, fill=garbage_fill(), count=1_000_000)
    # the machine still works: a fresh kernel loads and runs in it
    m.load_multiboot(ig.alive_image_path())
    r = m.run(count=1000, timeout=DIRECTED_TIMEOUT)
    assert r.exit is Exit.HLT, r.reason
    assert m.reg_read("eax") == 0x600D


# ---- 2d. page-table tracing stress -----------------------------------------------------------------

TRACE_ITERS = 4096


def test_page_table_rewrites_while_running_through_them(mode, victim):
    binary = ig.assemble(ig.TRACE_SRC, "trace")
    assert len(binary) <= 0x1000 - (ig.GUEST_GPA & 0xFFF), "the guest flips its own code page: keep it in one"
    frames = ig.trace_frame_pattern()
    fill = [(ig.TRACE_FRAMES, frames.tobytes())]
    m = new_machine(mode)
    ig.start_guest(m, binary, fill=fill, param=TRACE_ITERS)
    r = m.run(count=DIRECTED_COUNT, timeout=DIRECTED_TIMEOUT)
    check_run(r)
    assert r.exit is Exit.HLT, r.reason
    check_sane_stats(m)
    out = ig.finish(m, r)
    checksum, model_frames = ig.trace_model(TRACE_ITERS)
    assert out.result(1) == TRACE_ITERS
    assert out.result(0) == checksum, f"checksum {out.result(0):#x}, the model says {checksum:#x}"
    got = out.memory[ig.TRACE_FRAMES:ig.TRACE_FRAMES + ig.TRACE_NFRAMES * 0x1000].view(np.uint32)
    assert np.array_equal(got, model_frames.reshape(-1)), "the data frames differ from the model"
    if mode == "bt":
        assert m.stats.get("traced_writes", 0) > 0, "bt did not trace the guest's page-table writes"
    same_as_bare(out, binary, fill=fill, param=TRACE_ITERS)


# ---- no guest holds run() past its timeout --------------------------------------------------------

def _gdt_idt(handler_gla: int) -> list:
    """A flat GDT at 0x500, GDTR/IDTR images at 0x600/0x606, and an IDT at 0x2000 whose 256 interrupt
    gates all lead to handler_gla (the guest loads them with LGDT [0x600]; LIDT [0x606])."""
    gdt = bytes(8) + ig.descriptor(0, 0xFFFFF, 0x9A) + ig.descriptor(0, 0xFFFFF, 0x92)
    return [(0x500, gdt), (0x600, struct.pack("<HIHI", len(gdt) - 1, 0x500, 256 * 8 - 1, 0x2000)),
            (0x2000, ig.gate(0x08, handler_gla, 0x8E) * 256)]


HOLD_GUESTS = {
    # REP STOSD of 4 G dwords past the end of RAM, again and again
    "rep_stosd_4g": [(0x1000, bytes.fromhex(
        "b9 ff ff ff ff"        # 1000: mov ecx, 0xffffffff
        "bf 00 00 40 00"        # 1005: mov edi, 0x400000   (past the end of 4 MiB of RAM: writes vanish)
        "f3 ab"                 # 100a: rep stosd
        "eb f2"))],             # 100c: jmp 0x1000
    # a fault loop whose every delivery writes the interrupt frame next to the handler's code: each
    # delivery invalidates and re-decodes the handler
    "fault_loop_writing_its_handler": _gdt_idt(0x37E8) + [
        (0x37E8, bytes.fromhex(
            "bc 00 38 00 00"    # 37e8: mov esp, 0x3800   (the frame goes to 0x37f4..0x37ff)
            "0f 0b")),          # 37ed: ud2               (#UD: delivered to 37e8 again)
        (0x1000, bytes.fromhex(
            "0f 01 15 00 06 00 00"      # 1000: lgdt [0x600]
            "0f 01 1d 06 06 00 00"      # 1007: lidt [0x606]
            "bc 00 38 00 00"            # 100e: mov esp, 0x3800
            "0f 0b"))],                 # 1013: ud2
}


@pytest.mark.parametrize("guest", sorted(HOLD_GUESTS))
def test_no_guest_holds_run_past_its_timeout(mode, guest):
    """run(timeout=0.5) returns within a few seconds whatever the guest executes. Runs in a child process
    killed after ``hard_limit`` seconds, so a failing engine costs little time."""
    hard_limit = 5
    script = textwrap.dedent(f"""
        import time, vmcore
        m = vmcore.Machine(memory_mb={MEMORY_MB}, mode={mode!r})
        for gpa, data in {[(gpa, data.hex()) for gpa, data in HOLD_GUESTS[guest]]!r}:
            m.mem_write(gpa, bytes.fromhex(data))
        m.reg_write("eip", 0x1000)
        t = time.perf_counter()
        r = m.run(timeout=0.5)
        print(r.exit.value, round(time.perf_counter() - t, 2))
    """)
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=hard_limit)
    except subprocess.TimeoutExpired:
        pytest.fail(f"run(timeout=0.5) had not returned after {hard_limit} s ({guest})")
    assert proc.returncode == 0, proc.stderr
    exit_kind, seconds = proc.stdout.split()
    assert exit_kind == "timeout" and float(seconds) < 3, proc.stdout


# ---- self-modifying I/O: REP INSB over its own instruction --------------------------------------

REP_INS_SELF = bytes.fromhex(
    "bf 00 10 00 00"        # 1000: mov edi, 0x1000        (this code)
    "b9 10 00 00 00"        # 1005: mov ecx, 16
    "66 ba 55 00"           # 100a: mov dx, 0x55           (an unclaimed port: reads all ones)
    "f3 6c"                 # 100e: rep insb               (its 15th byte lands on this instruction)
    "fa f4")                # 1010: cli; hlt


def test_rep_ins_overwriting_itself(mode, victim):
    """Each iteration of a REP INS is an I/O exit; here the stores overwrite the REP INS itself. The run
    must still end as a guest event (no exception out of run()), and in bt exactly as in bare."""
    out = run_directed(mode, REP_INS_SELF, count=1000)
    assert out.exit in (Exit.SHUTDOWN, Exit.HLT, Exit.BUDGET), out.reason
    same_as_bare(out, REP_INS_SELF, count=1000)


# ---- port I/O at CPL 0 must not show that the kernel runs deprivileged ---------------------------

@pytest.mark.parametrize("variant", ig.IO_TSS_VARIANTS)
def test_io_at_cpl0_does_not_touch_the_tss(mode, variant, victim):
    """At CPL 0 the CPU never consults the TSS I/O bitmap (only when CPL > IOPL): the TSS page's accessed
    bit stays clear and the page need not be mapped. bt runs the kernel at real CPL 1; the guest must
    not see that (no accessed bit, no page fault on the TSS)."""
    binary = ig.assemble(ig.io_tss_src(variant), f"io-tss-{variant}")
    out = run_directed(mode, binary, count=100_000)
    assert out.exit is Exit.HLT, out.reason
    assert out.result(1) == ALL_ONES
    assert out.result(3) == 0, f"CR2 = {out.result(3):#x}: a page fault was taken"
    tss_pte = int(out.memory[0x11000 + 4 * (ig.IO_TSS_GPA >> 12):][:4].view(np.uint32)[0])
    assert tss_pte & 0x20 == 0, f"the TSS page's PTE {tss_pte:#x} has its accessed bit set"
    same_as_bare(out, binary, count=100_000)


# ---- single-stepping over the instructions the monitor emulates --------------------------------------

SINGLE_STEP_INSNS = {
    "lmsw_cx": "0f 01 f1",
    "mov_cr0_eax": "0f 22 c0",
    "mov_eax_cr0": "0f 20 c0",
    "mov_cr3_ecx": "0f 22 d9",        # CR3 = 0x174 with paging off
    "lgdt": "0f 01 15 00 06 00 00",
    "invlpg": "0f 01 3d 00 00 00 00",
    "clts": "0f 06",
    "wbinvd": "0f 09",
    "sgdt": "0f 01 05 00 07 00 00",
    "smsw_ax": "0f 01 e0",
    "cli": "fa",
    "pushfd": "9c",
    "in_al_80": "e4 80",
    "out_80_al": "e6 80",
    "out_dx_al": "ee",
    "rdmsr": "0f 32",
    "nop": "90",
}


@pytest.mark.parametrize("insn", sorted(SINGLE_STEP_INSNS))
def test_single_step_trap_after_an_emulated_instruction(mode, insn):
    """With EFLAGS.TF set, #DB comes right after each instruction (SDM Vol. 3 §17.3.1.4), whether or not
    the monitor emulates it: a late trap would show the guest that its kernel runs deprivileged.
    (Found by the fuzz: LMSW under TF, seed 20240601 round 45.)"""
    code = bytes.fromhex(SINGLE_STEP_INSNS[insn])
    prologue = bytes.fromhex(
        "0f 01 15 00 06 00 00"      # 1000: lgdt [0x600]
        "0f 01 1d 06 06 00 00"      # 1007: lidt [0x606]
        "bc 00 80 00 00"            # 100e: mov esp, 0x8000
        "b9 74 01 00 00"            # 1013: mov ecx, 0x174          (CR3 and RDMSR operands)
        "b8 11 00 00 00"            # 1018: mov eax, 0x11           (PE | ET: CR0 as it is)
        "68 02 01 00 00"            # 101d: push 0x102
        "9d")                       # 1022: popfd                   (TF = 1: #DB after the next instruction)
    tail = bytes.fromhex("90 90 fa f4")                         # nop; nop; cli; hlt
    guest = _gdt_idt(0x3000) + [(0x3000, bytes.fromhex(
        "8b 1c 24"                  # 3000: mov ebx, [esp]          (the EIP the exception pushed)
        "fa f4")),                  # 3003: cli; hlt
        (0x1000, prologue + code + tail)]
    m = new_machine(mode)
    for gpa, data in guest:
        m.mem_write(gpa, data)
    m.reg_write("eip", 0x1000)
    r = m.run(count=1000, timeout=DIRECTED_TIMEOUT)
    check_run(r, 1000)
    assert r.exit is Exit.HLT, r.reason
    after = 0x1000 + len(prologue) + len(code)
    assert m.reg_read("ebx") == after, (f"#DB (or a fault) pushed EIP {m.reg_read('ebx'):#x}; the instruction "
                                        f"after {insn} is at {after:#x}")
