"""engine="jit" against engine="interp" (issue 10): the same guest gives the same console, exit,
instruction count and final state under both, and the JIT really ran it.

The guests: every workload at its tiny size in bare, bt and trap; small NASM guests for the JIT's
exits (self-modifying code, data written on a code page, open bus past RAM, a load that wraps at
4 GiB); budget slices that stop inside translated blocks; and the random programs of the host-CPU
differential (tests/hostdiff) through the JIT with every block translated on first sight, against
the host CPU and against the interpreter.

    VMCORE_JIT_HOST_DIFF_INSNS=5000000 pytest tests/test_jit_engine.py     # a longer campaign
"""
from __future__ import annotations

import os

import pytest

import vmcore
from vmcore import workloads
from vmcore.machine import Exit

from nasm_guests import assemble_text

REGS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip", "eflags")
CODE_GPA = 0x10000
STACK_TOP = 0x80000


def machine(engine: str, mode: str = "bare", memory_mb: int = 16, threshold: int | None = None,
            paged_always: bool = False):
    m = vmcore.Machine(memory_mb=memory_mb, mode=mode, engine=engine)
    if threshold is not None and engine == "jit":
        m._engine.jit_threshold = threshold
    if paged_always and engine == "jit":
        m._engine.jit_paged_min_interval = 0       # paged code translated however often the TLB is flushed
    return m


def final_state(m, r) -> dict:
    state = {n: m.reg_read(n) for n in REGS}
    state.update(exit=r.exit, exit_code=r.exit_code, instructions=r.instructions, console=r.console)
    return state


# ---- workloads ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["bare", "bt", "trap"])
@pytest.mark.parametrize("name", sorted(workloads.WORKLOADS))
def test_workload_same_under_both_engines(name, mode):
    w = workloads.WORKLOADS[name]
    size = w.sizes["tiny"]
    results = {}
    for engine in ("interp", "jit"):
        m = machine(engine, mode, w.memory_mb)
        m.load_multiboot(workloads.guest_elf(name), cmdline=workloads.guest_cmdline(size))
        r = m.run(timeout=120)
        results[engine] = (final_state(m, r), m.stats)
    interp, jit = results["interp"][0], results["jit"][0]
    assert jit["exit"] is Exit.DEBUG_EXIT and jit["exit_code"] == 1, jit["console"]
    assert jit == interp
    stats = results["jit"][1]
    assert stats["jit_blocks_translated"] > 0
    if name == "nbody":
        # x87 instructions are not translated: the floating-point loop runs in the interpreter
        assert stats["jit_instructions"] > 0, stats
    else:
        # most of the run was host code: the workloads are flat 32-bit code with paging off
        assert stats["jit_instructions"] > 0.5 * stats["instructions"], stats
    assert "jit_instructions" not in results["interp"][1]


# ---- the guest kernel: paging, processes, copy-on-write ----------------------------------------

KERNEL_RUNS = {"sieve": 300000, "qsort": 20000, "forkwait": 50, "pingpong": 100, "touchpages": 200}


@pytest.mark.parametrize("mode", ["bare", "bt"])
@pytest.mark.parametrize("name", sorted(KERNEL_RUNS))
def test_kernel_program_same_under_both_engines(name, mode):
    """User programs under the guest kernel: paged code through the JIT's two views, filled on
    hidden faults and flushed with the TLB (every block translated at once, and however often the
    TLB is flushed, so the paged path runs as much as it can)."""
    results = {}
    for engine in ("interp", "jit"):
        m = machine(engine, mode, 64, threshold=1, paged_always=True)
        m.load_multiboot(workloads.kernel_elf(), cmdline=workloads.kernel_cmdline(run={name: KERNEL_RUNS[name]}))
        r = m.run(timeout=120)
        results[engine] = (final_state(m, r), m.stats)
    interp, jit = results["interp"][0], results["jit"][0]
    assert jit["exit"] is Exit.DEBUG_EXIT and jit["exit_code"] == 1, jit["console"][-2000:]
    assert jit == interp
    s = results["jit"][1]
    assert s["jit_faults_hidden"] > 0 and s["jit_view_flushes"] > 0
    assert s["jit_instructions"] > 0.5 * s["instructions"], s


def test_paged_code_waits_for_a_quiet_tlb():
    """With the default gate, a ping-pong between processes (an address-space switch every few
    thousand instructions) stays in the interpreter, and a compute program in its process does not."""
    for name, size, translated in (("pingpong", 300, False), ("sieve", 2000000, True)):
        m = machine("jit", "bare", 64)
        m.load_multiboot(workloads.kernel_elf(), cmdline=workloads.kernel_cmdline(run={name: size}))
        r = m.run(timeout=120)
        assert r.exit is Exit.DEBUG_EXIT and r.exit_code == 1
        s = m.stats
        paged_share = s["jit_faults_hidden"] > 0 and s["jit_instructions"] > 0.5 * s["instructions"]
        assert paged_share == translated, (name, s)


# ---- the NASM system guests (tests/guests) --------------------------------------------------------

SYSTEM_GUESTS = ("boot_pm", "exceptions", "paging", "rings", "sensitive", "tasks", "triple_fault", "v86")


@pytest.mark.parametrize("mode", ["bare", "bt", "trap"])
@pytest.mark.parametrize("name", SYSTEM_GUESTS)
def test_system_guest_same_under_both_engines(name, mode):
    """Real mode, protected mode, rings, task switches, paging, virtual-8086 and the sensitive-
    instruction guest: what runs flat 32-bit is translated at once (threshold 1), the rest is
    interpreted, and the guest must not see the difference."""
    from nasm_guests import boot

    results = {}
    for engine in ("interp", "jit"):
        m, r = boot(name, mode=mode, engine=engine, count=10**8, timeout=60,
                    setup=lambda m: machine_setup_for_test(m, engine))
        results[engine] = (final_state(m, r), m.stats)
    assert results["jit"][0] == results["interp"][0]


def machine_setup_for_test(m, engine):
    if engine == "jit":
        m._engine.jit_threshold = 1
        m._engine.jit_paged_min_interval = 0


# ---- guests for the JIT's exits ---------------------------------------------------------------

def run_nasm(source: str, name: str, engine: str, count: int = 10**7, threshold: int | None = None,
             gates: bool = False):
    """``gates``: the JIT's default gates (paged code after quiet TLBs, a pause after many faults);
    without, every exit these guests are written for is taken in host code."""
    code = assemble_text("bits 32\norg 0x%x\n" % CODE_GPA + source, name, kind="jit-guests")
    m = machine(engine, threshold=threshold, paged_always=not gates)
    m.mem_write(CODE_GPA, code)
    m.reg_write("eip", CODE_GPA)
    m.reg_write("esp", STACK_TOP)
    r = m.run(count=count, timeout=60)
    return m, r


def both(source: str, name: str, expect=Exit.HLT, **kw):
    mi, ri = run_nasm(source, name, "interp", **kw)
    mj, rj = run_nasm(source, name, "jit", **kw)
    assert ri.exit is expect, (ri.exit, ri.reason)
    assert final_state(mj, rj) == final_state(mi, ri)
    assert mj.mem_read(0, 0x100000) == mi.mem_read(0, 0x100000)
    return mi, mj


SMC = """
start:
    xor eax, eax
    mov ecx, 20000
    mov ebx, 1
again:
patch:
    add eax, 0x11111111
    dec ecx
    jz done
    test ecx, 1023
    jnz again
    inc ebx
    mov [patch + 1], ebx        ; the loop rewrites its own immediate
    jmp again
done:
    hlt
"""


def test_self_modifying_loop():
    # threshold 1: the patching block is translated too (with the default it is re-decoded after
    # each patch and never gets hot)
    mi, mj = both(SMC, "smc", threshold=1)
    # what the patched immediates add up to
    eax, ebx, imm = 0, 1, 0x11111111
    for ecx in range(20000, 0, -1):
        eax = (eax + imm) & 0xFFFFFFFF
        if ecx - 1 == 0:
            break
        if (ecx - 1) & 1023 == 0:
            ebx += 1
            imm = ebx
    assert mj.reg_read("eax") == eax
    s = mj.stats
    assert s["jit_faults_traced"] >= 19          # every patch is a write to a page of translated code
    assert s["jit_flushes"] >= 19
    assert s["smc_invalidations"] >= 19


DATA_ON_CODE_PAGE = """
start:
    mov ecx, 3000
again:
    add dword [counter], 3      ; data on the page of the loop, in another 64-byte chunk
    dec ecx
    jnz again
    mov eax, [counter]
    hlt
    align 128
counter: dd 5
"""


def test_data_written_on_a_code_page():
    mi, mj = both(DATA_ON_CODE_PAGE, "data-on-code-page")
    assert mj.reg_read("eax") == 5 + 3 * 3000
    s = mj.stats
    assert s["jit_faults_traced"] > 0
    assert s["smc_invalidations"] == 0           # the code chunks were not written
    assert s["jit_interp_handoffs"] > 0


OPEN_BUS = """
start:
    mov ecx, 500
    xor edx, edx
again:
    mov eax, [0xF0000000]       ; past RAM: reads float high
    add edx, eax
    mov [0xF0000010], ecx       ; and writes vanish
    movzx eax, word [0xFFFFFFFE]    ; the last two bytes below 4 GiB: open bus
    add edx, eax
    mov ebx, 0xFFFFFFF0
    mov eax, [ebx + 0x14]       ; the offset wraps at 4 GiB, to 4
    add edx, eax
    dec ecx
    jnz again
    hlt
"""


def test_open_bus_and_the_4gib_wrap():
    mi, mj = both(OPEN_BUS, "open-bus")
    s = mj.stats
    # each iteration's first access faults; the interpreter runs the rest of that block
    assert s["jit_faults_unmapped"] >= 400
    assert s["unmapped_reads"] == mi.stats["unmapped_reads"]
    assert s["unmapped_writes"] == mi.stats["unmapped_writes"] == 500


def test_a_guest_that_keeps_faulting_pauses_the_jit():
    """With the default gates, host code that faults out again and again (each a signal, ~3 us) hands
    the guest to the interpreter for a while: fewer faults, the same result."""
    mi, ri = run_nasm(OPEN_BUS, "open-bus", "interp", gates=True)
    mj, rj = run_nasm(OPEN_BUS, "open-bus", "jit", gates=True)
    assert final_state(mj, rj) == final_state(mi, ri)
    s = mj.stats
    assert s["jit_pauses"] >= 1
    assert 0 < s["jit_faults_unmapped"] < 200


PAST_THE_LIMIT = """
start:
    mov ecx, 100
    mov ebx, 0x20000
again:
    add eax, [ebx]
    dec ecx
    jnz again
    mov ebx, 0xFFFFFFF0
    mov eax, [ebx + 14]         ; 4 bytes at 0xFFFFFFFE: past the flat limit, #GP (SDM Vol. 3 §5.3)
    hlt
"""


def test_access_past_the_flat_limit_is_a_gp():
    """Host code wraps such an access into the window's guard; the interpreter raises the #GP."""
    mi, mj = both(PAST_THE_LIMIT, "past-the-limit", expect=Exit.SHUTDOWN, threshold=1)
    assert "#GP" in run_nasm(PAST_THE_LIMIT, "past-the-limit", "jit", threshold=1)[1].reason
    assert mj.stats["jit_faults_unmapped"] == 1
    assert mj.stats["jit_instructions"] >= 2 + 3 * 100


CALLS = """
start:
    mov ecx, 4000
    xor eax, eax
    mov esi, table
again:
    call leaf
    call [esi]                  ; indirect, through memory
    mov edx, leaf2
    call edx                    ; indirect, through a register
    loop again
    hlt
leaf:
    add eax, 7
    ret
leaf2:
    xor eax, 0x5A5A
    ret 0
table: dd leaf2
"""


def test_calls_and_returns():
    mi, mj = both(CALLS, "calls")
    s = mj.stats
    assert s["jit_instructions"] > 0.9 * s["instructions"]
    # returns find their targets in the indirect-branch table, not through the run loop
    assert s["jit_exits_indirect"] < 100


STRINGS = """
start:
    mov edx, 200
again:
    cld
    mov esi, src
    mov edi, 0x30000
    mov ecx, 37
    rep movsb                   ; forward, bytes
    mov ecx, 9
    rep movsd
    std
    mov esi, src + 60
    mov edi, 0x30400
    mov ecx, 15
    rep movsd                   ; backward, dwords
    cld
    mov edi, 0x30800
    mov ax, 0xBEEF
    mov ecx, 33
    rep stosw
    mov esi, src
    mov edi, 0x30000
    mov ecx, 64
    repe cmpsb                  ; stops where the copies differ
    mov ebx, ecx
    mov edi, src
    mov al, 0x2A
    mov ecx, 64
    repne scasb                 ; finds the 0x2A
    add ebx, ecx
    mov esi, src
    lodsd
    add ebx, eax
    mov edi, 0x30C00
    movsb                       ; without REP, as in a byte-copy loop
    cmpsw
    scasb
    stosb
    dec edx
    jnz again
    hlt
src:
    db 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25
    db 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 0x2A, 42, 43, 44, 45, 46, 47, 48
    times 32 db 0x55
"""


def test_string_instructions():
    mi, mj = both(STRINGS, "strings", threshold=1)
    s = mj.stats
    assert s["jit_instructions"] > 0.9 * s["instructions"]


REP_INTO_OPEN_BUS = """
start:
    mov edx, 50
again:
    mov esi, 0x20000
    mov edi, 0x00FFFFF0         ; the last 16 bytes of the 16 MiB of RAM, then open bus
    mov ecx, 64
    rep movsd                   ; faults in host code after 4 elements; the interpreter finishes it
    dec edx
    jnz again
    hlt
"""


def test_rep_movs_running_off_the_end_of_ram():
    mi, mj = both(REP_INTO_OPEN_BUS, "rep-open-bus", threshold=1)
    assert mj.reg_read("edi") == 0x00FFFFF0 + 4 * 64
    assert mj.stats["jit_faults_unmapped"] >= 50


DIVIDE = """
start:
    mov ecx, 1000
    xor esi, esi
again:
    mov eax, 1000000
    xor edx, edx
    mov ebx, ecx
    sub ebx, 1                  ; 0 on the last round: #DE, which is a triple fault here (no IDT)
    div ebx
    add esi, eax
    mov eax, -7000
    cdq
    mov ebx, 7
    idiv ebx
    add esi, edx
    dec ecx
    jnz again
    hlt
"""


def test_divide_and_divide_error():
    mi, mj = both(DIVIDE, "divide", expect=Exit.SHUTDOWN, threshold=1)
    assert "#DE" in run_nasm(DIVIDE, "divide", "jit", threshold=1)[1].reason
    s = mj.stats
    assert s["jit_faults_divide"] == 1
    assert s["jit_instructions"] > 0.9 * s["instructions"]


COLLIDING_TARGETS = """
start:
    mov ecx, 3000
    xor eax, eax
again:
    mov edx, leaf_a
    call edx
    mov edx, leaf_b             ; 64 KiB after leaf_a: the same slot of the indirect-branch table
    call edx
    loop again
    hlt
leaf_a:
    add eax, 3
    ret
    times 0x10000 - ($ - leaf_a) db 0x90
leaf_b:
    lea eax, [eax + eax * 4]    ; (IMUL would leave SF ZF AF PF undefined, and host and interpreter differ there)
    ret
"""


def test_indirect_targets_sharing_a_table_slot():
    mi, mj = both(COLLIDING_TARGETS, "colliding-targets")
    eax = 0
    for _ in range(3000):
        eax = ((eax + 3) * 5) & 0xFFFFFFFF
    assert mj.reg_read("eax") == eax
    s = mj.stats
    assert s["jit_instructions"] > 0.9 * s["instructions"]
    # the two targets evict each other from the slot: each call leaves to the run loop, which finds
    # the block and refills the slot
    assert s["jit_exits_indirect"] >= 2 * 3000 - 100


def test_budget_slices_stop_inside_translated_code():
    """run(count=k) over and over: every stop is at the same instruction with the same state."""
    w = workloads.WORKLOADS["sieve"]
    states = {}
    for engine in ("interp", "jit"):
        m = machine(engine, "bare", w.memory_mb)
        m.load_multiboot(workloads.guest_elf("sieve"), cmdline=workloads.guest_cmdline(w.sizes["tiny"]))
        seen = []
        while True:
            r = m.run(count=7919)
            seen.append((r.exit, r.instructions, {n: m.reg_read(n) for n in REGS}))
            if r.exit is not Exit.BUDGET:
                break
        states[engine] = seen
        if engine == "jit":
            assert m.stats["jit_exits_budget"] > 10
    assert len(states["jit"]) == len(states["interp"]) > 20
    for k, (a, b) in enumerate(zip(states["interp"], states["jit"])):
        assert a == b, f"slice {k}"


def test_engine_choice():
    with pytest.raises(vmcore.ConfigError, match="unknown engine"):
        vmcore.Machine(memory_mb=4, engine="tcg")
    m = vmcore.Machine(memory_mb=4, engine="jit")
    assert m.engine == "jit" and m._engine.jit_enabled
    with pytest.raises(ValueError):
        m._engine.jit_threshold = 0
    assert not vmcore.Machine(memory_mb=4, engine="interp")._engine.jit_enabled


# ---- isolation: the random-kernel-code fuzz through the JIT, canaries around its windows ---------

class WindowCanaries:
    """A page of known bytes right below and right above each of a machine's windows (where a
    window-relative access that escaped its 4 GiB + guard would land first), where that page is free:
    the kernel often places a machine's three windows back to back, so that a window's neighbour is
    another window's reservation, and only the outer edges take a canary."""

    PAGE = 4096

    def __init__(self, machine):
        import ctypes

        self.ct = ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long)
        self.pages = []
        map_fixed_noreplace = 0x100000
        for base, size in machine._engine.jit_windows():
            for at in (base - self.PAGE, base + size):
                got = libc.mmap(at, self.PAGE, 3, 0x22 | map_fixed_noreplace, -1, 0)     # RW, private anon
                if got == at:
                    pattern = bytes((at >> 12 ^ k * 131) & 0xFF for k in range(self.PAGE))
                    ctypes.memmove(at, pattern, self.PAGE)
                    self.pages.append((at, pattern))

    def check(self):
        for at, pattern in self.pages:
            assert self.ct.string_at(at, self.PAGE) == pattern, f"canary at {at:#x} changed"


@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_fuzz_random_kernel_code_through_the_jit(mode):
    """tests/test_isolation.py's fuzz (random guest-kernel code biased towards sensitive
    instructions, paging, page tables aimed outside RAM) with every block translated the first time
    it runs and paged code translated however often the TLB is flushed; the isolation checks of the
    fuzz itself, and canaries beside every window of every machine it made."""
    import isolation_guest as ig

    made = []

    def make_machine(**kw):
        m = machine("jit", kw.pop("mode"), kw.pop("memory_mb"), threshold=1, paged_always=True)
        made.append((m, WindowCanaries(m)))
        return m

    report = ig.fuzz(mode, 20261204, 1_000_000, per_run=20_000, run_timeout=5, memory_mb=4,
                     make_machine=make_machine)
    assert report.instructions >= 1_000_000
    assert report.paging_rounds > 0
    # the fuzz code is mostly privileged, sensitive and I/O instructions, which the interpreter runs:
    # about a tenth of it is host code
    jit_insns = sum(m._engine.jit_stats()["jit_instructions"] for m, _ in made)
    print(f"{report.summary()}; {jit_insns} instructions as host code")
    assert jit_insns > 0.05 * report.instructions, (jit_insns, report.summary())
    assert sum(len(c.pages) for _, c in made) > 0, "no room beside any window for a canary"
    for _, canaries in made:
        canaries.check()


# ---- the Unicorn differential through the JIT ---------------------------------------------------

def test_unicorn_differential_through_the_jit(monkeypatch):
    """tests/test_diff_unicorn.py's random programs on a JIT machine that translates every block the
    first time it runs, against Unicorn."""
    pytest.importorskip("unicorn")
    import test_diff_unicorn as tdu

    cache = {"m": None, "jit_instructions": 0}

    def vm_machine():
        if cache["m"] is None:
            cache["m"] = machine("jit", "bare", 16, threshold=1)
        else:
            cache["m"].mem_write(0, bytes(tdu.COMPARE[1]))
        return cache["m"]

    def run_vmcore(p):
        m = vm_machine()
        tdu.vm_setup(p, m)
        before = m._engine.jit_stats()["jit_instructions"]
        r = m.run(count=2_000_000)
        cache["jit_instructions"] += m._engine.jit_stats()["jit_instructions"] - before
        if r.exit != Exit.HLT:
            cache["m"] = None
        return tdu.vm_state(m, r)

    monkeypatch.setattr(tdu, "run_vmcore", run_vmcore)
    executed, programs, failures = tdu.run_campaign(7_700_000, 300_000)
    assert not failures, "\n\n".join(failures)
    assert cache["jit_instructions"] > executed // 4, (cache["jit_instructions"], executed)


# ---- random programs (tests/hostdiff) through the JIT ------------------------------------------

DEFAULT_DIFF_INSNS = 1_000_000


def _diff_budget() -> int:
    return int(float(os.environ.get("VMCORE_JIT_HOST_DIFF_INSNS", DEFAULT_DIFF_INSNS)))


@pytest.fixture
def jit_harness():
    from hostdiff import harness

    try:
        harness.build_runner()
    except harness.RunnerUnavailable as e:
        pytest.skip(str(e))
    harness.use_engine("jit")
    yield harness
    harness.use_engine("interp")


def test_random_programs_through_the_jit_match_the_host(jit_harness):
    res = jit_harness.campaign(first_seed=900_000, target_insns=_diff_budget())
    assert not res.failures, "\n\n".join(res.failures)
    assert res.executed >= _diff_budget()
    # how much of it ran as host code (the rest: what the re-encoder leaves to the interpreter)
    assert jit_harness._vm["jit_instructions"] > res.executed // 4


def test_random_programs_jit_equals_interpreter(jit_harness):
    """The same programs from the same state on both engines: registers, all of EFLAGS but the
    flags the SDM leaves undefined after the last writer, exceptions and memory."""
    from hostdiff import gen

    harness = jit_harness

    def fresh(engine):
        return machine(engine, "bare", harness.MEMORY_MB, threshold=1 if engine == "jit" else None)

    machines = {"interp": fresh("interp"), "jit": fresh("jit")}
    executed = translated = 0
    seed = 1_300_000
    mismatches = []
    while executed < _diff_budget() and len(mismatches) < 3:
        p = gen.generate(seed)
        seed += 1
        states = {}
        for engine, m in machines.items():
            harness.vm_setup(m, p)
            r = m.run(count=harness.VM_BUDGET)
            states[engine] = harness.vm_state(m, p, r)
            if engine == "jit":
                translated += m._engine.jit_stats()["jit_instructions"]
            if r.exit is not Exit.HLT:
                machines[engine] = fresh(engine)     # the next program starts on a clean machine
        a, b = states["interp"], states["jit"]
        executed += a.instructions
        diff = harness.differences(b, a, p.final_undef)
        if diff or a.instructions != b.instructions:
            mismatches.append(f"seed {p.seed}: {diff} {a.instructions} vs {b.instructions} instructions\n"
                              + harness.listing(p))
    assert not mismatches, "\n".join(mismatches)
    assert translated > executed // 4
