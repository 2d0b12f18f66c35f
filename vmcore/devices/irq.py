"""An interrupt request line as a device sees it: a level it drives, not a number it knows."""
from __future__ import annotations

from typing import Callable


class IrqLine:
    """A level-triggered line. Until an interrupt controller connects ``on_change``, it only
    remembers its level (a no-op line). One line can drive more than one input: the ISA IRQs go
    to the 8259A pair (``on_change``) and to the I/O APIC (``add_listener``), as on a PC."""

    def __init__(self, name: str | None = None, on_change: Callable[[bool], None] | None = None):
        self.name = name
        self.on_change = on_change
        self.listeners: list[Callable[[bool], None]] = []
        self._level = False

    @property
    def level(self) -> bool:
        return self._level

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        """Another input this line drives, told of every change after ``on_change``."""
        self.listeners.append(listener)

    def set_level(self, level: bool) -> None:
        level = bool(level)
        if level != self._level:
            self._level = level
            if self.on_change is not None:
                self.on_change(level)
            for listener in self.listeners:
                listener(level)

    def raise_(self) -> None:
        self.set_level(True)

    def lower(self) -> None:
        self.set_level(False)

    def __repr__(self) -> str:
        return f"IrqLine({self.name!r}, level={int(self._level)})"
