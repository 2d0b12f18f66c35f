"""Debian 12's i386 kernel (linux-image-6.1.0-*-686) boots with a busybox initramfs to the
shell marker and powers off cleanly, in bare and in bt.

The kernel and initramfs come from tools/fetch_linux.py (Debian's own packages through apt,
into build/linux/, never committed). The test fetches them when the cache is empty; it skips
only when they are absent and fetching is impossible (not root, no apt, no network).

/init powers the machine off by writing 0 to the isa-debug-exit port 0xF4 through /dev/port:
the run ends with Exit.DEBUG_EXIT and status (0 << 1) | 1 = 1. The command line skips the
crypto self-tests (cryptomgr.notests: half the boot's instructions otherwise) to keep the
suite's time; `vmcore run --kernel` boots with any command line.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vmcore import Exit, Machine

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("VMCORE_LINUX_CACHE", REPO / "build" / "linux"))
KERNEL, INITRD = CACHE / "bzImage", CACHE / "initrd.img"
MARKER = "VMCORE-LINUX-SHELL-OK"
CMDLINE = "console=ttyS0 earlyprintk=serial,ttyS0,115200 cryptomgr.notests"
MEMORY_MB = 256
TIMEOUT_S = 600

# what a boot log must not show: oopses, warnings with a backtrace, the no-FPU stop, MSR
# accesses the CPU refused, broken hardware Linux had to work around
FORBIDDEN = ("Oops", "BUG:", "WARNING:", "Call Trace", "Kernel panic", "x86/fpu: Giving up",
             "unchecked MSR access", "Broken PMU", "Errata", "general protection", "invalid opcode",
             "Unable to handle", "segfault")
# the CPU lines inherent to this machine: no local APIC, so no MP table or ACPI MADT can list
# the boot CPU (an APIC-less uniprocessor PC shows the same); intel_pstate drives only CPUs
# from Sandy Bridge on (an information line on every older CPU)
KNOWN_CPU_LINES = ("smpboot: weird, boot CPU (#0) not listed by the BIOS", "intel_pstate: CPU model not supported")
_WARNING_WORDS = re.compile(r"warn|fail|error|bug|broken|unable|weird|giving up|not supported|unsupported|unstable", re.I)


@pytest.fixture(scope="module")
def linux_files():
    if not (KERNEL.exists() and INITRD.exists()):
        fetch = subprocess.run([sys.executable, str(REPO / "tools" / "fetch_linux.py"), "--cache", str(CACHE)],
                               capture_output=True, text=True, timeout=900)
        if fetch.returncode != 0 or not (KERNEL.exists() and INITRD.exists()):
            pytest.skip(f"no cached kernel in {CACHE} and tools/fetch_linux.py could not fetch it: "
                        f"{(fetch.stderr or fetch.stdout).strip()[-300:]}")
    return KERNEL, INITRD


def boot(mode, kernel, initrd):
    m = Machine(memory_mb=MEMORY_MB, mode=mode)
    m.load_linux(kernel, initrd, CMDLINE)
    return m, m.run(timeout=TIMEOUT_S)


def check_log(log: str) -> None:
    for word in FORBIDDEN:
        assert word not in log, f"boot log has {word!r}:\n{log[-3000:]}"
    for line in log.splitlines():
        if re.search(r"\bFPU\b", line, re.I):
            assert "x86/fpu: x87 FPU will use FXSAVE" in line or "Supporting XSAVE" in line \
                or "Enabled xstate" in line, f"FPU line: {line}"
        if re.search(r"\bCPU", line) and _WARNING_WORDS.search(line):
            assert any(known in line for known in KNOWN_CPU_LINES), f"CPU warning: {line}"


@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_debian_kernel_boots_to_the_busybox_marker_and_powers_off(linux_files, mode):
    m, r = boot(mode, *linux_files)
    log = r.console
    assert r.exit is Exit.DEBUG_EXIT, f"{r.reason}\n{log[-3000:]}"
    assert r.exit_code == 1                          # /init wrote 0: a clean power-off
    assert MARKER in log
    assert "Linux version 6.1.0-" in log and "-686" in log
    assert "x86/fpu: x87 FPU will use FXSAVE" in log
    assert "Run /init as init process" in log and "init: Linux 6.1.0-" in log
    check_log(log)
    stats = m.stats
    assert stats["instructions"] > 1_000_000_000
    if mode == "bt":
        for key in ("callouts", "traps", "shadow_fills", "hidden_faults", "traced_writes"):
            assert stats[key] > 0, key
        if m.classifier == "engine":         # classified at decode time: no exit to the supervisor
            assert stats["mon_classified"] > 0 and stats["exits_translate"] == 0 == stats["mon_translations"]
        else:
            assert stats["mon_translations"] > 0 and stats["exits_translate"] > 0


@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_debian_kernel_boots_with_the_local_apic(linux_files, mode):
    """Machine(apic=True): CPUID reports the APIC, Linux enables it through its MMIO registers and,
    with no MP table or ACPI MADT (no BIOS writes one here), keeps the PIC in virtual wire mode
    (LINT0 ExtINT): its interrupts come through the local APIC."""
    m = Machine(memory_mb=MEMORY_MB, mode=mode, apic=True)
    m.load_linux(linux_files[0], linux_files[1], CMDLINE)
    r = m.run(timeout=TIMEOUT_S)
    log = r.console
    assert r.exit is Exit.DEBUG_EXIT and r.exit_code == 1, f"{r.reason}\n{log[-3000:]}"
    assert MARKER in log
    assert "Found and enabled local APIC!" in log
    assert "APIC: Switch to virtual wire mode setup with no configuration" in log
    check_log(log)
    assert m.lapic.software_enabled and m.lapic.passes_pic()
    assert m.stats["exits_mmio"] > 0 and m.stats["mmio_open_bus"] == 0


def test_check_log_catches_what_it_must():
    check_log("[    0.5] smpboot: weird, boot CPU (#0) not listed by the BIOS\n[ 0.6] x86/fpu: x87 FPU will use FXSAVE")
    for bad in ("x86/fpu: Giving up, no FPU found and no math emulation present",
                "BUG: kernel NULL pointer dereference", "Oops: 0000 [#1] SMP",
                "CPU0: Thermal monitoring failed", "mce: CPU0: unsupported"):
        with pytest.raises(AssertionError):
            check_log(bad)
