#!/usr/bin/env python3
"""Boot the fetched Debian kernel + busybox initramfs (tools/fetch_linux.py) to the shell marker
and its power-off, on vmcore (bare, bt) and on QEMU TCG when qemu-system-i386 is installed, in
one run, with the same kernel, initramfs and command line; prints wall seconds and (vmcore)
guest instructions.

    python tools/linux_boot_bench.py [--append "console=ttyS0 ..."] [--modes bare,bt] [--no-qemu] [--stats]

A mode may name the bt classifier: ``bt:scanner``. ``--stats`` adds the monitor's counters: the
translations, callouts and traps by kind, adaptive retranslations, reflections, shadow fills.

QEMU runs with -accel tcg -m 256 -nographic and an isa-debug-exit device at 0xF4, so the same
/init ends it; its time includes its own BIOS (SeaBIOS), as a user of -kernel sees it.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MARKER = "VMCORE-LINUX-SHELL-OK"


MONITOR_COUNTERS = ("mon_translations", "mon_classified", "mon_adaptive_retranslations", "mon_adaptive_calls",
                    "callouts", "traps", "reflections", "hidden_faults", "true_faults", "traced_writes",
                    "shadow_fills", "shadows_created", "shadows_reused", "shadows_dropped", "msr_unknown")


def vmcore_boot(spec: str, kernel: Path, initrd: Path, append: str, memory: int) -> dict:
    from vmcore import Exit, Machine

    mode, _, classifier = spec.partition(":")
    t0 = time.perf_counter()
    m = Machine(memory_mb=memory, mode=mode, classifier=classifier or None)
    m.load_linux(kernel, initrd, append)
    r = m.run(timeout=900)
    wall = time.perf_counter() - t0
    ok = r.exit is Exit.DEBUG_EXIT and MARKER in r.console
    s = m.stats
    counters = {k: s[k] for k in MONITOR_COUNTERS if k in s}
    counters.update({k: v for k, v in s.items() if k.startswith(("callout_", "trap_")) and v})
    return {"what": f"vmcore {spec}", "ok": ok, "seconds": wall, "instructions": r.instructions,
            "mips": r.mips, "end": r.reason, "counters": counters}


def qemu_boot(kernel: Path, initrd: Path, append: str, memory: int) -> dict | None:
    qemu = shutil.which("qemu-system-i386")
    if qemu is None:
        return None
    cmd = [qemu, "-accel", "tcg", "-m", str(memory), "-nographic", "-no-reboot", "-kernel", str(kernel),
           "-initrd", str(initrd), "-append", append, "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=900, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    return {"what": "QEMU TCG", "ok": MARKER in p.stdout and p.returncode == 1, "seconds": wall,
            "instructions": None, "mips": None, "end": f"exit status {p.returncode}"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=REPO / "build" / "linux")
    ap.add_argument("--append", default="console=ttyS0")
    ap.add_argument("--modes", default="bare,bt")
    ap.add_argument("-m", "--memory", type=int, default=256)
    ap.add_argument("--no-qemu", action="store_true")
    ap.add_argument("--stats", action="store_true", help="print the monitor's counters of each vmcore boot")
    args = ap.parse_args(argv)
    kernel, initrd = args.cache / "bzImage", args.cache / "initrd.img"
    if not kernel.exists() or not initrd.exists():
        print(f"no kernel/initrd in {args.cache}: run tools/fetch_linux.py first", file=sys.stderr)
        return 2
    rows = [vmcore_boot(mode, kernel, initrd, args.append, args.memory) for mode in args.modes.split(",") if mode]
    if not args.no_qemu:
        q = qemu_boot(kernel, initrd, args.append, args.memory)
        if q is not None:
            rows.append(q)
    print(f"boot to {MARKER} and power-off; cmdline {args.append!r}, {args.memory} MiB")
    for r in rows:
        insns = f"{r['instructions']:>15,}" if r["instructions"] is not None else f"{'-':>15}"
        mips = f"{r['mips']:7.1f}" if r["mips"] is not None else f"{'-':>7}"
        print(f"  {r['what']:12s} {'ok ' if r['ok'] else 'FAILED'} {r['seconds']:8.2f} s  {insns} insns  "
              f"{mips} MIPS  ({r['end']})")
        if args.stats and r.get("counters"):
            print("      " + ", ".join(f"{k} {v:,}" for k, v in r["counters"].items()))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
