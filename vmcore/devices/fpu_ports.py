"""The PC/AT's coprocessor ports (0xF0-0xF1) and the FERR# -> IRQ 13 latch.

With CR0.NE = 0 an unmasked x87 exception is reported the MS-DOS compatible way (Intel SDM
Vol. 1 Appendix D, "Guidelines for writing x87 FPU exception handlers"): the FPU asserts FERR#,
the chipset latches it onto IRQ 13, and the interrupt handler writes port F0h, which clears
the latch (dropping IRQ 13) and asserts IGNNE# so that the interrupted waiting instruction
can go on. The engine reports the assertion as an exit (EXIT_FERR; vmcore/_core/ops_x87.pxi
fpu_pending) and keeps the IGNNE# state itself; this device is the port side: a write to F0h
(any value) clears the latch. F1h (the 80287's reset) is accepted and ignored. Reads float high.
"""
from __future__ import annotations

from typing import Callable

from vmcore.devices.bus import PortDevice

CLEAR_BUSY = 0          # port F0h: clear the FERR# latch, assert IGNNE#
RESET_COPROCESSOR = 1   # port F1h


class CoprocessorPorts(PortDevice):
    def __init__(self, on_clear: Callable[[], None]) -> None:
        super().__init__()
        self._on_clear = on_clear
        self.clears = 0

    def assert_ferr(self) -> None:
        """FERR# became active: IRQ 13 goes up and stays up until F0h is written."""
        self.irq.raise_()

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == CLEAR_BUSY:
            self.clears += 1
            self.irq.lower()
            self._on_clear()

    def export_state(self) -> dict:
        return {"irq": self.irq.level, "clears": self.clears}

    def restore_state(self, state: dict) -> None:
        self.irq.set_level(bool(state["irq"]))
        self.clears = int(state["clears"])
