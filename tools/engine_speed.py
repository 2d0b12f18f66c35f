"""The compute workloads on both engines next to native, in one run (issue 10's table).

    python tools/engine_speed.py                      # bench sizes: bare jit, bt jit, bare interp, native
    python tools/engine_speed.py --size small --skip-interp sieve dhry

Each vmcore figure is the median of ``--rounds`` runs of a fresh machine (boot and load included);
native is the best of the same number of runs of the host build. The ratios are computed from
numbers measured in this one run. The benchmarks proper are bench/test_workloads.py and
bench/test_jit.py (`vmcore bench`); this is the quick side-by-side.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vmcore  # noqa: E402
from vmcore import workloads  # noqa: E402


def run_vm(name: str, size: int, mode: str, engine: str, rounds: int):
    w = workloads.WORKLOADS[name]
    times, instructions, console = [], None, None
    for _ in range(rounds):
        m = vmcore.Machine(memory_mb=max(64, w.memory_mb), mode=mode, engine=engine)
        m.load_multiboot(workloads.guest_elf(name), cmdline=workloads.guest_cmdline(size))
        t0 = time.perf_counter()
        r = m.run(timeout=900)
        times.append(time.perf_counter() - t0)
        assert r.exit is vmcore.Exit.DEBUG_EXIT and r.exit_code == 1, r.reason
        instructions, console = r.instructions, r.console
    return statistics.median(times), instructions, console


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", default=list(workloads.WORKLOADS))
    ap.add_argument("--size", default="bench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-interp", action="store_true", help="leave out the interpreter (minutes at bench size)")
    ap.add_argument("--interp-rounds", type=int, default=None, help="runs of the interpreter (default: --rounds)")
    args = ap.parse_args()
    print(f"{'workload':9s} {'native':>8s} {'bare jit':>17s} {'bt jit':>17s} {'bare interp':>17s} "
          f"{'jit/native':>10s} {'bt/bare':>8s} {'interp/jit':>10s}")
    for name in args.names:
        size = workloads.WORKLOADS[name].sizes[args.size]
        native = workloads.run_native(name, size, repeat=args.rounds)
        jit, n, console = run_vm(name, size, "bare", "jit", args.rounds)
        assert console == native.output, (console, native.output)
        bt, _, _ = run_vm(name, size, "bt", "jit", args.rounds)
        interp = (run_vm(name, size, "bare", "interp", args.interp_rounds or args.rounds)[0]
                  if not args.skip_interp else None)

        def cell(t):
            return f"{t:6.3f}s {n / t / 1e6:6.0f}MIPS" if t else f"{'-':>17s}"

        print(f"{name:9s} {native.seconds:7.3f}s {cell(jit)} {cell(bt)} {cell(interp)} "
              f"{jit / native.seconds:9.2f}x {bt / jit:7.2f}x "
              f"{(interp / jit if interp else float('nan')):9.1f}x", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
