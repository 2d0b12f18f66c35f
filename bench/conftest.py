import pytest


def pytest_addoption(parser):
    parser.addoption("--workload-size", default="bench",
                     help="size of the workloads: tiny, small or bench (default; ~0.5 s native)")


@pytest.fixture
def workload_size(request):
    return request.config.getoption("--workload-size")
