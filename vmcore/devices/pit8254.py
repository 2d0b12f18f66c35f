"""Intel 8254 programmable interval timer (datasheet 231164) at 0x40-0x43: three counters
clocked at 1.193182 MHz. Counter 0's OUT is IRQ 0 (``irq``); counter 1 (DRAM refresh on a
PC) has no output here; counter 2's GATE and OUT are bits 0 and 5 of port 0x61
(``set_gate2``, ``out2``).

Offsets 0-2 are the counters, offset 3 the control word register (write only). The counters
are not stepped clock by clock: each holds a *segment*, the state of its counting element
(CE) and OUT at one input clock edge, from which any later state follows in closed form, so
reading a counter a million clocks later costs the same as one clock later. A segment ends
when something the datasheet says changes the sequence happens: a count is loaded into CE,
GATE changes, a control word or count is written.

Per the datasheet ("Operation common to all modes", "Mode definitions"):

- A control word resets the counter's control logic: OUT goes low in mode 0 and high in the
  other modes, counting stops, NULL COUNT is set, the read/write byte sequence restarts.
- A count written to CR is loaded into CE on the next CLK pulse (which does not decrement
  it); that clears NULL COUNT. So in mode 0 OUT rises N + 1 clocks after the count is written.
- Mode 0 (interrupt on terminal count): OUT low until CE reaches 0, then high until a new
  count or control word; GATE low suspends counting. Writing the first byte of a two-byte
  count stops counting and sets OUT low; the second byte loads on the next clock.
- Mode 1 (retriggerable one-shot): a rising GATE loads CE on the next clock and sets OUT low
  until CE reaches 0.
- Mode 2 (rate generator): OUT low for one clock when CE reaches 1, then CE reloads; period
  N. GATE low forces OUT high and suspends counting; a rising GATE reloads on the next clock.
  A new count written while counting is loaded at the end of the current period.
- Mode 3 (square wave): CE is decremented by two; OUT high for ceil(N/2) and low for
  floor(N/2) clocks (odd counts load N-1, as the datasheet describes). GATE as in mode 2; a new
  count is loaded at the end of the current half cycle.
- Mode 4 (software triggered strobe) / mode 5 (hardware triggered strobe): OUT low for one
  clock when CE reaches 0, N + 1 clocks after the count is written (mode 4) or after the GATE
  trigger (mode 5). GATE low suspends counting in mode 4.
- After terminal count in modes 0, 1, 4 and 5 CE wraps to FFFF (9999 in BCD) and goes on.
- A count of 0 is 65536 (10000 in BCD). A count of 1 in modes 2 and 3 is illegal; here OUT
  then gives one rising edge per clock (so a guest asking for the fastest rate gets it).
- Counter latch command, read-back command (COUNT and STATUS latches, a second latch before
  the read is ignored, status comes out first), LSB / MSB / LSB-then-MSB access with separate
  read and write byte sequences, BCD counting.

The status byte: OUT (bit 7), NULL COUNT (bit 6), then the RW, mode and BCD bits as programmed.

Every port access first lets the clock charge an ISA I/O cycle (``Clock.io_access``: 1 us of
virtual time under the virtual clock, nothing under the host clock).
"""
from __future__ import annotations

import copy

from vmcore.devices.bus import PortDevice
from vmcore.devices.clock import PIT_HZ, Clock, VirtualClock
from vmcore.errors import ConfigError

PIT_PORT = 0x40
PIT_REGISTERS = 4
CONTROL = 3                   # offset of the control word register

# control word
CW_SC_SHIFT = 6               # SC1-SC0: counter, 3 = read-back command
CW_SC_READBACK = 3
CW_RW_SHIFT = 4               # RW1-RW0
RW_LATCH = 0                  # counter latch command
RW_LSB = 1
RW_MSB = 2
RW_LSB_MSB = 3
CW_MODE_SHIFT = 1             # M2-M0 (bits 3-1); 6 and 7 are modes 2 and 3
CW_BCD = 0x01
CW_PROGRAM_BITS = 0x3F        # RW, M and BCD: what the status byte repeats
# read-back command (SC = 11)
RB_COUNT_N = 0x20             # 0 = latch the count of the selected counters
RB_STATUS_N = 0x10            # 0 = latch their status
RB_CNT0 = 0x02
RB_CNT1 = 0x04
RB_CNT2 = 0x08
# status byte
STATUS_OUT = 0x80
STATUS_NULL_COUNT = 0x40


def _to_bcd(value: int) -> int:
    return int(f"{value:04d}", 16)


def _from_bcd(value: int) -> int:
    return ((value >> 12) & 0xF) * 1000 + ((value >> 8) & 0xF) * 100 + ((value >> 4) & 0xF) * 10 + (value & 0xF)


class Counter:
    """One counter. Times are input clock edges (PIT ticks) since the clock started; the state
    "at t" is the state after the edge at t."""

    def __init__(self) -> None:
        self.cw = (RW_LSB_MSB << CW_RW_SHIFT) | (3 << CW_MODE_SHIFT)   # as a BIOS leaves none: no count
        self.mode = 3
        self.bcd = False
        self.rw = RW_LSB_MSB
        self.cr = 0                   # count register (as written: BCD digits in BCD mode)
        self.gate = True
        self.null_count = True
        self.has_count = False        # a count was written since the control word
        self.awaiting = True          # no count loaded since the control word
        self.write_msb_next = False
        self.lsb_written = 0
        self.read_msb_next = False
        self.latch: int | None = None           # output latch OL
        self.latch_msb_next = False
        self.status_latch: int | None = None
        self.pending: int | None = None         # tick at which CR is loaded into CE
        self.pending_low_first = False          # mode 3: that load starts a low half cycle
        self._segment(0, 0, out=True, armed=False, counting=False)

    # ---- counting element -------------------------------------------------------------------
    @property
    def modulus(self) -> int:
        return 10000 if self.bcd else 0x10000

    def _value(self) -> int:
        """N: the count in CR as a number (0 is the largest count, handled by the callers)."""
        return _from_bcd(self.cr) % 10000 if self.bcd else self.cr

    def _segment(self, t: int, ce: int, *, out: bool, armed: bool, counting: bool, low_first: bool = False,
                 n: int = 0) -> None:
        self.seg_t = t                # the edge at which this state holds
        self.seg_ce = ce              # CE then (0 .. modulus-1)
        self.seg_out = out            # OUT then (one-shot modes)
        self.seg_armed = armed        # terminal count not reached yet (modes 0, 1, 4, 5)
        self.seg_counting = counting  # edges after seg_t decrement CE
        self.seg_n = n                # modes 2, 3: the period N (1 .. modulus)
        self.seg_low_first = low_first

    @property
    def periodic(self) -> bool:
        return self.mode in (2, 3)

    def _reached(self, e: int) -> bool:
        return self.seg_armed and e >= (self.seg_ce or self.modulus)

    def state_at(self, t: int) -> tuple[int, bool]:
        """(CE, OUT) at edge t >= seg_t, with no load pending before t."""
        if self.periodic:
            if not self.seg_counting:
                return self.seg_ce, True
            n = self.seg_n
            d = t - self.seg_t
            if n == 1:
                return 1, True
            p = d % n
            if self.mode == 2:
                return (n - p) % self.modulus, p != n - 1
            high, low = (n + 1) // 2, n // 2
            first = low if self.seg_low_first else high
            if p < first:
                q, out = p, not self.seg_low_first
            else:
                q, out = p - first, self.seg_low_first
            ce = n - 2 * q if n % 2 == 0 else n - 1 - 2 * q
            return ce % self.modulus, out
        e = t - self.seg_t if self.seg_counting else 0
        ce = (self.seg_ce - e) % self.modulus
        if self.seg_armed:
            c = self.seg_ce or self.modulus
            if e >= c:
                return ce, True if self.mode in (0, 1) else e != c
            return ce, self.seg_out
        if self.mode in (4, 5) and not self.seg_out:
            return ce, t != self.seg_t    # the strobe lasts one clock
        return ce, self.seg_out

    def _segment_next_rise(self, a: int) -> int | None:
        """The first rising edge of OUT after edge a within the current segment."""
        t0 = self.seg_t
        if self.periodic:
            if not self.seg_counting:
                return None
            n = self.seg_n
            if n == 1:
                return max(a, t0) + 1
            off = 0
            if self.mode == 3 and self.seg_low_first:
                off = n // 2                  # the low half comes first
            d = a - t0 - off
            k = d // n + 1 if d >= 0 else 0
            if off == 0 and k == 0:
                k = 1
            return t0 + off + k * n
        if self.mode in (4, 5) and not self.seg_armed and not self.seg_out:
            return t0 + 1 if t0 + 1 > a else None
        if not self.seg_counting or not self.seg_armed:
            return None
        tc = t0 + (self.seg_ce or self.modulus)
        rise = tc if self.mode in (0, 1) else tc + 1
        return rise if rise > a else None

    def next_rise(self, a: int) -> int | None:
        """The first rising edge of OUT after edge a (a >= seg_t), loads pending included."""
        rise = self._segment_next_rise(a)
        if self.pending is None or (rise is not None and rise <= self.pending):
            return rise
        after = copy.copy(self)
        after._load(self.pending)
        return after._segment_next_rise(max(a, self.pending))

    def sync(self, t: int) -> None:
        """Apply a load due at or before edge t."""
        if self.pending is not None and self.pending <= t:
            self._load(self.pending)

    def _load(self, t: int) -> None:
        """CR -> CE at edge t."""
        n = self._value()
        low_first = self.pending_low_first
        self.pending = None
        self.pending_low_first = False
        self.null_count = False
        self.awaiting = False
        if self.periodic:
            self._segment(t, n, out=True, armed=False, counting=self.gate, low_first=low_first,
                          n=n or self.modulus)
        elif self.mode == 0:
            self._segment(t, n, out=False, armed=True, counting=self.gate)
        elif self.mode == 1:
            self._segment(t, n, out=False, armed=True, counting=True)
        elif self.mode == 4:
            self._segment(t, n, out=True, armed=True, counting=self.gate)
        else:
            self._segment(t, n, out=True, armed=True, counting=True)

    def _rebase(self, t: int, **changes) -> None:
        """Start a new segment at t from the present state, with ``changes`` applied."""
        ce, out = self.state_at(t)
        e = t - self.seg_t if self.seg_counting else 0
        armed = self.seg_armed and not self._reached(e)
        state = dict(out=out, armed=armed, counting=self.seg_counting, low_first=self.seg_low_first, n=self.seg_n)
        state.update(changes)
        ce = state.pop("ce", ce)
        self._segment(t, ce, **state)

    def _end_of_cycle(self, t: int) -> tuple[int, bool]:
        """Modes 2 and 3 while counting: the edge at which a new count is loaded (end of the
        period, or of the half cycle in mode 3) and whether a low half starts there."""
        n, d = self.seg_n, t - self.seg_t
        if n == 1:
            return t + 1, False
        if self.mode == 2:
            return self.seg_t + (d // n + 1) * n, False
        high, low = (n + 1) // 2, n // 2
        first = low if self.seg_low_first else high
        base = self.seg_t + (d - d % n)
        if d % n < first:
            return base + first, not self.seg_low_first
        return base + n, self.seg_low_first

    # ---- register interface -------------------------------------------------------------
    def program(self, cw: int, t: int) -> None:
        """A control word for this counter (not a latch command)."""
        self.sync(t)
        ce, _ = self.state_at(t)
        self.cw = cw & CW_PROGRAM_BITS
        self.rw = (cw >> CW_RW_SHIFT) & 3
        mode = (cw >> CW_MODE_SHIFT) & 7
        self.mode = mode & 3 if mode >= 6 else mode
        self.bcd = bool(cw & CW_BCD)
        self.null_count = True
        self.has_count = False
        self.awaiting = True
        self.pending = None
        self.write_msb_next = self.read_msb_next = self.latch_msb_next = False
        self.latch = None
        self.status_latch = None
        self._segment(t, ce % self.modulus, out=self.mode != 0, armed=False, counting=False)

    def write_count(self, byte: int, t: int) -> None:
        self.sync(t)
        if self.rw == RW_LSB:
            self.cr = byte
        elif self.rw == RW_MSB:
            self.cr = byte << 8
        elif not self.write_msb_next:
            self.lsb_written = byte
            self.write_msb_next = True
            if self.mode == 0:        # the first byte stops counting and sets OUT low
                self._rebase(t, out=False, armed=False, counting=False)
            return
        else:
            self.cr = self.lsb_written | (byte << 8)
            self.write_msb_next = False
        self.null_count = True
        self.has_count = True
        if self.mode == 0:
            self._rebase(t, out=False, armed=False, counting=False)
            self.pending = t + 1
        elif self.mode == 4:
            self.pending = t + 1
        elif self.periodic:
            if self.awaiting:
                self.pending = t + 1
            elif self.seg_counting and self.pending is None:
                self.pending, self.pending_low_first = self._end_of_cycle(t)
            # GATE low: the rising GATE loads the new count
        # modes 1 and 5: the next GATE trigger loads it

    def set_gate(self, level: bool, t: int) -> None:
        self.sync(t)
        level = bool(level)
        if level == self.gate:
            return
        self.gate = level
        if self.mode in (0, 4):
            self._rebase(t, counting=level)
        elif self.periodic:
            if not level:
                ce, _ = self.state_at(t)
                self._segment(t, ce, out=True, armed=False, counting=False, n=self.seg_n)
                if not self.awaiting:
                    self.pending = None       # a count waiting for the end of the cycle waits for GATE
            elif self.has_count:
                self.pending, self.pending_low_first = t + 1, False
        elif level and self.has_count:    # modes 1 and 5: a trigger
            self.pending, self.pending_low_first = t + 1, False

    def counter_latch(self, t: int) -> None:
        if self.latch is None:
            self.sync(t)
            self.latch = self.count_register(t)
            self.latch_msb_next = False

    def status_latch_command(self, t: int) -> None:
        if self.status_latch is None:
            self.sync(t)
            self.status_latch = self.status(t)

    def count_register(self, t: int) -> int:
        """CE as the data bus shows it."""
        ce, _ = self.state_at(t)
        return _to_bcd(ce) if self.bcd else ce

    def status(self, t: int) -> int:
        _, out = self.state_at(t)
        return (STATUS_OUT if out else 0) | (STATUS_NULL_COUNT if self.null_count else 0) | self.cw

    def out(self, t: int) -> bool:
        self.sync(t)
        return self.state_at(t)[1]

    def read_byte(self, t: int) -> int:
        self.sync(t)
        if self.status_latch is not None:
            value, self.status_latch = self.status_latch, None
            return value
        if self.latch is not None:
            value = self.latch
            if self.rw == RW_LSB_MSB and not self.latch_msb_next:
                self.latch_msb_next = True
                return value & 0xFF
            self.latch = None
            self.latch_msb_next = False
            return value >> 8 if self.rw != RW_LSB else value & 0xFF
        value = self.count_register(t)
        if self.rw == RW_LSB:
            return value & 0xFF
        if self.rw == RW_MSB:
            return value >> 8
        msb, self.read_msb_next = self.read_msb_next, not self.read_msb_next
        return value >> 8 if msb else value & 0xFF

    _STATE_KEYS = ("cw", "mode", "bcd", "rw", "cr", "gate", "null_count", "has_count", "awaiting",
                   "write_msb_next", "lsb_written", "read_msb_next", "latch", "latch_msb_next", "status_latch",
                   "pending", "pending_low_first", "seg_t", "seg_ce", "seg_out", "seg_armed", "seg_counting",
                   "seg_n", "seg_low_first")

    def export_state(self) -> dict:
        return {k: getattr(self, k) for k in self._STATE_KEYS}

    def restore_state(self, state: dict) -> None:
        missing = [k for k in self._STATE_KEYS if k not in state]
        if missing:
            raise ConfigError(f"8254 counter state is missing {', '.join(missing)}")
        for k in self._STATE_KEYS:
            setattr(self, k, state[k])


class Pit8254(PortDevice):
    """The three counters on ``clock``. ``irq`` follows counter 0's OUT; ``poll()`` (the
    machine calls it at ``next_event()``) delivers its rising edges."""

    def __init__(self, clock: Clock | None = None):
        super().__init__()
        self.clock = clock if clock is not None else VirtualClock()
        self.counters = [Counter(), Counter(), Counter()]
        self.on_reprogram = lambda: None
        self._polled = 0              # counter 0's OUT has been delivered up to this edge
        self.edges = 0                # rising edges of OUT0 delivered to the IRQ line
        self.irq.set_level(self.counters[0].state_at(0)[1])   # an unprogrammed counter's OUT is high

    def _tick(self) -> int:
        return self.clock.ticks(PIT_HZ)

    # ---- guest side ---------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        self.clock.io_access()
        if offset == CONTROL:
            return 0xFF                   # the control word register cannot be read
        t = self._tick()
        self.poll(t)
        return self.counters[offset].read_byte(t)

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        self.clock.io_access()
        t = self._tick()
        self.poll(t)
        counter = offset
        if offset == CONTROL:
            sc = counter = value >> CW_SC_SHIFT
            if sc == CW_SC_READBACK:
                for i, c in enumerate(self.counters):
                    if value & (RB_CNT0 << i):
                        if not value & RB_STATUS_N:
                            c.status_latch_command(t)
                        if not value & RB_COUNT_N:
                            c.counter_latch(t)
                counter = None
            elif (value >> CW_RW_SHIFT) & 3 == RW_LATCH:
                self.counters[sc].counter_latch(t)
                counter = None
            else:
                self.counters[sc].program(value, t)
        else:
            self.counters[offset].write_count(value, t)
        if counter == 0:              # a new mode or count may have changed OUT0
            self._drive_irq(t, rose=False)
        self.on_reprogram()

    # ---- counter 2 on port 0x61 ---------------------------------------------------------
    def set_gate2(self, level: bool) -> None:
        self.counters[2].set_gate(level, self._tick())
        self.on_reprogram()

    def out2(self) -> bool:
        return self.counters[2].out(self._tick())

    # ---- time ---------------------------------------------------------------------------
    def next_event(self) -> int | None:
        rise = self.counters[0].next_rise(self._polled)
        return None if rise is None else self.clock.units_at(rise, PIT_HZ)

    def poll(self, t: int | None = None) -> None:
        """Deliver OUT0 up to edge t (now): a rising edge since the last poll pulses the line
        (the PIC latches it even if OUT0 has fallen since), otherwise it follows OUT0."""
        if t is None:
            t = self._tick()
        if t < self._polled:
            return
        c0 = self.counters[0]
        rise = c0.next_rise(self._polled)
        self._drive_irq(t, rose=rise is not None and rise <= t)

    def _drive_irq(self, t: int, rose: bool) -> None:
        c0 = self.counters[0]
        c0.sync(t)
        self._polled = t
        if rose:
            self.edges += 1
            self.irq.set_level(False)
            self.irq.set_level(True)
        else:
            self.irq.set_level(c0.state_at(t)[1])

    # ---- snapshots ----------------------------------------------------------------------
    def export_state(self) -> dict:
        return {"counters": [c.export_state() for c in self.counters], "polled": self._polled}

    def restore_state(self, state: dict) -> None:
        for c, s in zip(self.counters, state["counters"]):
            c.restore_state(s)
        self._polled = int(state["polled"])
        self.on_reprogram()
