"""Motorola MC146818A real-time clock and its 128 bytes of CMOS RAM, as on the PC/AT at
0x70 (offset 0: index, bit 7 masks NMI) and 0x71 (offset 1: data). IRQ 8 is ``irq``.

Registers (MC146818A datasheet, "Address map"):

- 0x00-0x09 seconds, seconds alarm, minutes, minutes alarm, hours, hours alarm, day of week
  (Sunday = 1), date, month, year; in BCD or binary (status B DM) and 12 or 24 hour (status B
  24/12; in 12-hour mode bit 7 of the hours is PM). The chip keeps them in the format they
  were written in and counts in the format that status B names, as the real one does (change
  DM or 24/12 with SET, then rewrite the time). An alarm byte with bits 7-6 = 11 matches any
  value.
- status A: UIP (read only: 1 in the 244 us before each update), DV2-0 (the divider: 010 is
  the 32.768 kHz time base; 11x holds it in reset; leaving reset, the first update comes
  500 ms later), RS3-0 (periodic interrupt rate: 2^(RS-1) cycles of 32.768 kHz; RS 1 and 2
  are 3.90625 and 7.8125 ms; 0 is none).
- status B: SET (inhibits updates, so the time can be written; setting it clears UIE; when
  it is cleared the next update is one second later), PIE, AIE, UIE, SQWE, DM, 24/12, DSE.
- status C (read only; a read clears it): IRQF = PF&PIE | AF&AIE | UF&UIE, PF (periodic),
  AF (alarm), UF (update ended). IRQ 8 follows IRQF.
- status D: VRT (bit 7, valid RAM and time) always 1.
- 0x0E-0x7F: battery backed RAM. PC BIOS layout filled here: 0x15-0x16 base memory in KB
  (640), 0x17-0x18 and 0x30-0x31 extended memory above 1 MB in KB (at most 65535), 0x34-0x35
  memory above 16 MB in 64 KB units (at most 65535), 0x32 century, 0x2E-0x2F the checksum of
  0x10-0x2D (big endian). The update carries the year into the century byte (as PC BIOSes
  and emulators do; the chip itself stops at 99).

Time runs from the machine's clock, lazily: registers are brought up to date when they are
read and when the machine polls at ``next_event()``; each port access takes the clock's ISA I/O
cycle (``Clock.io_access``). DSE (daylight saving) is stored and not applied. The square wave
output (SQWE) goes nowhere on a PC.
"""
from __future__ import annotations

import datetime as dt

from vmcore.devices.bus import PortDevice
from vmcore.devices.clock import Clock, VirtualClock
from vmcore.errors import ConfigError

CMOS_PORT = 0x70
CMOS_SIZE = 128
RTC_HZ = 32768

INDEX_NMI_DISABLE = 0x80      # bit 7 of a write to 0x70
INDEX_MASK = 0x7F

# registers
REG_SECONDS = 0x00
REG_SECONDS_ALARM = 0x01
REG_MINUTES = 0x02
REG_MINUTES_ALARM = 0x03
REG_HOURS = 0x04
REG_HOURS_ALARM = 0x05
REG_DAY_OF_WEEK = 0x06
REG_DAY_OF_MONTH = 0x07
REG_MONTH = 0x08
REG_YEAR = 0x09
REG_A = 0x0A
REG_B = 0x0B
REG_C = 0x0C
REG_D = 0x0D
# PC BIOS NVRAM layout
REG_BASE_MEM_LO = 0x15
REG_BASE_MEM_HI = 0x16
REG_EXT_MEM_LO = 0x17
REG_EXT_MEM_HI = 0x18
REG_CHECKSUM_HI = 0x2E
REG_CHECKSUM_LO = 0x2F
REG_EXT_MEM2_LO = 0x30
REG_EXT_MEM2_HI = 0x31
REG_CENTURY = 0x32
REG_HIGH_MEM_LO = 0x34
REG_HIGH_MEM_HI = 0x35
CHECKSUM_FIRST, CHECKSUM_LAST = 0x10, 0x2D

# status A
A_UIP = 0x80
A_DV_MASK = 0x70
A_DV_32KHZ = 0x20             # DV = 010
A_DV_RESET = 0x60             # DV = 11x holds the divider in reset
A_RS_MASK = 0x0F
A_DEFAULT = A_DV_32KHZ | 0x06     # 1024 Hz, as BIOSes program it
# status B
B_SET = 0x80
B_PIE = 0x40
B_AIE = 0x20
B_UIE = 0x10
B_SQWE = 0x08
B_DM_BINARY = 0x04
B_24H = 0x02
B_DSE = 0x01
B_DEFAULT = B_24H
# status C
C_IRQF = 0x80
C_PF = 0x40
C_AF = 0x20
C_UF = 0x10
C_FLAGS = C_PF | C_AF | C_UF      # the same bit positions as PIE, AIE, UIE in status B
# status D
D_VRT = 0x80

HOUR_PM = 0x80
ALARM_DONT_CARE = 0xC0
UIP_TICKS = 8                 # 244 us = 8 cycles of 32.768 kHz
DEFAULT_VIRTUAL_TIME = dt.datetime(2000, 1, 1, 0, 0, 0)


def periodic_ticks(rs: int) -> int:
    """The periodic interrupt period in 32.768 kHz cycles for rate select RS (0: none)."""
    if rs == 0:
        return 0
    if rs <= 2:
        return 1 << (rs + 6)          # 1: 128 cycles (3.90625 ms), 2: 256 (7.8125 ms)
    return 1 << (rs - 1)


class Cmos(PortDevice):
    """RTC and NVRAM. ``start``: the RTC's time when the clock reads 0 (a virtual clock's
    default is 2000-01-01 00:00:00); None with a host clock: the host's UTC time now."""

    def __init__(self, clock: Clock | None = None, start: dt.datetime | None = None,
                 memory_bytes: int | None = None):
        super().__init__()
        self.clock = clock if clock is not None else VirtualClock()
        self.on_reprogram = lambda: None
        self.ram = bytearray(CMOS_SIZE)
        self.index = 0
        self.nmi_masked = False
        self.flags = 0
        self.ram[REG_A] = A_DEFAULT
        self.ram[REG_B] = B_DEFAULT
        self.ram[REG_D] = D_VRT
        now = self._now()
        if start is None and not self.clock.virtual:
            start = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
            self._second_start = now - start.microsecond * RTC_HZ // 1_000_000
        else:
            self._second_start = now
        self.set_time(start or DEFAULT_VIRTUAL_TIME, _keep_phase=True)
        self._periodic_index = self._periodic_now(now)
        if memory_bytes is not None:
            self.set_memory_size(memory_bytes)

    # ---- host side ----------------------------------------------------------------------
    def set_time(self, when: dt.datetime, _keep_phase: bool = False) -> None:
        """Set the RTC to ``when`` in the current register format; a new second starts now."""
        if not _keep_phase:
            self._second_start = self._now()
        r = self.ram
        r[REG_SECONDS] = self._enc(when.second)
        r[REG_MINUTES] = self._enc(when.minute)
        r[REG_HOURS] = self._enc_hour(when.hour)
        r[REG_DAY_OF_WEEK] = self._enc(when.isoweekday() % 7 + 1)
        r[REG_DAY_OF_MONTH] = self._enc(when.day)
        r[REG_MONTH] = self._enc(when.month)
        r[REG_YEAR] = self._enc(when.year % 100)
        r[REG_CENTURY] = self._enc(when.year // 100)
        self._checksum()

    def time(self) -> dt.datetime:
        """The RTC's present time (ValueError if the guest wrote an impossible one)."""
        self._advance(self._now())
        r = self.ram
        return dt.datetime(self._dec(r[REG_CENTURY]) * 100 + self._dec(r[REG_YEAR]), self._dec(r[REG_MONTH]),
                           self._dec(r[REG_DAY_OF_MONTH]), self._hour(), self._dec(r[REG_MINUTES]),
                           self._dec(r[REG_SECONDS]))

    def set_memory_size(self, memory_bytes: int) -> None:
        """The BIOS memory size bytes for ``memory_bytes`` of RAM at gpa 0."""
        kb = memory_bytes >> 10
        r = self.ram
        base = min(kb, 640)
        r[REG_BASE_MEM_LO], r[REG_BASE_MEM_HI] = base & 0xFF, base >> 8
        ext = min(max(kb - 1024, 0), 0xFFFF)
        r[REG_EXT_MEM_LO], r[REG_EXT_MEM_HI] = ext & 0xFF, ext >> 8
        r[REG_EXT_MEM2_LO], r[REG_EXT_MEM2_HI] = ext & 0xFF, ext >> 8
        high = min(max(memory_bytes - (16 << 20), 0) >> 16, 0xFFFF)
        r[REG_HIGH_MEM_LO], r[REG_HIGH_MEM_HI] = high & 0xFF, high >> 8
        self._checksum()

    def _checksum(self) -> None:
        total = sum(self.ram[CHECKSUM_FIRST:CHECKSUM_LAST + 1]) & 0xFFFF
        self.ram[REG_CHECKSUM_HI], self.ram[REG_CHECKSUM_LO] = total >> 8, total & 0xFF

    # ---- formats ------------------------------------------------------------------------
    @property
    def _binary(self) -> bool:
        return bool(self.ram[REG_B] & B_DM_BINARY)

    def _dec(self, v: int) -> int:
        return v if self._binary else (v >> 4) * 10 + (v & 0xF)

    def _enc(self, v: int) -> int:
        return v & 0xFF if self._binary else (((v // 10) % 10) << 4) | (v % 10)

    def _hour_of(self, raw: int) -> int:
        if self.ram[REG_B] & B_24H:
            return self._dec(raw)
        return self._dec(raw & ~HOUR_PM) % 12 + (12 if raw & HOUR_PM else 0)

    def _hour(self) -> int:
        return self._hour_of(self.ram[REG_HOURS])

    def _enc_hour(self, hour: int) -> int:
        if self.ram[REG_B] & B_24H:
            return self._enc(hour)
        return self._enc(hour % 12 or 12) | (HOUR_PM if hour >= 12 else 0)

    # ---- time ---------------------------------------------------------------------------
    def _now(self) -> int:
        return self.clock.ticks(RTC_HZ)

    @property
    def _divider_running(self) -> bool:
        return (self.ram[REG_A] & A_DV_MASK) <= A_DV_32KHZ

    @property
    def _updating(self) -> bool:
        return self._divider_running and not self.ram[REG_B] & B_SET

    def _periodic_now(self, now: int) -> int:
        period = periodic_ticks(self.ram[REG_A] & A_RS_MASK)
        return now // period if period else 0

    def _advance(self, now: int) -> None:
        """Run the updates and the periodic flag up to ``now`` (32.768 kHz cycles)."""
        if self._updating:
            n = (now - self._second_start) // RTC_HZ
            if n > 0:
                alarm = self._next_alarm()
                if alarm is not None and alarm <= n:
                    self.flags |= C_AF
                self._add_seconds(n)
                self._second_start += n * RTC_HZ
                self.flags |= C_UF
        period = periodic_ticks(self.ram[REG_A] & A_RS_MASK)
        if period and self._divider_running:
            k = now // period
            if k > self._periodic_index:
                self.flags |= C_PF
                self._periodic_index = k

    def _add_seconds(self, n: int) -> None:
        r = self.ram
        total = self._dec(r[REG_SECONDS]) + 60 * self._dec(r[REG_MINUTES]) + 3600 * self._hour() + n
        days, rest = divmod(total, 86400)
        hour, rest = divmod(rest, 3600)
        minute, second = divmod(rest, 60)
        r[REG_SECONDS], r[REG_MINUTES], r[REG_HOURS] = self._enc(second), self._enc(minute), self._enc_hour(hour)
        if days:
            self._add_days(days)

    def _add_days(self, days: int) -> None:
        r = self.ram
        day, month = self._dec(r[REG_DAY_OF_MONTH]), self._dec(r[REG_MONTH])
        year = self._dec(r[REG_CENTURY]) * 100 + self._dec(r[REG_YEAR])
        try:
            d = dt.date(year, month, day) + dt.timedelta(days=days)
            year, month, day = d.year, d.month, d.day
        except (ValueError, OverflowError):
            # an impossible date written by the guest: count on as the chip's carry logic does
            for _ in range(min(days, 1 << 20)):
                if day >= _days_in_month(year, month):
                    day = 1
                    month = month + 1 if month < 12 else 1
                    year += month == 1
                else:
                    day += 1
        dow = (self._dec(r[REG_DAY_OF_WEEK]) - 1 + days) % 7 + 1
        r[REG_DAY_OF_MONTH], r[REG_MONTH], r[REG_DAY_OF_WEEK] = self._enc(day), self._enc(month), self._enc(dow)
        r[REG_YEAR], r[REG_CENTURY] = self._enc(year % 100), self._enc((year // 100) % 100)

    def _alarm_set(self, reg: int, limit: int, hours: bool = False) -> list[int]:
        raw = self.ram[reg]
        if raw & ALARM_DONT_CARE == ALARM_DONT_CARE:
            return list(range(limit))
        value = self._hour_of(raw) if hours else self._dec(raw)
        return [value] if 0 <= value < limit else []

    def _next_alarm(self) -> int | None:
        """Seconds from the present time to the next alarm match (1..86400), or None."""
        hours = self._alarm_set(REG_HOURS_ALARM, 24, hours=True)
        minutes = self._alarm_set(REG_MINUTES_ALARM, 60)
        seconds = self._alarm_set(REG_SECONDS_ALARM, 60)
        if not (hours and minutes and seconds):
            return None
        r = self.ram
        h0, m0, s0 = self._hour(), self._dec(r[REG_MINUTES]), self._dec(r[REG_SECONDS])
        now = h0 * 3600 + m0 * 60 + s0
        # the first (h, m, s) after the present time of day, else the first one tomorrow
        for h in hours:
            if h < h0:
                continue
            for m in minutes:
                if h == h0 and m < m0:
                    continue
                for s in seconds:
                    if h == h0 and m == m0 and s <= s0:
                        continue
                    return h * 3600 + m * 60 + s - now
        return (hours[0] * 3600 + minutes[0] * 60 + seconds[0] - now) % 86400 or 86400

    def _update_irq(self) -> None:
        self.irq.set_level(bool(self.flags & self.ram[REG_B] & C_FLAGS))

    def next_event(self) -> int | None:
        """When IRQF next rises (None while it is set: only a read of C lowers it)."""
        now = self._now()
        self._advance(now)
        self._update_irq()
        b = self.ram[REG_B]
        if self.irq.level or not b & (B_PIE | B_AIE | B_UIE):
            return None
        events = []
        period = periodic_ticks(self.ram[REG_A] & A_RS_MASK)
        if b & B_PIE and period and self._divider_running:
            events.append((self._periodic_index + 1) * period)
        if self._updating:
            if b & B_UIE:
                events.append(self._second_start + RTC_HZ)
            if b & B_AIE:
                alarm = self._next_alarm()
                if alarm is not None:
                    events.append(self._second_start + alarm * RTC_HZ)
        return self.clock.units_at(min(events), RTC_HZ) if events else None

    def poll(self) -> None:
        self._advance(self._now())
        self._update_irq()

    # ---- guest side ---------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        self.clock.io_access()
        if offset == 0:
            return 0xFF                   # the index register is write only
        now = self._now()
        self._advance(now)
        idx = self.index
        if idx == REG_A:
            uip = self._updating and (now - self._second_start) % RTC_HZ >= RTC_HZ - UIP_TICKS
            return self.ram[REG_A] | (A_UIP if uip else 0)
        if idx == REG_C:
            value = self.flags | (C_IRQF if self.flags & self.ram[REG_B] & C_FLAGS else 0)
            self.flags = 0
            self._update_irq()
            self.on_reprogram()
            return value
        if idx == REG_D:
            return D_VRT
        return self.ram[idx]

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        self.clock.io_access()
        if offset == 0:
            self.index = value & INDEX_MASK
            self.nmi_masked = bool(value & INDEX_NMI_DISABLE)
            return
        now = self._now()
        self._advance(now)
        idx = self.index
        if idx == REG_A:
            was_running = self._divider_running
            self.ram[REG_A] = value & ~A_UIP
            if self._divider_running and not was_running:
                self._second_start = now - RTC_HZ // 2       # first update 500 ms later
            self._periodic_index = self._periodic_now(now)
        elif idx == REG_B:
            old = self.ram[REG_B]
            if value & B_SET:
                value &= ~B_UIE
            self.ram[REG_B] = value
            if old & B_SET and not value & B_SET:
                self._second_start = now
        elif idx in (REG_C, REG_D):
            return                        # read only
        else:
            self.ram[idx] = value
        self._update_irq()
        self.on_reprogram()

    # ---- snapshots ----------------------------------------------------------------------
    def export_state(self) -> dict:
        return {"ram": bytes(self.ram), "index": self.index, "nmi_masked": self.nmi_masked, "flags": self.flags,
                "second_start": self._second_start, "periodic_index": self._periodic_index}

    def restore_state(self, state: dict) -> None:
        keys = ("ram", "index", "nmi_masked", "flags", "second_start", "periodic_index")
        missing = [k for k in keys if k not in state]
        if missing:
            raise ConfigError(f"CMOS state is missing {', '.join(missing)}")
        if len(state["ram"]) != CMOS_SIZE:
            raise ConfigError(f"CMOS state holds {len(state['ram'])} bytes of RAM, not {CMOS_SIZE}")
        self.ram = bytearray(state["ram"])
        self.index, self.nmi_masked, self.flags = int(state["index"]), bool(state["nmi_masked"]), int(state["flags"])
        self._second_start, self._periodic_index = int(state["second_start"]), int(state["periodic_index"])
        self._update_irq()
        self.on_reprogram()


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31
