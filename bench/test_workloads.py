"""Each workload on vmcore and natively, in the same run.

    pytest bench/ --benchmark-columns=median,min,rounds
    pytest bench/ --workload-size=small      # quicker

extra_info keys (the same for every benchmark): workload, mode, size, guest_instructions,
guest_mips, native_seconds, slowdown_vs_native, exits, and the engine counters under "stats";
their types and meaning are documented in vmcore/benchkeys.py, and every benchmark here is
checked against that. `vmcore bench` runs this suite; `vmcore dashboard` draws the stored runs.

The benchmarks here run in ``bare``; bench/test_monitor.py runs the same ones (``bench_workload``)
in ``bt``, so that a run holds the ``bt``/``bare`` ratio of each workload.
"""
import pytest

import vmcore
from vmcore import benchkeys, workloads

NAMES = list(workloads.WORKLOADS)


def _machine(name, size, mode, engine="interp"):
    w = workloads.WORKLOADS[name]
    m = vmcore.Machine(memory_mb=max(64, w.memory_mb), mode=mode, engine=engine)
    m.load_multiboot(workloads.guest_elf(name), cmdline=workloads.guest_cmdline(size))
    return m


def bench_workload(benchmark, name, workload_size, mode, native_run, engine="interp"):
    """Times workload ``name`` at ``workload_size`` in a ``mode`` machine on ``engine`` and records
    extra_info; ``native_run(name, size)`` is the native run (bench/conftest.py: measured once per
    session)."""
    size = workloads.WORKLOADS[name].sizes[workload_size]
    native = native_run(name, size)
    results = []

    def setup():
        return (_machine(name, size, mode, engine),), {}

    def run(m):
        r = m.run(timeout=600)
        results.append((r, m.stats))
        return r

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    r, stats = results[-1]
    assert r.exit is vmcore.Exit.DEBUG_EXIT and r.exit_code == 1, r.reason
    assert r.console == native.output
    median = benchmark.stats.stats.median
    benchmark.extra_info.update({
        "workload": name,
        "mode": mode,
        "engine": engine,
        "size": size,
        "guest_instructions": r.instructions,
        "guest_mips": r.instructions / median / 1e6,
        "native_seconds": native.seconds,
        "slowdown_vs_native": median / native.seconds,
        "exits": sum(v for k, v in stats.items() if k.startswith("exits_")),
        "stats": stats,
    })
    assert benchkeys.check(benchmark.extra_info) == []


@pytest.mark.parametrize("name", NAMES)
def test_vmcore_vs_native(benchmark, name, workload_size, native_run):
    bench_workload(benchmark, name, workload_size, "bare", native_run)
