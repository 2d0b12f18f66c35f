"""The guests of bench/test_workloads.py and bench/test_kernel.py under the monitor (``bt``), so
that one run holds both modes and `vmcore bench` / `vmcore dashboard` show the ``bt``/``bare``
ratio of each (issue 5: <= 1.10 on the compute workloads; the kernel workloads and the
nanobenchmarks next to Adams & Agesen's software VMM: pgfault 3.6x, call/ret 4.6x, divzero 3.6x).

    pytest bench/test_monitor.py --workload-size=tiny --benchmark-only -x
    pytest bench/ -k "nano" --benchmark-columns=median,min,rounds

The benchmarks are those of the bare suites, run by the same functions with ``mode="bt"``: the
same extra_info keys (vmcore/benchkeys.py) with ``mode`` = ``bt``, and the same native run (one
per session, bench/conftest.py ``native_run``). A nanobenchmark's ``bt``/``bare`` is the ratio of
its ``host_ns_per_op`` (the timed loop alone); any other benchmark's, of the medians.
"""
import pytest

from vmcore import workloads

from test_kernel import bench_kernel_workload, bench_nanobenchmark
from test_workloads import bench_workload

MODE = "bt"


@pytest.mark.parametrize("name", list(workloads.WORKLOADS))
def test_workload_bt(benchmark, name, workload_size, native_run):
    bench_workload(benchmark, name, workload_size, MODE, native_run)


@pytest.mark.parametrize("name", list(workloads.KERNEL_WORKLOADS))
def test_kernel_workload_bt(benchmark, name, workload_size, native_run):
    bench_kernel_workload(benchmark, name, workload_size, MODE, native_run)


@pytest.mark.parametrize("op", list(workloads.NANOBENCHMARKS))
def test_nanobenchmark_bt(benchmark, op, workload_size):
    bench_nanobenchmark(benchmark, op, workload_size, MODE)
