"""The I/O port bus: maps port ranges to devices, which see register offsets, not ports."""
from __future__ import annotations

from dataclasses import dataclass

from vmcore.devices.irq import IrqLine
from vmcore.errors import BusError

PORT_SPACE_END = 0x10000            # ports 0..0xFFFF
ACCESS_SIZES = (1, 2, 4)
_ALL_ONES = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}


class PortDevice:
    """Base of port-mapped devices. ``offset`` is port - base; ``size`` is 1, 2 or 4 and never
    more than ``max_access_size``: the bus splits wider accesses into byte accesses, as an ISA
    bus does for an 8-bit device. ``irq`` is injected by whoever wires the device."""

    max_access_size = 1

    def __init__(self) -> None:
        self.irq = IrqLine()

    def read(self, offset: int, size: int) -> int:
        return _ALL_ONES[size]

    def write(self, offset: int, size: int, value: int) -> None:
        pass

    def export_state(self) -> dict:
        return {}

    def restore_state(self, state: dict) -> None:
        pass


class PortWindow(PortDevice):
    """A device's registers from ``first_offset`` on, seen at another port range: for a device
    whose registers are not contiguous (the 8042 at 0x60 and 0x64, with port B at 0x61 between).
    Its state is exported through the device's own mapping."""

    def __init__(self, device: PortDevice, first_offset: int):
        super().__init__()
        self.device = device
        self.first_offset = first_offset
        self.max_access_size = device.max_access_size

    def read(self, offset: int, size: int) -> int:
        return self.device.read(self.first_offset + offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.device.write(self.first_offset + offset, size, value)


@dataclass(frozen=True)
class PortMapping:
    base_port: int
    length: int
    device: PortDevice
    name: str

    @property
    def end_port(self) -> int:      # exclusive
        return self.base_port + self.length


class PortBus:
    """Routes port accesses. Unclaimed ports read as all ones and ignore writes; every access
    is counted in ``stats`` (a split access counts each unclaimed byte)."""

    def __init__(self) -> None:
        self._owner: list[PortMapping | None] = [None] * PORT_SPACE_END
        self._mappings: dict[str, PortMapping] = {}
        self.stats = {"reads": 0, "writes": 0, "unclaimed_reads": 0, "unclaimed_writes": 0}

    def attach(self, base_port: int, length: int, device: PortDevice, name: str | None = None) -> PortMapping:
        name = name or type(device).__name__
        if not isinstance(base_port, int) or not isinstance(length, int) or length < 1 \
                or base_port < 0 or base_port + length > PORT_SPACE_END:
            raise BusError(f"cannot attach {name} at port {base_port!r} length {length!r}: "
                           f"outside the port space 0..0xffff")
        if name in self._mappings:
            raise BusError(f"cannot attach {name} at port {base_port:#x}: a device named {name!r} is attached")
        for port in range(base_port, base_port + length):
            other = self._owner[port]
            if other is not None:
                raise BusError(f"cannot attach {name} at ports {base_port:#x}..{base_port + length - 1:#x}: "
                               f"port {port:#x} belongs to {other.name} "
                               f"({other.base_port:#x}..{other.end_port - 1:#x})")
        mapping = PortMapping(base_port, length, device, name)
        self._owner[base_port:base_port + length] = [mapping] * length
        self._mappings[name] = mapping
        return mapping

    @property
    def mappings(self) -> list[PortMapping]:
        return sorted(self._mappings.values(), key=lambda m: m.base_port)

    def device_at(self, port: int) -> PortDevice | None:
        m = self._owner[port] if 0 <= port < PORT_SPACE_END else None
        return None if m is None else m.device

    def read(self, port: int, size: int) -> int:
        self._check(port, size)
        self.stats["reads"] += 1
        m = self._owner[port]
        if m is not None and port + size <= m.end_port and size <= m.device.max_access_size:
            return m.device.read(port - m.base_port, size) & _ALL_ONES[size]
        value = 0
        for i in range(size):
            value |= self._read_byte(port + i) << (8 * i)
        return value

    def write(self, port: int, size: int, value: int) -> None:
        self._check(port, size)
        self.stats["writes"] += 1
        value &= _ALL_ONES[size]
        m = self._owner[port]
        if m is not None and port + size <= m.end_port and size <= m.device.max_access_size:
            m.device.write(port - m.base_port, size, value)
            return
        for i in range(size):
            self._write_byte(port + i, (value >> (8 * i)) & 0xFF)

    def _read_byte(self, port: int) -> int:
        m = self._owner[port] if port < PORT_SPACE_END else None
        if m is None:
            self.stats["unclaimed_reads"] += 1
            return 0xFF
        return m.device.read(port - m.base_port, 1) & 0xFF

    def _write_byte(self, port: int, value: int) -> None:
        m = self._owner[port] if port < PORT_SPACE_END else None
        if m is None:
            self.stats["unclaimed_writes"] += 1
            return
        m.device.write(port - m.base_port, 1, value)

    @staticmethod
    def _check(port: int, size: int) -> None:
        if size not in ACCESS_SIZES:
            raise BusError(f"bad access size {size!r} at port {port:#x}: must be 1, 2 or 4")
        if not 0 <= port < PORT_SPACE_END:
            raise BusError(f"port {port!r} is outside the port space 0..0xffff")

    def export_state(self) -> dict:
        return {name: m.device.export_state() for name, m in self._mappings.items()}

    def restore_state(self, state: dict) -> None:
        for name, device_state in state.items():
            if name not in self._mappings:
                raise BusError(f"cannot restore state of {name!r}: no device of that name is attached")
            self._mappings[name].device.restore_state(device_state)
