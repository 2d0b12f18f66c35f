"""Time for the time-driven devices (PIT 8254, RTC), and the set of timers the machine polls
between engine exits.

A clock counts integer *units* from 0; ``unit_hz`` of them make a second. A device running
from an oscillator of ``hz`` converts with integer arithmetic only, so that a virtual clock is
exactly deterministic:

    ticks(hz)          = now * hz // unit_hz            (oscillator edges that have happened)
    units_at(tick, hz) = ceil(tick * unit_hz / hz)      (when edge number ``tick`` happens)

Two clocks:

``VirtualClock`` (the default): time is the guest's instruction count plus the time skipped
while the guest is halted. One unit is one guest instruction and ``unit_hz`` =
``insns_per_pit_tick`` * ``PIT_HZ``: with the default of 100 instructions per PIT input clock
the guest sees a CPU of 119.3 MIPS (a Pentium II-class machine), a PIT counter of 11932 (the
100 Hz tick of many kernels) fires every 1,193,200 instructions, and the BIOS default of 65536
(18.2 Hz) every 6,553,600. The same guest run twice takes the same interrupts at the same
instructions; time does not depend on how fast the host is. An access to a timer's ports (PIT,
port B, RTC) also takes ``io_ns`` = 1000 ns of virtual time, as an ISA bus I/O cycle does
(about 1 us): a guest polling a time source (a PIT calibration loop on port 0x61, waiting for
the RTC's update flag) then sees time pass at the real rate per access instead of a few
instructions' worth, and waiting 50 ms takes ~50k port reads, not millions.

``HostClock``: time is ``time.monotonic_ns()`` since the clock was made (units are
nanoseconds). Interrupts come at wall-clock rates; runs are not repeatable.
"""
from __future__ import annotations

import time
from typing import Callable, Protocol

# The PC's PIT input clock: 14.31818 MHz / 12 = 1.193181666... MHz, rounded (as every PC
# emulator and the Linux kernel's PIT_TICK_RATE do).
PIT_HZ = 1193182
# Default guest instructions per PIT input clock under the virtual clock (119.3 MIPS).
INSNS_PER_PIT_TICK = 100
# Virtual time an access to a timer device's port takes (an ISA I/O cycle, ~1 us).
IO_NS = 1000
# Instructions per engine.run() slice while a timer is armed under the host clock: how late
# (at the engine's speed, ~0.2-1 ms) a host-time timer can be noticed.
HOST_TIMER_SLICE = 100_000

CLOCK_KINDS = ("virtual", "host")


class Clock:
    """Integer time in units; ``unit_hz`` units per second."""

    unit_hz: int = 1_000_000_000
    virtual: bool = False

    def now(self) -> int:
        raise NotImplementedError

    def ticks(self, hz: int) -> int:
        """Edges of an ``hz`` oscillator (started with the clock) that have happened by now."""
        return self.now() * hz // self.unit_hz

    def units_at(self, tick: int, hz: int) -> int:
        """The clock time at which edge number ``tick`` of an ``hz`` oscillator happens."""
        return -(-tick * self.unit_hz // hz)

    def io_access(self) -> None:
        """A guest access to a timer device's port (the virtual clock charges its I/O cycle)."""


class VirtualClock(Clock):
    """Guest instructions as time. ``icount`` reads the engine's instruction counter (a
    machine sets it); without it the clock stands still except for ``advance``."""

    virtual = True

    def __init__(self, insns_per_pit_tick: int = INSNS_PER_PIT_TICK, icount: Callable[[], int] | None = None,
                 io_ns: int = IO_NS):
        if not isinstance(insns_per_pit_tick, int) or insns_per_pit_tick < 1:
            from vmcore.errors import ConfigError
            raise ConfigError(f"instructions per PIT tick must be a positive integer, not {insns_per_pit_tick!r}")
        self.insns_per_pit_tick = insns_per_pit_tick
        self.unit_hz = insns_per_pit_tick * PIT_HZ
        self.icount = icount
        self.skipped = 0          # units passed without instructions: HLT, I/O cycles
        self.io_units = io_ns * self.unit_hz // 1_000_000_000

    def now(self) -> int:
        return (self.icount() if self.icount is not None else 0) + self.skipped

    def advance(self, units: int) -> None:
        """Let ``units`` of time pass without guest instructions (HLT, or a test)."""
        if units > 0:
            self.skipped += units

    def advance_to(self, when: int) -> None:
        self.advance(when - self.now())

    def io_access(self) -> None:
        self.skipped += self.io_units

    def __repr__(self) -> str:
        return f"VirtualClock({self.insns_per_pit_tick} insns per PIT tick, now={self.now()})"


class HostClock(Clock):
    """Host monotonic time in nanoseconds since the clock was made."""

    unit_hz = 1_000_000_000

    def __init__(self) -> None:
        self._origin = time.monotonic_ns()

    def now(self) -> int:
        return time.monotonic_ns() - self._origin

    @property
    def origin_ns(self) -> int:
        """time.monotonic_ns() when the clock started (a machine's TSC counts from it)."""
        return self._origin

    def __repr__(self) -> str:
        return f"HostClock(now={self.now()} ns)"


def make_clock(kind) -> Clock:
    """``kind``: "virtual", "host" or a Clock."""
    if isinstance(kind, Clock):
        return kind
    if kind == "virtual":
        return VirtualClock()
    if kind == "host":
        return HostClock()
    from vmcore.errors import ConfigError
    raise ConfigError(f"unknown clock {kind!r}; choose one of {CLOCK_KINDS} or pass a Clock")


class TimedDevice(Protocol):
    """A device whose IRQ output changes with time."""

    def next_event(self) -> int | None:
        """Clock time of the next change of the IRQ output that can raise a request, or None."""

    def poll(self) -> None:
        """Bring the IRQ output up to the clock's present."""


class TimerSet:
    """The time-driven devices of a machine and the host inputs fed between engine exits.

    ``deadline`` is the earliest ``next_event`` (None: no timer armed); devices call
    ``touch()`` when a register write may have moved it. The machine calls ``service()`` after
    every engine exit while ``active`` (a timer armed or an input attached) and bounds each
    engine slice with ``bound()``; with nothing armed neither is called.
    """

    def __init__(self, clock: Clock):
        self.clock = clock
        self.devices: list = []
        self.inputs: list = []
        self.deadline: int | None = None
        self.dirty = False
        self.active = False
        self.polls = 0
        self.wakeable: Callable[[object], bool] = lambda device: True

    def add(self, device) -> None:
        self.devices.append(device)
        device.on_reprogram = self.touch
        self.touch()

    def add_input(self, source) -> None:
        """A host input (``pump()`` feeds it to its device, ``wait(seconds)`` blocks until data,
        ``open`` is False at end of input)."""
        self.inputs.append(source)
        self.active = True

    def remove_input(self, source) -> None:
        self.inputs.remove(source)
        self.touch()

    def touch(self) -> None:
        self.dirty = True
        self.active = True

    def refresh(self) -> None:
        self.dirty = False
        deadline = None
        for dev in self.devices:
            when = dev.next_event()
            if when is not None and (deadline is None or when < deadline):
                deadline = when
        self.deadline = deadline
        self.active = deadline is not None or bool(self.inputs)

    def poll(self) -> None:
        self.polls += 1
        for dev in self.devices:
            dev.poll()
        self.refresh()

    def service(self) -> None:
        """Between engine exits: feed host input, and poll the devices once a deadline passed."""
        for source in self.inputs:
            source.pump()
        if self.dirty:
            self.refresh()
        if self.deadline is not None and self.clock.now() >= self.deadline:
            self.poll()

    def bound(self, budget: int) -> int:
        """The instruction budget of the next engine slice."""
        if self.dirty:
            self.refresh()
        if self.deadline is None:
            return budget
        if self.clock.virtual:
            return max(1, min(budget, self.deadline - self.clock.now()))
        return min(budget, HOST_TIMER_SLICE)

    def next_wake(self) -> int | None:
        """The earliest event of a device whose request can reach the CPU now (a halted CPU
        waits for it), or None."""
        wake = None
        for dev in self.devices:
            when = dev.next_event()
            if when is not None and (wake is None or when < wake) and self.wakeable(dev):
                wake = when
        return wake

    @property
    def input_open(self) -> bool:
        return any(source.open for source in self.inputs)

    def wait_input(self, seconds: float | None) -> None:
        """Block until host input arrives or ``seconds`` pass (None: until input)."""
        if self.inputs:
            self.inputs[0].wait(seconds)
        elif seconds is not None and seconds > 0:
            time.sleep(seconds)
