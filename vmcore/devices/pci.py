"""PCI configuration mechanism #1 (PCI Local Bus Specification 3.0, §3.2.2.3.2) and the
functions a 440FX PC has behind it: the Intel 440FX host bridge (82441FX PMC, 8086:1237,
class 06 00 00) with its PAM shadow-RAM registers, and the PIIX3's PCI-to-ISA bridge (82371SB,
8086:7000, class 06 01 00) at 00:01.0.

Offsets: 0-3 are CONFIG_ADDRESS (0xCF8), 4-7 CONFIG_DATA (0xCFC-0xCFF). CONFIG_ADDRESS is a
32-bit register: only a dword access at offset 0 reaches it (a byte or word access there is
not a configuration cycle and is ignored; reads return all ones). With its enable bit set, an
access to CONFIG_DATA at byte ``k`` of size ``n`` reads or writes ``n`` bytes of the selected
function's configuration space from register (address & 0xFC) + k. A function nobody
implements reads as all ones (the master abort of a configuration read), and writes to it
vanish: a kernel's bus scan finds the host bridge at 00:00.0 (and, on a Machine, the ISA
bridge at 00:01.0) and nothing else.
"""
from __future__ import annotations

from typing import Callable

from vmcore.devices.bus import PortDevice
from vmcore.errors import ConfigError

ADDRESS = 0                  # 0xCF8
RESET_CONTROL = 1            # 0xCF9: a byte access there is the PIIX3's reset control register
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
CFG_SUBSYSTEM_VENDOR_ID = 0x2C
CFG_SUBSYSTEM_ID = 0x2E
HEADER_MULTIFUNCTION = 0x80  # header type bit 7: functions 1-7 may exist too

# QEMU gives each of its PCI functions this subsystem (Red Hat, "QEMU virtual machine"); SeaBIOS
# tells QEMU's machine from other hardware by the host bridge's (src/fw/paravirt.c qemu_detect)
QEMU_SUBSYSTEM_VENDOR, QEMU_SUBSYSTEM = 0x1AF4, 0x1100

CMD_MEMORY = 0x0002          # memory space enable
CMD_BUS_MASTER = 0x0004
STATUS_FAST_BACK_TO_BACK = 0x0080
CMD_IO = 0x0001              # I/O space enable
CMD_SPECIAL_CYCLES = 0x0008
STATUS_DEVSEL_MEDIUM = 0x0200

# 82441FX PAM0-PAM6 (datasheet 290549, PAM registers at 59h-5Fh): seven registers, two 4-bit fields each; in a
# field, RE sends reads of its range to DRAM (else to PCI), WE writes (else to PCI). PAM0's low
# field is reserved; its high field is 0xF0000-0xFFFFF (64 KiB); PAM1-PAM6 cover 0xC0000-0xEFFFF
# in 16 KiB ranges, low field first.
PAM0 = 0x59
PAM_REGISTERS = 7
PAM_RE, PAM_WE = 0x1, 0x2    # in each field; bit 2 is CE (cache enable: no meaning here)
PAM_BASE_GPA = 0xC0000
PAM_PAGE = 0x1000            # the engine decides per 4 KiB page

_ALL_ONES = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}


class PciFunction:
    """One function's 256-byte configuration space: ``config`` bytes and, per byte, the bits
    a configuration write may change (``write_mask``)."""

    def __init__(self, config: bytes, write_mask: bytes):
        assert len(config) == CONFIG_SPACE and len(write_mask) == CONFIG_SPACE
        self.config = bytearray(config)
        self.reset_config = bytes(config)
        self.write_mask = bytes(write_mask)

    def reset(self) -> None:
        """PCIRST#: every register back to its reset value."""
        self.config = bytearray(self.reset_config)

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


def pam_field_range(register: int, high: bool) -> tuple[int, int] | None:
    """(gpa, size) that PAM register ``register`` (0x59-0x5F) governs with its high or low
    field; None for PAM0's reserved low field."""
    index = register - PAM0
    if not 0 <= index < PAM_REGISTERS:
        raise ConfigError(f"config register {register:#x} is not a PAM register ({PAM0:#x}-{PAM0 + 6:#x})")
    if index == 0:
        return (0xF0000, 0x10000) if high else None
    return PAM_BASE_GPA + (index - 1) * 0x8000 + (0x4000 if high else 0), 0x4000


class PciHostBridge(PciFunction):
    """The 82441FX PCI and memory controller as a chipset datasheet (Intel 290549) gives its
    header: vendor 8086, device 1237, revision 02, class 060000 (host bridge), header type 0;
    command = memory space and bus master, status = fast back-to-back, DEVSEL medium; subsystem
    1AF4:1100 as QEMU sets it (SeaBIOS looks for it). The command register's memory/bus-master
    bits, the latency timer and the chipset registers 0x40-0xFF are writable. PAM0-PAM6
    (0x59-0x5F) route 0xC0000-0xFFFFF: after a write that changes one of their RE/WE fields,
    ``on_pam(page_index, count, read_ram, write_ram)`` is called for its range, in 4 KiB pages
    from gpa 0xC0000 (the Machine hands that to the engine's set_pam). The other registers (DRAM
    row boundaries, SMRAM at 0x72: 0xA0000-0xBFFFF stays as it is) are plain storage."""

    VENDOR, DEVICE, REVISION, CLASS_CODE = 0x8086, 0x1237, 0x02, 0x060000

    def __init__(self, on_pam: Callable[[int, int, bool, bool], object] | None = None):
        self.on_pam = on_pam
        config = bytearray(CONFIG_SPACE)
        config[CFG_VENDOR_ID:CFG_VENDOR_ID + 2] = self.VENDOR.to_bytes(2, "little")
        config[CFG_DEVICE_ID:CFG_DEVICE_ID + 2] = self.DEVICE.to_bytes(2, "little")
        config[CFG_COMMAND:CFG_COMMAND + 2] = (CMD_MEMORY | CMD_BUS_MASTER).to_bytes(2, "little")
        config[CFG_STATUS:CFG_STATUS + 2] = (STATUS_FAST_BACK_TO_BACK | STATUS_DEVSEL_MEDIUM).to_bytes(2, "little")
        config[CFG_REVISION] = self.REVISION
        config[CFG_CLASS_PROG:CFG_CLASS_PROG + 3] = self.CLASS_CODE.to_bytes(3, "little")
        config[CFG_HEADER_TYPE] = 0x00
        config[CFG_SUBSYSTEM_VENDOR_ID:CFG_SUBSYSTEM_VENDOR_ID + 2] = QEMU_SUBSYSTEM_VENDOR.to_bytes(2, "little")
        config[CFG_SUBSYSTEM_ID:CFG_SUBSYSTEM_ID + 2] = QEMU_SUBSYSTEM.to_bytes(2, "little")
        mask = bytearray(CONFIG_SPACE)
        mask[CFG_COMMAND] = CMD_MEMORY | CMD_BUS_MASTER
        mask[CFG_LATENCY_TIMER] = 0xF8
        mask[0x40:] = b"\xFF" * (CONFIG_SPACE - 0x40)
        super().__init__(bytes(config), bytes(mask))

    def pam_ranges(self):
        """Each PAM field's (page_index, count, read_ram, write_ram) as the registers hold it."""
        for register in range(PAM0, PAM0 + PAM_REGISTERS):
            for high in (False, True):
                where = pam_field_range(register, high)
                if where is None:
                    continue
                field = (self.config[register] >> (4 if high else 0)) & 0xF
                yield ((where[0] - PAM_BASE_GPA) // PAM_PAGE, where[1] // PAM_PAGE,
                       bool(field & PAM_RE), bool(field & PAM_WE))

    def apply_pam(self) -> None:
        """Tell on_pam every range, whatever it held before (a restored or reset state)."""
        if self.on_pam is not None:
            for page_index, count, read_ram, write_ram in self.pam_ranges():
                self.on_pam(page_index, count, read_ram, write_ram)

    def set_pam(self, values: bytes) -> None:
        """Load PAM0-PAM6 (seven bytes) as a configuration write would."""
        if len(values) != PAM_REGISTERS:
            raise ConfigError(f"PAM0-PAM6 are {PAM_REGISTERS} bytes, not {len(values)}")
        self.write(PAM0, 4, int.from_bytes(values[:4], "little"))
        self.write(PAM0 + 4, 2, int.from_bytes(values[4:6], "little"))
        self.write(PAM0 + 6, 1, values[6])

    def write(self, register: int, size: int, value: int) -> None:
        if register + size <= PAM0 or register >= PAM0 + PAM_REGISTERS or self.on_pam is None:
            super().write(register, size, value)
            return
        before = list(self.pam_ranges())
        super().write(register, size, value)
        for old, new in zip(before, self.pam_ranges()):
            if old != new:
                self.on_pam(*new)

    def restore_state(self, state: dict) -> None:
        super().restore_state(state)
        self.apply_pam()

    def reset(self) -> None:
        super().reset()
        self.apply_pam()


class Piix3IsaBridge(PciFunction):
    """The PIIX3's function 0, its PCI-to-ISA bridge (Intel 82371SB datasheet 290550, PCI to
    ISA bridge configuration registers):
    vendor 8086, device 7000, class 060100, header type 0x80 (multi-function: the IDE and USB
    functions may follow at 01.1, 01.2; vmcore has none of them, so they read as all ones).
    PCICMD reads 0007h (I/O, memory and bus master hardwired on) with special cycles writable;
    subsystem 1AF4:1100 as QEMU sets it. The chipset registers hold their reset values and are
    plain storage: IORT 0x4C (4Dh), XBCS 0x4E (0003h), PIRQRC[A:D] 0x60-0x63 (80h: routing
    disabled; bits 6:4 reserved), TOM 0x69 (02h), MSTAT 0x6A, MBIRQ0/1 0x70-0x71 (80h), MBDMA
    0x76-0x77 (0Ch), PCSC 0x78 (0002h), APICBASE 0x80, DLC 0x82, SMICNTL 0xA0 (08h), SMIEN 0xA2,
    SEE 0xA4-0xA7, FTMR 0xA8 (0Fh), SMIREQ 0xAA, CTLTMR 0xAC, CTHTMR 0xAE. A PIRQ routed to an
    IRQ changes nothing yet: no PCI device raises one."""

    VENDOR, DEVICE, REVISION, CLASS_CODE = 0x8086, 0x7000, 0x00, 0x060100

    IORT, XBCS, PIRQRC, TOM, MSTAT, MBIRQ, MBDMA, PCSC, APICBASE, DLC = \
        0x4C, 0x4E, 0x60, 0x69, 0x6A, 0x70, 0x76, 0x78, 0x80, 0x82
    SMICNTL, SMIEN, SEE, FTMR, SMIREQ, CTLTMR, CTHTMR = 0xA0, 0xA2, 0xA4, 0xA8, 0xAA, 0xAC, 0xAE
    PIRQ_DISABLE = 0x80          # PIRQRC bit 7: the PIRQ is not routed to an ISA IRQ
    PIRQ_WRITABLE = 0x8F         # bit 7 and the IRQ number in bits 3:0

    # (register, reset value, bytes): the chipset registers, each writable as a whole
    REGISTERS = ((IORT, 0x4D, 1), (XBCS, 0x0003, 2), (TOM, 0x02, 1), (MSTAT, 0x0000, 2),
                 (MBIRQ, 0x80, 1), (MBIRQ + 1, 0x80, 1), (MBDMA, 0x0C, 1), (MBDMA + 1, 0x0C, 1),
                 (PCSC, 0x0002, 2), (APICBASE, 0x00, 1), (DLC, 0x00, 1), (SMICNTL, 0x08, 1),
                 (SMIEN, 0x0000, 2), (SEE, 0x00000000, 4), (FTMR, 0x0F, 1), (SMIREQ, 0x0000, 2),
                 (CTLTMR, 0x00, 1), (CTHTMR, 0x00, 1))

    def __init__(self):
        config = bytearray(CONFIG_SPACE)
        config[CFG_VENDOR_ID:CFG_VENDOR_ID + 2] = self.VENDOR.to_bytes(2, "little")
        config[CFG_DEVICE_ID:CFG_DEVICE_ID + 2] = self.DEVICE.to_bytes(2, "little")
        config[CFG_COMMAND:CFG_COMMAND + 2] = (CMD_IO | CMD_MEMORY | CMD_BUS_MASTER).to_bytes(2, "little")
        config[CFG_STATUS:CFG_STATUS + 2] = STATUS_DEVSEL_MEDIUM.to_bytes(2, "little")
        config[CFG_REVISION] = self.REVISION
        config[CFG_CLASS_PROG:CFG_CLASS_PROG + 3] = self.CLASS_CODE.to_bytes(3, "little")
        config[CFG_HEADER_TYPE] = HEADER_MULTIFUNCTION
        config[CFG_SUBSYSTEM_VENDOR_ID:CFG_SUBSYSTEM_VENDOR_ID + 2] = QEMU_SUBSYSTEM_VENDOR.to_bytes(2, "little")
        config[CFG_SUBSYSTEM_ID:CFG_SUBSYSTEM_ID + 2] = QEMU_SUBSYSTEM.to_bytes(2, "little")
        mask = bytearray(CONFIG_SPACE)
        mask[CFG_COMMAND] = CMD_SPECIAL_CYCLES
        for register, reset, size in self.REGISTERS:
            config[register:register + size] = reset.to_bytes(size, "little")
            mask[register:register + size] = b"\xFF" * size
        for k in range(4):
            config[self.PIRQRC + k] = self.PIRQ_DISABLE
            mask[self.PIRQRC + k] = self.PIRQ_WRITABLE
        super().__init__(bytes(config), bytes(mask))


class ResetControl:
    """The PIIX3's reset control register RC at I/O 0xCF9 (82371SB datasheet 290550, RC
    register, default 00h): SRST (bit 1) chooses a hard reset (PCIRST# and the CPU's RESET: the
    PCI functions, PAM included, return to their reset state) or a soft one (INIT: the CPU); a
    0-to-1 transition of RCPU (bit 2) performs it: ``on_reset(hard)``. The other bits are
    reserved (read 0)."""

    SRST = 0x02
    RCPU = 0x04
    WRITABLE = SRST | RCPU

    def __init__(self, on_reset: Callable[[bool], object] | None = None):
        self.on_reset = on_reset
        self.value = 0

    def read(self) -> int:
        return self.value

    def write(self, value: int) -> None:
        rising = value & ~self.value & self.RCPU
        self.value = value & self.WRITABLE
        if rising and self.on_reset is not None:
            self.on_reset(bool(value & self.SRST))


class PciConfig(PortDevice):
    """Configuration mechanism #1 at 0xCF8 (8 ports). ``functions`` maps (bus, device,
    function) to a PciFunction; a new one holds the 440FX host bridge at 00:00.0. A byte
    access to 0xCF9 reaches ``reset_control`` (the PIIX3's, if the machine has one)."""

    max_access_size = 4

    def __init__(self, functions: dict | None = None, reset_control: ResetControl | None = None):
        super().__init__()
        self.functions = {(0, 0, 0): PciHostBridge()} if functions is None else dict(functions)
        self.reset_control = reset_control
        self.address = 0

    def _selected(self):
        if not self.address & ADDR_ENABLE:
            return None
        key = ((self.address >> ADDR_BUS_SHIFT) & 0xFF, (self.address >> ADDR_DEVICE_SHIFT) & 0x1F,
               (self.address >> ADDR_FUNCTION_SHIFT) & 0x7)
        return self.functions.get(key)

    def reset(self) -> None:
        """A hard reset (PCIRST#): the address latch, the reset control register and every
        function's configuration space back to their reset values."""
        self.address = 0
        if self.reset_control is not None:
            self.reset_control.value = 0
        for function in self.functions.values():
            function.reset()

    def read(self, offset: int, size: int) -> int:
        if offset < DATA:
            if offset == RESET_CONTROL and size == 1 and self.reset_control is not None:
                return self.reset_control.read()
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
            elif offset == RESET_CONTROL and size == 1 and self.reset_control is not None:
                self.reset_control.write(value & 0xFF)
            return
        k = offset - DATA
        function = self._selected()
        if function is not None and k + size <= 4:
            function.write((self.address & ADDR_REGISTER_MASK) + k, size, value)

    def export_state(self) -> dict:
        state = {"address": self.address,
                 "functions": {f"{b:02x}:{d:02x}.{f}": fn.export_state() for (b, d, f), fn in self.functions.items()}}
        if self.reset_control is not None:
            state["reset_control"] = self.reset_control.value
        return state

    def restore_state(self, state: dict) -> None:
        self.address = int(state["address"])
        if self.reset_control is not None:
            self.reset_control.value = int(state.get("reset_control", 0)) & ResetControl.WRITABLE
        for name, fstate in state["functions"].items():
            bus, rest = name.split(":")
            dev, fn = rest.split(".")
            self.functions[(int(bus, 16), int(dev, 16), int(fn))].restore_state(fstate)
