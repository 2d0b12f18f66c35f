"""A real kernel on vmcore: Debian 12's i386 kernel (6.1, -686) with a busybox initramfs booted
through the 32-bit boot protocol to its /init marker and power-off, in ``bare`` and in ``bt``
side by side (issue 13: ``bt``/``bare`` on the Linux boot), and QEMU TCG on the same files
when ``qemu-system-i386`` is installed.

    python tools/fetch_linux.py            # once: build/linux/bzImage and initrd.img
    pytest bench/test_linux.py --benchmark-columns=median,min,rounds

At the bench size the boot is the full one (``console=ttyS0``: the crypto self-tests
included, ~6.4e9 guest instructions), three rounds, next to QEMU; at the small size
(tests/test_bench_keys.py) the kernel skips them (``cryptomgr.notests``, ~2.7e9), one round; a
boot has no tiny size (the tiny suite skips it). The ``size`` key is the guest RAM in MiB. A boot has no native counterpart: its extra_info has ``boot`` (what was booted) instead
of ``native_seconds`` and ``slowdown_vs_native``, and ``qemu_tcg_seconds`` when QEMU ran
(vmcore/benchkeys.py). ``vmcore bench`` shows ``bt``/``bare`` from the two medians.
"""
import functools
import sys

import pytest

import vmcore
from vmcore import benchkeys
from vmcore.bench import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tools"))
import linux_boot_bench  # noqa: E402

CACHE = REPO_ROOT / "build" / "linux"
KERNEL, INITRD = CACHE / "bzImage", CACHE / "initrd.img"
MARKER = linux_boot_bench.MARKER
MEMORY_MB = 256
CMDLINES = {"small": "console=ttyS0 cryptomgr.notests"}
FULL_CMDLINE = "console=ttyS0"
TIMEOUT_S = 900


@functools.cache
def qemu_tcg_seconds(cmdline: str) -> float | None:
    """QEMU TCG booting the same kernel, initramfs and command line (its SeaBIOS included), once
    per session (tools/linux_boot_bench.py's run); None without qemu-system-i386 or if its boot
    did not reach the marker."""
    q = linux_boot_bench.qemu_boot(KERNEL, INITRD, cmdline, MEMORY_MB)
    return q["seconds"] if q is not None and q["ok"] else None


def bench_linux_boot(benchmark, mode, workload_size, engine=None):
    if workload_size == "tiny":
        pytest.skip("a Linux boot has no tiny size: --workload-size=small or bench")
    if not (KERNEL.exists() and INITRD.exists()):
        pytest.skip(f"no kernel in {CACHE}: run tools/fetch_linux.py")
    cmdline = CMDLINES.get(workload_size, FULL_CMDLINE)
    rounds = 1 if workload_size == "small" else 3
    results = []

    def setup():
        m = vmcore.Machine(memory_mb=MEMORY_MB, mode=mode, engine=engine)
        m.load_linux(KERNEL, INITRD, cmdline)
        return (m,), {}

    def run(m):
        r = m.run(timeout=TIMEOUT_S)
        results.append((r, m.stats, m.engine))
        return r

    benchmark.pedantic(run, setup=setup, rounds=rounds, iterations=1)
    r, stats, engine_used = results[-1]
    assert r.exit is vmcore.Exit.DEBUG_EXIT and r.exit_code == 1 and MARKER in r.console, \
        f"{r.reason}\n{r.console[-2000:]}"
    median = benchmark.stats.stats.median
    benchmark.extra_info.update({
        "workload": "linux-boot" if cmdline == FULL_CMDLINE else "linux-boot-notests",
        "mode": mode,
        "engine": engine_used,
        "size": MEMORY_MB,
        "guest_instructions": r.instructions,
        "guest_mips": r.instructions / median / 1e6,
        "exits": sum(v for k, v in stats.items() if k.startswith("exits_")),
        "stats": stats,
        "boot": f"{KERNEL.name} + {INITRD.name} ({cmdline})",
    })
    if workload_size == "bench":
        qemu = qemu_tcg_seconds(cmdline)
        if qemu is not None:
            benchmark.extra_info["qemu_tcg_seconds"] = qemu
    assert benchkeys.check(benchmark.extra_info) == []


@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_linux_boot(benchmark, mode, workload_size):
    bench_linux_boot(benchmark, mode, workload_size)
