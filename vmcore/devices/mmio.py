"""Memory-mapped devices and the bus that routes the engine's MMIO exits to them.

The engine knows an MMIO region only as a range of gpa pages (``Engine.mmio_map``); a guest access
there leaves ``run()`` as EXIT_MMIO before its instruction retires, the machine asks the device
here, and the re-executed instruction takes the answer (vmcore/_core/memory.pxi, "Memory-mapped
I/O"). A device sees ``read(offset, size)`` / ``write(offset, size, value)`` with offset = gpa -
its base, like a port device. An access that crosses a page reaches the device as single bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

from vmcore.devices.bus import PortDevice
from vmcore.errors import BusError

PAGE = 0x1000
_ALL_ONES = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}


class MmioDevice(PortDevice):
    """Base of memory-mapped devices: ``length`` bytes of registers (a multiple of 4 KiB when
    mapped: the engine's regions are whole pages)."""

    max_access_size = 4


@dataclass(frozen=True)
class MmioMapping:
    base_gpa: int
    length: int
    device: MmioDevice
    name: str

    @property
    def end_gpa(self) -> int:       # exclusive
        return self.base_gpa + self.length


class MmioBus:
    """The machine's memory-mapped devices by gpa. Every access is counted in ``stats``; an
    access to a region no device claims (none: mapping always names one) cannot happen."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self._mappings: list[MmioMapping] = []
        self.stats = {"reads": 0, "writes": 0}

    def attach(self, base_gpa: int, length: int, device: MmioDevice, name: str | None = None) -> MmioMapping:
        name = name or type(device).__name__
        if not isinstance(base_gpa, int) or not isinstance(length, int) or length < 1 or base_gpa % PAGE \
                or length % PAGE or base_gpa < 0 or base_gpa + length > 1 << 32:
            raise BusError(f"cannot map {name} at gpa {base_gpa!r} length {length!r}: an MMIO region is "
                           f"whole 4 KiB pages inside the 4 GiB physical space")
        if any(m.name == name for m in self._mappings):
            raise BusError(f"cannot map {name} at gpa {base_gpa:#x}: a device named {name!r} is mapped")
        try:
            self._engine.mmio_map(base_gpa, length)
        except ValueError as e:
            raise BusError(f"cannot map {name}: {e}") from None
        mapping = MmioMapping(base_gpa, length, device, name)
        self._mappings.append(mapping)
        return mapping

    @property
    def mappings(self) -> list[MmioMapping]:
        return sorted(self._mappings, key=lambda m: m.base_gpa)

    def _find(self, gpa: int) -> MmioMapping:
        for m in self._mappings:
            if m.base_gpa <= gpa < m.end_gpa:
                return m
        raise BusError(f"MMIO access at gpa {gpa:#x} outside every mapped device")

    def read(self, gpa: int, size: int) -> int:
        self.stats["reads"] += 1
        m = self._find(gpa)
        return m.device.read(gpa - m.base_gpa, size) & _ALL_ONES[size]

    def write(self, gpa: int, size: int, value: int) -> None:
        self.stats["writes"] += 1
        m = self._find(gpa)
        m.device.write(gpa - m.base_gpa, size, value & _ALL_ONES[size])

    def service(self) -> None:
        """Answer the engine's pending EXIT_MMIO."""
        gpa, size, is_write, value = self._engine.mmio_request()
        if is_write:
            self.write(gpa, size, value)
            self._engine.mmio_complete(0)
        else:
            self._engine.mmio_complete(self.read(gpa, size))

    def export_state(self) -> dict:
        return {m.name: m.device.export_state() for m in self._mappings}

    def restore_state(self, state: dict) -> None:
        by_name = {m.name: m for m in self._mappings}
        for name, device_state in state.items():
            if name not in by_name:
                raise BusError(f"cannot restore state of {name!r}: no MMIO device of that name is mapped")
            by_name[name].device.restore_state(device_state)
