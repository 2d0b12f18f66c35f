"""COM1's interrupt on IRQ 4 through the 8259A: the 16550's interrupt identification order
with the IRQ line as the PIC sees it, OUT2 gating, interrupt-driven receive and transmit in
a guest, the host serial bridge (``--serial stdio``) and a guest flooding the serial port."""
import io
import os
import time

import pc_guest as g
import pytest

import vmcore
from vmcore import Exit
from vmcore.devices import uart16550 as u
from vmcore.devices.serialio import HostSerial

COM1 = 0x3F8
IRQ4_VECTOR = g.MASTER_BASE + 4


def pc_with_pic():
    m = vmcore.Machine(memory_mb=2)
    for port, value in ((0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01),
                        (0xA0, 0x11), (0xA1, 0x28), (0xA1, 0x02), (0xA1, 0x01), (0x21, 0xEF), (0xA1, 0xFF)):
        m.bus.write(port, 1, value)
    return m


def irr4(m):
    m.bus.write(0x20, 1, 0x0A)               # OCW3: read IRR
    return bool(m.bus.read(0x20, 1) & 0x10)


def test_interrupt_identification_order_through_the_pic():
    m = pc_with_pic()
    bus, uart = m.bus, m.uart
    bus.write(COM1 + u.IER, 1, u.IER_ERBFI | u.IER_ETBEI | u.IER_ELSI | u.IER_EDSSI)
    assert not irr4(m) and not m._intr              # OUT2 low: the INTR pin does not reach IRQ 4
    bus.write(COM1 + u.MCR, 1, u.MCR_OUT2)
    assert irr4(m) and m._intr                      # THR empty
    assert bus.read(COM1 + u.IIR, 1) == u.IIR_ID_THRE
    assert not irr4(m) and not m._intr              # reading IIR ended the THRE interrupt
    uart.feed(b"ab")                                # 16450 mode: the second byte overruns
    uart.set_modem_inputs(dcd=False)
    assert m._intr
    assert m.pic.acknowledge() == IRQ4_VECTOR
    ids = []
    for _ in range(4):                              # the datasheet's priority order
        iid = bus.read(COM1 + u.IIR, 1)
        ids.append(iid)
        if iid == u.IIR_ID_RLS:
            assert bus.read(COM1 + u.LSR, 1) & u.LSR_OE
        elif iid == u.IIR_ID_RDA:
            assert bus.read(COM1 + u.RBR, 1) == ord("b")
        elif iid == u.IIR_ID_MS:
            assert bus.read(COM1 + u.MSR, 1) & u.MSR_DDCD
    assert ids == [u.IIR_ID_RLS, u.IIR_ID_RDA, u.IIR_ID_MS, u.IIR_NO_INT]
    assert not m.uart.irq.level and not irr4(m)
    bus.write(0x20, 1, 0x20)                        # EOI
    uart.feed(b"c")
    assert m._intr and m.pic.acknowledge() == IRQ4_VECTOR    # a new edge: a new interrupt


def test_fifo_trigger_level_and_character_timeout():
    m = pc_with_pic()
    bus = m.bus
    bus.write(COM1 + u.FCR, 1, u.FCR_FIFO_ENABLE | 0x80)     # trigger level 8
    bus.write(COM1 + u.IER, 1, u.IER_ERBFI)
    bus.write(COM1 + u.MCR, 1, u.MCR_OUT2)
    m.uart.feed(b"12345678")
    assert bus.read(COM1 + u.IIR, 1) == u.IIR_ID_RDA | u.IIR_FIFOS_ENABLED
    for _ in range(3):
        bus.read(COM1 + u.RBR, 1)
    assert bus.read(COM1 + u.IIR, 1) == u.IIR_ID_CTI | u.IIR_FIFOS_ENABLED      # below the trigger
    assert m._intr
    for _ in range(5):
        bus.read(COM1 + u.RBR, 1)
    assert bus.read(COM1 + u.IIR, 1) & 0x0F == u.IIR_NO_INT and not m._intr


def uart_init(ier):
    return bytes.fromhex(
        "66 ba fb 03"        # mov dx, 0x3fb      LCR
        "b0 03"              # mov al, 0x03       8 bits, no parity, 1 stop
        "ee"                 # out dx, al
        "66 ba fa 03"        # mov dx, 0x3fa      FCR
        "b0 07"              # mov al, 0x07       FIFOs on and cleared, trigger level 1
        "ee"                 # out dx, al
        "66 ba fc 03"        # mov dx, 0x3fc      MCR
        "b0 0b"              # mov al, 0x0b       DTR, RTS, OUT2
        "ee"                 # out dx, al
        "66 ba f9 03") + bytes([0xB0, ier]) + bytes.fromhex(   # mov dx, 0x3f9 ; mov al, ier   IER
        "ee")                # out dx, al


HLT_FOREVER = bytes.fromhex(
    "fb"                     # sti
    "f4"                     # l: hlt
    "eb fd")                 # jmp l

# IRQ 4: while IIR shows an interrupt, read RBR and echo it in upper case; 'q' exits the run
ECHO_HANDLER = bytes.fromhex(
    "50"                     # push eax
    "52"                     # push edx
    "66 ba fa 03"            # next: mov dx, 0x3fa
    "ec"                     # in al, dx          IIR
    "a8 01"                  # test al, 1
    "75 0e"                  # jnz done
    "66 ba f8 03"            # mov dx, 0x3f8
    "ec"                     # in al, dx          RBR
    "3c 71"                  # cmp al, 'q'
    "74 0c"                  # je quit
    "24 df"                  # and al, 0xdf       upper case
    "ee"                     # out dx, al         THR
    "eb e9"                  # jmp next
    "b0 20"                  # done: mov al, 0x20
    "e6 20"                  # out 0x20, al       EOI
    "5a"                     # pop edx
    "58"                     # pop eax
    "cf"                     # iretd
    "b0 2a"                  # quit: mov al, 42
    "e6 f4")                 # out 0xf4, al       debug exit, status 85


def echo_guest():
    return g.machine(g.pic_init(0xEF, 0xFF) + uart_init(u.IER_ERBFI) + HLT_FOREVER, {IRQ4_VECTOR: ECHO_HANDLER})


def test_guest_receives_by_interrupt_and_echoes():
    m = echo_guest()
    r = m.run(count=10 ** 5)
    assert r.exit is Exit.HLT and "no timer" in r.reason      # nothing to wake it: the run ends
    m.uart.feed(b"hello")
    r = m.run(count=10 ** 5)
    assert r.exit is Exit.HLT and r.console == "HELLO"
    assert m.stats["exits_intr"] == 1                         # one interrupt drained the FIFO
    m.uart.feed(b"xq")
    r = m.run(count=10 ** 5)
    assert r.exit is Exit.DEBUG_EXIT and r.exit_code == 85 and r.console == "HELLOX"


def test_guest_transmits_by_thr_empty_interrupts():
    # IRQ 4: read IIR (ends the THRE interrupt), send the next byte of [esi]; at the NUL, IER = 0
    handler = bytes.fromhex(
        "66 ba fa 03"        # mov dx, 0x3fa
        "ec"                 # in al, dx          IIR
        "ac"                 # lodsb
        "84 c0"              # test al, al
        "74 07"              # jz off
        "66 ba f8 03"        # mov dx, 0x3f8
        "ee"                 # out dx, al         THR: empty again at once, a new interrupt
        "eb 05"              # jmp eoi
        "66 ba f9 03"        # off: mov dx, 0x3f9
        "ee"                 # out dx, al         IER = 0
        "b0 20"              # eoi: mov al, 0x20
        "e6 20"              # out 0x20, al
        "cf")                # iretd
    main = g.pic_init(0xEF, 0xFF) + bytes.fromhex(
        "be 00 20 00 00"     # mov esi, 0x2000    the message
        "fc") + uart_init(u.IER_ETBEI) + HLT_FOREVER              # cld ; ... ; THRE interrupts at once
    m = g.machine(main, {IRQ4_VECTOR: handler})
    m.mem_write(0x2000, b"sent by interrupts\n\0")
    r = m.run(count=10 ** 5)
    assert r.exit is Exit.HLT and r.console == "sent by interrupts\n"
    assert m.stats["exits_intr"] == len("sent by interrupts\n") + 1


def test_host_serial_feeds_input_on_the_run_thread_and_halts_wait_for_it():
    m = echo_guest()
    rfd, wfd = os.pipe()
    out = io.BytesIO()
    serial = HostSerial(m.uart, m.timers, input_fd=rfd, output=out)
    try:
        start = time.perf_counter()
        r = m.run(timeout=0.2)                                # initialized, halted, waiting for input
        assert r.exit is Exit.TIMEOUT and "halted" in r.reason
        assert time.perf_counter() - start >= 0.19
        os.write(wfd, b"serial")
        r = m.run(timeout=0.3)
        assert r.exit is Exit.TIMEOUT                         # echoed, then waiting again
        assert out.getvalue() == b"SERIAL" and r.console == "SERIAL"
        os.write(wfd, b"x" * 100 + b"q")                      # more than the FIFO holds: fed as it drains
        r = m.run(timeout=5)
        assert r.exit is Exit.DEBUG_EXIT and out.getvalue() == b"SERIAL" + b"X" * 100
        assert serial.received == 107
    finally:
        serial.close()
        os.close(wfd)
        os.close(rfd)
    assert m.uart.sink is not None and not m.timers.inputs


def test_host_serial_end_of_input_lets_a_halted_guest_end():
    m = echo_guest()
    rfd, wfd = os.pipe()
    serial = HostSerial(m.uart, m.timers, input_fd=rfd, output=io.BytesIO())
    try:
        os.close(wfd)                                         # end of input
        deadline = time.perf_counter() + 2
        while serial.open and time.perf_counter() < deadline:
            time.sleep(0.001)
        r = m.run(timeout=5)
        assert r.exit is Exit.HLT and "no timer" in r.reason
    finally:
        serial.close()
        os.close(rfd)


# mov dx, 0x3f8 ; l: out dx, al ; jmp l   -- as fast as it can
FLOOD = bytes.fromhex("66 ba f8 03 ee eb fd")


def test_serial_flood_ends_by_count_and_by_timeout():
    m = g.machine(g.pic_init(0xEF, 0xFF) + uart_init(u.IER_ETBEI) + bytes.fromhex("fb") + FLOOD,
                  {IRQ4_VECTOR: bytes.fromhex("50 b0 20 e6 20 58 cf")})   # push eax; EOI; pop eax; iretd
    start = time.perf_counter()
    r = m.run(count=20_000)
    assert r.exit is Exit.BUDGET and time.perf_counter() - start < 5
    assert len(r.console) > 5_000
    start = time.perf_counter()
    r = m.run(timeout=0.2)
    assert r.exit is Exit.TIMEOUT and time.perf_counter() - start < 2


@pytest.mark.parametrize("clock", ["virtual", "host"])
def test_serial_flood_with_the_timer_running(clock):
    m = g.machine(g.pic_init(0xEE, 0xFF) + g.pit_periodic(100) + uart_init(0) + bytes.fromhex("fb") + FLOOD,
                  {g.MASTER_BASE: g.TIMER_HANDLER}, clock=clock)
    r = m.run(count=30_000, timeout=10)
    assert r.exit is Exit.BUDGET
    r = m.run(timeout=0.2)
    assert r.exit is Exit.TIMEOUT and g.ticks(m) > 0
