"""`vmcore` command line: run a guest workload and compare it with native.

    vmcore run sieve                 # build, run in the VM, run natively, compare
    vmcore run path/to/kernel.elf --cmdline "..." --no-native
    vmcore run sieve -d insn --count 50   # trace instructions (capstone), exits
    vmcore list                      # the workloads and their sizes
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vmcore import workloads
from vmcore.errors import VmError
from vmcore.machine import Exit, Machine

# process exit status for each way a run ends (DEBUG_EXIT: the guest's own value)
STATUS = {Exit.HLT: 0, Exit.SHUTDOWN: 3, Exit.BUDGET: 4, Exit.TIMEOUT: 4, Exit.UNTIL: 0, Exit.STOPPED: 0,
          Exit.UNIMPLEMENTED: 5}
STATUS_MISMATCH = 6


def _size_of(name: str, size: str | None) -> int:
    sizes = workloads.WORKLOADS[name].sizes
    if size is None:
        return sizes["bench"]
    if size in sizes:
        return sizes[size]
    try:
        return int(size, 0)
    except ValueError:
        raise VmError(f"--size must be one of {sorted(sizes)} or a number, not {size!r}") from None


def _trace_run(m: Machine, count: int | None, timeout: float | None):
    """Single-step, printing each instruction as capstone disassembles it."""
    import capstone

    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    limit = count if count is not None else 10_000
    result = None
    for _ in range(limit):
        eip = m.reg_read("eip")
        code = m.mem_read(eip, min(15, m.memory.size - eip)) if eip < m.memory.size else b""
        insn = next(md.disasm(code, eip), None)
        text = f"{insn.mnemonic} {insn.op_str}" if insn else f"(undecodable: {code[:4].hex(' ')})"
        print(f"  {eip:08x}: {text:40s} eax={m.reg_read('eax'):08x} ecx={m.reg_read('ecx'):08x} "
              f"edx={m.reg_read('edx'):08x} esp={m.reg_read('esp'):08x} fl={m.reg_read('eflags'):08x}",
              file=sys.stderr)
        result = m.run(count=1, timeout=timeout)
        if result.exit is not Exit.BUDGET:
            break
    return result


def cmd_run(args) -> int:
    target = args.target
    is_workload = target in workloads.WORKLOADS
    if is_workload:
        size = _size_of(target, args.size)
        elf = workloads.guest_elf(target)
        cmdline = args.cmdline if args.cmdline is not None else workloads.guest_cmdline(size)
        memory = max(args.memory, workloads.WORKLOADS[target].memory_mb)
    else:
        elf = Path(target)
        cmdline = args.cmdline or ""
        memory = args.memory
        size = None
    m = Machine(memory_mb=memory, mode=args.mode)
    m.load_multiboot(elf, cmdline=cmdline)
    trace = set(filter(None, (args.debug or "").split(",")))
    if "exits" in trace:
        m.exit_trace = lambda text: print(f"  exit: {text}", file=sys.stderr)
    print(f"vmcore: {elf.name} in a {memory} MiB {args.mode} machine, cmdline {cmdline!r}")
    if "insn" in trace:
        r = _trace_run(m, args.count, args.timeout)
    else:
        r = m.run(count=args.count, timeout=args.timeout)
    print("--- guest console ---")
    print(r.console, end="" if r.console.endswith("\n") or not r.console else "\n")
    print("---")
    print(f"exit:               {r.exit.value} ({r.reason})")
    print(f"guest instructions: {r.instructions:,}")
    print(f"vmcore time:        {r.seconds:.3f} s")
    print(f"guest MIPS:         {r.mips:.1f}")
    status = (r.exit_code >> 1) & 0xFF if r.exit is Exit.DEBUG_EXIT else STATUS[r.exit]
    if args.stats:
        for key, value in m.stats.items():
            print(f"  {key:24s} {value:,}")
    if is_workload and not args.no_native:
        native = workloads.run_native(target, size, repeat=args.native_repeat)
        same = native.output == r.console
        print(f"native time:        {native.seconds:.3f} s (same source compiled for the host, best of "
              f"{args.native_repeat})")
        print(f"output matches:     {'yes' if same else 'NO'}")
        if native.seconds > 0:
            print(f"slowdown vs native: {r.seconds / native.seconds:.1f}x")
        if not same:
            print(f"native output: {native.output!r}", file=sys.stderr)
            return STATUS_MISMATCH
    return status


def cmd_list(args) -> int:
    for name, w in workloads.WORKLOADS.items():
        sizes = ", ".join(f"{k}={v}" for k, v in w.sizes.items())
        print(f"{name:10s} {w.description}  [{sizes}; {w.memory_mb} MiB]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vmcore", description="IA-32 virtual machine monitor")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a workload (by name) or a multiboot ELF (by path)")
    r.add_argument("target", help="workload name (see `vmcore list`) or path to a multiboot ELF")
    r.add_argument("--memory", type=int, default=64, help="guest RAM in MiB (default 64)")
    r.add_argument("--count", type=int, default=None, help="stop after this many guest instructions")
    r.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    r.add_argument("--cmdline", default=None, help="multiboot command line (workloads: size=N)")
    r.add_argument("--size", default=None, help="workload size: tiny, small, bench (default) or a number")
    r.add_argument("--mode", default="bare", help="bare (bt and trap come with the monitor)")
    r.add_argument("--no-native", action="store_true", help="do not run the native comparison")
    r.add_argument("--native-repeat", type=int, default=3, help="native runs; the best counts (default 3)")
    r.add_argument("--stats", action="store_true", help="print the engine's counters")
    r.add_argument("-d", "--debug", default=None, metavar="LIST",
                   help="trace: insn (each instruction, disassembled), exits (each exit), comma separated")
    r.set_defaults(func=cmd_run)
    ls = sub.add_parser("list", help="list the workloads")
    ls.set_defaults(func=cmd_list)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except VmError as e:
        print(f"vmcore: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
