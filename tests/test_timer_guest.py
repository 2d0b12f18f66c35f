"""Guests that program the 8259A pair, the PIT and the RTC, enable interrupts and count them,
in flat 32-bit protected mode (tests/pc_guest.py builds the GDT, IDT and handlers): timer
interrupts at exact instruction counts under the virtual clock, HLT that waits for the next
timer (and ends the run when nothing can wake it), repeatable runs, the host clock, and
guests that flood the machine with interrupts or port writes still ending by count and timeout."""
import time

import pc_guest as g
import pytest

import vmcore
from vmcore import Exit
from vmcore.devices.clock import INSNS_PER_PIT_TICK

PERIOD_100HZ = 11932                          # PIT count for 100 Hz
INSNS_100HZ = PERIOD_100HZ * INSNS_PER_PIT_TICK

# IRQ 8 (RTC): count, read status C (clears IRQF), print '*', EOI slave then master
RTC_HANDLER = bytes.fromhex(
    "ff 05 00 06 00 00"      # inc dword [0x600]
    "50"                     # push eax
    "b0 0c"                  # mov al, 0x0c
    "e6 70"                  # out 0x70, al
    "e4 71"                  # in al, 0x71         status C
    "b0 2a"                  # mov al, '*'
    "e6 e9"                  # out 0xe9, al
    "b0 20"                  # mov al, 0x20
    "e6 a0"                  # out 0xa0, al        EOI slave
    "e6 20"                  # out 0x20, al        EOI master
    "58"                     # pop eax
    "cf")                    # iretd


def rtc_periodic(rate: int) -> bytes:
    return bytes([0xB0, 0x0A,                 # mov al, 0x0a
                  0xE6, 0x70,                 # out 0x70, al
                  0xB0, 0x20 | rate,          # mov al, 0x20 | rate   status A: 32 kHz, rate
                  0xE6, 0x71,                 # out 0x71, al
                  0xB0, 0x0B,                 # mov al, 0x0b
                  0xE6, 0x70,                 # out 0x70, al
                  0xB0, 0x42,                 # mov al, 0x42          status B: PIE, 24 h
                  0xE6, 0x71])                # out 0x71, al


def icounts_at_console_writes(m):
    seen = []
    m.hook_add(vmcore.HOOK_IO_OUT, lambda mm, port, size, value: seen.append(mm._engine.icount),
               begin=0xE9, end=0xE9)
    return seen


def test_hlt_loop_counts_timer_interrupts():
    m = g.machine(g.pic_init(0xFE, 0xFF) + g.pit_periodic(PERIOD_100HZ) + g.hlt_loop(10),
                  {0x20: g.TIMER_HANDLER})
    r = m.run(count=10 ** 6, timeout=10)
    assert r.exit is Exit.HLT and "hlt" in r.reason.lower()
    assert g.ticks(m) == 10 and r.console == "." * 10
    assert r.instructions < 500                   # halted between ticks: time skipped, not executed
    # 10 periods of virtual time passed: the count loads one PIT clock after it is written
    assert 10 * INSNS_100HZ <= m.clock.now() < 10 * INSNS_100HZ + 1000
    assert m.stats["exits_intr"] == 10 and m.pit.edges == 10


def test_busy_guest_takes_timer_interrupts_at_exact_instruction_counts():
    m = g.machine(g.pic_init(0xFE, 0xFF) + g.pit_periodic(PERIOD_100HZ) + g.busy_loop(10),
                  {0x20: g.TIMER_HANDLER})
    seen = icounts_at_console_writes(m)
    r = m.run(count=10 ** 8, timeout=20)
    assert r.exit is Exit.HLT and g.ticks(m) == 10
    assert [b - a for a, b in zip(seen, seen[1:])] == [INSNS_100HZ] * 9
    # the count's MSB is written by the 24th instruction after 3 PIT accesses of 1 us (119
    # instructions' worth) each: virtual time 24 + 357 = PIT clock 3; it loads at clock 4 and
    # OUT0 rises 11932 clocks later, at virtual 1,193,600 = instruction 1,193,600 - 357; the
    # handler's OUT is its 4th instruction
    assert m.clock.io_units == 119
    load_clock = (24 + 3 * 119) // INSNS_PER_PIT_TICK + 1
    assert seen[0] == (load_clock + PERIOD_100HZ) * INSNS_PER_PIT_TICK - 3 * 119 + 4 == 1_193_247


def test_rtc_periodic_interrupt_through_the_slave():
    m = g.machine(g.pic_init(0xFB, 0xFE) + rtc_periodic(6) + g.hlt_loop(8), {0x28: RTC_HANDLER})
    r = m.run(count=10 ** 6, timeout=10)
    assert r.exit is Exit.HLT and r.console == "*" * 8
    period = m.clock.unit_hz / 1024
    assert abs(m.clock.now() - 8 * period) < period      # 1024 Hz: 8 interrupts in ~7.8 ms


def combined_guest():
    code = (g.pic_init(0xFA, 0xFE) + g.pit_periodic(PERIOD_100HZ // 10, mode=3) + rtc_periodic(4)
            + bytes.fromhex(
                "fb"                      # sti
                "b9 00 40 00 00"          # mov ecx, 0x4000    some work between halts
                "e2 fe"                   # l: loop l
                "f4"                      # hlt
                "83 3d 00 06 00 00 60"    # cmp dword [0x600], 96
                "72 ef"                   # jb (back to mov ecx)
                "fa"                      # cli
                "f4"))                    # hlt
    return g.machine(code, {0x20: g.TIMER_HANDLER, 0x28: RTC_HANDLER})


def test_same_guest_twice_gives_the_same_interrupts_at_the_same_instructions():
    runs = []
    for _ in range(2):
        m = combined_guest()
        seen = icounts_at_console_writes(m)
        r = m.run(count=10 ** 8, timeout=20)
        assert r.exit is Exit.HLT, r.reason
        runs.append((r.console, r.instructions, seen, m.clock.now()))
    assert runs[0] == runs[1]
    console = runs[0][0]
    assert set(console) == {".", "*"} and len(console) >= 96       # both sources, interleaved
    assert "*." in console and ".*" in console


def test_hlt_with_interrupts_disabled_ends_the_run():
    m = g.machine(g.pic_init(0xFE, 0xFF) + g.pit_periodic(PERIOD_100HZ) + bytes.fromhex("f4"),   # hlt (IF = 0)
                  {0x20: g.TIMER_HANDLER})
    r = m.run(count=10 ** 6)
    assert r.exit is Exit.HLT and g.ticks(m) == 0


def test_hlt_with_no_timer_armed_ends_the_run():
    m = g.machine(g.pic_init(0xFE, 0xFF) + g.hlt_loop(1), {0x20: g.TIMER_HANDLER})
    r = m.run(count=10 ** 6, timeout=5)
    assert r.exit is Exit.HLT and "no timer" in r.reason and r.eip == g.CODE + len(g.pic_init(0, 0)) + 2


def test_hlt_with_the_timer_masked_or_in_service_ends_the_run():
    m = g.machine(g.pic_init(0xFF, 0xFF) + g.pit_periodic(PERIOD_100HZ) + g.hlt_loop(1),
                  {0x20: g.TIMER_HANDLER})
    r = m.run(count=10 ** 6, timeout=5)
    assert r.exit is Exit.HLT and "no timer" in r.reason and m.timers.polls == 0
    no_eoi = bytes.fromhex(
        "ff 05 00 06 00 00"      # inc dword [0x600]
        "cf")                    # iretd               (no EOI: IS0 stays set)
    m = g.machine(g.pic_init(0xFE, 0xFF) + g.pit_periodic(PERIOD_100HZ) + g.hlt_loop(5), {0x20: no_eoi})
    r = m.run(count=10 ** 6, timeout=5)
    assert r.exit is Exit.HLT and "no timer" in r.reason and g.ticks(m) == 1


def test_a_run_ended_by_count_while_halted_resumes_halted():
    m = g.machine(g.pic_init(0xFE, 0xFF) + g.pit_periodic(PERIOD_100HZ) + g.hlt_loop(3),
                  {0x20: g.TIMER_HANDLER})
    r = m.run(count=len(g.pic_init(0, 0)) // 2 + 1)       # stops somewhere in the PIC setup
    assert r.exit is Exit.BUDGET
    r = m.run(count=10 ** 6)
    assert r.exit is Exit.HLT and g.ticks(m) == 3


def test_host_clock_timer_interrupts_in_real_time():
    m = g.machine(g.pic_init(0xFE, 0xFF) + g.pit_periodic(1193) + g.hlt_loop(20),     # 1 kHz
                  {0x20: g.TIMER_HANDLER}, clock="host")
    start = time.perf_counter()
    r = m.run(timeout=5)
    elapsed = time.perf_counter() - start
    assert r.exit is Exit.HLT and g.ticks(m) == 20
    assert 0.018 < elapsed < 2


def test_host_clock_timeout_while_halted_and_resume():
    m = g.machine(g.pic_init(0xFE, 0xFF) + g.pit_periodic(0) + g.hlt_loop(1),        # 18.2 Hz
                  {0x20: g.TIMER_HANDLER}, clock="host")
    r = m.run(timeout=0.005)
    assert r.exit is Exit.TIMEOUT and "halted" in r.reason and g.ticks(m) == 0
    r = m.run(timeout=2)
    assert r.exit is Exit.HLT and g.ticks(m) == 1


# sti ; l: jmp l  -- with the PIT at its fastest rate
FOREVER = bytes.fromhex("fb eb fe")
# sti ; l: hlt ; jmp l
HLT_FOREVER = bytes.fromhex("fb f4 eb fd")


@pytest.mark.parametrize("loop", [FOREVER, HLT_FOREVER], ids=["busy", "hlt"])
def test_pit_at_count_1_ends_by_count_and_by_timeout(loop):
    m = g.machine(g.pic_init(0xFE, 0xFF) + g.pit_periodic(1) + loop, {0x20: g.TIMER_HANDLER})
    start = time.perf_counter()
    r = m.run(count=200_000, timeout=30)
    assert r.exit is Exit.BUDGET and 150_000 < r.instructions <= 200_000    # count includes deliveries
    assert time.perf_counter() - start < 5
    assert g.ticks(m) > 1000                      # an interrupt every PIT clock, and progress
    start = time.perf_counter()
    r = m.run(timeout=0.3)
    assert r.exit is Exit.TIMEOUT and time.perf_counter() - start < 2


def test_pit_at_count_1_under_the_host_clock_ends_by_timeout():
    m = g.machine(g.pic_init(0xFE, 0xFF) + g.pit_periodic(1) + HLT_FOREVER, {0x20: g.TIMER_HANDLER}, clock="host")
    start = time.perf_counter()
    r = m.run(timeout=0.3)
    assert r.exit is Exit.TIMEOUT and time.perf_counter() - start < 2 and g.ticks(m) > 10
    r = m.run(count=50_000, timeout=10)
    assert r.exit is Exit.BUDGET


def test_no_timer_costs_nothing_in_the_run_loop():
    m = g.machine(bytes.fromhex("b9 00 00 10 00 e2 fe f4"), {})   # mov ecx, 0x100000 ; l: loop l ; hlt
    r = m.run(count=10 ** 7)
    assert r.exit is Exit.HLT
    assert not m.timers.active and m.timers.polls == 0
    assert m.stats["exits_budget"] == 0           # one slice: no deadline cut it


def test_clock_choice():
    assert vmcore.Machine(memory_mb=2).clock.virtual
    assert not vmcore.Machine(memory_mb=2, clock="host").clock.virtual
    slow = vmcore.devices.VirtualClock(insns_per_pit_tick=1000)
    assert vmcore.Machine(memory_mb=2, clock=slow).clock is slow
    with pytest.raises(vmcore.ConfigError, match="clock"):
        vmcore.Machine(memory_mb=2, clock="sundial")
    with pytest.raises(vmcore.ConfigError, match="PIT tick"):
        vmcore.devices.VirtualClock(insns_per_pit_tick=0)


def test_instructions_per_pit_tick_sets_the_guest_speed():
    slow = vmcore.devices.VirtualClock(insns_per_pit_tick=10)
    m = g.machine(g.pic_init(0xFE, 0xFF) + g.pit_periodic(1000) + g.busy_loop(3), {0x20: g.TIMER_HANDLER},
                  clock=slow)
    seen = icounts_at_console_writes(m)
    assert m.run(count=10 ** 6).exit is Exit.HLT
    assert [b - a for a, b in zip(seen, seen[1:])] == [10_000, 10_000]


def test_without_devices_hlt_with_interrupts_enabled_ends_the_run():
    m = vmcore.Machine(memory_mb=2, devices=False)
    m.mem_write(0x1000, bytes.fromhex("fb f4"))    # sti ; hlt
    m.reg_write("eip", 0x1000)
    r = m.run(count=100)
    assert r.exit is Exit.HLT and m.pic is None and m.interrupt_controller is None


def test_moving_eip_of_a_halted_guest_runs_from_there():
    m = g.machine(g.pic_init(0xFE, 0xFF) + g.pit_periodic(0) + g.hlt_loop(1), {0x20: g.TIMER_HANDLER},
                  clock="host")
    assert m.run(timeout=0.005).exit is Exit.TIMEOUT     # halted, waiting for the 18.2 Hz tick
    m.mem_write(0x2000, bytes.fromhex("fa f4"))           # cli ; hlt
    m.reg_write("eip", 0x2000)
    r = m.run(timeout=2)
    assert r.exit is Exit.HLT and r.eip == 0x2002 and r.instructions == 2


def test_pit_calibration_loop_on_port_61_is_fast_and_takes_50_ms_of_virtual_time():
    # a kernel's TSC calibration: counter 2 in mode 0 for 50 ms, poll OUT2 on port 0x61
    code = bytes.fromhex(
        "e4 61"              # in al, 0x61
        "24 fc"              # and al, 0xfc
        "0c 01"              # or al, 1            GATE2 on, speaker off
        "e6 61"              # out 0x61, al
        "b0 b0"              # mov al, 0xb0        counter 2, LSB+MSB, mode 0
        "e6 43"              # out 0x43, al
        "b0 0b"              # mov al, 0x0b
        "e6 42"              # out 0x42, al
        "b0 e9"              # mov al, 0xe9
        "e6 42"              # out 0x42, al        59659 clocks: 50 ms
        "e4 61"              # l: in al, 0x61
        "a8 20"              # test al, 0x20       OUT2
        "74 fa"              # jz l
        "f4")                # hlt
    m = g.machine(code, {})
    start = time.perf_counter()
    r = m.run(timeout=10)
    assert r.exit is Exit.HLT and time.perf_counter() - start < 1.5
    seconds = m.clock.now() / m.clock.unit_hz
    assert 0.050 <= seconds < 0.0502
    reads = m.stats["exits_io"] - 5
    assert 40_000 < reads < 50_000                # ~1 us each, as on an ISA bus


def test_pc_wiring_post_port_and_device_snapshots():
    m = g.machine(g.pic_init(0xFE, 0xFF) + g.pit_periodic(PERIOD_100HZ) + bytes.fromhex(
        "b0 55"              # mov al, 0x55
        "e6 80"              # out 0x80, al        POST code (and the classic I/O delay)
        "e6 80"              # out 0x80, al
        ) + g.hlt_loop(2), {0x20: g.TIMER_HANDLER})
    names = {mp.name: mp.base_port for mp in m.bus.mappings}
    assert names["pic-master"] == 0x20 and names["pic-slave"] == 0xA0 and names["elcr"] == 0x4D0
    assert names["pit"] == 0x40 and names["port-b"] == 0x61 and names["cmos"] == 0x70 and names["post"] == 0x80
    assert names["i8042"] == 0x60 and names["i8042-command"] == 0x64      # port B sits between them
    assert m.run(count=10 ** 6).exit is Exit.HLT
    assert (m.post.last, m.post.writes) == (0x55, 2) and m.bus.read(0x80, 1) == 0x55
    state = m.bus.export_state()
    other = vmcore.Machine(memory_mb=2)
    other.clock.advance(m.clock.now())
    other.bus.restore_state(state)
    assert other.pic.master.export_state() == m.pic.master.export_state()
    assert other.pit.export_state() == m.pit.export_state()
    assert other.cmos.export_state() == m.cmos.export_state() and other.post.writes == 2
