"""`vmcore` command line: run a guest workload and compare it with native.

    vmcore run sieve                 # build, run in the VM, run natively, compare
    vmcore run path/to/kernel.elf --cmdline "..." --no-native
    vmcore run sieve -d insn --count 50   # trace instructions (capstone), exits
    vmcore run --kernel bzImage --initrd initrd.img --append "console=ttyS0" -m 256   # Linux, QEMU's way
    vmcore run --bios rom.bin --disk disk.img      # an IDE disk (QEMU's -hda); --disk-write keeps writes
    vmcore run --bios bios.bin -hda disk.img -hdb fs.img  # master and slave (or --disk twice)
    vmcore list                      # the workloads and their sizes
    vmcore bench --quick --compare   # the bench/ suites: table, stored run, regression gate
    vmcore dashboard -o bench.html   # static HTML page of the stored runs
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from vmcore import workloads
from vmcore.errors import VmError
from vmcore.machine import ENGINES, MODES, Exit, Machine

# process exit status for each way a run ends (DEBUG_EXIT: the guest's own value)
STATUS = {Exit.HLT: 0, Exit.SHUTDOWN: 3, Exit.BUDGET: 4, Exit.TIMEOUT: 4, Exit.UNTIL: 0, Exit.STOPPED: 0,
          Exit.UNIMPLEMENTED: 5, Exit.RESET: 7}
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


def _console():
    """A rich console on stdout; when stdout is not a terminal, lines of up to 160 columns (not 80)."""
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


@contextlib.contextmanager
def _status(text: str):
    """A rich spinner on stderr while something long runs; nothing when stderr is not a terminal."""
    from rich.console import Console

    err = Console(stderr=True)
    if not err.is_terminal:
        yield
        return
    with err.status(text):
        yield


def _stdin_fd() -> int:
    """The standard input's descriptor, or -1 when there is none to read (pytest's capture)."""
    try:
        return sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return -1


def cmd_run_linux(args) -> int:
    """--kernel: boot a Linux bzImage with COM1 on this terminal, as `qemu-system-i386 -kernel
    -initrd -append -m -nographic` does. Interactive when stdin is a terminal (raw mode, the
    host clock; Ctrl-A x quits); otherwise guest output only, under the virtual clock."""
    import os
    import time

    from vmcore.devices.serialio import HostSerial

    if args.target is not None or args.bios is not None:
        raise VmError("give either --kernel or a target / --bios, not both")
    memory = args.memory if args.memory is not None else 256
    fd = _stdin_fd()
    interactive = fd >= 0 and os.isatty(fd)
    clock = args.clock or ("host" if interactive else "virtual")
    m = Machine(memory_mb=memory, mode=args.mode, clock=clock, apic=args.apic)
    _attach_disk(m, args)
    cmdline = args.append if args.append is not None else "console=ttyS0"
    m.load_linux(args.kernel, args.initrd, cmdline)
    if "exits" in set(filter(None, (args.debug or "").split(","))):
        m.exit_trace = lambda text: print(f"  exit: {text}", file=sys.stderr)
    print(f"vmcore: {Path(args.kernel).name} in a {memory} MiB {m.mode} machine ({clock} clock), "
          f"initrd {args.initrd or 'none'}, cmdline {cmdline!r}" + _disk_note(m)
          + ("; Ctrl-A x quits" if interactive else ""))
    sys.stdout.flush()
    serial = HostSerial(m.uart, m.timers, input_fd=fd if interactive else -1, raw=interactive, on_quit=m.stop)
    serial.mirror(m.bus.device_at(0xE9))
    start_icount, start = m.stats["instructions"], time.perf_counter()
    r = None
    try:
        r = m.run(count=args.count, timeout=args.timeout)
    except KeyboardInterrupt:
        pass
    finally:
        serial.close()
    print()
    _print_cga(m)
    if r is None:
        seconds = time.perf_counter() - start
        instructions = m.stats["instructions"] - start_icount
        exit_text, status = "interrupted (Ctrl-C)", 130
    else:
        seconds, instructions = r.seconds, r.instructions
        exit_text = f"{r.exit.value} ({r.reason})"
        if r.exit is Exit.DEBUG_EXIT:
            exit_text = f"guest powered off through the debug-exit port, status {r.exit_code}"
        status = (r.exit_code >> 1) & 0xFF if r.exit is Exit.DEBUG_EXIT else STATUS[r.exit]
        if serial.quit_requested:
            exit_text = "quit (Ctrl-A x)"
    mips = instructions / seconds / 1e6 if seconds > 0 else 0.0
    _print_summary([("exit", escape(exit_text)), ("guest instructions", f"{instructions:,}"),
                    ("vmcore time", f"{seconds:.3f} s"), ("guest MIPS", f"{mips:.1f}")],
                   m if args.stats else None)
    return status


def _disk_images(args) -> list:
    """The image for the primary master and for the slave (None where there is none): -hda and
    -hdb name their drive, each --disk takes the first drive still free."""
    images = [None, None]
    for drive, option in enumerate(("-hda", "-hdb")):
        given = getattr(args, option[1:])
        if len(given) > 1:
            raise VmError(f"{option} given {len(given)} times; it names one drive")
        if given:
            images[drive] = given[0]
    for path in args.disk:
        if None not in images:
            raise VmError("too many disks: the primary IDE channel has two drives (master and slave)")
        images[images.index(None)] = path
    return images


def _attach_disk(m: Machine, args) -> None:
    images = _disk_images(args)
    if images == [None, None]:
        if args.disk_write:
            raise VmError("--disk-write needs a disk (--disk IMG, -hda IMG or -hdb IMG)")
        return
    for drive, path in enumerate(images):
        if path is not None:
            m.attach_disk(path, write=args.disk_write, drive=drive)


def _disk_note(m: Machine) -> str:
    if m.ide is None:
        return ""
    drives = [d for d in m.ide.drives if d is not None]
    how = "writes to the file" if drives[0].disk.write_through else "writes kept in memory"
    if drives == [m.ide.drives[0]]:
        disk = drives[0].disk
        return f", disk {disk.path.name} ({disk.sectors} sectors, {how})"
    if len(drives) == 2:
        how = how.replace("file", "files")
    disks = " and ".join(f"{d.disk.path.name} ({d.name}, {d.disk.sectors} sectors)" for d in drives)
    return f", {'disks' if len(drives) == 2 else 'disk'} {disks}, {how}"


def _print_cga(m: Machine) -> None:
    """The CGA text screen, when the guest wrote something on it."""
    rows = [row.rstrip() for row in m.cga_text()]
    if not any(rows):
        return
    while not rows[-1]:
        rows.pop()
    print("--- CGA screen (80x25 text at 0xB8000) ---")
    print("\n".join(rows))
    print("---")


def _print_summary(summary, stats_machine=None) -> None:
    console = _console()
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    for key, value in summary:
        t.add_row(key, value)
    console.print(t)
    if stats_machine is not None:
        st = Table(title="engine counters", title_justify="left")
        st.add_column("counter")
        st.add_column("value", justify="right")
        for key, value in stats_machine.stats.items():
            st.add_row(key, f"{value:,}")
        console.print(st)


def cmd_run(args) -> int:
    if args.kernel is not None:
        return cmd_run_linux(args)
    for flag, value in (("--initrd", args.initrd), ("--append", args.append)):
        if value is not None:
            raise VmError(f"{flag} needs --kernel")
    if args.memory is None:
        args.memory = 64
    target = args.target
    if args.bios is not None:
        if target is not None:
            raise VmError("give either a target or --bios, not both")
        target = args.bios
    elif target is None:
        raise VmError("nothing to run: give a workload name, an ELF path or --bios FILE")
    is_workload = args.bios is None and target in workloads.WORKLOADS
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
    clock = args.clock or ("host" if args.serial == "stdio" else "virtual")
    # None: Machine's defaults (VMCORE_MODE, VMCORE_ENGINE)
    m = Machine(memory_mb=memory, mode=args.mode, clock=clock, engine=args.engine, apic=args.apic)
    _attach_disk(m, args)
    if args.bios is not None:
        m.load_bios(elf)
    else:
        m.load_multiboot(elf, cmdline=cmdline)
    trace = set(filter(None, (args.debug or "").split(",")))
    if "exits" in trace:
        m.exit_trace = lambda text: print(f"  exit: {text}", file=sys.stderr)
    print(f"vmcore: {elf.name} in a {memory} MiB {m.mode} machine ({m.engine} engine), cmdline {cmdline!r}"
          + _disk_note(m))
    if "insn" in trace:
        r = _trace_run(m, args.count, args.timeout)
    elif args.serial == "stdio":
        # COM1 on the terminal: guest output as it comes, keys to the UART's receiver
        from vmcore.devices.serialio import HostSerial

        sys.stdout.flush()
        serial = HostSerial(m.uart, m.timers)
        if m.bus.device_at(0xE9) is not None:
            serial.mirror(m.bus.device_at(0xE9))      # the debug console too
        try:
            r = m.run(count=args.count, timeout=args.timeout)
        finally:
            serial.close()
        print()
    else:
        with _status(f"running {elf.name} in vmcore"):
            r = m.run(count=args.count, timeout=args.timeout)
    if args.serial != "stdio":
        print("--- guest console ---")
        print(r.console, end="" if r.console.endswith("\n") or not r.console else "\n")
        print("---")
    _print_cga(m)
    status = (r.exit_code >> 1) & 0xFF if r.exit is Exit.DEBUG_EXIT else STATUS[r.exit]
    summary = [("exit", escape(f"{r.exit.value} ({r.reason})")),
               ("guest instructions", f"{r.instructions:,}"),
               ("vmcore time", f"{r.seconds:.3f} s"),
               ("guest MIPS", f"{r.mips:.1f}")]
    native = same = None
    if is_workload and not args.no_native:
        with _status(f"running {target} natively ({args.native_repeat}x)"):
            native = workloads.run_native(target, size, repeat=args.native_repeat)
        same = native.output == r.console
        summary.append(("native time", f"{native.seconds:.3f} s (same source compiled for the host, best of "
                                       f"{args.native_repeat})"))
        summary.append(("output matches", "yes" if same else "[bold red]NO[/]"))
        if native.seconds > 0:
            summary.append(("slowdown vs native", f"{r.seconds / native.seconds:.1f}x"))
    _print_summary(summary, m if args.stats else None)
    if native is not None and not same:
        print(f"native output: {native.output!r}", file=sys.stderr)
        return STATUS_MISMATCH
    return status


def cmd_list(args) -> int:
    for name, w in workloads.WORKLOADS.items():
        sizes = ", ".join(f"{k}={v}" for k, v in w.sizes.items())
        print(f"{name:10s} {w.description}  [{sizes}; {w.memory_mb} MiB]")
    return 0


def cmd_bench(args) -> int:
    from vmcore import bench

    size = args.size or (bench.QUICK_SIZE if args.quick else "bench")
    return bench.run_suite(size=size, storage=args.storage, compare=args.compare, fail_above=args.fail_above,
                           bar=args.bar, keyword=args.keyword, verbose=args.verbose)


def cmd_dashboard(args) -> int:
    from vmcore import bench, dashboard

    storage = Path(args.storage) if args.storage else bench.DEFAULT_STORAGE
    out = Path(args.output) if args.output else storage / "dashboard.html"
    path = dashboard.write(storage, out, bar=args.bar, fail_above=args.fail_above)
    print(f"vmcore: wrote {path} ({path.stat().st_size / 1e6:.1f} MB, self-contained)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vmcore", description="IA-32 virtual machine monitor")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a workload (by name) or a multiboot ELF (by path)")
    r.add_argument("target", nargs="?", help="workload name (see `vmcore list`) or path to a multiboot ELF")
    r.add_argument("--bios", default=None, metavar="FILE",
                   help="boot a ROM image from the reset vector instead (like QEMU's -bios)")
    r.add_argument("--disk", action="append", default=[], metavar="IMG",
                   help="an ATA hard disk backed by the image file IMG (whole 512-byte sectors) on the primary "
                        "IDE channel, ports 0x1F0/0x3F6, IRQ 14: the first --disk is the master, a second one the "
                        "slave (QEMU's -hda, -hdb); the guest's writes stay in memory unless --disk-write")
    r.add_argument("-hda", action="append", default=[], metavar="IMG",
                   help="a disk as the primary master (as QEMU spells it)")
    r.add_argument("-hdb", action="append", default=[], metavar="IMG",
                   help="a disk as the primary slave (xv6 keeps its file system there)")
    r.add_argument("--disk-write", action="store_true",
                   help="with a disk: write the guest's writes to the image files, of all the disks attached")
    r.add_argument("-m", "--memory", type=int, default=None,
                   help="guest RAM in MiB (default 64; 256 with --kernel)")
    r.add_argument("--kernel", default=None, metavar="BZIMAGE",
                   help="boot a Linux bzImage through the 32-bit boot protocol, COM1 on this terminal "
                        "(interactive when stdin is a terminal: raw mode, host clock, Ctrl-A x quits)")
    r.add_argument("--initrd", default=None, metavar="FILE", help="with --kernel: the initial ramdisk")
    r.add_argument("--append", default=None, metavar="CMDLINE",
                   help="with --kernel: the kernel command line (default 'console=ttyS0')")
    r.add_argument("--count", type=int, default=None, help="stop after this many guest instructions")
    r.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    r.add_argument("--cmdline", default=None, help="multiboot command line (workloads: size=N)")
    r.add_argument("--size", default=None, help="workload size: tiny, small, bench (default) or a number")
    r.add_argument("--mode", choices=MODES, default=None,
                   help="bare: the engine alone, the guest with real privilege; bt: the monitor, guest kernel "
                        "code translated at CPL 1, user code direct, shadow page tables; trap: the guest kernel "
                        "deprivileged with trap-and-emulate only, no translation (default: vmcore.Machine's, "
                        "which $VMCORE_MODE sets)")
    r.add_argument("--engine", choices=ENGINES, default=None,
                   help="interp: the interpreter alone; jit: hot flat 32-bit code with paging off translated to "
                        "host code, the interpreter for the rest (default: vmcore.Machine's, which "
                        "$VMCORE_ENGINE sets)")
    r.add_argument("--apic", action="store_true",
                   help="a local APIC (0xFEE00000) and an I/O APIC (0xFEC00000); the PIC through LINT0")
    r.add_argument("--no-native", action="store_true", help="do not run the native comparison")
    r.add_argument("--native-repeat", type=int, default=3, help="native runs; the best counts (default 3)")
    r.add_argument("--stats", action="store_true", help="print the engine's counters")
    r.add_argument("--serial", choices=("none", "stdio"), default="none",
                   help="stdio: COM1 on this terminal, an interactive console (guest output to stdout, "
                        "keys to the UART); implies --clock host")
    r.add_argument("--clock", choices=("virtual", "host"), default=None,
                   help="time for the PIT and RTC: virtual (default: guest instructions, 100 per PIT "
                        "clock, repeatable runs) or host (wall clock; the default with --serial stdio)")
    r.add_argument("-d", "--debug", default=None, metavar="LIST",
                   help="trace: insn (each instruction, disassembled), exits (each exit), comma separated")
    r.set_defaults(func=cmd_run)
    ls = sub.add_parser("list", help="list the workloads")
    ls.set_defaults(func=cmd_list)

    from vmcore import bench   # the defaults live there

    b = sub.add_parser("bench", help="run the bench/ suites, store the run and print the table",
                       description="Runs bench/ through pytest-benchmark (needs '.[test]'), autosaves the run into "
                                   "the storage and prints workload, mode, guest MIPS, slowdown vs native, bt/bare "
                                   "and whether VMware's bar holds. Exit status 1 on a failed benchmark or, with "
                                   "--compare, a regression.")
    b.add_argument("--quick", action="store_true", help=f"use the {bench.QUICK_SIZE} workload size (seconds, "
                                                        "not minutes)")
    b.add_argument("--size", choices=bench.SIZES, default=None, help="workload size (default bench; --quick: "
                                                                     f"{bench.QUICK_SIZE})")
    b.add_argument("--compare", nargs="?", const=True, default=False, metavar="RUN",
                   help="fail if a median regressed against the previous stored run at the same size on this "
                        "machine, or against run number RUN")
    b.add_argument("--fail-above", type=int, default=bench.DEFAULT_FAIL_ABOVE, metavar="PCT",
                   help=f"regression threshold on the median, in percent (default {bench.DEFAULT_FAIL_ABOVE})")
    b.add_argument("--bar", type=float, default=bench.DEFAULT_BAR,
                   help=f"VMware's bar: the largest slowdown vs native that passes (default {bench.DEFAULT_BAR})")
    b.add_argument("--storage", default=None, metavar="DIR",
                   help=f"pytest-benchmark storage (default {bench.DEFAULT_STORAGE})")
    b.add_argument("-k", dest="keyword", default=None, metavar="EXPR", help="only the benchmarks pytest -k selects")
    b.add_argument("-v", "--verbose", action="store_true", help="show pytest's own output instead of a progress bar")
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("dashboard", help="write a static HTML dashboard of the stored benchmark runs")
    d.add_argument("--storage", default=None, metavar="DIR",
                   help=f"pytest-benchmark storage (default {bench.DEFAULT_STORAGE})")
    d.add_argument("-o", "--output", default=None, metavar="FILE", help="the page (default DIR/dashboard.html)")
    d.add_argument("--bar", type=float, default=bench.DEFAULT_BAR, help="as for bench")
    d.add_argument("--fail-above", type=int, default=bench.DEFAULT_FAIL_ABOVE, metavar="PCT", help="as for bench")
    d.set_defaults(func=cmd_dashboard)
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
