"""The guest kernel (workloads/kernel) on vmcore: its kernel-intensive workloads and the
nanobenchmarks of Adams & Agesen (ASPLOS 2006).

    pytest bench/test_kernel.py --workload-size=small
    pytest bench/test_kernel.py -k nano --benchmark-columns=median,min,rounds

extra_info keys: those of bench/test_workloads.py (workload, mode, size, guest_instructions,
guest_mips, native_seconds, slowdown_vs_native, exits, stats), and ops,
guest_instructions_per_op, host_ns_per_op and guest_kernel (the kernel's own counters); a
nanobenchmark adds op and, having no native counterpart, has no native_seconds and no
slowdown_vs_native. All are documented in vmcore/benchkeys.py.

A kernel workload (forkwait, pingpong, touchpages) runs as the only user program besides
init and is also built natively against POSIX (fork, wait, pipes, malloc), so the slowdown is
against Linux doing the same system calls and page faults. A nanobenchmark runs ``ops``
iterations of one operation: guest instructions per operation come from the guest's own RDTSC
(which counts instructions on vmcore), host time per operation from two writes to port 0x80
that bracket the loop.

The benchmarks here run in ``bare``; bench/test_monitor.py runs the same ones
(``bench_kernel_workload``, ``bench_nanobenchmark``) in ``bt``.
"""
import statistics
import time

import pytest

import vmcore
from vmcore import benchkeys, workloads

MARK_PORT = 0x80        # the nano program's SYS_mark(1) / SYS_mark(2) around its timed loop


def _machine(cmdline, memory_mb, mode, engine="interp"):
    m = vmcore.Machine(memory_mb=memory_mb, mode=mode, engine=engine)
    m.load_multiboot(workloads.kernel_elf(), cmdline=cmdline)
    return m


def _check_run(r):
    assert r.exit is vmcore.Exit.DEBUG_EXIT and r.exit_code == 1, f"{r.reason}\n{r.console}"


def _common_info(name, mode, size, r, stats, median, engine):
    return {
        "workload": name,
        "mode": mode,
        "engine": engine,
        "size": size,
        "guest_instructions": r.instructions,
        "guest_mips": r.instructions / median / 1e6,
        "exits": sum(v for k, v in stats.items() if k.startswith("exits_")),
        "stats": stats,
        "ops": size,
        "guest_kernel": workloads.kernel_counters(r.console),
    }


def bench_kernel_workload(benchmark, name, workload_size, mode, native_run, engine="interp"):
    """Times kernel workload ``name`` at ``workload_size`` in a ``mode`` machine, records extra_info."""
    w = workloads.KERNEL_WORKLOADS[name]
    size = w.sizes[workload_size]
    native = native_run(name, size)
    cmdline = workloads.kernel_cmdline(run={name: size})
    results = []

    def setup():
        return (_machine(cmdline, w.memory_mb, mode, engine),), {}

    def run(m):
        r = m.run(timeout=600)
        results.append((r, m.stats))
        return r

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    r, stats = results[-1]
    _check_run(r)
    assert native.returncode == 0 and native.output in r.console.splitlines(keepends=True), r.console
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(_common_info(name, mode, size, r, stats, median, engine))
    benchmark.extra_info.update({
        "native_seconds": native.seconds,
        "slowdown_vs_native": median / native.seconds,
        "guest_instructions_per_op": r.instructions / size,
        "host_ns_per_op": median / size * 1e9,
    })
    assert benchkeys.check(benchmark.extra_info) == []


def bench_nanobenchmark(benchmark, op, workload_size, mode, engine="interp"):
    """Times nanobenchmark ``op`` at ``workload_size`` iterations in a ``mode`` machine, records extra_info."""
    iters = workloads.NANOBENCHMARKS[op].sizes[workload_size]
    cmdline = workloads.kernel_cmdline(nano={op: iters})
    results = []

    def setup():
        m = _machine(cmdline, 64, mode, engine)
        marks = []
        m.hook_add(vmcore.HOOK_IO_OUT, lambda _m, _port, _size, value: marks.append((value, time.perf_counter())),
                   begin=MARK_PORT, end=MARK_PORT)
        return (m, marks), {}

    def run(m, marks):
        r = m.run(timeout=600)
        results.append((r, m.stats, marks))
        return r

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    loop_seconds = []
    for r, _, marks in results:
        _check_run(r)
        assert [v for v, _ in marks] == [1, 2], marks
        loop_seconds.append(marks[1][1] - marks[0][1])
    r, stats, _ = results[-1]
    nano = workloads.nano_results(r.console)[op]
    assert nano.iters == iters
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(_common_info(f"nano-{op}", mode, iters, r, stats, median, engine))
    benchmark.extra_info.update({
        "op": op,
        "guest_instructions_per_op": nano.insns_per_op,
        "host_ns_per_op": statistics.median(loop_seconds) / iters * 1e9,
    })
    assert benchkeys.check(benchmark.extra_info) == []


@pytest.mark.parametrize("name", list(workloads.KERNEL_WORKLOADS))
def test_kernel_workload(benchmark, name, workload_size, native_run):
    bench_kernel_workload(benchmark, name, workload_size, "bare", native_run)


@pytest.mark.parametrize("op", list(workloads.NANOBENCHMARKS))
def test_nanobenchmark(benchmark, op, workload_size):
    bench_nanobenchmark(benchmark, op, workload_size, "bare")
