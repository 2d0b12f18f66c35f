"""Each workload's guest build, run on vmcore, prints exactly what its native build prints."""

import pytest

import vmcore
from vmcore import workloads

# Tiny sizes run at most about 2e6 guest instructions; this budget only stops a runaway guest.
INSTRUCTION_BUDGET = 100_000_000
TIMEOUT_SECONDS = 120


def run_guest(name, cmdline):
    machine = vmcore.Machine(memory_mb=64, mode="bare")
    machine.load_multiboot(str(workloads.guest_elf(name)), cmdline=cmdline)
    return machine.run(count=INSTRUCTION_BUDGET, timeout=TIMEOUT_SECONDS)


@pytest.mark.parametrize("name", list(workloads.WORKLOADS))
def test_guest_matches_native(name):
    size = workloads.WORKLOADS[name].sizes["tiny"]
    native = workloads.run_native(name, size)
    assert native.returncode == 0, native.output

    result = run_guest(name, workloads.guest_cmdline(size))
    assert result.exit == vmcore.Exit.DEBUG_EXIT
    assert result.exit_code == 1            # status 0 written to the debug-exit port: (0 << 1) | 1
    assert result.console == native.output


def test_guest_without_a_size_exits_with_an_error():
    result = run_guest("sieve", "")
    assert result.exit == vmcore.Exit.DEBUG_EXIT
    assert result.exit_code == (2 << 1) | 1  # WL_BAD_SIZE
    assert result.console == "wl: expected size=N on the command line\n"
