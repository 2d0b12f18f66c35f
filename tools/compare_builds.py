"""Guest MIPS of two builds of the engine in one run, interleaved, median of N.

    git worktree add /tmp/before <commit> && (cd /tmp/before && python setup.py build_ext --inplace)
    python tools/compare_builds.py /tmp/before .            # small size, 5 rounds

Each workload is loaded the same way into both engines (no Machine, no devices), so the
ratio is the engine's alone.
"""
import argparse
import glob
import importlib.util
import statistics
import struct
import time
from pathlib import Path

import numpy as np

from vmcore import workloads


def load_engine(root: str):
    so = glob.glob(str(Path(root) / "vmcore" / "_core" / "_core*.so"))[0]
    spec = importlib.util.spec_from_file_location("_core", so)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Engine


def guest_mips(Engine, name: str, size: int, memory_mb: int = 64) -> float:
    elf = Path(workloads.guest_elf(name)).read_bytes()
    ram = np.zeros(memory_mb << 20, np.uint8)
    entry, phoff = struct.unpack_from("<II", elf, 24)
    for k in range(struct.unpack_from("<H", elf, 44)[0]):
        kind, offset, _, paddr, filesz, _ = struct.unpack_from("<6I", elf, phoff + 32 * k)
        if kind == 1:
            ram[paddr:paddr + filesz] = np.frombuffer(elf[offset:offset + filesz], np.uint8)
    cmdline = workloads.guest_cmdline(size).encode() + b"\0"
    ram[0x9800:0x9800 + len(cmdline)] = np.frombuffer(cmdline, np.uint8)
    info = struct.pack("<5I", 0x5, 640, (memory_mb << 10) - 1024, 0, 0x9800)   # flags, mem, cmdline
    ram[0x9000:0x9000 + len(info)] = np.frombuffer(info, np.uint8)
    engine = Engine(ram)
    engine.eip = entry
    engine.reg_set(0, 0x2BADB002)
    engine.reg_set(3, 0x9000)
    start = time.perf_counter()
    while True:
        if engine.run(1 << 40) != 2:                     # only I/O exits are expected
            raise SystemExit(f"{name}: unexpected exit")
        port, _, is_in, _ = engine.io_request()
        if is_in:
            engine.io_complete_in(0xFF)
        elif port == 0xF4:
            break
    return engine.icount / (time.perf_counter() - start) / 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--size", default="small")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    engines = {"before": load_engine(args.before), "after": load_engine(args.after)}
    print(f"{'workload':10s} {'before MIPS':>12s} {'after MIPS':>11s} {'after/before':>13s}")
    for name, w in workloads.WORKLOADS.items():
        results = {k: [] for k in engines}
        for _ in range(args.rounds):
            for k, Engine in engines.items():
                results[k].append(guest_mips(Engine, name, w.sizes[args.size]))
        b, a = statistics.median(results["before"]), statistics.median(results["after"])
        print(f"{name:10s} {b:12.0f} {a:11.0f} {a / b:13.3f}")


if __name__ == "__main__":
    main()
