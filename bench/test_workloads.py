"""Each workload on vmcore and natively, in the same run.

    pytest bench/ --benchmark-columns=median,min,rounds
    pytest bench/ --workload-size=small      # quicker

extra_info keys (the same for every benchmark): workload, mode, size, guest_instructions,
guest_mips, native_seconds, slowdown_vs_native, exits, and the engine counters under "stats";
their types and meaning are documented in vmcore/benchkeys.py, and every benchmark here is
checked against that. `vmcore bench` runs this suite; `vmcore dashboard` draws the stored runs.
"""
import pytest

import vmcore
from vmcore import benchkeys, workloads

NAMES = list(workloads.WORKLOADS)


def _machine(name, size):
    w = workloads.WORKLOADS[name]
    m = vmcore.Machine(memory_mb=max(64, w.memory_mb), mode="bare")
    m.load_multiboot(workloads.guest_elf(name), cmdline=workloads.guest_cmdline(size))
    return m


@pytest.mark.parametrize("name", NAMES)
def test_vmcore_vs_native(benchmark, name, workload_size):
    size = workloads.WORKLOADS[name].sizes[workload_size]
    native = workloads.run_native(name, size, repeat=3)
    results = []

    def setup():
        return (_machine(name, size),), {}

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
        "mode": "bare",
        "size": size,
        "guest_instructions": r.instructions,
        "guest_mips": r.instructions / median / 1e6,
        "native_seconds": native.seconds,
        "slowdown_vs_native": median / native.seconds,
        "exits": sum(v for k, v in stats.items() if k.startswith("exits_")),
        "stats": stats,
    })
    assert benchkeys.check(benchmark.extra_info) == []
