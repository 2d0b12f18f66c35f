"""The I/O APIC at gpa 0xFEC00000 (Intel 82093AA I/O Advanced Programmable Interrupt Controller
datasheet, order number 290566-001): 24 interrupt input pins, each with a redirection table entry
that turns a change on the pin into an interrupt message to the local APICs.

Two registers are in memory space (§3.0 "Register description"): IOREGSEL at offset 00h selects
an indirect register, IOWIN at 10h reads and writes it. The indirect registers (§3.2): 00h
IOAPICID (bits 27:24), 01h IOAPICVER (version 11h, maximum redirection entry 17h: 24 entries),
02h IOAPICARB (the arbitration ID, bits 27:24, loaded from IOAPICID when it is written, §3.2.3),
10h-3Fh the redirection table, two registers per entry (§3.2.4):

    bits 7:0 vector, 10:8 delivery mode (000 fixed, 001 lowest priority; SMI, NMI, INIT and
    ExtINT are not modelled and deliver nothing), 11 destination mode (0 physical, 1 logical),
    12 delivery status (RO, idle here: delivery is immediate), 13 polarity (0 active high,
    1 active low), 14 remote IRR (RO, level mode: set when the local APIC accepts the message,
    cleared by its EOI for the vector), 15 trigger mode (0 edge, 1 level), 16 mask, 63:56
    destination. Every entry starts masked.

Edge mode delivers on the pin's change to asserted while unmasked (an edge while masked is lost);
level mode delivers while the pin is asserted, unmasked and remote IRR is clear. ISA IRQ lines
reach the pins as on QEMU's pc machine and in its MP table / ACPI MADT interrupt source override:
IRQ 0 (the PIT) on pin 2, every other IRQ on the pin of its number (``isa_pin``).
"""
from __future__ import annotations

from typing import Callable

from vmcore.devices.irq import IrqLine
from vmcore.devices.mmio import MmioDevice
from vmcore.errors import ConfigError

IOAPIC_GPA = 0xFEC00000
IOAPIC_SIZE = 0x1000
PINS = 24

IOREGSEL, IOWIN = 0x00, 0x10
REG_ID, REG_VERSION, REG_ARB, REG_REDTBL = 0x00, 0x01, 0x02, 0x10
VERSION_VALUE = 0x00170011      # maximum redirection entry 17h, version 11h (§3.2.2)

RTE_VECTOR = 0xFF
RTE_DELIVERY_MODE = 0x700
RTE_DEST_LOGICAL = 1 << 11
RTE_DELIVERY_STATUS = 1 << 12
RTE_ACTIVE_LOW = 1 << 13
RTE_REMOTE_IRR = 1 << 14
RTE_LEVEL = 1 << 15
RTE_MASK = 1 << 16
RTE_WRITABLE = (0xFF << 56) | RTE_MASK | RTE_LEVEL | RTE_ACTIVE_LOW | RTE_DEST_LOGICAL | RTE_DELIVERY_MODE | RTE_VECTOR


def isa_pin(irq: int) -> int:
    """The I/O APIC pin of an ISA IRQ: the interrupt source override of IRQ 0 to pin 2."""
    return 2 if irq == 0 else irq


class IoApic(MmioDevice):
    """``deliver(vector, level, dest, logical, mode) -> bool`` sends a message to the local APIC
    (LocalApic.accept); ``eoi(vector)`` is the local APIC's EOI of a level-triggered vector."""

    def __init__(self, deliver: Callable[..., bool] | None = None):
        super().__init__()
        self.deliver = deliver
        self.lines: dict[int, IrqLine] = {}
        self.messages = 0               # interrupt messages sent
        self.reset()

    def reset(self) -> None:
        self.ioregsel = 0
        self.apic_id = 0
        self.arb_id = 0
        self.redirection = [RTE_MASK] * PINS
        self.pins = [False] * PINS       # input levels as driven (before polarity)
        for pin, line in self.lines.items():
            self.pins[pin] = line.level

    # ---- wiring -------------------------------------------------------------------------
    def connect(self, pin: int, line: IrqLine) -> IrqLine:
        """Drive pin ``pin`` from ``line`` (besides whatever else the line drives, e.g. the PIC)."""
        if not 0 <= pin < PINS:
            raise ConfigError(f"I/O APIC pin {pin} does not exist (0-{PINS - 1})")
        if pin in self.lines:
            raise ConfigError(f"I/O APIC pin {pin} is taken by {self.lines[pin]!r}")
        self.lines[pin] = line
        line.add_listener(lambda level: self.set_input(pin, level))
        self.set_input(pin, line.level)
        return line

    def _asserted(self, pin: int) -> bool:
        return self.pins[pin] != bool(self.redirection[pin] & RTE_ACTIVE_LOW)

    def set_input(self, pin: int, level: bool) -> None:
        was = self._asserted(pin)
        self.pins[pin] = bool(level)
        now = self._asserted(pin)
        rte = self.redirection[pin]
        if rte & RTE_LEVEL:
            if now:
                self._service_level(pin)
        elif now and not was and not (rte & RTE_MASK):
            self._send(pin)

    def can_interrupt(self, pin: int) -> bool:
        """Would a request on ``pin`` send a message now (unmasked, remote IRR clear)?"""
        rte = self.redirection[pin]
        return not (rte & RTE_MASK) and not (rte & RTE_REMOTE_IRR)

    # ---- messages -----------------------------------------------------------------------
    def _send(self, pin: int) -> bool:
        rte = self.redirection[pin]
        self.messages += 1
        if self.deliver is None:
            return False
        return bool(self.deliver(rte & RTE_VECTOR, bool(rte & RTE_LEVEL), rte >> 56,
                                 bool(rte & RTE_DEST_LOGICAL), (rte >> 8) & 7))

    def _service_level(self, pin: int) -> None:
        """A level-triggered pin: one message per assertion, until the EOI clears remote IRR."""
        rte = self.redirection[pin]
        if self._asserted(pin) and not (rte & RTE_MASK) and not (rte & RTE_REMOTE_IRR):
            if self._send(pin):
                self.redirection[pin] |= RTE_REMOTE_IRR

    def eoi(self, vector: int) -> None:
        """The local APIC's EOI for a level-triggered ``vector``: remote IRR of the entries with
        that vector clears, and a pin still asserted sends again."""
        for pin in range(PINS):
            rte = self.redirection[pin]
            if (rte & RTE_LEVEL) and (rte & RTE_REMOTE_IRR) and (rte & RTE_VECTOR) == vector:
                self.redirection[pin] &= ~RTE_REMOTE_IRR
                self._service_level(pin)

    # ---- registers ----------------------------------------------------------------------
    def _read_register(self, index: int) -> int:
        if index == REG_ID:
            return self.apic_id
        if index == REG_VERSION:
            return VERSION_VALUE
        if index == REG_ARB:
            return self.arb_id
        if REG_REDTBL <= index < REG_REDTBL + 2 * PINS:
            rte = self.redirection[(index - REG_REDTBL) >> 1]
            return (rte >> 32) if index & 1 else rte & 0xFFFFFFFF
        return 0

    def _write_register(self, index: int, value: int) -> None:
        if index == REG_ID:
            self.apic_id = value & 0x0F000000
            self.arb_id = self.apic_id
        elif REG_REDTBL <= index < REG_REDTBL + 2 * PINS:
            pin = (index - REG_REDTBL) >> 1
            old = self.redirection[pin]
            was = self._asserted(pin)
            if index & 1:
                new = (old & 0xFFFFFFFF) | (value << 32)
            else:
                new = (old & ~0xFFFFFFFF) | value
            new = (new & RTE_WRITABLE) | (old & RTE_REMOTE_IRR)
            if not (new & RTE_LEVEL):
                new &= ~RTE_REMOTE_IRR          # remote IRR is undefined (kept clear) in edge mode
            self.redirection[pin] = new
            if new & RTE_LEVEL:
                self._service_level(pin)         # e.g. unmasked with the line already asserted
            elif self._asserted(pin) and not was and not (new & RTE_MASK):
                self._send(pin)                  # a polarity change made an edge

    def read(self, offset: int, size: int) -> int:
        mask = (1 << (8 * size)) - 1
        if offset < IOREGSEL + 4:
            return (self.ioregsel >> (8 * (offset & 3))) & mask
        if IOWIN <= offset < IOWIN + 4:
            return (self._read_register(self.ioregsel) >> (8 * (offset & 3))) & mask
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == IOREGSEL:
            self.ioregsel = value & 0xFF
        elif IOWIN <= offset < IOWIN + 4:
            shift = 8 * (offset & 3)
            mask = ((1 << (8 * size)) - 1) << shift
            current = self._read_register(self.ioregsel)
            self._write_register(self.ioregsel, ((current & ~mask) | ((value << shift) & mask)) & 0xFFFFFFFF)

    # ---- snapshots ----------------------------------------------------------------------
    def export_state(self) -> dict:
        return {"ioregsel": self.ioregsel, "apic_id": self.apic_id, "arb_id": self.arb_id,
                "redirection": list(self.redirection), "pins": list(self.pins)}

    def restore_state(self, state: dict) -> None:
        self.ioregsel = state["ioregsel"]
        self.apic_id = state["apic_id"]
        self.arb_id = state["arb_id"]
        self.redirection = list(state["redirection"])
        self.pins = list(state["pins"])
