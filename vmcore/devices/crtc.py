"""The CRT controller of a colour text display (the 6845 of the IBM CGA, as VGA keeps it at the
same ports: IBM VGA Technical Reference, "CRT Controller Registers"): an index register at 0x3D4
and the selected register at 0x3D5, and Input Status 1 at 0x3DA. Text-mode kernels (xv6's
console.c, Linux's vgacon) read and write the cursor location (registers 0Eh/0Fh, a character
offset into the 0xB8000 screen) and the start address (0Ch/0Dh) here; nothing is drawn, the
registers are storage. Input Status 1 toggles its display-enable and vertical-retrace bits on
each read, so a loop waiting for retrace ends."""
from __future__ import annotations

from vmcore.devices.bus import PortDevice

CRTC_PORT = 0x3D4            # index at +0, data at +1
INPUT_STATUS_1 = 6           # 0x3DA: offset from CRTC_PORT
N_REGISTERS = 0x19           # VGA's CR00-CR18
CURSOR_HIGH, CURSOR_LOW = 0x0E, 0x0F
STATUS_DISPLAY_DISABLED, STATUS_VERTICAL_RETRACE = 0x01, 0x08

# The registers as the BIOS leaves them in 80x25 colour text mode (mode 03h), as QEMU's VGA BIOS
# programs them; CR11 bit 7 (protect CR00-CR07) is clear here: the writes are storage anyway.
MODE3_REGISTERS = bytes([0x5F, 0x4F, 0x50, 0x82, 0x55, 0x81, 0xBF, 0x1F, 0x00, 0x4F, 0x0D, 0x0E,
                         0x00, 0x00, 0x00, 0x00, 0x9C, 0x0E, 0x8F, 0x28, 0x1F, 0x96, 0xB9, 0xA3, 0xFF])


class CrtController(PortDevice):
    """Ports 0x3D4-0x3DA (7 ports): index, data, and Input Status 1 at offset 6; offsets 2-5
    (0x3D6-0x3D9, CGA's mode and colour registers) read as all ones and ignore writes."""

    def __init__(self) -> None:
        super().__init__()
        self.index = 0
        self.registers = bytearray(MODE3_REGISTERS)
        self._retrace = False

    @property
    def cursor_offset(self) -> int:
        """The cursor's character offset from the start of the screen (row * 80 + column)."""
        return self.registers[CURSOR_HIGH] << 8 | self.registers[CURSOR_LOW]

    def read(self, offset: int, size: int) -> int:
        if offset == 0:
            return self.index
        if offset == 1:
            return self.registers[self.index] if self.index < N_REGISTERS else 0xFF
        if offset == INPUT_STATUS_1:
            self._retrace = not self._retrace
            return (STATUS_DISPLAY_DISABLED | STATUS_VERTICAL_RETRACE) if self._retrace else 0
        return 0xFF

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0:
            self.index = value & 0xFF               # (OUT DX, AX reaches here as two byte writes)
        elif offset == 1 and self.index < N_REGISTERS:
            self.registers[self.index] = value & 0xFF

    def export_state(self) -> dict:
        return {"index": self.index, "registers": self.registers.hex()}

    def restore_state(self, state: dict) -> None:
        self.index = int(state["index"])
        self.registers = bytearray.fromhex(state["registers"])
