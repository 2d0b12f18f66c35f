"""NS16550A UART (National/TI PC16550D datasheet), as on COM1 (0x3F8, 8 registers, IRQ 4).

Transmission is instantaneous: a THR write reaches ``sink`` at once and THRE/TEMT stay set.
Reception comes from the host through ``feed``. No time passes on the virtual line, so the
FIFO character timeout (4 character times without activity) is due as soon as data sits
below the trigger level. Parity, framing and break errors never occur.
"""
from __future__ import annotations

from collections import deque
from typing import Callable

from vmcore.devices.bus import PortDevice
from vmcore.errors import ConfigError

COM1_PORT = 0x3F8
UART_REGISTERS = 8

# Register offsets (datasheet "Summary of Registers"). DLAB = LCR bit 7 selects the divisor latch at 0 and 1.
RBR = THR = DLL = 0
IER = DLM = 1
IIR = FCR = 2
LCR = 3
MCR = 4
LSR = 5
MSR = 6
SCR = 7

# IER: interrupt enables
IER_ERBFI = 0x01     # received data available (and character timeout)
IER_ETBEI = 0x02     # transmitter holding register empty
IER_ELSI = 0x04      # receiver line status
IER_EDSSI = 0x08     # modem status
IER_MASK = 0x0F      # bits 4-7 are always 0

# IIR: bit 0 = 0 when an interrupt is pending; bits 1-3 identify the highest priority one
# ("Interrupt Control Functions")
IIR_NO_INT = 0x01
IIR_ID_RLS = 0x06    # 1st: receiver line status (OE, PE, FE, BI); reset by reading LSR
IIR_ID_RDA = 0x04    # 2nd: received data available (trigger level reached); reset by reading RBR
IIR_ID_CTI = 0x0C    # 2nd: character timeout (FIFO mode); reset by reading RBR
IIR_ID_THRE = 0x02   # 3rd: THR empty; reset by reading IIR (if the source) or writing THR
IIR_ID_MS = 0x00     # 4th: modem status (CTS, DSR, RI, DCD); reset by reading MSR
IIR_FIFOS_ENABLED = 0xC0   # bits 6-7 set when FCR0 = 1

# FCR (write only)
FCR_FIFO_ENABLE = 0x01     # FCR0; other bits are programmed only while it is 1
FCR_RCVR_RESET = 0x02      # self-clearing
FCR_XMIT_RESET = 0x04      # self-clearing
FCR_DMA_MODE = 0x08
FCR_TRIGGER_MASK = 0xC0
RCVR_TRIGGER_LEVELS = (1, 4, 8, 14)   # FCR bits 7:6
FIFO_SIZE = 16

# LCR
LCR_WLS_MASK = 0x03        # word length 5..8 bits (not applied: bytes pass whole)
LCR_STB = 0x04
LCR_PEN = 0x08
LCR_EPS = 0x10
LCR_STICK_PARITY = 0x20
LCR_SET_BREAK = 0x40
LCR_DLAB = 0x80

# MCR
MCR_DTR = 0x01
MCR_RTS = 0x02
MCR_OUT1 = 0x04
MCR_OUT2 = 0x08            # on a PC, gates the INTR output onto the IRQ line
MCR_LOOP = 0x10
MCR_MASK = 0x1F

# LSR
LSR_DR = 0x01
LSR_OE = 0x02
LSR_PE = 0x04
LSR_FE = 0x08
LSR_BI = 0x10
LSR_THRE = 0x20
LSR_TEMT = 0x40
LSR_RCVR_FIFO_ERROR = 0x80
LSR_ERRORS = LSR_OE | LSR_PE | LSR_FE | LSR_BI   # cleared by reading LSR

# MSR: bits 0-3 are deltas (cleared by reading MSR), bits 4-7 the complemented modem inputs
MSR_DCTS = 0x01
MSR_DDSR = 0x02
MSR_TERI = 0x04            # RI went from active to inactive
MSR_DDCD = 0x08
MSR_DELTAS = 0x0F
MSR_CTS = 0x10
MSR_DSR = 0x20
MSR_RI = 0x40
MSR_DCD = 0x80
MSR_INPUTS = 0xF0
DEFAULT_MODEM_INPUTS = MSR_CTS | MSR_DSR | MSR_DCD   # a terminal is attached


class Uart16550(PortDevice):
    """Registers at offsets 0-7. ``sink(bytes)`` receives transmitted bytes; ``feed(bytes)``
    delivers received ones."""

    def __init__(self, sink: Callable[[bytes], object] | None = None):
        super().__init__()
        self.sink = sink
        self._rx: deque[int] = deque()
        self.dll = self.dlm = self.scr = 0    # not affected by master reset
        self._modem_inputs = DEFAULT_MODEM_INPUTS
        self.reset()

    def reset(self) -> None:
        """Master reset ("UART Reset Configuration"): IER, FCR, LCR, MCR = 0; LSR = THRE|TEMT; IIR = 1."""
        self.ier = self.lcr = self.mcr = 0
        self.fcr = 0
        self._rx.clear()
        self._rbr = 0
        self._line_errors = 0
        self._thr_ipending = False
        self._msr_deltas = 0
        self._msr_inputs = self._modem_pins()
        self._update_irq()

    # ---- host side ----------------------------------------------------------------------
    def feed(self, data: bytes) -> int:
        """Receive ``data`` from the line; returns how many bytes reached the receiver buffer
        (the rest were lost to overrun). In loopback the serial input is disconnected."""
        if self.mcr & MCR_LOOP:
            return 0
        received = sum(self._receive(b) for b in bytes(data))
        self._update_irq()
        return received

    @property
    def rx_free(self) -> int:
        """Bytes the receiver buffer can take before an overrun."""
        return self._rx_capacity - len(self._rx)

    def set_modem_inputs(self, *, cts: bool = True, dsr: bool = True, ri: bool = False, dcd: bool = True) -> None:
        """Drive the modem input pins (as MSR bits 4-7 show them); changes set the MSR deltas."""
        self._modem_inputs = (MSR_CTS if cts else 0) | (MSR_DSR if dsr else 0) | \
                             (MSR_RI if ri else 0) | (MSR_DCD if dcd else 0)
        self._refresh_modem_status()
        self._update_irq()

    # ---- guest side ---------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if offset == RBR:
            if self.lcr & LCR_DLAB:
                return self.dll
            if self._rx:
                self._rbr = self._rx.popleft()
                self._update_irq()
            return self._rbr
        if offset == IER:
            return self.dlm if self.lcr & LCR_DLAB else self.ier
        if offset == IIR:
            iid = self._interrupt_id()
            if iid == IIR_ID_THRE:        # reading IIR resets a THRE interrupt it reports
                self._thr_ipending = False
                self._update_irq()
            return iid | (IIR_FIFOS_ENABLED if self._fifo_enabled else 0)
        if offset == LCR:
            return self.lcr
        if offset == MCR:
            return self.mcr
        if offset == LSR:
            value = self._lsr()
            self._line_errors = 0
            self._update_irq()
            return value
        if offset == MSR:
            value = self._msr_inputs | self._msr_deltas
            self._msr_deltas = 0
            self._update_irq()
            return value
        if offset == SCR:
            return self.scr
        return 0xFF

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset == THR:
            if self.lcr & LCR_DLAB:
                self.dll = value
                return
            self._transmit(value)
        elif offset == IER:
            if self.lcr & LCR_DLAB:
                self.dlm = value
                return
            changed = (self.ier ^ value) & IER_ETBEI
            self.ier = value & IER_MASK
            if changed:                   # enabling ETBEI with THR empty interrupts at once
                self._thr_ipending = bool(self.ier & IER_ETBEI)
        elif offset == FCR:
            self._write_fcr(value)
        elif offset == LCR:
            self.lcr = value
        elif offset == MCR:
            self.mcr = value & MCR_MASK
            self._refresh_modem_status()
        elif offset == SCR:
            self.scr = value
        # LSR and MSR writes (factory test) are ignored.
        self._update_irq()

    # ---- internals ----------------------------------------------------------------------
    @property
    def _fifo_enabled(self) -> bool:
        return bool(self.fcr & FCR_FIFO_ENABLE)

    @property
    def _rx_capacity(self) -> int:
        return FIFO_SIZE if self._fifo_enabled else 1

    def _transmit(self, byte: int) -> None:
        self._thr_ipending = False        # writing THR resets the THRE interrupt...
        if self.mcr & MCR_LOOP:           # loopback: the transmitter output feeds the receiver
            self._receive(byte)
        elif self.sink is not None:
            self.sink(bytes((byte,)))
        self._thr_ipending = True         # ...and the instant transmission empties THR again

    def _receive(self, byte: int) -> bool:
        if len(self._rx) < self._rx_capacity:
            self._rx.append(byte)
            return True
        self._line_errors |= LSR_OE
        if not self._fifo_enabled:        # 16450 mode: the new character overwrites RBR
            self._rx[-1] = byte
        return False                      # FIFO mode: the character in the shift register is lost

    def _write_fcr(self, value: int) -> None:
        if (value ^ self.fcr) & FCR_FIFO_ENABLE:
            self._rx.clear()              # changing modes clears both FIFOs
        if not value & FCR_FIFO_ENABLE:
            self.fcr = 0
            return
        if value & FCR_RCVR_RESET:
            self._rx.clear()
        self.fcr = value & (FCR_FIFO_ENABLE | FCR_DMA_MODE | FCR_TRIGGER_MASK)

    def _lsr(self) -> int:
        return (LSR_DR if self._rx else 0) | self._line_errors | LSR_THRE | LSR_TEMT

    def _modem_pins(self) -> int:
        """MSR bits 4-7. In loopback the inputs come from MCR: RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD."""
        if not self.mcr & MCR_LOOP:
            return self._modem_inputs
        m = self.mcr
        return ((MSR_CTS if m & MCR_RTS else 0) | (MSR_DSR if m & MCR_DTR else 0) |
                (MSR_RI if m & MCR_OUT1 else 0) | (MSR_DCD if m & MCR_OUT2 else 0))

    def _refresh_modem_status(self) -> None:
        new = self._modem_pins()
        old, self._msr_inputs = self._msr_inputs, new
        changed = old ^ new
        if changed & MSR_CTS:
            self._msr_deltas |= MSR_DCTS
        if changed & MSR_DSR:
            self._msr_deltas |= MSR_DDSR
        if changed & MSR_DCD:
            self._msr_deltas |= MSR_DDCD
        if old & MSR_RI and not new & MSR_RI:
            self._msr_deltas |= MSR_TERI

    def _interrupt_id(self) -> int:
        """Highest-priority enabled pending interrupt ("Interrupt Control Functions")."""
        ier = self.ier
        if ier & IER_ELSI and self._line_errors:
            return IIR_ID_RLS
        if ier & IER_ERBFI and self._rx:
            if self._fifo_enabled and len(self._rx) < RCVR_TRIGGER_LEVELS[self.fcr >> 6]:
                return IIR_ID_CTI
            return IIR_ID_RDA
        if ier & IER_ETBEI and self._thr_ipending:
            return IIR_ID_THRE
        if ier & IER_EDSSI and self._msr_deltas:
            return IIR_ID_MS
        return IIR_NO_INT

    def _update_irq(self) -> None:
        # On a PC the INTR pin reaches the IRQ line through a buffer enabled by OUT2; loopback
        # forces the OUT2 pin inactive, so no interrupt leaves the chip then.
        gate = self.mcr & (MCR_OUT2 | MCR_LOOP) == MCR_OUT2
        self.irq.set_level(gate and self._interrupt_id() != IIR_NO_INT)

    # ---- snapshots ----------------------------------------------------------------------
    _STATE_KEYS = ("dll", "dlm", "ier", "fcr", "lcr", "mcr", "scr", "rbr", "rx", "line_errors",
                   "thr_ipending", "msr_inputs", "msr_deltas", "modem_inputs")

    def export_state(self) -> dict:
        return {"dll": self.dll, "dlm": self.dlm, "ier": self.ier, "fcr": self.fcr, "lcr": self.lcr,
                "mcr": self.mcr, "scr": self.scr, "rbr": self._rbr, "rx": bytes(self._rx),
                "line_errors": self._line_errors, "thr_ipending": self._thr_ipending,
                "msr_inputs": self._msr_inputs, "msr_deltas": self._msr_deltas,
                "modem_inputs": self._modem_inputs}

    def restore_state(self, state: dict) -> None:
        missing = [k for k in self._STATE_KEYS if k not in state]
        if missing:
            raise ConfigError(f"UART 16550 state is missing {', '.join(missing)}")
        rx = bytes(state["rx"])
        capacity = FIFO_SIZE if state["fcr"] & FCR_FIFO_ENABLE else 1
        if len(rx) > capacity:
            raise ConfigError(f"UART 16550 state holds {len(rx)} received bytes; the buffer holds {capacity}")
        self.dll, self.dlm, self.ier, self.fcr = state["dll"], state["dlm"], state["ier"], state["fcr"]
        self.lcr, self.mcr, self.scr, self._rbr = state["lcr"], state["mcr"], state["scr"], state["rbr"]
        self._rx = deque(rx)
        self._line_errors, self._thr_ipending = state["line_errors"], bool(state["thr_ipending"])
        self._msr_inputs, self._msr_deltas = state["msr_inputs"], state["msr_deltas"]
        self._modem_inputs = state["modem_inputs"]
        self._update_irq()
