#!/usr/bin/env python3
"""Boot xv6-public to its shell and run usertests through the serial console; time both.

    python tools/xv6_bench.py [--images DIR] [--smp 1] [--json OUT] [--vmcore bare,bt] [--no-qemu]

Today the reference run is QEMU TCG, started the way xv6's Makefile does (`make qemu-nox`):
`qemu-system-i386 -nographic -drive file=fs.img,index=1,media=disk,format=raw
-drive file=xv6.img,index=0,media=disk,format=raw -smp 1 -m 512`, plus `-accel tcg`.
The console is driven by drive_console(), which only needs a read and a write callable: QEMU's
serial line, or vmcore's COM1 output and its PS/2 keyboard (vmcore_console()).
The images come from tools/fetch_xv6.py (build/xv6/...).

What xv6 needs from the machine (read from its lapic.c, ioapic.c, mp.c, ide.c, uart.c,
kbd.c, console.c, picirq.c, main.c, bootasm.S, entryother.S), for the vmcore side:

  boot      BIOS loads sector 0 of disk 0 (xv6.img) at 0x7C00; bootasm.S enables A20
            through the 8042 (0x64 <- 0xD1, 0x60 <- 0xDF) and enters protected mode;
            bootmain.c reads the kernel ELF with PIO from the primary channel, master
            (0x1F2-0x1F7, LBA28, command 0x20, polling 0x1F7 for READY, insl 0x1F0).
  MP table  mp.c (required: panics "Expect to run on an SMP" without it): an "_MP_"
            floating pointer (16 bytes, checksum 0, physaddr != 0) in the first KB of the
            EBDA (segment at 40:0E), else the last KB of base memory (KB count at 40:13),
            else 0xF0000-0xFFFFF; a "PCMP" config table, version 1 or 4, checksum 0, whose
            lapicaddr gives the LAPIC base; entries: processor (type 0, 20 bytes, apicid
            used as the CPU's id), bus (1), I/O APIC (type 2: apicno is compared with the
            IOAPIC's ID register), I/O and local interrupt (3, 4), each 8 bytes; any other
            type makes xv6 panic "Didn't find a suitable machine". imcrp != 0 makes xv6
            write the IMCR (0x22 <- 0x70, 0x23 |= 1).
  LAPIC     MMIO at conf->lapicaddr (0xFEE00000), mapped by vm.c's DEVSPACE 0xFE000000+;
            registers ID (0x20, id in bits 31:24: mycpu() looks the CPU up by it and
            panics "unknown apicid"), VER (0x30, maxlvt in bits 23:16), TPR (0x80),
            EOI (0xB0), SVR (0xF0, enable bit 8, vector 63), ESR (0x280, written twice),
            ICR low/high (0x300/0x310: INIT level assert/deassert, BCAST, STARTUP for the
            APs; DELIVS bit 12 is polled until clear), LVT TIMER (0x320, periodic mode
            bit 17, vector 32), PCINT (0x340, masked if maxlvt >= 4), LINT0/LINT1
            (0x350/0x360, masked), ERROR (0x370, vector 51), TICR (0x380, 10000000),
            TDCR (0x3E0, divide by 1). The LAPIC timer is xv6's only clock (ticks,
            sleep(), preemption); IRQ_TIMER is vector 32 = T_IRQ0 + 0.
  IOAPIC    MMIO at 0xFEC00000 (fixed in ioapic.c): IOREGSEL at +0, IOWIN at +0x10;
            ID (reg 0, bits 27:24 should equal the MP table's apicno), VER (reg 1,
            max redirection entry in bits 23:16), redirection table from reg 0x10,
            two 32-bit registers per IRQ: xv6 masks all, then unmasks edge/high/fixed
            entries: IRQ 1 (keyboard) and IRQ 4 (COM1) to CPU 0, IRQ 14 (IDE) to
            CPU ncpu-1, with vector 32 + irq; the destination is the APIC ID in bits
            31:24 of the high word (physical mode).
  8259 PIC  picirq.c only masks both PICs (0x21 <- 0xFF, 0xA1 <- 0xFF): all interrupts
            come through the IOAPIC and LAPIC.
  IDE       ide.c: primary channel 0x1F0-0x1F7 and 0x3F6 (nIEN = 0), IRQ 14, PIO only;
            TWO disks on the primary channel: master (dev 0) = xv6.img, slave (dev 1) =
            fs.img (ROOTDEV 1; QEMU's index=1). ideinit probes the slave by selecting it
            (0x1F6 <- 0xF0) and waiting for status != 0. Per block (BSIZE 512): count 1,
            LBA28 in 0x1F3-0x1F6, READ SECTORS 0x20 / WRITE SECTORS 0x30 (0xC4/0xC5 only
            if BSIZE > 512), data with insl/outsl on 0x1F0, completion by interrupt;
            idewait polls BSY/DRDY and checks DF/ERR.
  UART      uart.c: COM1 0x3F8, FIFO off (FCR 0), 9600 8N1 through the divisor latch,
            IER = 1 (receive data interrupt), LSR (0x3FD) bit 5 polled before each
            transmit, bit 0 for receive; "status 0xFF means no UART"; IRQ 4. The console
            writes every byte to both COM1 and the CGA screen.
  CGA       console.c: text memory at 0xB8000 (80x25, attribute 0x07), cursor through the
            CRTC index/data ports 0x3D4/0x3D5 (registers 14/15, read and written).
  keyboard  kbd.c: 8042 status 0x64 bit 0, data 0x60, scan code set 1, IRQ 1.
  CMOS      lapic.c: 0x70/0x71 (CMOS shutdown code 0x0F <- 0x0A and the warm reset vector
            at 40:67 before starting APs; RTC registers 0-9, status A bit 7, status B bit 2
            for date()); not needed for boot or usertests except the uio test, which
            expects a user-mode `out` to port 0x70 to fault (IOPL 0, TSS iomb beyond
            the limit).
  CPU       i386 protected mode with 4 MiB pages (CR4.PSE) for entrypgdir, CR0.WP, TSS
            (ltr, esp0/ss0 for ring 3 -> 0), int 0x40 (T_SYSCALL 64) trap gate with DPL 3,
            ring-3 user code; -m 512 but xv6 uses only PHYSTOP = 224 MiB (0xE000000).
            SMP: with more than one processor entry xv6 starts APs at 0x7000 with
            INIT/STARTUP IPIs; -smp 1 (one processor entry) needs no IPIs.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
SHELL_PROMPT = b"$ "
PASS_MARKER = b"ALL TESTS PASSED"
# Failure: a kernel panic ("lapicid N: panic: ..."), usertests' uio message ("uio: uio
# succeeded; test FAILED"), or the shell prompt coming back before the marker (every other
# usertests failure prints its message and exits).
PANIC = re.compile(rb"panic: ")
FAIL_PATTERNS = (PANIC, re.compile(rb"test FAILED"), re.compile(rb"\n\$ "))
LINE_GRACE_S = 1.0               # after a failure pattern, wait this long for the end of its line
DEFAULT_BOOT_TIMEOUT = 60.0
DEFAULT_TESTS_TIMEOUT = 600.0

ReadFn = Callable[[float], bytes]   # wait up to that many seconds; b"" when nothing came
WriteFn = Callable[[bytes], None]


class ConsoleTimeout(RuntimeError):
    """The guest did not print what was expected in time."""


class ConsoleFailure(RuntimeError):
    """The guest printed a failure (usertests' message or a kernel panic)."""


def wait_for(read: ReadFn, buffer: bytearray, marker: bytes, start: int, timeout: float,
             fail_patterns=(), what: str = "") -> int:
    """Read until marker appears in buffer[start:]; returns the index just past it."""
    deadline = time.monotonic() + timeout
    while True:
        found = buffer.find(marker, start)
        if found >= 0:
            return found + len(marker)
        for pat in fail_patterns:
            m = pat.search(buffer, start)
            if m:
                grace = time.monotonic() + LINE_GRACE_S        # let the rest of the line arrive
                while buffer.find(b"\n", m.end()) < 0 and time.monotonic() < grace:
                    buffer += read(0.1)
                line_start = buffer.rfind(b"\n", 0, m.start()) + 1
                line_end = buffer.find(b"\n", m.end())
                line = bytes(buffer[line_start:line_end if line_end >= 0 else len(buffer)])
                raise ConsoleFailure(f"{what}: {line.decode(errors='replace').strip()}")
        left = deadline - time.monotonic()
        if left <= 0:
            tail = bytes(buffer[-400:]).decode(errors="replace")
            raise ConsoleTimeout(f"{what}: no {marker!r} after {timeout:.0f} s; console ends with:\n{tail}")
        buffer += read(min(left, 0.5))


def drive_console(read: ReadFn, write: WriteFn, *, t0: float | None = None,
                  boot_timeout: float = DEFAULT_BOOT_TIMEOUT,
                  tests_timeout: float = DEFAULT_TESTS_TIMEOUT) -> dict:
    """Wait for xv6's shell, type `usertests`, wait for ALL TESTS PASSED.

    t0 is when the machine was started (time.monotonic()); returns the timings in seconds
    (boot_s: start to the first "$ ", usertests_s: from typing the command to the marker)
    and the console transcript.
    """
    t0 = time.monotonic() if t0 is None else t0
    out = bytearray()
    at = wait_for(read, out, SHELL_PROMPT, 0, boot_timeout, (PANIC,), "boot")
    t_shell = time.monotonic()
    write(b"usertests\n")
    t_typed = time.monotonic()
    at = wait_for(read, out, PASS_MARKER, at, tests_timeout, FAIL_PATTERNS, "usertests")
    t_pass = time.monotonic()
    return {"boot_s": round(t_shell - t0, 3), "usertests_s": round(t_pass - t_typed, 3),
            "total_s": round(t_pass - t0, 3), "console": out.decode(errors="replace")}


def qemu_command(images: Path, smp: int = 1, qemu: str = "qemu-system-i386") -> list[str]:
    """xv6's Makefile QEMUOPTS (fs.img on index 1 = primary slave), -nographic, TCG."""
    return [qemu, "-nographic", "-accel", "tcg", "-no-reboot",
            "-drive", f"file={images / 'fs.img'},index=1,media=disk,format=raw",
            "-drive", f"file={images / 'xv6.img'},index=0,media=disk,format=raw",
            "-smp", str(smp), "-m", "512"]


@contextlib.contextmanager
def qemu_console(images: Path, smp: int = 1):
    """QEMU TCG on fresh copies of the images (usertests refuses to run twice on one fs.img:
    "already ran user tests -- rebuild fs.img"); yields (read, write, t0, command)."""
    qemu = shutil.which("qemu-system-i386")
    if qemu is None:
        raise FileNotFoundError("qemu-system-i386 is not installed (apt-get install qemu-system-x86)")
    with tempfile.TemporaryDirectory(prefix="run-qemu-", dir=images) as tmp:
        work = Path(tmp)
        for name in ("xv6.img", "fs.img"):
            shutil.copyfile(images / name, work / name)
        cmd = qemu_command(work, smp, qemu)
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)

        def read(timeout: float) -> bytes:
            if not sel.select(timeout):
                return b""
            data = os.read(proc.stdout.fileno(), 65536)
            if not data:
                raise ConsoleFailure(f"QEMU exited with status {proc.wait()}")
            return data

        def write(data: bytes) -> None:
            proc.stdin.write(data)
            proc.stdin.flush()

        try:
            yield read, write, t0, cmd
        finally:
            proc.kill()
            proc.wait()
            sel.close()


SEABIOS = Path("/usr/share/seabios/bios.bin")   # Debian's seabios package (the 128 KiB build)
VMCORE_SLICE = 2_000_000                          # guest instructions per read() of the console


def vmcore_machine(images: Path, mode: str, engine: str | None = None):
    """A vmcore PC as QEMU's pc machine runs xv6: SeaBIOS, 512 MiB, the local and I/O APICs,
    xv6.img as the primary master and fs.img as the slave. The guest's disk writes stay in
    the machine (the images are not changed), so usertests can run again on the same fs.img."""
    import vmcore
    m = vmcore.Machine(memory_mb=512, mode=mode, apic=True, engine=engine)
    m.load_bios(SEABIOS)
    m.attach_disk(images / "xv6.img", drive=0)
    m.attach_disk(images / "fs.img", drive=1)
    return m


def vmcore_console(machine, slice_insns: int = VMCORE_SLICE):
    """(read, write) for drive_console() on a vmcore Machine: read runs the guest for a slice of
    instructions and returns what it wrote to COM1 since the last call; write types into the
    PS/2 keyboard, a key at a time as its buffer empties. (xv6's uartinit leaves MCR.OUT2 at 0,
    which on a PC keeps COM1's interrupt off the IRQ line; QEMU ignores OUT2, vmcore does not,
    so xv6 would never see COM1 input here. Its console reads the keyboard too.)"""
    from vmcore.machine import Exit
    seen = 0
    typing: list[str] = []

    def read(timeout: float) -> bytes:
        nonlocal seen
        if typing and machine.kbc.pending_bytes == 0:
            machine.kbc.type_text(typing.pop(0))
        # a slice is a count of instructions, not of seconds, so that a run is the same on any
        # machine and in every mode (the keyboard is fed between slices); timeout only bounds it
        result = machine.run(count=slice_insns, timeout=max(60.0, timeout))
        if result.exit is not Exit.BUDGET:
            raise ConsoleFailure(f"vmcore stopped: {result.exit.value}: {result.reason}")
        data = machine.console.encode()
        new, seen = data[seen:], len(data)
        return new

    def write(data: bytes) -> None:
        typing.extend(data.decode())

    return read, write


def run_vmcore(images: Path, mode: str = "bare", engine: str | None = None, **kw) -> dict:
    """Boot xv6 on vmcore through SeaBIOS, run usertests through the console, return the timings
    with the guest instruction count and the monitor's counters."""
    t0 = time.monotonic()
    m = vmcore_machine(images, mode, engine)
    read, write = vmcore_console(m)
    result = drive_console(read, write, t0=t0, **kw)
    result.update(mode=f"vmcore {mode}", engine=m.engine, instructions=m._engine.icount, stats=m.stats)
    return result


def run_qemu(images: Path, smp: int = 1, **kw) -> dict:
    """Boot xv6 under QEMU TCG, run usertests through the console, return the timings."""
    with qemu_console(images, smp) as (read, write, t0, cmd):
        result = drive_console(read, write, t0=t0, **kw)
    result.update(mode="qemu-tcg", smp=smp, command=" ".join(cmd))
    return result


def default_images() -> Path:
    sys.path.insert(0, str(REPO / "tools"))
    import fetch_xv6
    return fetch_xv6.fetch_and_build()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, help="directory with xv6.img and fs.img (default: tools/fetch_xv6.py)")
    ap.add_argument("--smp", type=int, default=1, help="CPUs (xv6's Makefile default is 2; the reference is 1)")
    ap.add_argument("--boot-timeout", type=float, default=DEFAULT_BOOT_TIMEOUT)
    ap.add_argument("--tests-timeout", type=float, default=DEFAULT_TESTS_TIMEOUT)
    ap.add_argument("--json", type=Path, help="write the timings (and the console) there")
    ap.add_argument("--show-console", action="store_true", help="print the console transcript")
    ap.add_argument("--vmcore", default="", metavar="MODES",
                    help="also run it on vmcore in these modes (comma separated: bare,bt), in the same run")
    ap.add_argument("--no-qemu", action="store_true", help="only the vmcore runs")
    args = ap.parse_args(argv)
    images = args.images or default_images()
    results = []
    try:
        if not args.no_qemu:
            results.append(run_qemu(images, args.smp, boot_timeout=args.boot_timeout,
                                    tests_timeout=args.tests_timeout))
        for mode in filter(None, args.vmcore.split(",")):
            results.append(run_vmcore(images, mode, boot_timeout=args.boot_timeout,
                                      tests_timeout=args.tests_timeout))
    except (ConsoleTimeout, ConsoleFailure, FileNotFoundError) as exc:
        print(f"xv6_bench: {exc}", file=sys.stderr)
        return 1
    for result in results:
        if args.show_console:
            print(result["console"])
        insns = f", {result['instructions']:,} guest instructions" if "instructions" in result else ""
        print(f"{result['mode']}: boot to shell {result['boot_s']:.2f} s, usertests {result['usertests_s']:.2f} s"
              f"{insns}")
    if args.json:
        for result in results:
            result.pop("stats", None)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
