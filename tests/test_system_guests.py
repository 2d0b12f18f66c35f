"""System guests: small NASM programs (tests/guests/*.asm) that boot like a boot sector in
real mode, set up the IA-32 system structures themselves and check the processor's behaviour
from the inside, reporting through the debug ports (tests/nasm_guests.py)."""
import pytest

from vmcore import Exit

from nasm_guests import boot, status


def run_guest(name, **kw):
    m, r = boot(name, **kw)
    assert r.exit == Exit.DEBUG_EXIT, f"{name}: {r.exit} ({r.reason}); console so far: {r.console!r}"
    s = status(r)
    assert s == 0, (f"{name}: check {s} failed (= {s >> 4} * 16 + {s & 15}: test {s >> 4}, item {s & 15}, or "
                    f"as numbered in tests/guests/{name}.asm); console: {r.console!r}")
    return m, r


def test_boot_pm():
    m, r = run_guest("boot_pm")
    assert r.console == "boot_pm: real mode\nboot_pm: protected mode\nboot_pm: pass\n"


def test_exceptions():
    m, r = run_guest("exceptions")
    assert r.console.endswith("exceptions: pass\n")


def test_paging():
    m, r = run_guest("paging")
    assert r.console.endswith("paging: pass\n")


def test_triple_fault():
    m, r = boot("triple_fault")
    assert r.exit == Exit.SHUTDOWN, r.reason
    assert r.console == "triple_fault: int3 with an empty IDT\n"
    # the first exception, the one that could not be delivered: #BP from the INT3 at 0x7E00,
    # with the EIP its frame would have held (INT3 is a trap: the next instruction) and no
    # error code
    assert r.exception == (3, None, 0x7E01), r.exception
    assert "#BP" in r.reason and "triple fault" in r.reason, r.reason


def test_rings():
    m, r = run_guest("rings")
    assert r.console == "rings: ring 0\nrings: ring 3\nrings: back in ring 0, pass\n"


def test_tasks():
    m, r = run_guest("tasks")
    assert r.console == ("tasks: in task A\ntasks: in task B\ntasks: back in task A\n"
                         "tasks: call and iret through a task gate\n"
                         "tasks: exceptions through task gates\ntasks: pass\n")


def test_v86():
    m, r = run_guest("v86")
    assert r.console == ("v86: ring 0\nv86: virtual-8086 mode\nv86: int 0x30 to ring 0 and back\n"
                         "v86: pass\n")
