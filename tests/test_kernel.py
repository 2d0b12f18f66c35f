"""The guest kernel (workloads/kernel) on vmcore: ring-3 processes in their own address
spaces, system calls, timer preemption through the PIC and PIT, demand-zero and copy-on-write
page faults, and the nanobenchmarks.

Every run boots the one kernel image (``workloads.kernel_elf()``, with every user program
embedded) and ends by the debug-exit port: status 0 (exit code 1) when every program exited
with 0. The kernel prints its counters at shutdown (``workloads.kernel_counters``).
"""
import pytest

import vmcore
from vmcore import workloads
from vmcore.errors import WorkloadError

COMPUTE = {name: workloads.WORKLOADS[name].sizes["tiny"] for name in workloads.KERNEL_COMPUTE}
KERNEL = {name: w.sizes["tiny"] for name, w in workloads.KERNEL_WORKLOADS.items()}
NANO = {op: n.sizes["tiny"] for op, n in workloads.NANOBENCHMARKS.items()}

# Guest instructions per iteration that each nanobenchmark must land in (loop overhead
# included): loose bounds around what the kernel does, so a broken measurement shows.
NANO_INSNS_PER_OP = {
    "syscall": (20, 400), "in": (2, 8), "cli_sti": (3, 8), "callret": (3, 8), "pgfault": (40, 1000),
    "divzero": (20, 400), "ptemod": (4, 40), "cr3": (3, 16),
}


def boot(cmdline, memory_mb=64, count=200_000_000):
    m = vmcore.Machine(memory_mb=memory_mb, mode="bare")
    m.load_multiboot(workloads.kernel_elf(), cmdline=cmdline)
    r = m.run(count=count, timeout=60)
    return r


def assert_ok(r):
    assert r.exit is vmcore.Exit.DEBUG_EXIT and r.exit_code == 1, f"{r.exit}: {r.reason}\n{r.console}"


def lines(r):
    return r.console.splitlines(keepends=True)


@pytest.fixture(scope="module")
def native():
    return {name: workloads.run_native(name, size).output for name, size in {**COMPUTE, **KERNEL}.items()}


@pytest.fixture(scope="module")
def concurrent():
    """Every compute workload at its tiny size, all at once, as ring-3 processes."""
    return boot(workloads.kernel_cmdline(run=COMPUTE))


def test_compute_workloads_run_as_ring3_processes_and_print_the_native_lines(concurrent, native):
    assert_ok(concurrent)
    for name in COMPUTE:
        assert native[name] in lines(concurrent), name


def test_the_timer_preempts_them_round_robin(concurrent):
    assert_ok(concurrent)
    k = workloads.kernel_counters(concurrent.console)
    assert k["hz"] == 1000
    assert k["spawns"] == len(COMPUTE) + 1 and k["exits"] == len(COMPUTE) + 1      # and init
    assert k["ticks"] > 1, k
    assert k["preemptions"] > 1, k
    assert k["switches"] > k["spawns"], k      # more than one turn each: they were interleaved
    # they finished in the order of their lengths, not of the command line
    order = [line.split()[0] for line in lines(concurrent) if line.split()[0] in COMPUTE]
    assert order != list(COMPUTE), order


def test_every_frame_comes_back(concurrent):
    k = workloads.kernel_counters(concurrent.console)
    assert k["frames_free"] == k["at_boot"] - 1, k       # all but init's page directory


def test_the_virtual_clock_makes_runs_repeatable(concurrent):
    again = boot(workloads.kernel_cmdline(run=COMPUTE))
    assert again.console == concurrent.console
    assert again.instructions == concurrent.instructions


def test_without_a_timer_processes_run_in_turn(native):
    r = boot(workloads.kernel_cmdline(run={"sieve": COMPUTE["sieve"], "dhry": COMPUTE["dhry"]}, hz=0))
    assert_ok(r)
    k = workloads.kernel_counters(r.console)
    assert k["ticks"] == 0 and k["preemptions"] == 0
    assert [line for line in lines(r) if not line.startswith("kernel:")] == [native["sieve"], native["dhry"]]


def test_two_instances_of_a_program_share_its_text(native):
    r = boot(workloads.kernel_cmdline(run=[("crc32", COMPUTE["crc32"]), ("crc32", COMPUTE["crc32"])]))
    assert_ok(r)
    assert lines(r).count(native["crc32"]) == 2


@pytest.mark.parametrize("name", list(KERNEL))
def test_kernel_workload(name, native):
    size = KERNEL[name]
    r = boot(workloads.kernel_cmdline(run={name: size}))
    assert_ok(r)
    assert native[name] in lines(r)
    k = workloads.kernel_counters(r.console)
    assert k["frames_free"] == k["at_boot"] - 1, k
    if name == "forkwait":
        assert k["forks"] == size
        assert k["exits"] == size + 2          # the children, forkwait, init
        assert k["cow_copies"] >= 2 * size     # each child writes shared pages: the buffer's, its stack
        assert k["cow_reuses"] > 0             # the parent's page after its child is gone
    elif name == "pingpong":
        assert k["forks"] == 1
        assert k["switches"] >= 2 * size       # each round trip blocks each side once
    elif name == "touchpages":
        assert k["demand_zero"] >= size


@pytest.fixture(scope="module")
def nano_run():
    return boot(workloads.kernel_cmdline(nano=NANO))


@pytest.mark.parametrize("op", list(NANO))
def test_nanobenchmark(op, nano_run):
    assert_ok(nano_run)
    result = workloads.nano_results(nano_run.console)[op]
    assert result.iters == NANO[op]
    lo, hi = NANO_INSNS_PER_OP[op]
    assert lo <= result.insns_per_op <= hi, result


def test_the_pgfault_nanobenchmark_faults_every_iteration(nano_run):
    k = workloads.kernel_counters(nano_run.console)
    assert k["page_faults"] >= NANO["pgfault"]


# What a ring-3 process must not be able to do, and the exception the kernel kills it with
# (status 128 + vector): user/probe.c.
PROBES = {
    "idt_read": 14, "gdt_write": 14, "kernel_read": 14, "kernel_jump": 14, "text_write": 14, "null_read": 14,
    "cli": 13, "in": 13, "hlt": 13, "cr3": 13,
}


@pytest.fixture(scope="module")
def probe_run():
    return boot(workloads.kernel_cmdline(run=[("probe", op) for op in PROBES]))


@pytest.mark.parametrize("op", list(PROBES))
def test_ring3_cannot_reach_the_kernel(op, probe_run):
    assert f"probe {op} survived\n" not in probe_run.console
    assert f"init: probe:{op} (pid " in probe_run.console, probe_run.console
    line = next(line for line in lines(probe_run) if line.startswith(f"init: probe:{op} (pid "))
    assert line.endswith(f"exited with status {128 + PROBES[op]}\n"), line
    # the kernel survives them all and reports the failures
    assert probe_run.exit is vmcore.Exit.DEBUG_EXIT and probe_run.exit_code == 3, probe_run.reason


def test_bad_command_lines():
    with pytest.raises(WorkloadError):
        workloads.kernel_cmdline(run={"nosuch": 1})
    with pytest.raises(WorkloadError):
        workloads.kernel_cmdline(nano={"nosuch": 1})
    r = boot("")                                           # nothing to run: usage, status 2
    assert r.exit is vmcore.Exit.DEBUG_EXIT and r.exit_code == 5, r.console
    r = boot("run=nosuch:1,sieve:100")                     # init cannot spawn it: status 1
    assert r.exit is vmcore.Exit.DEBUG_EXIT and r.exit_code == 3, r.console
    assert "init: cannot spawn nosuch:1" in r.console
    assert "sieve size=100 checksum=" in r.console
