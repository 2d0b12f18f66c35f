"""Bochs/QEMU debug console (port 0xE9): a write-only byte stream to the host."""
from __future__ import annotations

from typing import Callable

from vmcore.devices.bus import PortDevice

DEBUGCON_PORT = 0xE9
DEBUGCON_READBACK = 0xE9    # Bochs port_e9_hack (and QEMU debugcon) read back 0xE9: a presence test


class DebugConsole(PortDevice):
    """Each byte written goes to ``sink(bytes)``."""

    def __init__(self, sink: Callable[[bytes], object] | None = None):
        super().__init__()
        self.sink = sink

    def read(self, offset: int, size: int) -> int:
        return DEBUGCON_READBACK

    def write(self, offset: int, size: int, value: int) -> None:
        if self.sink is not None:
            self.sink(bytes((value & 0xFF,)))
