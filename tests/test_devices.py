"""Port bus, debug console, isa-debug-exit and the 16550 UART, driven through their registers."""
import pytest

from vmcore.devices import DebugConsole, DebugExit, IrqLine, PortBus, PortDevice, Uart16550
from vmcore.devices import uart16550 as u
from vmcore.errors import BusError, ConfigError


class Recorder(PortDevice):
    max_access_size = 4

    def __init__(self):
        super().__init__()
        self.log = []

    def read(self, offset, size):
        self.log.append(("r", offset, size))
        return 0x11223344

    def write(self, offset, size, value):
        self.log.append(("w", offset, size, value))


@pytest.fixture
def com1():
    out = []
    bus = PortBus()
    uart = Uart16550(sink=out.append)
    bus.attach(0x3F8, 8, uart, name="com1")
    return bus, uart, out


# ---- bus ----------------------------------------------------------------------------------------
def test_bus_routes_by_offset():
    bus, dev = PortBus(), Recorder()
    bus.attach(0x100, 4, dev, name="rec")
    assert bus.read(0x102, 1) == 0x44                      # masked to the access size
    bus.write(0x100, 4, 0xDEADBEEF)
    assert bus.read(0x100, 2) == 0x3344
    assert dev.log == [("r", 2, 1), ("w", 0, 4, 0xDEADBEEF), ("r", 0, 2)]
    assert bus.device_at(0x103) is dev and bus.device_at(0x104) is None
    assert bus.stats == {"reads": 2, "writes": 1, "unclaimed_reads": 0, "unclaimed_writes": 0}


def test_bus_rejects_overlap_range_and_size():
    bus = PortBus()
    bus.attach(0x100, 4, Recorder(), name="first")
    with pytest.raises(BusError, match=r"second.*0x103.*first"):
        bus.attach(0x103, 2, Recorder(), name="second")
    with pytest.raises(BusError, match="0xffff"):
        bus.attach(0xFFFF, 2, Recorder(), name="edge")
    with pytest.raises(BusError, match="named"):
        bus.attach(0x200, 1, Recorder(), name="first")
    with pytest.raises(BusError, match="size 3"):
        bus.read(0x100, 3)
    with pytest.raises(BusError, match="port"):
        bus.write(0x10000, 1, 0)
    bus.attach(0x104, 1, Recorder(), name="adjacent")      # touching is not overlapping


def test_unclaimed_ports_read_all_ones_and_are_counted():
    bus = PortBus()
    assert [bus.read(0x80, s) for s in (1, 2, 4)] == [0xFF, 0xFFFF, 0xFFFFFFFF]
    bus.write(0x80, 1, 0x12)
    bus.write(0x80, 4, 0x12345678)
    assert bus.stats["unclaimed_writes"] == 5               # a split access counts each byte
    assert bus.stats["reads"] == 3 and bus.stats["writes"] == 2


def test_wide_access_to_byte_device_is_split(com1):
    bus, uart, out = com1
    bus.write(0x3F8, 2, 0x0241)                             # THR <- 'A', IER <- ETBEI
    assert out == [b"A"] and uart.ier == u.IER_ETBEI
    bus.write(0x3FF, 1, 0x5A)
    assert bus.read(0x3FF, 2) == 0xFF5A                     # SCR, then unclaimed 0x400
    assert bus.stats["unclaimed_reads"] == 1


def test_bus_state_round_trip(com1):
    bus, uart, _ = com1
    bus.write(0x3FF, 1, 0x77)
    state = bus.export_state()
    other = PortBus()
    other.attach(0x3F8, 8, Uart16550(), name="com1")
    other.restore_state(state)
    assert other.read(0x3FF, 1) == 0x77
    with pytest.raises(BusError, match="com2"):
        other.restore_state({"com2": {}})


# ---- debug console and debug exit ---------------------------------------------------------------
def test_debugcon():
    out, bus = [], PortBus()
    bus.attach(0xE9, 1, DebugConsole(sink=out.append))
    for ch in b"hi\n":
        bus.write(0xE9, 1, ch)
    assert b"".join(out) == b"hi\n"
    assert bus.read(0xE9, 1) == 0xE9                        # Bochs port_e9_hack readback


def test_debugexit():
    statuses, bus = [], PortBus()
    bus.attach(0xF4, 4, DebugExit(on_exit=statuses.append))
    bus.write(0xF4, 4, 0x10)
    bus.write(0xF4, 1, 0)
    bus.write(0xF4, 2, 0x1FFFF)                              # only the 16 bits written count
    assert statuses == [0x21, 1, 0x1FFFF]
    assert bus.read(0xF4, 4) == 0xFFFFFFFF and bus.read(0xF5, 1) == 0xFF


def test_irq_line():
    seen = []
    line = IrqLine("irq4", on_change=seen.append)
    line.raise_(); line.raise_(); line.lower()
    assert seen == [True, False] and not line.level


# ---- UART 16550 ---------------------------------------------------------------------------------
def test_uart_reset_values(com1):
    bus, _, _ = com1
    assert bus.read(0x3F8 + u.LSR, 1) == u.LSR_THRE | u.LSR_TEMT == 0x60
    assert bus.read(0x3F8 + u.IIR, 1) == u.IIR_NO_INT
    assert [bus.read(0x3F8 + r, 1) for r in (u.IER, u.LCR, u.MCR)] == [0, 0, 0]
    assert bus.read(0x3F8 + u.MSR, 1) == u.MSR_CTS | u.MSR_DSR | u.MSR_DCD     # no deltas


def test_uart_transmit(com1):
    _, uart, out = com1
    for ch in b"ok":
        uart.write(u.THR, 1, ch)
    assert out == [b"o", b"k"]
    assert uart.read(u.LSR, 1) == u.LSR_THRE | u.LSR_TEMT                    # transmission is instant


def test_uart_divisor_latch(com1):
    _, uart, out = com1
    uart.write(u.LCR, 1, u.LCR_DLAB | 0x03)
    uart.write(u.DLL, 1, 0x0C)
    uart.write(u.DLM, 1, 0x01)
    assert out == [] and uart.ier == 0
    assert (uart.read(u.DLL, 1), uart.read(u.DLM, 1)) == (0x0C, 0x01)
    uart.write(u.LCR, 1, 0x03)                              # 8N1, DLAB off
    assert uart.read(u.IER, 1) == 0
    uart.write(u.THR, 1, ord("x"))
    assert out == [b"x"] and (uart.dll, uart.dlm) == (0x0C, 0x01)


def test_uart_iir_priority_order():
    uart = Uart16550()
    uart.feed(b"ab")                                        # 16450 mode: second byte overruns
    uart.set_modem_inputs(cts=False)                        # DCTS
    uart.write(u.IER, 1, u.IER_MASK)                        # all enabled; THR empty -> THRE pending
    assert uart.read(u.IIR, 1) == u.IIR_ID_RLS
    assert uart.read(u.LSR, 1) & (u.LSR_OE | u.LSR_DR) == u.LSR_OE | u.LSR_DR
    assert uart.read(u.IIR, 1) == u.IIR_ID_RDA
    assert uart.read(u.RBR, 1) == ord("b")                  # the overrun overwrote RBR
    assert uart.read(u.IIR, 1) == u.IIR_ID_THRE             # reading IIR resets THRE...
    assert uart.read(u.IIR, 1) == u.IIR_ID_MS
    assert uart.read(u.MSR, 1) == u.MSR_DSR | u.MSR_DCD | u.MSR_DCTS
    assert uart.read(u.IIR, 1) == u.IIR_NO_INT
    uart.write(u.THR, 1, 0x20)                              # ...and a transmission sets it again
    assert uart.read(u.IIR, 1) == u.IIR_ID_THRE


def test_uart_ier_gates_interrupts():
    uart = Uart16550()
    uart.feed(b"abc")
    uart.set_modem_inputs(dsr=False)
    assert uart.read(u.IIR, 1) == u.IIR_NO_INT
    uart.write(u.IER, 1, u.IER_EDSSI)
    assert uart.read(u.IIR, 1) == u.IIR_ID_MS


def test_uart_receive_fifo():
    uart = Uart16550()
    uart.write(u.FCR, 1, u.FCR_FIFO_ENABLE | 0xC0)          # trigger level 14
    uart.write(u.IER, 1, u.IER_ERBFI)
    assert uart.read(u.IIR, 1) == u.IIR_FIFOS_ENABLED | u.IIR_NO_INT
    assert uart.feed(b"hello") == 5 and uart.rx_free == 11
    assert uart.read(u.LSR, 1) & u.LSR_DR
    assert uart.read(u.IIR, 1) == u.IIR_FIFOS_ENABLED | u.IIR_ID_CTI     # below trigger: timeout
    uart.feed(b"-world!!!")
    assert uart.read(u.IIR, 1) == u.IIR_FIFOS_ENABLED | u.IIR_ID_RDA     # 14 bytes: trigger level
    assert bytes(uart.read(u.RBR, 1) for _ in range(14)) == b"hello-world!!!"
    assert not uart.read(u.LSR, 1) & u.LSR_DR
    assert uart.read(u.IIR, 1) == u.IIR_FIFOS_ENABLED | u.IIR_NO_INT
    uart.feed(b"zz")
    uart.write(u.FCR, 1, u.FCR_FIFO_ENABLE | u.FCR_RCVR_RESET)
    assert not uart.read(u.LSR, 1) & u.LSR_DR and uart.fcr == u.FCR_FIFO_ENABLE


def test_uart_fifo_overrun():
    uart = Uart16550()
    uart.write(u.FCR, 1, u.FCR_FIFO_ENABLE)
    assert uart.feed(bytes(range(20))) == 16
    assert uart.read(u.LSR, 1) == u.LSR_DR | u.LSR_OE | u.LSR_THRE | u.LSR_TEMT
    assert uart.read(u.LSR, 1) == u.LSR_DR | u.LSR_THRE | u.LSR_TEMT     # reading LSR clears OE
    assert bytes(uart.read(u.RBR, 1) for _ in range(16)) == bytes(range(16))


def test_uart_leaving_fifo_mode_clears_it():
    uart = Uart16550()
    uart.write(u.FCR, 1, u.FCR_FIFO_ENABLE)
    uart.feed(b"abc")
    uart.write(u.FCR, 1, 0)
    assert not uart.read(u.LSR, 1) & u.LSR_DR and uart.rx_free == 1


def test_uart_loopback():
    out = []
    uart = Uart16550(sink=out.append)
    uart.write(u.MCR, 1, u.MCR_LOOP | u.MCR_RTS | u.MCR_OUT2)
    assert uart.read(u.MSR, 1) & u.MSR_INPUTS == u.MSR_CTS | u.MSR_DCD     # RTS->CTS, OUT2->DCD
    uart.write(u.THR, 1, 0x55)
    assert out == [] and uart.read(u.LSR, 1) & u.LSR_DR
    assert uart.read(u.RBR, 1) == 0x55
    assert uart.feed(b"x") == 0                             # serial input is disconnected
    uart.write(u.MCR, 1, u.MCR_LOOP | u.MCR_OUT1)           # RI rises, CTS and DCD fall
    uart.write(u.MCR, 1, u.MCR_LOOP)                        # RI falls: trailing edge
    assert uart.read(u.MSR, 1) == u.MSR_DCTS | u.MSR_DDCD | u.MSR_TERI
    uart.write(u.MCR, 1, 0)
    uart.write(u.THR, 1, 0x56)
    assert out == [b"V"]


def test_uart_irq_level():
    uart = Uart16550()
    uart.write(u.IER, 1, u.IER_ERBFI)
    uart.feed(b"a")
    assert not uart.irq.level                               # OUT2 gates the line on a PC
    uart.write(u.MCR, 1, u.MCR_OUT2)
    assert uart.irq.level
    uart.read(u.RBR, 1)
    assert not uart.irq.level
    uart.write(u.IER, 1, u.IER_ERBFI | u.IER_ETBEI)         # THR empty: interrupt at once
    assert uart.irq.level
    assert uart.read(u.IIR, 1) == u.IIR_ID_THRE and not uart.irq.level
    uart.write(u.THR, 1, 0x41)
    assert uart.irq.level
    uart.write(u.MCR, 1, u.MCR_OUT2 | u.MCR_LOOP)           # loopback forces OUT2 inactive
    assert not uart.irq.level


def test_uart_state_round_trip():
    a = Uart16550()
    a.write(u.LCR, 1, u.LCR_DLAB)
    a.write(u.DLL, 1, 0x01)
    a.write(u.LCR, 1, 0x03)
    a.write(u.FCR, 1, u.FCR_FIFO_ENABLE | 0x40)
    a.write(u.IER, 1, u.IER_ERBFI | u.IER_ELSI)
    a.write(u.MCR, 1, u.MCR_OUT2 | u.MCR_DTR)
    a.write(u.SCR, 1, 0x99)
    a.feed(bytes(18))                                       # overrun pending
    state = a.export_state()
    b = Uart16550()
    b.restore_state(state)
    assert b.export_state() == state and b.irq.level and a.irq.level
    regs = (u.IIR, u.LSR, u.LCR, u.MCR, u.SCR, u.IER)
    assert [b.read(r, 1) for r in regs] == [a.read(r, 1) for r in regs]
    assert [b.read(u.RBR, 1) for _ in range(17)] == [a.read(u.RBR, 1) for _ in range(17)]
    with pytest.raises(ConfigError, match="missing"):
        b.restore_state({"dll": 1})
