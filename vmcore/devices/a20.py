"""System Control Port A (0x92, "fast A20"): one of the two PC ways to open the A20 gate
and to reset the CPU; the other is the 8042 keyboard controller's output port
(vmcore/devices/i8042.py). The device sees register offsets only; the machine gives it
``set_a20(bool)`` and ``reset()``.
"""
from __future__ import annotations

from typing import Callable

from vmcore.devices.bus import PortDevice

# System Control Port A (IBM PS/2 technical reference)
PORT_A_FAST_RESET = 0x01      # writing 1 pulses the CPU reset line
PORT_A_A20 = 0x02             # 1: A20 gate open


class SystemControlPortA(PortDevice):
    """Port 0x92."""

    def __init__(self, set_a20: Callable[[bool], None], reset: Callable[[], None]):
        super().__init__()
        self._set_a20 = set_a20
        self._reset = reset
        self.value = PORT_A_A20

    def read(self, offset: int, size: int) -> int:
        return self.value

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if (value ^ self.value) & PORT_A_A20:
            self._set_a20(bool(value & PORT_A_A20))
        self.value = value & ~PORT_A_FAST_RESET
        if value & PORT_A_FAST_RESET:
            self._reset()

    def export_state(self) -> dict:
        return {"value": self.value}

    def restore_state(self, state: dict) -> None:
        self.value = int(state["value"])
