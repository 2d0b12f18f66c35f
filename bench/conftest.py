import functools

import pytest

from vmcore import workloads


def pytest_addoption(parser):
    parser.addoption("--workload-size", default="bench",
                     help="size of the workloads: tiny, small or bench (default; ~0.5 s native)")


@pytest.fixture
def workload_size(request):
    return request.config.getoption("--workload-size")


@pytest.fixture(scope="session")
def native_run():
    """``native_run(name, size)``: the workload's native run (best of 3), measured once per
    session, so that its bare and bt benchmarks are set against the same native time."""
    return functools.cache(lambda name, size: workloads.run_native(name, size, repeat=3))
