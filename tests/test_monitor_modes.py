"""Every guest that runs in ``bare`` produces the same console output and checksums in ``bt``
(issue 5, "Must show"), and ``machine.stats`` shows the monitor at work while it does.

The guests are the ones the other tests run in ``bare``, at the same (tiny) sizes:

* each compute workload on its own (``workloads/<name>.c``; tests/test_workloads_guest.py);
* the guest kernel (tests/test_kernel.py): every compute workload at once as ring-3
  processes, each kernel workload (forkwait, pingpong, touchpages), the nanobenchmarks and
  the ring-3 probes;
* the NASM system guests (tests/guests/*.asm; tests/test_system_guests.py), which start in
  real mode and build their own descriptor tables, page tables, rings, tasks and v86 code.

Each runs once per mode (the outcomes are cached for the module). The ``bare`` half checks
that the reference itself is right (native output, the guest's own pass status); the ``bt``
half checks that ``bt`` ends the same way (exit kind, exit code, the exception of a triple
fault), prints exactly the same console and so the same checksums, and that the monitor's
counters show it was involved: translations for kernel code, hidden faults and shadow fills
for a guest that pages, true faults for one that takes page faults, traced page-table writes,
callouts, traps, reflections and reused shadows for the guest kernel.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
from collections.abc import Callable

import pytest

import vmcore
from vmcore import cli, workloads

import nasm_guests
from test_kernel import COMPUTE, KERNEL, NANO, PROBES

# Budgets that only stop a runaway guest: in bare the largest of these runs is ~4e6
# instructions and a few hundredths of a second.
WORKLOAD_COUNT, KERNEL_COUNT, NASM_COUNT = 100_000_000, 200_000_000, 10_000_000
TIMEOUT_SECONDS = 30

MONITOR_STATS = ("mon_translations", "mon_translation_misses", "mon_translations_invalidated", "mon_classified",
                 "mon_adaptive_retranslations", "mon_adaptive_calls", "callouts", "traps", "reflections", "hidden_faults", "true_faults", "traced_writes", "shadow_fills",
                 "shadows_reused", "shadows_dropped")
"""The monitor's counters in ``machine.stats`` under ``bt`` (flat ints), besides ``callout_<kind>``
and ``trap_<kind>``."""


# ---- the guests ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Guest:
    id: str
    run: Callable[[str], tuple[vmcore.Machine, vmcore.RunResult]]
    """Runs the guest in a machine of the given mode: (machine, result)."""
    exit: vmcore.Exit
    exit_code: int | None
    """How the guest ends in bare (its own pass status)."""
    native: tuple[tuple[str, int], ...] = ()
    """Native programs (name, size) whose output lines the console must show."""
    kernel: bool = False
    """The guest kernel: processes, paging, system calls, timer interrupts."""
    whole_console_is_native: bool = False
    """A workload on its own: its console is exactly its native output."""
    monitor_busy: tuple[str, ...] = ()
    """Counters that must be positive under bt besides those every guest of its kind needs."""


def _multiboot(elf: Callable[[], object], cmdline: str, memory_mb: int, count: int):
    """A runner for a multiboot guest; ``elf`` builds (or finds in the cache) its ELF."""
    def run(mode):
        m = vmcore.Machine(memory_mb=memory_mb, mode=mode)
        m.load_multiboot(elf(), cmdline=cmdline)
        return m, m.run(count=count, timeout=TIMEOUT_SECONDS)
    return run


def _workload(name: str) -> Guest:
    w = workloads.WORKLOADS[name]
    return Guest(name, _multiboot(functools.partial(workloads.guest_elf, name),
                                  workloads.guest_cmdline(COMPUTE[name]), max(64, w.memory_mb), WORKLOAD_COUNT),
                 vmcore.Exit.DEBUG_EXIT, 1, native=((name, COMPUTE[name]),), whole_console_is_native=True)


def _kernel(id_: str, cmdline: str, exit_code: int = 1, native=(), busy=()) -> Guest:
    return Guest(id_, _multiboot(workloads.kernel_elf, cmdline, 64, KERNEL_COUNT), vmcore.Exit.DEBUG_EXIT,
                 exit_code, native=tuple(native), kernel=True, monitor_busy=tuple(busy))


def _nasm(name: str) -> Guest:
    def run(mode):
        return nasm_guests.boot(name, count=NASM_COUNT, timeout=TIMEOUT_SECONDS, mode=mode)
    if name == "triple_fault":          # it shuts the processor down on purpose
        return Guest(f"nasm-{name}", run, vmcore.Exit.SHUTDOWN, None)
    return Guest(f"nasm-{name}", run, vmcore.Exit.DEBUG_EXIT, 1)        # status 0: every check passed


NASM_GUESTS = sorted(p.stem for p in nasm_guests.GUESTS.glob("*.asm"))

GUESTS = {g.id: g for g in (
    *(_workload(name) for name in COMPUTE),
    _kernel("kernel-compute", workloads.kernel_cmdline(run=COMPUTE), native=COMPUTE.items()),
    *(_kernel(f"kernel-{name}", workloads.kernel_cmdline(run={name: size}), native=[(name, size)],
              busy=("shadows_reused",) if name == "pingpong" else ())        # two processes, CR3 back and forth
      for name, size in KERNEL.items()),
    _kernel("kernel-nano", workloads.kernel_cmdline(nano=NANO),
            busy=("shadows_reused",)),                                       # the cr3 nanobenchmark: two PDs
    _kernel("kernel-probes", workloads.kernel_cmdline(run=[("probe", op) for op in PROBES]), exit_code=3),
    *(_nasm(name) for name in NASM_GUESTS),
)}


# ---- running them, once per mode ------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Outcome:
    result: vmcore.RunResult
    stats: dict


@functools.cache
def outcome(guest_id: str, mode: str) -> Outcome:
    """``mode`` is a Machine mode, or "bt:scanner" for bt with the Python scanner as classifier
    (Machine's default classifier is the engine's decode-time table)."""
    mode, _, classifier = mode.partition(":")
    saved = os.environ.get("VMCORE_CLASSIFIER")
    os.environ["VMCORE_CLASSIFIER"] = classifier or vmcore.machine.DEFAULT_CLASSIFIER
    try:
        m, r = GUESTS[guest_id].run(mode)
    finally:
        if saved is None:
            del os.environ["VMCORE_CLASSIFIER"]
        else:
            os.environ["VMCORE_CLASSIFIER"] = saved
    return Outcome(r, m.stats)


@functools.cache
def native_output(name: str, size: int) -> str:
    n = workloads.run_native(name, size)
    assert n.returncode == 0, n.output
    return n.output


def checksums(console: str) -> list[str]:
    return re.findall(r"^(\S+) size=(\d+) checksum=(0x[0-9a-f]{8})$", console, re.M)


def _describe(r: vmcore.RunResult) -> str:
    return (f"{r.exit.value} code={r.exit_code} exception={r.exception} after {r.instructions:,} instructions "
            f"({r.reason})")


# ---- bare: the reference ----------------------------------------------------------------------

@pytest.mark.parametrize("guest_id", list(GUESTS))
def test_bare_reference(guest_id):
    g = GUESTS[guest_id]
    r = outcome(guest_id, "bare").result
    assert (r.exit, r.exit_code) == (g.exit, g.exit_code), f"{_describe(r)}\n{r.console}"
    lines = r.console.splitlines(keepends=True)
    for name, size in g.native:
        assert native_output(name, size) in lines, (name, r.console)
    if g.whole_console_is_native:
        assert r.console == native_output(*g.native[0])


# ---- bt: the same as bare ---------------------------------------------------------------------

@pytest.mark.parametrize("guest_id", list(GUESTS))
def test_bt_runs_the_guest_as_bare_does(guest_id):
    bare, bt = outcome(guest_id, "bare").result, outcome(guest_id, "bt").result
    problems = []
    if (bt.exit, bt.exit_code, bt.exception) != (bare.exit, bare.exit_code, bare.exception):
        problems.append(f"bare ended {_describe(bare)}\nbt   ended {_describe(bt)}")
    if bt.console != bare.console:
        diff = "".join(difflib.unified_diff(bare.console.splitlines(keepends=True),
                                            bt.console.splitlines(keepends=True), "bare", "bt"))
        problems.append(f"the consoles differ:\n{diff}")
    assert not problems, f"{guest_id}: " + "\n".join(problems)
    # the checksums, explicitly: the same as bare's and as the native builds'
    assert checksums(bt.console) == checksums(bare.console)
    expected = [c for name, size in GUESTS[guest_id].native for c in checksums(native_output(name, size))]
    assert sorted(c for c in checksums(bt.console) if c in expected) == sorted(expected)


@pytest.mark.parametrize("guest_id", list(GUESTS))
def test_bt_stats_show_the_monitor_at_work(guest_id):
    g = GUESTS[guest_id]
    bare, bt = outcome(guest_id, "bare"), outcome(guest_id, "bt")
    # every guest runs kernel (CPL 0) code: classified at decode time (the default) or scanned
    busy = {"mon_classified" if vmcore.machine.DEFAULT_CLASSIFIER == "engine" else "mon_translations"}
    if bare.stats.get("page_walks", 0):                  # paging was on: shadow page tables at work
        busy |= {"hidden_faults", "shadow_fills"}
    if bare.stats.get("page_faults", 0):                 # the guest took page faults of its own
        busy.add("true_faults")
    if g.kernel:                                         # page-table writes, CLI/STI, MOV CR3, ring 3
        busy |= {"traced_writes", "callouts", "traps", "reflections"}
    busy |= set(g.monitor_busy)
    missing = sorted(k for k in MONITOR_STATS if k not in bt.stats)
    assert not missing, f"machine.stats under bt lacks {missing}"
    idle = {k: bt.stats[k] for k in sorted(busy) if not bt.stats[k] > 0}
    assert not idle, (f"{guest_id}: under bt these counters stayed at zero: {idle}; "
                      f"monitor counters: { {k: bt.stats[k] for k in MONITOR_STATS} }")


@pytest.mark.parametrize("guest_id", [g.id for g in GUESTS.values() if g.kernel or g.id.startswith("nasm-")])
def test_bt_classifiers_give_the_same_actions(guest_id):
    """The engine's decode-time classification and the capstone scanner decide the same for every
    guest-kernel instruction: the run is the same instruction for instruction (count, console,
    exit) and every callout and trap kind is counted the same. (A misread table entry once made
    ordinary ModRM instructions callouts: INVLPG stopped trapping, a counter past n_callouts was
    written.)"""
    engine, scanner = outcome(guest_id, "bt"), outcome(guest_id, "bt:scanner")
    assert (engine.result.exit, engine.result.exit_code, engine.result.instructions, engine.result.console) == \
        (scanner.result.exit, scanner.result.exit_code, scanner.result.instructions, scanner.result.console)
    kinds = sorted(k for k in scanner.stats
                   if k.startswith(("callout", "trap", "mon_adaptive")) or k == "reflections")
    differ = {k: (engine.stats[k], scanner.stats[k]) for k in kinds if engine.stats[k] != scanner.stats[k]}
    assert not differ, f"{guest_id}: (engine, scanner) counts differ: {differ}"
    assert engine.stats["mon_classified"] > 0 and engine.stats["mon_translations"] == 0
    assert scanner.stats["mon_translations"] > 0 and scanner.stats["mon_classified"] == 0


def test_bt_stats_are_flat_ints_with_kinds_that_add_up():
    stats = outcome("kernel-nano", "bt").stats
    bad = {k: v for k, v in stats.items() if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int)}
    assert not bad
    for total, prefix in (("callouts", "callout_"), ("traps", "trap_")):
        kinds = {k: v for k, v in stats.items() if k.startswith(prefix)}
        assert any(kinds.values()), (total, kinds)       # the kernel does CLI/STI, MOV CR3, LIDT, ...
        assert stats[total] == sum(kinds.values()), (total, stats[total], kinds)


# ---- the command line -------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["bare", "bt", "trap"])
def test_run_accepts_every_mode(mode):
    args = cli.build_parser().parse_args(["run", "--mode", mode, "sieve"])
    assert args.mode == mode


def test_run_rejects_an_unknown_mode(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "--mode", "kvm", "sieve"])
    assert "bare" in capsys.readouterr().err


def test_run_help_lists_the_modes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(mode in text for mode in ("bare", "bt", "trap")), text


def test_run_in_bt_prints_what_bare_prints(capsys):
    status = cli.main(["run", "sieve", "--size", "tiny", "--mode", "bt", "--no-native"])
    out, err = capsys.readouterr()
    assert status == 0, out + err
    assert "MiB bt machine" in out
    assert outcome("sieve", "bare").result.console in out
