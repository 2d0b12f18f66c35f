"""The POST code port (0x80): firmware writes its progress codes here for a diagnostic card,
and kernels write to it as an I/O delay. The last value is kept (and read back) and the
writes are counted."""
from __future__ import annotations

from vmcore.devices.bus import PortDevice

POST_PORT = 0x80


class PostCode(PortDevice):
    def __init__(self) -> None:
        super().__init__()
        self.last = 0
        self.writes = 0

    def read(self, offset: int, size: int) -> int:
        return self.last

    def write(self, offset: int, size: int, value: int) -> None:
        self.last = value & 0xFF
        self.writes += 1

    def export_state(self) -> dict:
        return {"last": self.last, "writes": self.writes}

    def restore_state(self, state: dict) -> None:
        self.last, self.writes = int(state["last"]), int(state["writes"])
