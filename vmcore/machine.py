"""The public face of vmcore: a virtual machine that a Python program drives.

Verbs follow Unicorn's Python API (mem_read/mem_write, reg_read/reg_write,
hook_add, run with count/until/timeout). Guest physical memory is a numpy
array (``Machine.memory``) that the engine uses in place.
"""
from __future__ import annotations

import enum
import mmap
import os
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from vmcore._core._core import Engine, REG_NAMES, SEG_NAMES, jit_host_missing
from vmcore.devices import DebugConsole, DebugExit, KeyboardController, PortBus, SystemControlPortA, Uart16550
from vmcore.devices import Cmos, CoprocessorPorts, PciConfig, PicPair, Pit8254, PortWindow, PostCode, SystemControlPortB
from vmcore.devices import PciHostBridge, Piix3IsaBridge, TimerSet
from vmcore.devices.clock import Clock, HostClock, make_clock
from vmcore.devices.crtc import CRTC_PORT, CrtController
from vmcore.devices.disk import DiskImage
from vmcore.devices.mmio import MmioBus
from vmcore.devices.ioapic import IOAPIC_GPA, IOAPIC_SIZE, IoApic, isa_pin
from vmcore.devices.lapic import LAPIC_GPA, LAPIC_SIZE, LocalApic
from vmcore.devices.ide import (COMMAND_BLOCK_REGISTERS, CONTROL, DRIVE_NAMES, MASTER, PRIMARY_COMMAND_PORT,
                                PRIMARY_CONTROL_PORT, SLAVE, IdeController, PiixIdeFunction)
from vmcore.devices.pci import PAM_REGISTERS, ResetControl
from vmcore.errors import ConfigError, GuestMemoryError, VmError
from vmcore.loaders.flat import load_flat
from vmcore.loaders.multiboot import load_multiboot
from vmcore.monitor.supervisor import Supervisor, monitor_stats

MODES = ("bare", "bt", "trap")     # ARCHITECTURE.md "Modes"
DEFAULT_MODE = "bt"                 # passes all that bare passes (tests/test_monitor_modes.py); VMCORE_MODE overrides
ENGINES = ("interp", "jit")         # ARCHITECTURE.md "The native engine (JIT)"
# the JIT where the host can run it (x86-64 with user-mode FSGSBASE and BMI2); VMCORE_ENGINE overrides
DEFAULT_ENGINE = "jit" if jit_host_missing() is None else "interp"
# who classifies guest-kernel instructions under bt: the engine at decode time from the table
# generated from sensitive.py (the default), or the Python scanner with capstone per block (the
# independent check: tests/test_bt_classify.py; $VMCORE_CLASSIFIER overrides)
CLASSIFIERS = ("engine", "scanner")
DEFAULT_CLASSIFIER = "engine"
# PAM0-PAM6 with every range read/write DRAM (PAM0's low field is reserved)
PAM_ALL_RAM = bytes((0x30,)) + bytes((0x33,)) * (PAM_REGISTERS - 1)
CPU_MODELS = ("i686", "80386", "80286")   # what differs: vmcore/_core/api.pxi set_cpu_model
TSC_KINDS = ("instructions", "clock")     # what the time stamp counter counts (Machine's tsc=)

HOOK_IO_OUT = 1
HOOK_IO_IN = 2

# engine exit codes (vmcore/_core/defs.pxi)
(_EXIT_HLT, _EXIT_IO, _EXIT_BUDGET, _EXIT_SHUTDOWN, _EXIT_UNTIL, _EXIT_INTERNAL, _EXIT_UNIMPLEMENTED,
 _EXIT_INTR, _EXIT_TRANSLATE, _EXIT_FERR, _EXIT_MMIO) = range(1, 12)

# instructions per engine.run() call: bounds how late a timeout is noticed
_SLICE = 1 << 22
_EFLAGS_IF = 0x200
# a halted guest whose armed timers fire this many times in a row without raising INTR ends
# the run with HLT (a safety net: a timer counts as a wake source only if its IRQ can reach the CPU)
_IDLE_WAKE_LIMIT = 10_000

# the CGA colour text buffer (IBM CGA technical reference; mode 3): 80x25 (character, attribute) pairs
CGA_TEXT_GPA, CGA_COLUMNS, CGA_ROWS = 0xB8000, 80, 25
# what Python's cp437 codec leaves as control characters, the display draws as glyphs
_CP437_GLYPHS = str.maketrans(dict(zip(range(0x00, 0x20), " ☺☻♥♦♣♠•◘○◙♂♀♪♫☼►◄↕‼¶§▬↨↑↓→←∟↔▲▼"))
                              | {0x7F: "⌂"})

EXCEPTION_NAMES = {0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM", 8: "#DF",
                   10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF", 17: "#AC", 18: "#MC"}


def _weak(method: Callable) -> Callable:
    """A callback for a device that does not keep its machine alive (no reference cycle,
    so a dropped Machine and its guest RAM are freed at once)."""
    ref = weakref.WeakMethod(method)

    def call(*args):
        bound = ref()
        return None if bound is None else bound(*args)
    return call


class Exit(enum.Enum):
    """Why a run ended: a closed set."""

    HLT = "hlt"                   # the guest halted
    DEBUG_EXIT = "debug_exit"     # the guest wrote to the isa-debug-exit port
    SHUTDOWN = "shutdown"         # triple fault
    BUDGET = "budget"             # `count` instructions executed
    TIMEOUT = "timeout"           # `timeout` seconds passed
    UNTIL = "until"               # EIP reached `until`
    STOPPED = "stopped"           # Machine.stop() from a hook
    UNIMPLEMENTED = "unimplemented"  # a valid instruction the engine does not implement yet
    RESET = "reset"               # the guest pulsed the CPU reset line (8042, port 0x92 or 0xCF9)


@dataclass
class RunResult:
    exit: Exit
    exit_code: int | None
    instructions: int
    seconds: float
    console: str
    reason: str
    exception: tuple | None = None
    eip: int = 0

    @property
    def mips(self) -> float:
        return self.instructions / self.seconds / 1e6 if self.seconds > 0 else 0.0


@dataclass
class _Hook:
    kind: int
    callback: Callable
    begin: int
    end: int


_REG8 = {"al": (0, 0), "cl": (1, 0), "dl": (2, 0), "bl": (3, 0), "ah": (0, 8), "ch": (1, 8), "dh": (2, 8), "bh": (3, 8)}
_CREGS = {"cr0": 0, "cr2": 2, "cr3": 3, "cr4": 4}
_REG16 = {"ax": 0, "cx": 1, "dx": 2, "bx": 3, "sp": 4, "bp": 5, "si": 6, "di": 7}


class Machine:
    """An IA-32 PC: one CPU, ``memory_mb`` of RAM at gpa 0, a port bus with the
    debug console (0xE9), isa-debug-exit (0xF4) and a 16550 UART at COM1.

    A new machine is in flat 32-bit protected mode, as a multiboot loader leaves it;
    reset() puts the CPU in its power-on state (real mode, CS:IP = F000:FFF0).
    ``mode`` (ARCHITECTURE.md "Modes"): "bt" (default; $VMCORE_MODE overrides it), the monitor
    with binary translation of guest-kernel code and shadow page tables; "bare", the engine
    alone with the guest at its own privilege; "trap", deprivileged without translation.
    ``cpu`` picks the few behaviours in which an 80286, an 80386 and later CPUs differ;
    ``devices=False`` leaves the port bus empty (every port unclaimed).
    ``engine``: "jit" (default where the host has FSGSBASE and BMI2; $VMCORE_ENGINE overrides it)
    translates hot flat 32-bit code with paging off to host code (guest RAM is then a memfd that the
    JIT's window maps) and interprets the rest; "interp" is the interpreter alone. Both give the same
    results and the same instruction counts.
    ``classifier`` (bt): who decides what each guest-kernel instruction becomes (run as it is, a
    callout, or left to trap): "engine" (default; $VMCORE_CLASSIFIER overrides it) at decode time
    from vmcore/_core/sensitive_table.h, generated from vmcore/monitor/sensitive.py; "scanner",
    the Python supervisor with capstone per block. Both give the same actions (tests/test_bt_classify.py).

    With devices, the PC's interrupt hardware is there too: the 8259A pair (``pic``; IRQ 0 the
    PIT, IRQ 4 COM1, IRQ 8 the RTC), the 8254 PIT (``pit``), the CMOS RTC (``cmos``), port B
    (0x61) and the POST port (0x80, ``post``). ``clock`` drives the PIT and the RTC: "virtual"
    (time is the guest instruction count, 100 instructions per 1.193182 MHz PIT clock, plus
    1 us per access to a timer's port; runs repeat exactly), "host" (time.monotonic) or a
    ``vmcore.devices.Clock`` (vmcore/devices/clock.py).

    ``tsc`` says what RDTSC counts: "instructions" (guest instructions: the nanobenchmarks'
    measure) or "clock" (the machine's clock, as a real TSC keeps pace with the PIT and the
    RTC: the instruction count plus the time HLT and I/O cycles let pass under the virtual
    clock, 1 GHz host time under the host clock; an OS calibrating its TSC needs this).
    None: "instructions", until load_linux makes it "clock".

    ``apic=True`` adds the local APIC at gpa 0xFEE00000 (``lapic``, vmcore/devices/lapic.py) and the
    I/O APIC at 0xFEC00000 (``ioapic``, vmcore/devices/ioapic.py), both memory-mapped (MMIO exits):
    CPUID reports the APIC, IA32_APIC_BASE enables it, the PIC's INTR reaches the CPU through LINT0
    (virtual wire) and every ISA IRQ line also drives its I/O APIC pin (IRQ 0 on pin 2). Off by
    default: the CPU then has no APIC (CPUID.1:EDX[9] clear), as existing guests have always seen it.
    """

    def __init__(self, memory_mb: int = 64, mode: str | None = None, cpu: str = "i686", devices: bool = True,
                 clock: str | Clock = "virtual", tsc: str | None = None, engine: str | None = None,
                 classifier: str | None = None, apic: bool = False):
        if engine is None:
            engine = os.environ.get("VMCORE_ENGINE", DEFAULT_ENGINE)
        if engine not in ENGINES:
            raise ConfigError(f"unknown engine {engine!r}; choose one of {ENGINES}")
        if engine == "jit" and jit_host_missing() is not None:
            raise ConfigError(f"engine 'jit' needs {jit_host_missing()}, which this host lacks; use engine='interp'")
        if mode is None:
            mode = os.environ.get("VMCORE_MODE", DEFAULT_MODE)
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}; choose one of {MODES}")
        if not isinstance(memory_mb, int) or not 2 <= memory_mb <= 3072:
            raise ConfigError(f"memory_mb must be an integer from 2 to 3072, not {memory_mb!r}")
        if cpu not in CPU_MODELS:
            raise ConfigError(f"unknown cpu {cpu!r}; choose one of {CPU_MODELS}")
        self.mode = mode
        self.cpu = cpu
        self.engine = engine
        self._ram_fd = None
        if engine == "jit":
            # one set of RAM pages, mapped twice: here for the host (always read-write) and in the
            # JIT's window at guest-linear addresses, with the guest's protections
            self._ram_fd = os.memfd_create("vmcore-ram", os.MFD_CLOEXEC)
            os.ftruncate(self._ram_fd, memory_mb << 20)
            self._ram_map = mmap.mmap(self._ram_fd, memory_mb << 20, mmap.MAP_SHARED)
            self.memory = np.frombuffer(self._ram_map, dtype=np.uint8)
        else:
            self.memory = np.zeros(memory_mb << 20, dtype=np.uint8)
        self._engine = Engine(self.memory)
        if self._ram_fd is not None:
            self._engine.jit_attach(self._ram_fd)
        self._engine.set_cpu_model(cpu)
        self._engine.set_mode(mode)
        if classifier is None:
            classifier = os.environ.get("VMCORE_CLASSIFIER") or DEFAULT_CLASSIFIER
        if classifier not in CLASSIFIERS:
            raise ConfigError(f"unknown classifier {classifier!r}; choose one of {CLASSIFIERS}")
        self._supervisor = Supervisor(self._engine, self.memory) if mode == "bt" else None
        self.classifier = classifier
        self._engine.xlat_source = classifier
        self._console = bytearray()
        self._hooks: list[_Hook] = []
        self._stop_requested = False
        self._debug_exit_status: int | None = None
        self._reset_requested = False
        self.rom = None
        self._exits = {e: 0 for e in ("io", "hlt", "budget", "shutdown", "until", "unimplemented", "intr",
                                       "translate", "ferr", "mmio")}
        # the interrupt controller: an object with acknowledge() -> vector, which lowers or
        # keeps the INTR line through set_intr(); None until one is attached
        self.interrupt_controller = None
        self.bus = PortBus()
        self.mmio = MmioBus(self._engine)    # memory-mapped devices (vmcore/devices/mmio.py)
        self.uart = Uart16550(sink=self._console.extend)
        self.clock = make_clock(clock)
        if self.clock.virtual and getattr(self.clock, "icount", True) is None:
            engine = self._engine
            self.clock.icount = lambda: engine.icount
        self.timers = TimerSet(self.clock)   # the time-driven devices, polled between engine exits
        if tsc is not None and tsc not in TSC_KINDS:
            raise ConfigError(f"unknown tsc {tsc!r}; choose one of {TSC_KINDS}")
        self.tsc = tsc
        self._tsc_follows_clock = False
        self._set_tsc(tsc or "instructions")
        self.pic = self.pit = self.cmos = self.port_b = self.post = self.kbc = self.pci = self.fpu_ports = None
        self.crtc = None
        self.ide = None                      # the primary IDE channel, once attach_disk gave it a drive
        self.host_bridge = None
        self.lapic = self.ioapic = None      # apic=True
        self._intr = False
        self._halted = False                 # in HLT with IF = 1, waiting for an interrupt
        if devices:
            self.bus.attach(0xE9, 1, DebugConsole(sink=self._console.extend), name="debugcon")
            self.bus.attach(0xF4, 4, DebugExit(on_exit=_weak(self._on_debug_exit)), name="debug-exit")
            self.bus.attach(0x3F8, 8, self.uart, name="com1")
            self.bus.attach(0x92, 1, SystemControlPortA(self._engine.set_a20, _weak(self._on_reset)), name="port-a")
            kbc = KeyboardController(self._engine.set_a20, _weak(self._on_reset))
            self.bus.attach(0x60, 1, kbc, name="i8042")
            self.bus.attach(0x64, 1, PortWindow(kbc, 4), name="i8042-command")
            self.kbc = kbc
            # 00:00.0 the 440FX host bridge, whose PAM registers route 0xC0000-0xFFFFF in the
            # engine; 00:01.0 the PIIX3's ISA bridge. Without a BIOS, PAM starts as the firmware
            # a direct boot stands in for leaves it: all RAM (load_bios puts the reset value 0)
            self.host_bridge = PciHostBridge(on_pam=_weak(self._on_pam))
            self.host_bridge.set_pam(PAM_ALL_RAM)
            self.pci = PciConfig({(0, 0, 0): self.host_bridge, (0, 1, 0): Piix3IsaBridge()},
                                 reset_control=ResetControl(_weak(self._on_system_reset)))
            self.bus.attach(0xCF8, 8, self.pci, name="pci-config")
            self.pic = PicPair(_weak(self.set_intr))
            self.bus.attach(0x20, 2, self.pic.master, name="pic-master")
            self.bus.attach(0xA0, 2, self.pic.slave, name="pic-slave")
            self.bus.attach(0x4D0, 2, self.pic.elcr, name="elcr")
            self.pit = Pit8254(self.clock)
            self.bus.attach(0x40, 4, self.pit, name="pit")
            self.port_b = SystemControlPortB(self.pit)
            self.bus.attach(0x61, 1, self.port_b, name="port-b")
            self.cmos = Cmos(self.clock, memory_bytes=self.memory.size)
            self.bus.attach(0x70, 2, self.cmos, name="cmos")
            self.post = PostCode()
            self.bus.attach(0x80, 1, self.post, name="post")
            self.crtc = CrtController()                     # the text screen's cursor (0xB8000: cga_text)
            self.bus.attach(CRTC_PORT, 7, self.crtc, name="crtc")
            self.fpu_ports = CoprocessorPorts(self._engine.fpu_ignne)
            self.bus.attach(0xF0, 2, self.fpu_ports, name="fpu")
            self.pic.connect(0, self.pit.irq)
            self.pic.connect(4, self.uart.irq)
            self.pic.connect(8, self.cmos.irq)
            self.pic.connect(1, kbc.irq)
            self.pic.connect(12, kbc.aux_irq)
            self.pic.connect(13, self.fpu_ports.irq)       # FERR# (CR0.NE = 0)
            self.timers.add(self.pit)
            self.timers.add(self.cmos)
            self.interrupt_controller = self.pic
            self._timer_irqs = {id(self.pit): 0, id(self.cmos): 8}     # the time-driven ISA devices
            if apic:
                self._attach_apics()
            self.timers.wakeable = _weak(self._timer_can_wake)
        elif apic:
            raise ConfigError("apic=True needs the PC devices (a Machine made with devices=True)")
        self.boot_info = None
        self.exit_trace: Callable[[str], None] | None = None   # called with a line per engine exit

    def _attach_apics(self) -> None:
        """The local APIC between the PIC and the CPU, the I/O APIC on the ISA IRQ lines."""
        engine = self._engine
        engine.apic_present = True
        lapic = LocalApic(self.clock, apic_base=lambda: engine.msr_apic_base, set_intr=_weak(self.set_intr),
                          pic=self.pic, publish=lambda offset, value: engine.mmio_constant(LAPIC_GPA + offset, value))
        self.pic.set_intr = lapic.pic_intr          # the master's INT on LINT0
        ioapic = IoApic(deliver=lapic.accept)
        lapic.on_eoi = ioapic.eoi
        self.mmio.attach(LAPIC_GPA, LAPIC_SIZE, lapic, name="lapic")
        self.mmio.attach(IOAPIC_GPA, IOAPIC_SIZE, ioapic, name="ioapic")
        for irq, line in self.pic.lines.items():
            ioapic.connect(isa_pin(irq), line)
        self.timers.add(lapic)
        self.lapic, self.ioapic = lapic, ioapic
        self.interrupt_controller = lapic

    def _connect_irq(self, irq: int, line) -> None:
        """An ISA IRQ line: to the PIC and, with the APICs, to its I/O APIC pin."""
        self.pic.connect(irq, line)
        if self.ioapic is not None:
            self.ioapic.connect(isa_pin(irq), line)

    def _timer_can_wake(self, device) -> bool:
        """Can a time-driven device's next request reach the CPU (a halted CPU waits for it)?"""
        if device is self.lapic:
            return self.lapic.timer_can_interrupt()
        irq = self._timer_irqs.get(id(device))
        if irq is None:
            return True
        if self.pic.can_interrupt(irq) and (self.lapic is None or self.lapic.passes_pic()):
            return True
        if self.ioapic is not None:
            return self.ioapic.can_interrupt(isa_pin(irq))
        return False

    def _set_tsc(self, kind: str) -> None:
        """"clock": the TSC read from the host clock itself, or (any other clock) the instruction
        count plus the time that passed without instructions (kept in the engine's tsc_offset)."""
        host = kind == "clock" and isinstance(self.clock, HostClock)
        self._engine.set_tsc_host(self.clock.origin_ns if host else None)
        self._tsc_follows_clock = kind == "clock" and not host

    # ---- memory -------------------------------------------------------------------------
    def _check_range(self, gpa: int, size: int) -> None:
        if gpa < 0 or size < 0 or gpa + size > self.memory.size:
            raise GuestMemoryError(
                f"gpa range {gpa:#x}..{gpa + size:#x} is outside guest RAM (0..{self.memory.size:#x})")

    def mem_read(self, gpa: int, size: int) -> bytes:
        self._check_range(gpa, size)
        return self.memory[gpa:gpa + size].tobytes()

    def mem_write(self, gpa: int, data: bytes) -> None:
        data = bytes(data)
        self._check_range(gpa, len(data))
        self.memory[gpa:gpa + len(data)] = np.frombuffer(data, dtype=np.uint8)
        self._engine.notify_host_write(gpa, len(data))

    def _check_phys(self, gpa: int, size: int) -> None:
        if gpa < 0 or size < 0 or gpa + size > 1 << 32:
            raise GuestMemoryError(f"gpa range {gpa:#x}..{gpa + size:#x} is outside the 4 GiB physical space")

    def phys_read(self, gpa: int, size: int) -> bytes:
        """Bytes at gpa as the guest's processor reads them: where PAM sends reads of
        0xC0000-0xFFFFF (RAM or the ROM's low window), the ROM at the top of 4 GiB, all ones
        where nothing answers. (mem_read reads guest RAM itself.)"""
        self._check_phys(gpa, size)
        return self._engine.phys_read(gpa, size)

    def phys_write(self, gpa: int, data: bytes) -> None:
        """Write bytes at gpa as the guest's processor would: a byte that PAM or the ROM does
        not send to RAM is dropped. (mem_write writes guest RAM itself.)"""
        data = bytes(data)
        self._check_phys(gpa, len(data))
        self._engine.phys_write(gpa, data)

    # ---- registers ----------------------------------------------------------------------
    def reg_read(self, name: str) -> int:
        n = name.lower()
        if n in REG_NAMES:
            return self._engine.reg_get(REG_NAMES.index(n))
        if n == "eip":
            return self._engine.eip
        if n == "eflags":
            return self._engine.eflags
        if n in _REG16:
            return self._engine.reg_get(_REG16[n]) & 0xFFFF
        if n in _REG8:
            idx, shift = _REG8[n]
            return (self._engine.reg_get(idx) >> shift) & 0xFF
        if n in SEG_NAMES:
            return self._engine.seg_get(SEG_NAMES.index(n))[0]
        if n in _CREGS:
            return self._engine.cr_get(_CREGS[n])
        if n == "cpl":
            return self._engine.cpl
        raise ConfigError(f"unknown register {name!r}")

    def reset(self) -> None:
        """The CPU's power-on state: real mode, CS:IP = F000:FFF0 (linear FFFFFFF0h)."""
        self._engine.reset_real()
        self._halted = False
        if self.lapic is not None:
            self.lapic.reset()
            self.ioapic.reset()

    def raise_irq(self, vector: int) -> None:
        """Deliver an external interrupt with this vector at the next instruction boundary
        where the guest has interrupts enabled (the interrupt controller's side of INTR)."""
        self._engine.raise_irq(vector)

    @property
    def a20(self) -> bool:
        return self._engine.a20

    def reg_write(self, name: str, value: int) -> None:
        n = name.lower()
        value &= 0xFFFFFFFF
        if n in REG_NAMES:
            self._engine.reg_set(REG_NAMES.index(n), value)
        elif n == "eip":
            self._engine.eip = value
            self._halted = False             # a halted CPU sent elsewhere runs from there
        elif n == "eflags":
            self._engine.eflags = value
        elif n in _REG16:
            idx = _REG16[n]
            self._engine.reg_set(idx, (self._engine.reg_get(idx) & 0xFFFF0000) | (value & 0xFFFF))
        elif n in _REG8:
            idx, shift = _REG8[n]
            old = self._engine.reg_get(idx)
            self._engine.reg_set(idx, (old & ~(0xFF << shift) & 0xFFFFFFFF) | ((value & 0xFF) << shift))
        elif n in _CREGS:
            try:
                self._engine.cr_set(_CREGS[n], value)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        elif n in SEG_NAMES:
            # loaded as MOV Sreg would: real mode base = selector * 16; protected mode
            # reads the descriptor (and CS only in real mode)
            if n == "cs" and not self._engine.real_mode:
                raise ConfigError("CS is loaded by a far transfer in protected mode")
            vector = self._engine.seg_load(SEG_NAMES.index(n), value & 0xFFFF)
            if vector is not None:
                raise ConfigError(f"loading {n} with selector {value & 0xFFFF:#x} faults "
                                  f"({EXCEPTION_NAMES.get(vector, vector)})")
        else:
            raise ConfigError(f"unknown or read-only register {name!r}")

    # ---- loading ------------------------------------------------------------------------
    def load_multiboot(self, path, cmdline: str = "") -> None:
        """Load a multiboot v1 kernel and set the CPU as the spec's boot loader leaves it."""
        boot = load_multiboot(self.memory, path, cmdline)
        self._engine.flush()
        self._engine.reset_flat32()
        self.reg_write("eax", boot.eax)
        self.reg_write("ebx", boot.ebx)
        self.reg_write("eip", boot.entry_gla)
        self.boot_info = boot

    def load_linux(self, kernel, initrd=None, cmdline: str = ""):
        """Load a Linux bzImage (and an initrd) and set the CPU as the 32-bit boot protocol
        requires (Documentation/arch/x86/boot.rst): flat CS = 0x10, DS = ES = SS = 0x18 from a
        GDT in guest memory, ESI = the zero page, EBP = EDI = EBX = 0, IF = 0, paging off."""
        from vmcore.loaders.bzimage import BOOT_CS, BOOT_DS, CS_ATTR, DS_ATTR, GDT, load_bzimage

        boot = load_bzimage(self.memory, kernel, initrd, cmdline)
        if self.tsc is None:
            self._set_tsc("clock")       # Linux calibrates the TSC against the PIT
        engine = self._engine
        engine.flush()
        engine.reset_flat32()
        engine.gdtr_set(boot.gdt_gpa, len(GDT) - 1)
        for k, seg in enumerate(SEG_NAMES):
            if seg == "cs":
                engine.seg_set(k, BOOT_CS, 0, 0xFFFFFFFF, CS_ATTR)
            else:
                engine.seg_set(k, BOOT_DS, 0, 0xFFFFFFFF, DS_ATTR)
        for reg in REG_NAMES:
            self.reg_write(reg, 0)
        self.reg_write("esi", boot.zero_page_gpa)
        self.reg_write("esp", 0)
        self.reg_write("eflags", 0x2)
        self.reg_write("eip", boot.entry_gla)
        self.boot_info = boot
        return boot

    def load_bios(self, path) -> None:
        """Map a ROM image (a multiple of 64 KiB, at most 1 MiB) at the top of the 4 GiB
        space and its last 128 KiB below 1 MiB, as a PC does, and reset the CPU so that it
        starts at the reset vector F000:FFF0 (like QEMU's -bios)."""
        from vmcore.errors import LoaderError
        from pathlib import Path

        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as e:
            raise LoaderError(f"{p}: cannot read the ROM image: {e.strerror}") from None
        if not data or len(data) % 0x10000 or len(data) > 0x100000:
            raise LoaderError(f"{p}: a ROM image must be a non-empty multiple of 64 KiB up to 1 MiB, "
                              f"not {len(data)} bytes")
        self.rom = np.frombuffer(bytearray(data), dtype=np.uint8)
        self._engine.map_rom(self.rom)      # PAM as at power-on: 0xC0000-0xFFFFF to the PCI side
        if self.host_bridge is not None:
            self.host_bridge.set_pam(bytes(PAM_REGISTERS))
        self.reset()

    def attach_disk(self, path, write: bool = False, drive: int = 0) -> IdeController:
        """An ATA hard disk backed by the image file ``path`` on the primary IDE channel (ports
        0x1F0-0x1F7 and 0x3F6, IRQ 14), with the PIIX3 IDE function at PCI 00:01.1, as on QEMU's
        pc machine: ``drive`` 0 is the master (QEMU's -hda), 1 the slave (-hdb). The guest's
        writes stay in memory (the drive's state carries them) unless ``write``, which writes
        them to the file. Returns the channel, ``self.ide`` (``self.ide.drives[drive].disk``)."""
        if self.pic is None:
            raise ConfigError("attach_disk needs the PC devices (a Machine made with devices=True)")
        if type(drive) is not int or drive not in (MASTER, SLAVE):
            raise ConfigError(f"attach_disk: drive is 0 (the primary master) or 1 (the primary slave), "
                              f"not {drive!r}")
        if self.ide is not None and self.ide.drives[drive] is not None:
            raise ConfigError(f"a disk is attached already as the primary {DRIVE_NAMES[drive]} "
                              f"({self.ide.drives[drive].disk.path})")
        disk = DiskImage(path, write_through=write)
        if self.ide is None:
            ide = IdeController()
            self.bus.attach(PRIMARY_COMMAND_PORT, COMMAND_BLOCK_REGISTERS, ide, name="ide0")
            self.bus.attach(PRIMARY_CONTROL_PORT, 1, PortWindow(ide, CONTROL), name="ide0-control")
            self._connect_irq(14, ide.irq)
            self.pci.functions[(0, 1, 1)] = PiixIdeFunction()
            self.ide = ide
        self.ide.attach(drive, disk)
        return self.ide

    # ---- hooks --------------------------------------------------------------------------
    def hook_add(self, kind: int, callback: Callable, begin: int = 0, end: int = 0xFFFF) -> _Hook:
        """HOOK_IO_OUT: callback(machine, port, size, value); HOOK_IO_IN: callback(machine, port, size)
        returns the value read, or None to let the device answer. Ports begin..end inclusive."""
        if kind not in (HOOK_IO_OUT, HOOK_IO_IN):
            raise ConfigError(f"unknown hook kind {kind!r}")
        hook = _Hook(kind, callback, begin, end)
        self._hooks.append(hook)
        return hook

    def hook_del(self, hook: _Hook) -> None:
        self._hooks.remove(hook)

    def stop(self) -> None:
        """Ask a running run() to return (from a hook or a device)."""
        self._stop_requested = True

    def _on_debug_exit(self, status: int) -> None:
        self._debug_exit_status = status

    def _on_pam(self, page_index: int, count: int, read_ram: bool, write_ram: bool) -> None:
        """The host bridge's PAM registers changed for count 4 KiB pages from gpa
        0xC0000 + page_index * 4 KiB."""
        self._engine.set_pam(page_index, read_ram, write_ram, count)

    def _on_system_reset(self, hard: bool) -> None:
        """The PIIX3's reset control at 0xCF9: a hard reset puts the PCI functions (PAM
        included) in their reset state too; either ends the run with Exit.RESET."""
        if hard:
            self.pci.reset()
        self._on_reset()

    def _on_reset(self) -> None:
        self._reset_requested = True

    def _do_io(self) -> bool:
        """Complete the pending port access; True if completing it shut the machine down (the
        store of an INS faulted, and delivering that fault failed twice)."""
        port, size, is_in, value = self._engine.io_request()
        mask = (1 << (8 * size)) - 1
        if is_in:
            result = None
            hooked = False
            for h in self._hooks:
                if h.kind == HOOK_IO_IN and h.begin <= port <= h.end:
                    hooked = True
                    result = h.callback(self, port, size)
                    if result is not None:
                        break
            if result is None:
                result = self.bus.read(port, size)
            shutdown = self._engine.io_complete_in(int(result) & mask)
            if not hooked:
                # the rest of a REP INS from the same port, element by element, without an exit each
                while not shutdown and self._engine.io_ins_continue():
                    shutdown = self._engine.io_complete_in(int(self.bus.read(port, size)) & mask)
            return shutdown
        hooked = False
        for h in self._hooks:
            if h.kind == HOOK_IO_OUT and h.begin <= port <= h.end:
                h.callback(self, port, size, value)
                hooked = True
        self.bus.write(port, size, value)
        if not hooked:
            # the rest of a REP OUTS to the same port, without an exit for each element
            value = self._engine.io_outs_continue()
            while value is not None:
                self.bus.write(port, size, value)
                value = self._engine.io_outs_continue()
        return False

    # ---- running ------------------------------------------------------------------------
    def run(self, count: int | None = None, timeout: float | None = None, until: int | None = None) -> RunResult:
        """Run until the first of: guest exit (debug-exit port), HLT, triple fault, `count`
        instructions, `timeout` seconds, EIP == `until`, or stop(). An exception raised by a
        hook or a device ends the run and is re-raised here."""
        engine = self._engine
        start_icount = engine.icount
        start_progress = engine.progress
        start = time.perf_counter()
        deadline = None if timeout is None else start + timeout
        self._stop_requested = False
        self._debug_exit_status = None
        engine.set_until(until)
        timers = self.timers
        exit_kind = None
        reason = ""
        try:
            if timers.active:
                timers.service()
            while exit_kind is None:
                # count bounds instructions plus exception deliveries, so that a guest that
                # faults forever without retiring an instruction still ends
                done = engine.progress - start_progress
                if count is not None and done >= count:
                    exit_kind, reason = Exit.BUDGET, f"executed {count} instructions and exception deliveries"
                    break
                if deadline is not None and time.perf_counter() >= deadline:
                    exit_kind, reason = Exit.TIMEOUT, f"timeout after {timeout} s"
                    break
                if self._halted:
                    exit_kind, reason = self._wait_for_interrupt(deadline, timeout)
                    continue
                budget = _SLICE if count is None else min(_SLICE, count - done)
                if timers.active:            # a timer armed: end the slice at its deadline
                    budget = timers.bound(budget)
                if self._tsc_follows_clock:   # the TSC gains the time HLT and I/O cycles let pass
                    behind = self.clock.now() - engine.icount
                    if behind > engine.tsc_offset:
                        engine.tsc_offset = behind
                code = engine.run(budget)
                if timers.active:            # time-driven IRQs and host input, before the exit is handled
                    timers.service()
                if self.exit_trace is not None:
                    self.exit_trace(self._describe_exit(code))
                if code == _EXIT_IO:
                    self._exits["io"] += 1
                    if self._do_io():
                        self._exits["shutdown"] += 1
                        exit_kind, reason = Exit.SHUTDOWN, self._shutdown_reason()
                    elif self._debug_exit_status is not None:
                        exit_kind = Exit.DEBUG_EXIT
                        reason = f"guest wrote to the debug-exit port: status {self._debug_exit_status}"
                    elif self._reset_requested:
                        self._reset_requested = False
                        exit_kind, reason = Exit.RESET, "the guest pulsed the CPU reset line"
                elif code == _EXIT_HLT:
                    self._exits["hlt"] += 1
                    if engine.eflags & _EFLAGS_IF:
                        self._halted = True  # waits for an interrupt at the top of the loop
                    else:
                        exit_kind, reason = Exit.HLT, f"HLT at eip={engine.eip - 1:#x}"
                elif code == _EXIT_SHUTDOWN:
                    self._exits["shutdown"] += 1
                    exit_kind, reason = Exit.SHUTDOWN, self._shutdown_reason()
                elif code == _EXIT_UNTIL:
                    self._exits["until"] += 1
                    exit_kind, reason = Exit.UNTIL, f"reached eip={until:#x}"
                elif code == _EXIT_UNIMPLEMENTED:
                    self._exits["unimplemented"] += 1
                    exit_kind, reason = Exit.UNIMPLEMENTED, self._unimplemented_reason()
                elif code == _EXIT_TRANSLATE:
                    self._exits["translate"] += 1
                    self._supervisor.translate_miss()
                elif code == _EXIT_BUDGET:
                    self._exits["budget"] += 1
                elif code == _EXIT_MMIO:
                    self._exits["mmio"] += 1
                    self.mmio.service()
                    if self._reset_requested:
                        self._reset_requested = False
                        exit_kind, reason = Exit.RESET, "the guest pulsed the CPU reset line"
                elif code == _EXIT_FERR:
                    self._exits["ferr"] += 1
                    if self.fpu_ports is not None:
                        self.fpu_ports.assert_ferr()
                elif code == _EXIT_INTR:
                    self._exits["intr"] += 1
                    self._acknowledge_interrupt()
                    if engine.shutdown_pending:
                        exit_kind, reason = Exit.SHUTDOWN, self._shutdown_reason()
                else:
                    raise VmError(f"engine returned unknown exit code {code}")
                if exit_kind is None and self._stop_requested:
                    exit_kind, reason = Exit.STOPPED, "stop() was called"
        finally:
            engine.set_until(None)
        seconds = time.perf_counter() - start
        exception = engine.first_exception() if exit_kind is Exit.SHUTDOWN else None
        return RunResult(exit=exit_kind, exit_code=self._debug_exit_status if exit_kind is Exit.DEBUG_EXIT else None,
                         instructions=engine.icount - start_icount, seconds=seconds, console=self.console,
                         reason=reason, exception=exception, eip=engine.eip)

    def set_intr(self, level: bool) -> None:
        """The interrupt controller's INTR output into the CPU."""
        self._intr = bool(level)
        self._engine.set_intr(level)

    def _wait_for_interrupt(self, deadline: float | None, timeout: float | None) -> tuple:
        """HLT with IF = 1: let time pass until an interrupt can be taken. Under the virtual
        clock time jumps to the next timer event whose IRQ can reach the CPU; under the host
        clock the host sleeps until it (or host input, or the run's timeout). Returns
        (None, "") once INTR is up, (Exit.HLT, reason) when nothing armed can ever wake the
        guest, (Exit.TIMEOUT, reason) when the run's timeout comes first (still halted: the
        next run() goes on waiting)."""
        engine, timers, clock = self._engine, self.timers, self.clock
        hlt_eip = engine.eip - 1
        wakes = 0
        while True:
            if self._intr or engine.irq_pending:
                self._halted = False
                return None, ""
            if self._stop_requested:         # stop() from a host input while the guest idles
                return Exit.STOPPED, "stop() was called"
            wake = timers.next_wake()
            if wake is None and not timers.input_open:
                self._halted = False
                return Exit.HLT, f"HLT at eip={hlt_eip:#x} with interrupts enabled and no timer armed to wake it"
            if wakes >= _IDLE_WAKE_LIMIT:
                self._halted = False
                return Exit.HLT, f"HLT at eip={hlt_eip:#x}: {wakes} timer events passed and none raised an interrupt"
            if deadline is not None and time.perf_counter() >= deadline:
                return Exit.TIMEOUT, f"timeout after {timeout} s (halted at eip={hlt_eip:#x})"
            if wake is not None:
                wakes += 1
            if clock.virtual and wake is not None:
                clock.advance_to(wake)
            else:
                seconds = None if wake is None else max(0.0, (wake - clock.now()) / clock.unit_hz)
                if deadline is not None:
                    left = max(0.0, deadline - time.perf_counter())
                    seconds = left if seconds is None else min(seconds, left)
                timers.wait_input(seconds)
            timers.service()

    def _acknowledge_interrupt(self) -> None:
        """INTA: the controller names the vector, the CPU takes it at this boundary."""
        if self.interrupt_controller is None:
            self._engine.set_intr(False)
            return
        vector = self.interrupt_controller.acknowledge()
        if vector is not None:
            self._engine.inject_interrupt(vector)

    def _describe_exit(self, code: int) -> str:
        eip = self._engine.eip
        if code == _EXIT_IO:
            port, size, is_in, value = self._engine.io_request()
            return f"io {'in' if is_in else 'out'} port={port:#x} size={size}" + ("" if is_in else f" value={value:#x}")
        if code == _EXIT_MMIO:
            gpa, size, is_write, value = self._engine.mmio_request()
            return (f"mmio {'write' if is_write else 'read'} gpa={gpa:#x} size={size}"
                    + (f" value={value:#x}" if is_write else ""))
        names = {_EXIT_HLT: "hlt", _EXIT_BUDGET: "budget", _EXIT_SHUTDOWN: "shutdown", _EXIT_UNTIL: "until",
                 _EXIT_UNIMPLEMENTED: "unimplemented", _EXIT_FERR: "ferr"}
        return f"{names.get(code, code)} eip={eip:#x} icount={self._engine.icount}"

    def _shutdown_reason(self) -> str:
        exc = self._engine.first_exception()
        if exc is None:
            return "triple fault"
        vector, err, eip = exc
        name = EXCEPTION_NAMES.get(vector, f"vector {vector}")
        where = f"eip={eip:#x}"
        paging = self._engine.cr_get(0) & 0x80000000
        if not paging and eip >= self.memory.size:
            where += " (outside guest RAM)"
        code = "" if err is None else f" error code {err:#x}"
        base, limit = self._engine.idtr_get()
        idt = " with no IDT (IDTR limit 0)" if limit == 0 else f" (IDT at {base:#x} limit {limit:#x})"
        return f"triple fault: {name}{code} at {where} could not be delivered{idt}"

    def _unimplemented_reason(self) -> str:
        eip = self._engine.eip
        code = self.memory[eip:eip + 15].tobytes() if eip < self.memory.size else b""
        text = code[:4].hex(" ")
        try:
            import capstone

            md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
            insn = next(md.disasm(code, eip), None)
            if insn is not None:
                text = f"{insn.mnemonic} {insn.op_str}".strip() + f" ({insn.bytes.hex(' ')})"
        except ImportError:
            pass
        return f"instruction not implemented by the engine yet at eip={eip:#x}: {text}"

    # ---- state --------------------------------------------------------------------------
    @property
    def console(self) -> str:
        return self._console.decode("utf-8", errors="replace")

    def cga_text(self) -> list[str]:
        """The 80x25 colour text screen at gpa 0xB8000 (page 0): 25 strings of 80 characters,
        the character bytes of each (character, attribute) pair in code page 437, as the
        display shows them (00h blank, 01h-1Fh and 7Fh the CP437 glyphs)."""
        cells = self.memory[CGA_TEXT_GPA:CGA_TEXT_GPA + 2 * CGA_COLUMNS * CGA_ROWS:2].tobytes()
        text = cells.decode("cp437").translate(_CP437_GLYPHS)
        return [text[row * CGA_COLUMNS:(row + 1) * CGA_COLUMNS] for row in range(CGA_ROWS)]

    @property
    def stats(self) -> dict:
        s = self._engine.stats()
        s.update(self._engine.jit_stats())
        s.update({f"exits_{k}": v for k, v in self._exits.items()})
        s.update({f"bus_{k}": v for k, v in self.bus.stats.items()})
        s.update({f"mmio_bus_{k}": v for k, v in self.mmio.stats.items()})
        if self.mode != "bare":
            s.update(monitor_stats(self._engine, self._supervisor))
        return s
