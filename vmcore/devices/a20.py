"""The two PC ways to open the A20 gate and to reset the CPU: System Control Port A
(0x92, "fast A20") and the 8042 keyboard controller's output port (0x60/0x64).

Both see register offsets only; the machine gives them ``set_a20(bool)`` and ``reset()``.
Only what firmware and kernels use for A20 and reset is modelled: the 8042 has no
keyboard behind it here.
"""
from __future__ import annotations

from typing import Callable

from vmcore.devices.bus import PortDevice

# System Control Port A (IBM PS/2 technical reference)
PORT_A_FAST_RESET = 0x01      # writing 1 pulses the CPU reset line
PORT_A_A20 = 0x02             # 1: A20 gate open

# 8042 status register (read at 0x64)
KBC_STATUS_OBF = 0x01         # output buffer full: data waiting at 0x60
KBC_STATUS_IBF = 0x02         # input buffer full (never: writes are taken at once)
KBC_STATUS_SYS = 0x04         # system flag: POST passed
KBC_STATUS_CMD = 0x08         # last write was to the command port
# 8042 commands (written to 0x64)
KBC_CMD_READ_OUTPUT = 0xD0
KBC_CMD_WRITE_OUTPUT = 0xD1
KBC_CMD_A20_OFF = 0xDD        # common extension
KBC_CMD_A20_ON = 0xDF
KBC_CMD_PULSE_RESET = 0xFE
# 8042 output port bits
KBC_OUT_RESET = 0x01          # 0 holds the CPU in reset
KBC_OUT_A20 = 0x02


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


class KeyboardController(PortDevice):
    """The 8042 at 0x60 (offset 0, data) and 0x64 (offset 4, command/status)."""

    def __init__(self, set_a20: Callable[[bool], None], reset: Callable[[], None]):
        super().__init__()
        self._set_a20 = set_a20
        self._reset = reset
        self.output_port = KBC_OUT_RESET | KBC_OUT_A20    # the machine starts with A20 open
        self.pending_command: int | None = None
        self.output_buffer: int | None = None
        self.last_was_command = False

    def read(self, offset: int, size: int) -> int:
        if offset == 4:
            status = KBC_STATUS_SYS | (KBC_STATUS_CMD if self.last_was_command else 0)
            return status | (KBC_STATUS_OBF if self.output_buffer is not None else 0)
        if offset == 0:
            value, self.output_buffer = self.output_buffer, None
            return 0 if value is None else value
        return 0xFF

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset == 4:
            self.last_was_command = True
            self.pending_command = None
            if value == KBC_CMD_READ_OUTPUT:
                self.output_buffer = self.output_port
            elif value == KBC_CMD_WRITE_OUTPUT:
                self.pending_command = value
            elif value == KBC_CMD_A20_ON:
                self._write_output(self.output_port | KBC_OUT_A20)
            elif value == KBC_CMD_A20_OFF:
                self._write_output(self.output_port & ~KBC_OUT_A20)
            elif value == KBC_CMD_PULSE_RESET:
                self._reset()
        elif offset == 0:
            self.last_was_command = False
            if self.pending_command == KBC_CMD_WRITE_OUTPUT:
                self.pending_command = None
                self._write_output(value)

    def _write_output(self, value: int) -> None:
        if (value ^ self.output_port) & KBC_OUT_A20:
            self._set_a20(bool(value & KBC_OUT_A20))
        self.output_port = value
        if not value & KBC_OUT_RESET:
            self._reset()

    def export_state(self) -> dict:
        return {"output_port": self.output_port, "pending_command": self.pending_command,
                "output_buffer": self.output_buffer}

    def restore_state(self, state: dict) -> None:
        self.output_port = int(state["output_port"])
        self.pending_command = state["pending_command"]
        self.output_buffer = state["output_buffer"]
