"""QEMU isa-debug-exit (here at port 0xF4, 4 ports): a guest write ends the run."""
from __future__ import annotations

from typing import Callable

from vmcore.devices.bus import PortDevice

DEBUG_EXIT_PORT = 0xF4
DEBUG_EXIT_LENGTH = 4


class DebugExit(PortDevice):
    """A write of value v (any offset, 1 to 4 bytes) calls ``on_exit((v << 1) | 1)``, QEMU's
    status convention: an odd status, so a guest cannot fake a clean exit 0. Reads: all ones."""

    max_access_size = 4

    def __init__(self, on_exit: Callable[[int], object] | None = None):
        super().__init__()
        self.on_exit = on_exit

    def read(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        if self.on_exit is not None:
            self.on_exit(((value & ((1 << (8 * size)) - 1)) << 1) | 1)
