"""Intel 8259A programmable interrupt controller (datasheet 231468), and the PC's master/slave
pair cascaded on IRQ 2 (master 0x20/0x21, slave 0xA0/0xA1) with the PIIX edge/level control
registers (ELCR, 0x4D0/0x4D1).

A chip sees offset 0 (A0 = 0: ICW1, OCW2, OCW3; reads IRR, ISR or the poll word) and offset 1
(A0 = 1: ICW2-ICW4 during initialization, OCW1 = IMR; reads IMR).

Modelled from the datasheet:

- initialization: ICW1 (LTIM, SNGL, IC4), ICW2 (vector T7-T3), ICW3 (cascade), ICW4 (uPM,
  AEOI, SFNM; M/S and BUF are accepted and have no effect: the pair is wired in hardware);
  ICW1 resets the edge sense latches, clears IMR and ISR, makes IR7 the lowest priority,
  clears special mask mode and selects IRR for status reads; without IC4, ICW4 is zero.
- "In both the edge and level triggered modes the IR inputs must remain high until after the
  falling edge of the first INTA. If the IR input goes low before this time a DEFAULT IR7
  will occur": a request is the edge latch (edge mode) or the level (level mode) AND the
  input still high; an acknowledge that finds no request returns the IR7 vector and sets no
  ISR bit (the spurious IRQ 7, or IRQ 15 when the slave finds none, the master's IS2 set).
- fully nested priority with rotation (OCW2: rotate on non-specific / specific EOI, set
  priority, rotate in automatic EOI mode), specific and non-specific EOI, automatic EOI,
  special mask mode (an in-service level that is masked does not hold off other levels and is
  not reset by a non-specific EOI), special fully nested mode (master: a request from a
  cascade input is taken while that input is in service), poll command (the next read of
  offset 0 is an acknowledge and returns 0x80 | level, or 0 without a request), IRR/ISR reads
  through OCW3.

The 8086 vector is (ICW2 & 0xF8) | level; in MCS-80/85 mode (uPM = 0) the same vector is
delivered (the CALL sequence of an 8080 does not exist on this bus). The datasheet leaves the
state before initialization undefined; here a chip powers on with every input masked and its
INT output held low until the first ICW1-ICW4 sequence is complete (and while a later one is
in progress): a guest that enables interrupts without programming the PIC gets none, rather
than a vector in the exception range.
"""
from __future__ import annotations

from typing import Callable

from vmcore.devices.bus import PortDevice
from vmcore.devices.irq import IrqLine
from vmcore.errors import ConfigError

MASTER_PORT = 0x20
SLAVE_PORT = 0xA0
ELCR_PORT = 0x4D0
CASCADE_IRQ = 2           # the slave's INT drives the master's IR2

# ICW1 (offset 0, D4 = 1)
ICW1_IC4 = 0x01           # ICW4 follows
ICW1_SNGL = 0x02          # single 8259A: no ICW3
ICW1_ADI = 0x04           # CALL address interval (8080 only)
ICW1_LTIM = 0x08          # level triggered mode for every input
ICW1_INIT = 0x10          # this byte is ICW1
# ICW4
ICW4_UPM = 0x01           # 8086/8088 mode
ICW4_AEOI = 0x02          # automatic EOI at the end of the INTA sequence
ICW4_MS = 0x04            # buffered mode: 1 = master
ICW4_BUF = 0x08           # buffered mode
ICW4_SFNM = 0x10          # special fully nested mode
# OCW2 (offset 0, D4 = 0, D3 = 0): R, SL, EOI in bits 7-5, level L2-L0 in bits 2-0
OCW2_LEVEL = 0x07
OCW2_CMD = 0xE0
OCW2_ROTATE_AEOI_CLEAR = 0x00
OCW2_NONSPECIFIC_EOI = 0x20
OCW2_NOP = 0x40
OCW2_SPECIFIC_EOI = 0x60
OCW2_ROTATE_AEOI_SET = 0x80
OCW2_ROTATE_NONSPECIFIC_EOI = 0xA0
OCW2_SET_PRIORITY = 0xC0
OCW2_ROTATE_SPECIFIC_EOI = 0xE0
# OCW3 (offset 0, D4 = 0, D3 = 1)
OCW3_SELECT = 0x08
OCW3_RIS = 0x01           # with RR: 1 = read ISR, 0 = read IRR
OCW3_RR = 0x02            # read register command
OCW3_POLL = 0x04          # poll command
OCW3_SMM = 0x20           # with ESMM: 1 = set special mask, 0 = reset it
OCW3_ESMM = 0x40
# poll word
POLL_INT = 0x80           # a request was found; bits 2-0 are its level

# ELCR: inputs that may be level triggered (PIIX: IRQ 0, 1, 2, 8 and 13 are always edge)
ELCR_MASTER_MASK = 0xF8
ELCR_SLAVE_MASK = 0xDE

_INIT_DONE, _INIT_ICW2, _INIT_ICW3, _INIT_ICW4 = 0, 2, 3, 4


class Pic8259(PortDevice):
    """One 8259A. ``on_int(level)`` receives its INT output; ``set_input(n, level)`` drives
    input IRn (the PIC's IR pins are not IrqLines of their own: a device's line is connected to
    them by ``PicPair.connect``)."""

    def __init__(self, master: bool = True, on_int: Callable[[bool], None] | None = None):
        super().__init__()
        self.is_master = master
        self.on_int = on_int
        self.lines = 0            # levels on IR0-IR7
        self.level_mask = 0       # inputs in level mode through the ELCR
        self.int_output = False
        self.acks = 0
        self.spurious = 0
        self._power_on()

    def _power_on(self) -> None:
        self.edge = 0             # edge sense latches (a rising edge seen, not yet acknowledged)
        self.imr = 0
        self.isr = 0
        self.lowest = 7           # the level with the lowest priority
        self.icw1 = 0
        self.icw2 = 0
        self.icw3 = 0
        self.icw4 = 0
        self.init_step = _INIT_DONE
        self.initialized = False      # the first ICW sequence has been completed
        self.imr = 0xFF
        self.read_isr = False
        self.poll_pending = False
        self.special_mask = False
        self.rotate_in_aeoi = False

    # ---- inputs -------------------------------------------------------------------------
    def set_input(self, n: int, level: bool) -> None:
        bit = 1 << n
        if level:
            if not self.lines & bit:
                self.lines |= bit
                self.edge |= bit          # a low-to-high transition
        elif self.lines & bit:
            self.lines &= ~bit
            self.edge &= ~bit             # the request went away before INTA
        self._update()

    @property
    def level_triggered(self) -> int:
        return 0xFF if self.icw1 & ICW1_LTIM else self.level_mask

    @property
    def irr(self) -> int:
        lvl = self.level_triggered
        return ((self.edge & ~lvl) | lvl) & self.lines

    @property
    def vector_base(self) -> int:
        return self.icw2 & 0xF8

    @property
    def cascade_inputs(self) -> int:
        """Master: the inputs with a slave behind them (ICW3); none in single mode."""
        if self.icw1 & ICW1_SNGL or not self.is_master:
            return 0
        return self.icw3

    @property
    def slave_id(self) -> int:
        return self.icw3 & 7

    # ---- priority resolver --------------------------------------------------------------
    def _priority_order(self):
        first = self.lowest + 1
        return [(first + i) & 7 for i in range(8)]

    def _resolve(self, requests: int) -> int | None:
        """The level an INTA would acknowledge among ``requests`` (already unmasked)."""
        if not requests:
            return None
        blocking = self.isr & ~self.imr if self.special_mask else self.isr
        sfnm_ok = self.cascade_inputs if self.icw4 & ICW4_SFNM else 0
        for level in self._priority_order():
            bit = 1 << level
            if requests & bit:
                if blocking & bit and not sfnm_ok & bit:
                    return None
                return level
            if blocking & bit:
                return None
        return None

    def pending(self) -> int | None:
        if self.init_step != _INIT_DONE or not self.initialized:
            return None
        return self._resolve(self.irr & ~self.imr)

    def would_interrupt(self, n: int) -> bool:
        """Would a new request on IRn raise INT (or is INT already up)?"""
        if self.init_step != _INIT_DONE or not self.initialized:
            return False
        return self._resolve((self.irr | (1 << n)) & ~self.imr) is not None

    def _update(self) -> None:
        level = self.pending() is not None
        if level != self.int_output:
            self.int_output = level
            if self.on_int is not None:
                self.on_int(level)

    # ---- INTA ---------------------------------------------------------------------------
    def inta(self) -> int | None:
        """The interrupt acknowledge sequence: the highest request goes from IRR to ISR (or,
        with AEOI, is ended at once); None when no request is left (spurious)."""
        level = self.pending()
        if level is None:
            self.spurious += 1
            self._update()
            return None
        bit = 1 << level
        self.edge &= ~bit
        if self.icw4 & ICW4_AEOI:
            if self.rotate_in_aeoi:
                self.lowest = level
        else:
            self.isr |= bit
        self.acks += 1
        self._update()
        return level

    # ---- registers ----------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if offset == 0:
            if self.poll_pending:
                self.poll_pending = False
                level = self.inta()
                return 0 if level is None else POLL_INT | level
            return self.isr if self.read_isr else self.irr
        return self.imr

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset == 0:
            if value & ICW1_INIT:
                self._icw1(value)
            elif value & OCW3_SELECT:
                self._ocw3(value)
            else:
                self._ocw2(value)
        elif self.init_step == _INIT_ICW2:
            self.icw2 = value
            self.init_step = _INIT_ICW3 if not self.icw1 & ICW1_SNGL else self._after_icw3()
        elif self.init_step == _INIT_ICW3:
            self.icw3 = value
            self.init_step = self._after_icw3()
        elif self.init_step == _INIT_ICW4:
            self.icw4 = value
            self.init_step = _INIT_DONE
        else:
            self.imr = value                  # OCW1
        if self.init_step == _INIT_DONE and self.icw1 & ICW1_INIT:
            self.initialized = True
        self._update()

    def _after_icw3(self) -> int:
        return _INIT_ICW4 if self.icw1 & ICW1_IC4 else _INIT_DONE

    def _icw1(self, value: int) -> None:
        self.icw1 = value
        self.edge = 0                 # (a) the edge sense circuit is reset
        self.imr = 0                  # (b) IMR cleared
        self.isr = 0
        self.lowest = 7               # (c) IR7 lowest priority
        self.icw3 = 7                 # (d) slave mode address 7
        self.special_mask = False     # (e) special mask mode cleared, status read = IRR
        self.read_isr = False
        self.poll_pending = False
        self.rotate_in_aeoi = False
        if not value & ICW1_IC4:      # (f) ICW4 functions zero
            self.icw4 = 0
        self.init_step = _INIT_ICW2

    def _ocw2(self, value: int) -> None:
        cmd, level = value & OCW2_CMD, value & OCW2_LEVEL
        if cmd in (OCW2_NONSPECIFIC_EOI, OCW2_ROTATE_NONSPECIFIC_EOI):
            # the highest-priority IS bit; in special mask mode a masked IS bit is left alone
            candidates = self.isr & ~self.imr if self.special_mask else self.isr
            for lvl in self._priority_order():
                if candidates & (1 << lvl):
                    self.isr &= ~(1 << lvl)
                    if cmd == OCW2_ROTATE_NONSPECIFIC_EOI:
                        self.lowest = lvl
                    break
        elif cmd in (OCW2_SPECIFIC_EOI, OCW2_ROTATE_SPECIFIC_EOI):
            self.isr &= ~(1 << level)
            if cmd == OCW2_ROTATE_SPECIFIC_EOI:
                self.lowest = level
        elif cmd == OCW2_SET_PRIORITY:
            self.lowest = level
        elif cmd == OCW2_ROTATE_AEOI_SET:
            self.rotate_in_aeoi = True
        elif cmd == OCW2_ROTATE_AEOI_CLEAR:
            self.rotate_in_aeoi = False
        # OCW2_NOP: nothing

    def _ocw3(self, value: int) -> None:
        if value & OCW3_ESMM:
            self.special_mask = bool(value & OCW3_SMM)
        if value & OCW3_POLL:
            self.poll_pending = True
        if value & OCW3_RR:
            self.read_isr = bool(value & OCW3_RIS)

    # ---- snapshots ----------------------------------------------------------------------
    _STATE_KEYS = ("lines", "level_mask", "edge", "imr", "isr", "lowest", "icw1", "icw2", "icw3", "icw4",
                   "init_step", "initialized", "read_isr", "poll_pending", "special_mask", "rotate_in_aeoi")

    def export_state(self) -> dict:
        return {k: getattr(self, k) for k in self._STATE_KEYS}

    def restore_state(self, state: dict) -> None:
        missing = [k for k in self._STATE_KEYS if k not in state]
        if missing:
            raise ConfigError(f"8259A state is missing {', '.join(missing)}")
        for k in self._STATE_KEYS:
            setattr(self, k, type(getattr(self, k))(state[k]))
        self._update()


class Elcr(PortDevice):
    """PIIX edge/level control registers: offset 0 for IRQ 0-7, offset 1 for IRQ 8-15; a 1 bit
    makes the input level triggered (the reserved bits read 0)."""

    def __init__(self, master: Pic8259, slave: Pic8259):
        super().__init__()
        self._chips = (master, slave)

    def read(self, offset: int, size: int) -> int:
        return self._chips[offset].level_mask

    def write(self, offset: int, size: int, value: int) -> None:
        chip = self._chips[offset]
        chip.level_mask = value & (ELCR_MASTER_MASK if offset == 0 else ELCR_SLAVE_MASK)
        chip._update()


class PicPair:
    """The PC's two 8259As: the slave's INT on the master's IR2, the master's INT on the CPU's
    INTR (``set_intr``). ``acknowledge()`` is the CPU's INTA cycle; ``connect(irq, line)``
    wires a device's IrqLine to IRQ 0-15."""

    def __init__(self, set_intr: Callable[[bool], None] | None = None):
        self.set_intr = set_intr
        self.master = Pic8259(master=True, on_int=self._master_int)
        self.slave = Pic8259(master=False, on_int=self._slave_int)
        self.elcr = Elcr(self.master, self.slave)
        self.lines: dict[int, IrqLine] = {}
        self.vectors = 0

    def _master_int(self, level: bool) -> None:
        if self.set_intr is not None:
            self.set_intr(level)

    def _slave_int(self, level: bool) -> None:
        self.master.set_input(CASCADE_IRQ, level)

    @property
    def intr(self) -> bool:
        return self.master.int_output

    def _chip(self, irq: int) -> Pic8259:
        if not 0 <= irq <= 15 or irq == CASCADE_IRQ:
            raise ConfigError(f"IRQ {irq} cannot take a device (0-15, 2 is the cascade)")
        return self.master if irq < 8 else self.slave

    def connect(self, irq: int, line: IrqLine) -> IrqLine:
        chip = self._chip(irq)
        if irq in self.lines:
            raise ConfigError(f"IRQ {irq} is taken by {self.lines[irq]!r}")
        n = irq & 7
        line.name = line.name or f"IRQ{irq}"
        line.on_change = lambda level: chip.set_input(n, level)
        self.lines[irq] = line
        chip.set_input(n, line.level)
        return line

    def set_irq(self, irq: int, level: bool) -> None:
        """Drive input ``irq`` directly (tests, or a device without an IrqLine)."""
        self._chip(irq).set_input(irq & 7, level)

    def acknowledge(self) -> int:
        """INTA: the vector of the highest-priority request, or the spurious IR7 vector of the
        chip that found none."""
        master, slave = self.master, self.slave
        level = master.inta()
        if level is None:
            vector = master.vector_base | 7
        elif master.cascade_inputs & (1 << level):
            if level == CASCADE_IRQ and slave.slave_id == CASCADE_IRQ:
                slave_level = slave.inta()
                vector = slave.vector_base | (7 if slave_level is None else slave_level)
            else:
                vector = 0xFF             # no slave answers that cascade address: open bus
        else:
            vector = master.vector_base | level
        self.vectors += 1
        return vector

    def can_interrupt(self, irq: int) -> bool:
        """Would a request on ``irq`` raise INTR now (unmasked and not held off by a level in
        service)? A halted CPU waits only for timers whose request can reach it."""
        if irq < 8:
            return self.master.would_interrupt(irq)
        return self.slave.would_interrupt(irq & 7) and self.master.would_interrupt(CASCADE_IRQ)
