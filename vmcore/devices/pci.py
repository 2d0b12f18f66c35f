"""PCI configuration mechanism #1 (PCI Local Bus Specification 3.0, §3.2.2.3.2) and the one
device behind it: an Intel 440FX host bridge (82441FX PMC, 8086:1237, class 06 00 00).

Offsets: 0-3 are CONFIG_ADDRESS (0xCF8), 4-7 CONFIG_DATA (0xCFC-0xCFF). CONFIG_ADDRESS is a
32-bit register: only a dword access at offset 0 reaches it (a byte or word access there is
not a configuration cycle and is ignored; reads return all ones). With its enable bit set, an
access to CONFIG_DATA at byte ``k`` of size ``n`` reads or writes ``n`` bytes of the selected
function's configuration space from register (address & 0xFC) + k. A function nobody
implements reads as all ones (the master abort of a configuration read), and writes to it
vanish: a kernel's bus scan finds the host bridge at 00:00.0 and nothing else.
"""
from __future__ import annotations

from vmcore.devices.bus import PortDevice

ADDRESS = 0                  # 0xCF8
DATA = 4                     # 0xCFC..0xCFF
ADDR_ENABLE = 0x80000000     # bit 31: the next CONFIG_DATA access is a configuration cycle
ADDR_BUS_SHIFT, ADDR_DEVICE_SHIFT, ADDR_FUNCTION_SHIFT = 16, 11, 8
ADDR_REGISTER_MASK = 0xFC    # bits 7:2; bits 1:0 read back as 0
ADDR_WRITABLE = 0x80FFFFFC   # bits 30:24 are reserved (0)

CONFIG_SPACE = 256
# configuration header (type 0) offsets
CFG_VENDOR_ID = 0x00
CFG_DEVICE_ID = 0x02
CFG_COMMAND = 0x04
CFG_STATUS = 0x06
CFG_REVISION = 0x08
CFG_CLASS_PROG = 0x09
CFG_SUBCLASS = 0x0A
CFG_CLASS = 0x0B
CFG_LATENCY_TIMER = 0x0D
CFG_HEADER_TYPE = 0x0E

CMD_MEMORY = 0x0002          # memory space enable
CMD_BUS_MASTER = 0x0004
STATUS_FAST_BACK_TO_BACK = 0x0080
STATUS_DEVSEL_MEDIUM = 0x0200

_ALL_ONES = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}


class PciFunction:
    """One function's 256-byte configuration space: ``config`` bytes and, per byte, the bits
    a configuration write may change (``write_mask``)."""

    def __init__(self, config: bytes, write_mask: bytes):
        assert len(config) == CONFIG_SPACE and len(write_mask) == CONFIG_SPACE
        self.config = bytearray(config)
        self.write_mask = bytes(write_mask)

    def read(self, register: int, size: int) -> int:
        return int.from_bytes(self.config[register:register + size], "little")

    def write(self, register: int, size: int, value: int) -> None:
        for k in range(size):
            mask = self.write_mask[register + k]
            byte = (value >> (8 * k)) & 0xFF
            self.config[register + k] = (self.config[register + k] & ~mask) | (byte & mask)

    def export_state(self) -> dict:
        return {"config": self.config.hex()}

    def restore_state(self, state: dict) -> None:
        self.config = bytearray.fromhex(state["config"])


class PciHostBridge(PciFunction):
    """The 82441FX PCI and memory controller as a chipset datasheet (Intel 290549) gives its
    header: vendor 8086, device 1237, revision 02, class 060000 (host bridge), header type 0;
    command = memory space and bus master, status = fast back-to-back, DEVSEL medium. The
    command register's memory/bus-master bits, the latency timer and the chipset registers
    0x40-0xFF (PAM, DRAM row boundaries, SMRAM: kept as plain storage; vmcore's memory map does
    not change with them) are writable."""

    VENDOR, DEVICE, REVISION, CLASS_CODE = 0x8086, 0x1237, 0x02, 0x060000

    def __init__(self):
        config = bytearray(CONFIG_SPACE)
        config[CFG_VENDOR_ID:CFG_VENDOR_ID + 2] = self.VENDOR.to_bytes(2, "little")
        config[CFG_DEVICE_ID:CFG_DEVICE_ID + 2] = self.DEVICE.to_bytes(2, "little")
        config[CFG_COMMAND:CFG_COMMAND + 2] = (CMD_MEMORY | CMD_BUS_MASTER).to_bytes(2, "little")
        config[CFG_STATUS:CFG_STATUS + 2] = (STATUS_FAST_BACK_TO_BACK | STATUS_DEVSEL_MEDIUM).to_bytes(2, "little")
        config[CFG_REVISION] = self.REVISION
        config[CFG_CLASS_PROG:CFG_CLASS_PROG + 3] = self.CLASS_CODE.to_bytes(3, "little")
        config[CFG_HEADER_TYPE] = 0x00
        mask = bytearray(CONFIG_SPACE)
        mask[CFG_COMMAND] = CMD_MEMORY | CMD_BUS_MASTER
        mask[CFG_LATENCY_TIMER] = 0xF8
        mask[0x40:] = b"\xFF" * (CONFIG_SPACE - 0x40)
        super().__init__(bytes(config), bytes(mask))


class PciConfig(PortDevice):
    """Configuration mechanism #1 at 0xCF8 (8 ports). ``functions`` maps (bus, device,
    function) to a PciFunction; a new one holds the 440FX host bridge at 00:00.0."""

    max_access_size = 4

    def __init__(self, functions: dict | None = None):
        super().__init__()
        self.functions = {(0, 0, 0): PciHostBridge()} if functions is None else dict(functions)
        self.address = 0

    def _selected(self):
        if not self.address & ADDR_ENABLE:
            return None
        key = ((self.address >> ADDR_BUS_SHIFT) & 0xFF, (self.address >> ADDR_DEVICE_SHIFT) & 0x1F,
               (self.address >> ADDR_FUNCTION_SHIFT) & 0x7)
        return self.functions.get(key)

    def read(self, offset: int, size: int) -> int:
        if offset < DATA:
            return self.address if offset == ADDRESS and size == 4 else _ALL_ONES[size]
        k = offset - DATA
        function = self._selected()
        if function is None or k + size > 4:
            return _ALL_ONES[size]
        return function.read((self.address & ADDR_REGISTER_MASK) + k, size)

    def write(self, offset: int, size: int, value: int) -> None:
        if offset < DATA:
            if offset == ADDRESS and size == 4:
                self.address = value & ADDR_WRITABLE
            return
        k = offset - DATA
        function = self._selected()
        if function is not None and k + size <= 4:
            function.write((self.address & ADDR_REGISTER_MASK) + k, size, value)

    def export_state(self) -> dict:
        return {"address": self.address,
                "functions": {f"{b:02x}:{d:02x}.{f}": fn.export_state() for (b, d, f), fn in self.functions.items()}}

    def restore_state(self, state: dict) -> None:
        self.address = int(state["address"])
        for name, fstate in state["functions"].items():
            bus, rest = name.split(":")
            dev, fn = rest.split(".")
            self.functions[(int(bus, 16), int(dev, 16), int(fn))].restore_state(fstate)
