"""The 8254 driven through its registers on a virtual clock of one unit per input clock,
against the Intel 8254 datasheet (231164): counting sequences and OUT in modes 0-5, GATE,
count 0, BCD, the counter latch and read-back commands, byte access modes, OUT0 on IRQ 0 and
port 0x61 (counter 2's GATE and OUT)."""
import time

import pytest

import vmcore
from vmcore.devices import HostClock, Pit8254, VirtualClock
from vmcore.devices import pit8254 as t


def cw(counter, rw=t.RW_LSB_MSB, mode=0, bcd=False):
    return (counter << t.CW_SC_SHIFT) | (rw << t.CW_RW_SHIFT) | (mode << t.CW_MODE_SHIFT) | (t.CW_BCD if bcd else 0)


class Pit:
    """One PIT on a clock where one unit is one PIT input clock and port accesses take no time."""

    def __init__(self):
        self.clock = VirtualClock(insns_per_pit_tick=1, io_ns=0)
        self.pit = Pit8254(self.clock)
        self.pit.set_gate2(False)                         # as port 0x61 leaves it at power-on
        self.levels = []
        self.pit.irq.on_change = self.levels.append

    @property
    def now(self):
        return self.clock.now()

    def tick(self, n=1):
        self.clock.advance(n)

    def program(self, counter, count=None, **kw):
        self.pit.write(t.CONTROL, 1, cw(counter, **kw))
        if count is not None:
            self.write_count(counter, count, kw.get("rw", t.RW_LSB_MSB))

    def write_count(self, counter, count, rw=t.RW_LSB_MSB):
        if rw in (t.RW_LSB, t.RW_LSB_MSB):
            self.pit.write(counter, 1, count & 0xFF)
        if rw in (t.RW_MSB, t.RW_LSB_MSB):
            self.pit.write(counter, 1, count >> 8)

    def read16(self, counter):
        lo = self.pit.read(counter, 1)
        return lo | (self.pit.read(counter, 1) << 8)

    def status(self, counter):
        self.pit.write(t.CONTROL, 1, 0xC0 | t.RB_COUNT_N | (t.RB_CNT0 << counter))
        return self.pit.read(counter, 1)

    def out(self, counter):
        return bool(self.status(counter) & t.STATUS_OUT)

    def trace(self, counter, clocks):
        """(CE, OUT) after each of the next ``clocks`` input clocks."""
        seq = []
        for _ in range(clocks):
            self.tick()
            seq.append((self.read16(counter), int(self.out(counter))))
        return seq

    def gate2(self, level):
        self.pit.set_gate2(level)


@pytest.fixture
def p():
    return Pit()


def test_mode0_interrupt_on_terminal_count(p):
    p.program(0, mode=0)
    assert not p.out(0)                                   # OUT low after the control word
    p.write_count(0, 5)
    assert p.status(0) & t.STATUS_NULL_COUNT              # not loaded before the next clock
    # loaded on the first clock (not decremented), OUT high N + 1 clocks after the write
    assert p.trace(0, 8) == [(5, 0), (4, 0), (3, 0), (2, 0), (1, 0), (0, 1), (0xFFFF, 1), (0xFFFE, 1)]
    assert not p.status(0) & t.STATUS_NULL_COUNT


def test_mode0_first_byte_stops_counting_and_lowers_out(p):
    p.program(0, 3, mode=0)
    p.tick(10)
    assert p.out(0)
    p.pit.write(0, 1, 0x04)                               # LSB of a new count
    assert not p.out(0)
    p.tick(5)
    before = p.read16(0)
    p.tick(5)
    assert p.read16(0) == before                          # not counting
    p.pit.write(0, 1, 0x00)                               # MSB: count 4 loads on the next clock
    assert p.trace(0, 6) == [(4, 0), (3, 0), (2, 0), (1, 0), (0, 1), (0xFFFF, 1)]


def test_mode0_gate_suspends_counting(p):
    p.gate2(True)
    p.program(2, 5, mode=0)
    p.tick(3)                                             # loaded at +1: CE 3
    assert p.read16(2) == 3
    p.gate2(False)
    p.tick(10)
    assert p.read16(2) == 3 and not p.out(2)
    p.gate2(True)
    assert p.trace(2, 4) == [(2, 0), (1, 0), (0, 1), (0xFFFF, 1)]


def test_mode1_retriggerable_one_shot(p):
    p.program(2, 3, mode=1)
    p.tick(5)
    assert p.out(2)                                       # no trigger yet
    p.gate2(True)                                         # trigger
    assert p.trace(2, 5) == [(3, 0), (2, 0), (1, 0), (0, 1), (0xFFFF, 1)]
    p.gate2(False)
    p.gate2(True)
    assert p.trace(2, 2) == [(3, 0), (2, 0)]
    p.gate2(False)
    p.gate2(True)                                         # retriggered inside the one-shot
    assert p.trace(2, 4) == [(3, 0), (2, 0), (1, 0), (0, 1)]


def test_mode2_rate_generator(p):
    p.program(0, 4, mode=2)
    assert p.out(0)
    assert p.trace(0, 9) == [(4, 1), (3, 1), (2, 1), (1, 0), (4, 1), (3, 1), (2, 1), (1, 0), (4, 1)]


def test_mode2_new_count_waits_for_the_end_of_the_period(p):
    p.program(0, 4, mode=2)
    p.tick(2)                                             # CE 3
    p.write_count(0, 10)
    assert p.status(0) & t.STATUS_NULL_COUNT
    assert p.trace(0, 4) == [(2, 1), (1, 0), (10, 1), (9, 1)]
    assert not p.status(0) & t.STATUS_NULL_COUNT


def test_mode2_gate_forces_out_high_and_reloads(p):
    p.gate2(True)
    p.program(2, 4, mode=2)
    p.tick(4)
    assert (p.read16(2), p.out(2)) == (1, False)
    p.gate2(False)
    assert p.out(2)                                       # at once, no clock needed
    p.tick(7)
    assert p.read16(2) == 1
    p.gate2(True)
    assert p.trace(2, 5) == [(4, 1), (3, 1), (2, 1), (1, 0), (4, 1)]


def test_mode3_square_wave_even_and_odd(p):
    p.program(0, 6, mode=3)
    assert p.trace(0, 7) == [(6, 1), (4, 1), (2, 1), (6, 0), (4, 0), (2, 0), (6, 1)]
    p.program(0, 5, mode=3)
    # odd: N - 1 is loaded; OUT high (N + 1) / 2 clocks, low (N - 1) / 2
    assert p.trace(0, 6) == [(4, 1), (2, 1), (0, 1), (4, 0), (2, 0), (4, 1)]


def test_mode3_new_count_at_the_end_of_the_half_cycle(p):
    p.program(0, 6, mode=3)
    p.tick(2)                                             # high half, CE 4
    p.write_count(0, 10)
    assert p.trace(0, 8) == [(2, 1), (10, 0), (8, 0), (6, 0), (4, 0), (2, 0), (10, 1), (8, 1)]


def test_mode3_with_mode_bits_110_and_111(p):
    p.pit.write(t.CONTROL, 1, cw(0, mode=7))
    assert p.status(0) & 0x0E == 0x0E                     # status repeats the bits as written
    p.write_count(0, 4)
    assert p.trace(0, 3) == [(4, 1), (2, 1), (4, 0)]


def test_mode4_software_triggered_strobe(p):
    p.program(0, 3, mode=4)
    assert p.out(0)
    assert p.trace(0, 6) == [(3, 1), (2, 1), (1, 1), (0, 0), (0xFFFF, 1), (0xFFFE, 1)]
    p.tick(0x20000)
    assert p.out(0)                                       # one strobe per count written


def test_mode5_hardware_triggered_strobe(p):
    p.program(2, 3, mode=5)
    p.tick(10)
    assert p.out(2)
    p.gate2(True)
    assert p.trace(2, 5) == [(3, 1), (2, 1), (1, 1), (0, 0), (0xFFFF, 1)]


def test_count_zero_is_the_largest(p):
    p.program(0, 0, mode=0)
    p.tick(1)
    assert p.read16(0) == 0
    assert p.pit.next_event() == p.now + 0x10000          # OUT rises 65536 clocks after the load
    p.program(0, 0, mode=0, bcd=True)
    p.tick(2)
    assert p.read16(0) == 0x9999                          # 10000 in BCD, then 9999


def test_bcd_counting(p):
    p.program(0, 0x0100, mode=2, bcd=True)
    assert [c for c, _ in p.trace(0, 3)] == [0x0100, 0x0099, 0x0098]
    p.tick(97)
    assert p.read16(0) == 0x0001
    p.tick(1)
    assert p.read16(0) == 0x0100


def test_lsb_only_and_msb_only_access(p):
    p.program(0, 0x34, mode=2, rw=t.RW_LSB)
    p.tick(2)
    assert p.pit.read(0, 1) == 0x33 and p.pit.read(0, 1) == 0x33
    p.program(0, 0x1200, mode=2, rw=t.RW_MSB)
    p.tick(1 + 0x100)
    assert p.pit.read(0, 1) == 0x11                       # CE 0x1100: its MSB


def test_counter_latch(p):
    p.program(0, 1000, mode=2)
    p.tick(11)
    p.pit.write(t.CONTROL, 1, cw(0, rw=t.RW_LATCH))
    p.tick(100)
    p.pit.write(t.CONTROL, 1, cw(0, rw=t.RW_LATCH))       # ignored: the first is not read yet
    assert p.read16(0) == 990
    assert p.read16(0) == 890                             # the latch is released after both bytes


def test_read_back_status_then_count(p):
    p.program(1, 300, mode=2)
    assert p.status(1) == t.STATUS_OUT | t.STATUS_NULL_COUNT | 0x34
    p.tick(6)
    p.pit.write(t.CONTROL, 1, 0xC0 | t.RB_CNT1)           # latch count and status of counter 1
    p.tick(50)
    p.pit.write(t.CONTROL, 1, 0xC0 | t.RB_CNT1)           # both already latched: ignored
    assert p.pit.read(1, 1) == t.STATUS_OUT | 0x34        # status first, NULL COUNT clear
    assert p.read16(1) == 295
    p.pit.write(t.CONTROL, 1, 0xC0 | t.RB_STATUS_N | t.RB_CNT0 | t.RB_CNT1)   # counts only
    assert p.read16(1) == 245


def test_read_and_write_byte_sequences_interleave(p):
    # the datasheet's example: read LSB, write LSB, read MSB, write MSB
    p.program(0, 0x1234, mode=4)
    p.tick(1)
    lo = p.pit.read(0, 1)
    p.pit.write(0, 1, 0x78)
    hi = p.pit.read(0, 1)
    p.pit.write(0, 1, 0x56)
    assert (hi << 8) | lo == 0x1234
    p.tick(1)
    assert p.read16(0) == 0x5678


def test_out0_drives_irq0_on_rising_edges(p):
    p.program(0, 100, mode=2)
    assert p.pit.next_event() == p.now + 101
    p.tick(101)
    p.pit.poll()
    assert p.pit.edges == 1 and p.pit.irq.level
    p.tick(10 ** 6)                                       # many periods: one poll, one pulse, no loop
    start = time.perf_counter()
    p.pit.poll()
    assert time.perf_counter() - start < 0.01
    assert p.pit.edges == 2
    assert p.levels[-2:] == [False, True]
    assert p.now < p.pit.next_event() <= p.now + 100


def test_count_1_in_mode_2_rises_every_clock(p):
    p.program(0, 1, mode=2)
    p.tick(1)
    p.pit.poll()
    for _ in range(5):
        assert p.pit.next_event() == p.now + 1
        p.tick(1)
        p.pit.poll()
    assert p.pit.edges == 5


def test_virtual_clock_scales_instructions_to_pit_clocks():
    clock = VirtualClock(io_ns=0)                         # 100 instructions per PIT clock
    pit = Pit8254(clock)
    pit.write(t.CONTROL, 1, cw(0, mode=2))
    pit.write(0, 1, 10)
    pit.write(0, 1, 0)
    assert pit.next_event() == 100 * 11
    clock.advance(100 * 5 + 99)
    pit.write(t.CONTROL, 1, cw(0, rw=t.RW_LATCH))
    assert pit.read(0, 1) == 6                            # loaded at clock 1, decremented at clocks 2-5


def test_a_port_access_takes_an_isa_io_cycle_of_virtual_time():
    clock = VirtualClock()                                # io_ns = 1000: 119 instructions' worth
    pit = Pit8254(clock)
    pit.write(t.CONTROL, 1, cw(0, mode=2))
    assert clock.now() == 119
    for _ in range(100):                                  # a guest polling the counter
        pit.write(t.CONTROL, 1, cw(0, rw=t.RW_LATCH))
        pit.read(0, 1)
        pit.read(0, 1)
    assert clock.now() == 301 * 119                       # 301 us of virtual time


def test_host_clock_counts_in_real_time():
    pit = Pit8254(HostClock())
    pit.write(t.CONTROL, 1, cw(0, mode=2))
    pit.write(0, 1, 0)
    pit.write(0, 1, 0)                                    # 65536: 54.9 ms period
    time.sleep(0.01)                                      # ~11900 clocks
    pit.write(t.CONTROL, 1, cw(0, rw=t.RW_LATCH))
    count = pit.read(0, 1) | (pit.read(0, 1) << 8)
    assert 0 < count < 65536 - 10000


def test_port_61_gates_counter_2_and_shows_out2():
    m = vmcore.Machine(memory_mb=2, clock=VirtualClock(io_ns=0))
    clock = m.clock
    bus = m.bus
    assert bus.read(0x61, 1) & 0x01 == 0                  # GATE2 low at power-on
    bus.write(0x43, 1, cw(2, mode=0))
    bus.write(0x42, 1, 10)
    bus.write(0x42, 1, 0)
    clock.advance(100 * 20)
    assert bus.read(0x61, 1) & 0x20 == 0                  # gate low: counter 2 holds
    bus.write(0x61, 1, 0x03)                              # gate and speaker on
    assert m.port_b.speaker_on
    clock.advance(100 * 9)
    assert bus.read(0x61, 1) & 0x20 == 0
    clock.advance(100 * 1)
    assert bus.read(0x61, 1) & 0x23 == 0x23               # OUT2 after the terminal count
    bus.write(0x61, 1, 0xF0)                              # bits 4-7 are read only
    assert bus.read(0x61, 1) & 0xCF == 0
    toggles = set()
    for _ in range(8):
        clock.advance(100 * 9)                            # ~7.5 us
        toggles.add(bus.read(0x61, 1) & 0x10)
    assert toggles == {0, 0x10}                           # the refresh bit flips every 15 us


def test_state_round_trip(p):
    p.program(0, 50, mode=3)
    p.tick(7)
    state = p.pit.export_state()
    q = Pit()
    q.tick(p.now)
    q.pit.restore_state(state)
    assert q.read16(0) == p.read16(0) and q.out(0) == p.out(0)
    with pytest.raises(vmcore.ConfigError, match="missing"):
        q.pit.counters[0].restore_state({})
