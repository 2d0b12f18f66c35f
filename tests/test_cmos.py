"""The MC146818A RTC and CMOS RAM through ports 0x70/0x71 on a virtual clock: the NMI mask
bit, BCD and binary, 12 and 24 hour formats, the update cycle (UIP, SET, divider reset),
periodic / alarm / update-ended interrupts with status C, and the PC BIOS memory bytes."""
import datetime as dt

import pytest

import vmcore
from vmcore.devices import Cmos, VirtualClock
from vmcore.devices import cmos as c


class Rtc:
    def __init__(self, start=None, memory_bytes=None):
        self.clock = VirtualClock(io_ns=0)              # port accesses take no time here
        self.cmos = Cmos(self.clock, start=start, memory_bytes=memory_bytes)
        self.levels = []
        self.cmos.irq.on_change = self.levels.append

    def seconds(self, s):
        self.clock.advance(round(s * self.clock.unit_hz))

    def __getitem__(self, reg):
        self.cmos.write(0, 1, reg)
        return self.cmos.read(1, 1)

    def __setitem__(self, reg, value):
        self.cmos.write(0, 1, reg)
        self.cmos.write(1, 1, value)

    def time_regs(self):
        return [self[r] for r in (c.REG_HOURS, c.REG_MINUTES, c.REG_SECONDS)]

    def date_regs(self):
        return [self[r] for r in (c.REG_CENTURY, c.REG_YEAR, c.REG_MONTH, c.REG_DAY_OF_MONTH, c.REG_DAY_OF_WEEK)]

    def set_clock(self, when, b):
        """As a BIOS sets it: SET, the format in B, the registers, SET cleared."""
        self[c.REG_B] = b | c.B_SET
        binary = b & c.B_DM_BINARY
        enc = (lambda v: v) if binary else (lambda v: ((v // 10) << 4) | (v % 10))
        hour = enc(when.hour) if b & c.B_24H else enc(when.hour % 12 or 12) | (0x80 if when.hour >= 12 else 0)
        for reg, value in ((c.REG_SECONDS, enc(when.second)), (c.REG_MINUTES, enc(when.minute)), (c.REG_HOURS, hour),
                           (c.REG_DAY_OF_WEEK, enc(when.isoweekday() % 7 + 1)), (c.REG_DAY_OF_MONTH, enc(when.day)),
                           (c.REG_MONTH, enc(when.month)), (c.REG_YEAR, enc(when.year % 100)),
                           (c.REG_CENTURY, enc(when.year // 100))):
            self[reg] = value
        self[c.REG_B] = b


def test_index_port_and_nmi_mask_bit():
    r = Rtc()
    r.cmos.write(0, 1, 0x80 | c.REG_D)
    assert r.cmos.nmi_masked and r.cmos.index == c.REG_D
    assert r.cmos.read(1, 1) == c.D_VRT
    r.cmos.write(0, 1, 0x40)
    assert not r.cmos.nmi_masked and r.cmos.index == 0x40
    assert r.cmos.read(0, 1) == 0xFF                      # the index register is write only
    r[0x40] = 0x5A                                        # battery-backed RAM
    assert r[0x40] == 0x5A


def test_power_on_registers_and_fixed_virtual_time():
    r = Rtc()
    assert r[c.REG_A] == 0x26 and r[c.REG_B] == c.B_24H and r[c.REG_D] == c.D_VRT
    assert r.time_regs() == [0x00, 0x00, 0x00]
    assert r.date_regs() == [0x20, 0x00, 0x01, 0x01, 7]  # 2000-01-01 was a Saturday
    r[c.REG_C] = 0xFF
    r[c.REG_D] = 0x00                                     # C and D are read only
    assert r[c.REG_C] == 0 and r[c.REG_D] == c.D_VRT
    r[c.REG_A] = 0xA6
    assert r[c.REG_A] & c.A_UIP == 0                      # UIP is read only


def test_time_advances_with_the_clock_in_bcd():
    r = Rtc(start=dt.datetime(1999, 12, 31, 23, 58, 59))
    r.seconds(61.5)
    assert r.time_regs() == [0x00, 0x00, 0x00]
    assert r.date_regs() == [0x20, 0x00, 0x01, 0x01, 7]   # into the next century
    assert r.cmos.time() == dt.datetime(2000, 1, 1)
    r.seconds(86400 * 59)
    assert r.date_regs()[2:4] == [0x02, 0x29]             # 2000 is a leap year


def test_binary_and_12_hour_formats():
    r = Rtc()
    r.set_clock(dt.datetime(2023, 6, 30, 23, 59, 58), c.B_DM_BINARY)     # 12-hour, binary
    assert r.time_regs() == [11 | 0x80, 59, 58]           # 11 PM
    r.seconds(2)
    assert r.time_regs() == [12, 0, 0]                    # 12 AM (midnight)
    assert r.date_regs() == [20, 23, 7, 1, 7]
    r.seconds(12 * 3600)
    assert r[c.REG_HOURS] == 12 | 0x80                    # noon is 12 PM
    r.set_clock(dt.datetime(2023, 6, 30, 13, 5, 9), c.B_24H)             # 24-hour, BCD
    assert r.time_regs() == [0x13, 0x05, 0x09]


def test_set_inhibits_updates_and_clears_uie():
    r = Rtc()
    r[c.REG_B] = c.B_24H | c.B_UIE
    r[c.REG_B] = c.B_24H | c.B_UIE | c.B_SET
    assert r[c.REG_B] == c.B_24H | c.B_SET
    r.seconds(5)
    assert r[c.REG_SECONDS] == 0
    r[c.REG_SECONDS] = 0x30
    r[c.REG_B] = c.B_24H
    r.seconds(0.99)
    assert r[c.REG_SECONDS] == 0x30                       # the first update one second after SET clears
    r.seconds(0.02)
    assert r[c.REG_SECONDS] == 0x31


def test_divider_reset_stops_time_and_restart_updates_after_half_a_second():
    r = Rtc()
    r[c.REG_A] = 0x70 | 0x06                              # DV = 111: reset
    r.seconds(10)
    assert r[c.REG_SECONDS] == 0
    r[c.REG_A] = 0x26
    r.seconds(0.49)
    assert r[c.REG_SECONDS] == 0
    r.seconds(0.02)
    assert r[c.REG_SECONDS] == 1


def test_uip_in_the_244_us_before_each_update():
    r = Rtc()
    r.seconds(0.5)
    assert not r[c.REG_A] & c.A_UIP
    r.seconds(0.5 - 200e-6)
    assert r[c.REG_A] & c.A_UIP
    assert r[c.REG_SECONDS] == 0                          # the update has not happened yet
    r.seconds(250e-6)
    assert not r[c.REG_A] & c.A_UIP and r[c.REG_SECONDS] == 1


@pytest.mark.parametrize("rs, hz", [(3, 8192), (6, 1024), (1, 256), (2, 128), (15, 2)])
def test_periodic_rate_from_status_a(rs, hz):
    assert c.periodic_ticks(rs) == 32768 // hz
    r = Rtc()
    r[c.REG_A] = 0x20 | rs
    r.cmos.read(1, 1)
    r[c.REG_C]                                            # clear
    r[c.REG_B] = c.B_24H | c.B_PIE
    first = r.cmos.next_event()
    r.clock.advance_to(first)
    r.cmos.poll()
    assert r.cmos.irq.level
    second_due = r.cmos.next_event()
    assert second_due is None                             # IRQF set: nothing more until C is read
    assert r[c.REG_C] == c.C_IRQF | c.C_PF
    assert not r.cmos.irq.level
    period = r.cmos.next_event() - first
    assert abs(period - r.clock.unit_hz / hz) <= 1


def test_periodic_flag_without_pie_and_irq_follows_irqf():
    r = Rtc()
    r[c.REG_C]
    r.seconds(0.01)
    assert r[c.REG_C] == c.C_PF                           # PF sets even without PIE; no IRQF
    assert r.cmos.next_event() is None                    # no interrupt enabled
    r.seconds(0.01)
    r[c.REG_B] = c.B_24H | c.B_PIE                        # enabling with PF set raises IRQF
    assert r.cmos.irq.level and r.levels == [True]
    assert r[c.REG_C] == c.C_IRQF | c.C_PF and r.levels == [True, False]


def test_update_ended_interrupt():
    r = Rtc()
    r[c.REG_A] = 0x20                                     # no periodic flag
    r[c.REG_B] = c.B_24H | c.B_UIE
    r[c.REG_C]
    assert r.cmos.next_event() == r.clock.unit_hz         # the update at the first second
    r.seconds(1)
    r.cmos.poll()
    assert r.cmos.irq.level
    assert r[c.REG_C] == c.C_IRQF | c.C_UF
    assert r[c.REG_SECONDS] == 1


def test_alarm_interrupt_and_dont_care_bytes():
    r = Rtc()
    r[c.REG_A] = 0x20
    r[c.REG_SECONDS_ALARM] = 0x05
    r[c.REG_MINUTES_ALARM] = 0x00
    r[c.REG_HOURS_ALARM] = 0x00
    r[c.REG_B] = c.B_24H | c.B_AIE
    assert r.cmos.next_event() == 5 * r.clock.unit_hz
    r.seconds(4)
    assert r[c.REG_C] == c.C_UF                           # updates, no alarm yet
    r.seconds(1)
    r.cmos.poll()
    assert r.cmos.irq.level and r[c.REG_C] == c.C_IRQF | c.C_AF | c.C_UF
    # the next match of 00:00:05 is a day away
    assert r.cmos.next_event() == (5 + 86400) * r.clock.unit_hz
    r[c.REG_HOURS_ALARM] = c.ALARM_DONT_CARE
    r[c.REG_MINUTES_ALARM] = c.ALARM_DONT_CARE
    r[c.REG_SECONDS_ALARM] = c.ALARM_DONT_CARE            # every second
    assert r.cmos.next_event() == 6 * r.clock.unit_hz
    r[c.REG_SECONDS_ALARM] = 0x30
    assert r.cmos.next_event() == 30 * r.clock.unit_hz    # xx:xx:30: this minute
    r.seconds(3600 * 5)
    assert r[c.REG_C] & c.C_AF                            # passed while nobody looked


def test_alarm_in_12_hour_mode_compares_the_pm_bit():
    r = Rtc()
    r.set_clock(dt.datetime(2001, 1, 1, 13, 0, 0), 0)     # BCD, 12-hour: 01 PM
    r[c.REG_A] = 0x20
    r[c.REG_SECONDS_ALARM] = 0
    r[c.REG_MINUTES_ALARM] = 0
    r[c.REG_HOURS_ALARM] = 0x82                           # 2 PM
    r[c.REG_B] = c.B_AIE
    start = r.clock.now()
    assert r.cmos.next_event() - start == 3600 * r.clock.unit_hz


def test_bios_memory_size_bytes_and_checksum():
    r = Rtc(memory_bytes=64 << 20)
    word = lambda lo: r[lo] | (r[lo + 1] << 8)
    assert word(c.REG_BASE_MEM_LO) == 640
    assert word(c.REG_EXT_MEM_LO) == 63 * 1024 == word(c.REG_EXT_MEM2_LO)
    assert word(c.REG_HIGH_MEM_LO) == (48 << 20) >> 16
    assert (r[c.REG_CHECKSUM_HI] << 8) | r[c.REG_CHECKSUM_LO] == sum(r[i] for i in range(0x10, 0x2E))
    big = Rtc(memory_bytes=3072 << 20)
    assert big[c.REG_EXT_MEM_LO] | (big[c.REG_EXT_MEM_HI] << 8) == 0xFFFF     # capped
    m = vmcore.Machine(memory_mb=2)
    m.bus.write(0x70, 1, c.REG_EXT_MEM_LO)
    assert m.bus.read(0x71, 1) == 0x00
    m.bus.write(0x70, 1, c.REG_EXT_MEM_HI)
    assert m.bus.read(0x71, 1) == 0x04                    # 1024 KB above 1 MB


def test_host_clock_rtc_shows_host_utc():
    m = vmcore.Machine(memory_mb=2, clock="host")
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    assert abs((m.cmos.time() - now).total_seconds()) < 2


def test_state_round_trip():
    r = Rtc()
    r.seconds(3725)
    r[0x50] = 0x77
    state = r.cmos.export_state()
    q = Rtc()
    q.clock.advance(r.clock.now())
    q.cmos.restore_state(state)
    assert q.time_regs() == r.time_regs() == [0x01, 0x02, 0x05] and q[0x50] == 0x77
    with pytest.raises(vmcore.ConfigError, match="missing"):
        q.cmos.restore_state({"ram": b""})
