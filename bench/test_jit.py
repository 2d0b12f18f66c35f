"""The guests of bench/test_workloads.py, bench/test_kernel.py and bench/test_monitor.py on the JIT
(``engine="jit"``, issue 10), so that one run holds each benchmark on both engines and `vmcore bench` /
`vmcore dashboard` show the ``jit``/``interp`` ratio next to ``bt``/``bare`` and the slowdown vs native.

    pytest bench/test_jit.py --benchmark-columns=median,min,rounds
    pytest bench/test_workloads.py bench/test_jit.py -k "workload" --workload-size=small

The same functions and extra_info keys as the interpreter's benchmarks, with ``engine`` = ``jit``.
The JIT translates flat 32-bit code with paging off: the compute workloads run as host code; the guest
kernel turns paging on, so its workloads and nanobenchmarks still run in the interpreter (their
``jit``/``interp`` is about 1 until the window follows the shadow page tables).
"""
import pytest

from vmcore import workloads

from test_kernel import bench_kernel_workload, bench_nanobenchmark
from test_workloads import bench_workload

ENGINE = "jit"


@pytest.mark.parametrize("mode", ["bare", "bt"])
@pytest.mark.parametrize("name", list(workloads.WORKLOADS))
def test_workload_jit(benchmark, name, mode, workload_size, native_run):
    bench_workload(benchmark, name, workload_size, mode, native_run, engine=ENGINE)


@pytest.mark.parametrize("mode", ["bare", "bt"])
@pytest.mark.parametrize("name", list(workloads.KERNEL_WORKLOADS))
def test_kernel_workload_jit(benchmark, name, mode, workload_size, native_run):
    bench_kernel_workload(benchmark, name, workload_size, mode, native_run, engine=ENGINE)


@pytest.mark.parametrize("mode", ["bare", "bt"])
@pytest.mark.parametrize("op", list(workloads.NANOBENCHMARKS))
def test_nanobenchmark_jit(benchmark, op, mode, workload_size):
    bench_nanobenchmark(benchmark, op, workload_size, mode, engine=ENGINE)
