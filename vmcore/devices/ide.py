"""The primary IDE channel of a PC with up to two ATA hard disks, device 0 (master) and device 1
(slave), driven by PIO, as QEMU's ``pc`` machine has it behind the PIIX3: command block at
0x1F0-0x1F7, control block (alternate status / device control) at 0x3F6, IRQ 14. The reference
is ATA/ATAPI-6 (T13 1410D rev. 3b, "ATA-6"), cited by clause name (§ numbers where checked);
CHS addressing and INITIALIZE DEVICE PARAMETERS, obsolete there, follow ATA-5. Where the
standard leaves a choice, QEMU's hw/ide/core.c decides.

Offsets 0-7 are the command block registers; offset 8 is the control block register at 0x3F6
(seen through a PortWindow). Everything a drive does is instantaneous: a command has either
finished when the command register write returns, or waits for the host in a data phase (DRQ).
So BSY is seen only while the device control SRST bit holds the drives in reset.

- Two devices on one cable (the I/O register descriptions; device selection): each drive
  (an ``AtaDrive``) has its own registers. Both latch every write to Features, Sector Count,
  LBA Low/Mid/High and Device; the Device register's DEV bit selects which one answers reads,
  takes data port accesses and executes commands; the Device Control register reaches both.
  So a drive's command changes only its own copy of the task file (the next address, say).
- An absent device (either one; QEMU lets a slave sit alone): with it selected, its registers
  read 0 except the Device register, which reads as last written (ATA-6 lets device 0 answer
  for an absent device 1; QEMU gives 0 for Status), its commands are ignored (no interrupt)
  except EXECUTE DEVICE DIAGNOSTIC, which every present device executes whatever DEV says.
- Data (offset 0): 16-bit; a 32-bit access is two 16-bit cycles, low word first, as the PIIX
  makes them. With DRQ clear, reads give 0 and writes are dropped (QEMU); byte accesses read
  0xFF (QEMU). Other registers are 8-bit: a wider access is split into byte accesses.
- Interrupts (INTRQ; the PIO data-in, PIO data-out and non-data protocols): each drive has its
  own "interrupt pending", set after each DRQ block of a PIO data-in command is ready, after
  each block written of a PIO data-out command except that the first DRQ comes without one,
  and at the completion of a non-data command or of any command with an error. Reading Status
  (not Alternate Status) of the selected drive, writing Command to it, and a reset clear it.
  Only the selected device drives INTRQ: INTRQ = its pending and nIEN = 0, so a slave's
  interrupt shows while DEV = 1 and comes back when DEV selects it again.
- Reset and diagnostics (the software reset protocol; EXECUTE DEVICE DIAGNOSTIC): SRST resets
  both drives; after it and after the diagnostic each drive holds the ATA signature (which
  clears DEV: device 0 is selected) and the diagnostic code 01h in Error: for device 0 "device
  0 passed, device 1 passed or not present" (device 1 reports to device 0 over PDIAG-; an image
  never fails), for device 1 "device 1 passed". Only device 0 interrupts at the end of the
  diagnostic; a reset interrupts no one.
- Errors (the Error register; each command's error outputs): an address outside the medium
  gives ERR with IDNF and the task file holds the first bad address; an unknown or unsupported
  command, or bad parameters, ERR with ABRT. Both end the command with an interrupt; DRDY and
  DSC stay set (DSC keeps the seek state, ATA-4).
- Addressing: LBA28 when Device bit 6 (LBA) is set, else CHS in the drive's current geometry
  (default 16 heads x 63 sectors, INITIALIZE DEVICE PARAMETERS changes it). A sector count of 0
  means 256. After a transfer the task file holds the next address and a count of 0 (QEMU).
"""
from __future__ import annotations

from typing import Callable

from vmcore.devices.bus import PortDevice
from vmcore.devices.disk import SECTOR_SIZE, DiskImage
from vmcore.devices.pci import (CFG_CLASS_PROG, CFG_COMMAND, CFG_DEVICE_ID, CFG_HEADER_TYPE, CFG_LATENCY_TIMER,
                                CFG_REVISION, CFG_STATUS, CFG_VENDOR_ID, CONFIG_SPACE, STATUS_DEVSEL_MEDIUM,
                                STATUS_FAST_BACK_TO_BACK, PciFunction)
from vmcore.errors import ConfigError

PRIMARY_COMMAND_PORT = 0x1F0
PRIMARY_CONTROL_PORT = 0x3F6
COMMAND_BLOCK_REGISTERS = 8

# register offsets (I/O register descriptions: the command block, DA2-DA0)
DATA = 0
ERROR = FEATURES = 1
SECTOR_COUNT = 2
LBA_LOW = 3            # sector number (CHS)
LBA_MID = 4            # cylinder low
LBA_HIGH = 5           # cylinder high
DEVICE = 6             # device/head
STATUS = COMMAND = 7
CONTROL = 8            # 0x3F6: alternate status (read) / device control (write)

# Status register
ST_BSY = 0x80
ST_DRDY = 0x40
ST_DF = 0x20           # device fault: never set, the image cannot fail that way
ST_DSC = 0x10          # device seek complete (ATA-4; "command dependent" in ATA-6)
ST_DRQ = 0x08
ST_ERR = 0x01
ST_READY = ST_DRDY | ST_DSC

# Error register
ERR_IDNF = 0x10        # ID not found: the address is outside the medium
ERR_ABRT = 0x04        # command aborted
# the Error register after a reset or EXECUTE DEVICE DIAGNOSTIC (its diagnostic codes): in device 0
# "device 0 passed, device 1 passed or not present", in device 1 "device 1 passed"
DIAG_PASSED = 0x01

# Device register: bits 7 and 5 are obsolete
DEV_LBA = 0x40
DEV_DEV = 0x10         # 1 selects device 1
DEV_HEAD = 0x0F        # head (CHS) or LBA bits 27:24

# Device Control register
CTL_SRST = 0x04
CTL_NIEN = 0x02

# command codes (clause 8, Command descriptions)
CMD_READ_SECTORS = 0x20
CMD_READ_SECTORS_NORETRY = 0x21
CMD_WRITE_SECTORS = 0x30
CMD_WRITE_SECTORS_NORETRY = 0x31
CMD_READ_VERIFY = 0x40
CMD_READ_VERIFY_NORETRY = 0x41
CMD_EXECUTE_DEVICE_DIAGNOSTIC = 0x90
CMD_INITIALIZE_DEVICE_PARAMETERS = 0x91
CMD_IDENTIFY_PACKET_DEVICE = 0xA1
CMD_READ_MULTIPLE = 0xC4
CMD_WRITE_MULTIPLE = 0xC5
CMD_SET_MULTIPLE_MODE = 0xC6
CMD_FLUSH_CACHE = 0xE7
CMD_IDENTIFY_DEVICE = 0xEC
CMD_SET_FEATURES = 0xEF

# SET FEATURES subcommands (the Features register values of SET FEATURES)
FEAT_ENABLE_WRITE_CACHE = 0x02
FEAT_SET_TRANSFER_MODE = 0x03
FEAT_DISABLE_REVERTING = 0x66      # a software reset keeps the settings (the power-on default)
FEAT_DISABLE_WRITE_CACHE = 0x82
FEAT_ENABLE_REVERTING = 0xCC       # a software reset reverts to the power-on defaults
# transfer mode values (SET FEATURES, set transfer mode): 00h PIO default, 01h PIO default with IORDY
# disabled, 00001nnn PIO flow control mode nnn; DMA modes are not supported here
XFER_PIO_DEFAULT = 0x00
XFER_PIO_DEFAULT_NO_IORDY = 0x01
XFER_PIO_FLOW_CONTROL = 0x08
MAX_PIO_MODE = 4

MAX_MULTIPLE = 16              # sectors per DRQ block for READ/WRITE MULTIPLE (word 47)
LBA28_LIMIT = 1 << 28
DEFAULT_HEADS, DEFAULT_SECTORS_PER_TRACK = 16, 63
MAX_DEFAULT_CYLINDERS = 16383  # ATA-6 (CHS translation, word 1): a disk over 8.4 GB reports 16383/16/63

MASTER, SLAVE = 0, 1           # the DEV bit's value for each drive
DRIVE_NAMES = ("master", "slave")
MODEL = "VMCORE HARDDISK"
SERIALS = ("VC00001", "VC00002")   # one per drive (words 10-19), as QEMU numbers its drives
FIRMWARE = "0.1.0"

_PHASES = (None, "identify", "read", "write")


def _ata_string(text: str, length: int) -> bytes:
    """An IDENTIFY string field (serial number, firmware revision, model number): ASCII padded
    with spaces, two characters a word, the first in bits 15:8, so the bytes are pairwise
    swapped in memory."""
    raw = text.encode("ascii").ljust(length, b" ")[:length]
    return bytes(raw[i ^ 1] for i in range(length))


class AtaDrive:
    """One ATA hard disk on the channel, device ``unit`` (0 master, 1 slave), with ``disk`` as
    its medium: its own copy of the task file, Status and Error, its settings (geometry,
    multiple count, write cache, PIO mode), its data phase and its interrupt pending.
    ``irq_changed`` is called whenever the pending interrupt changes (the channel decides
    INTRQ)."""

    def __init__(self, disk: DiskImage, unit: int, irq_changed: Callable[[], None]):
        if not isinstance(disk, DiskImage):
            raise ConfigError(f"an IDE drive needs a DiskImage, not {type(disk).__name__}")
        if unit not in (MASTER, SLAVE):
            raise ConfigError(f"an IDE drive is device 0 (master) or 1 (slave), not {unit!r}")
        self.disk = disk
        self.unit = unit
        self.serial = SERIALS[unit]
        self._irq_changed = irq_changed
        self.total_sectors = disk.sectors
        # LBA28 reaches sectors 0..0FFFFFFEh: words 60-61 say at most 0FFFFFFFh sectors (IDENTIFY words 60-61)
        self.lba28_sectors = min(disk.sectors, LBA28_LIMIT - 1)
        # default geometry (words 1, 3, 6): 16 heads, 63 sectors per track, as many cylinders as fit
        self.default_cylinders = max(1, min(MAX_DEFAULT_CYLINDERS,
                                            disk.sectors // (DEFAULT_HEADS * DEFAULT_SECTORS_PER_TRACK)))
        self.power_on()

    @property
    def name(self) -> str:
        return DRIVE_NAMES[self.unit]

    # ---- reset ---------------------------------------------------------------------------
    def power_on(self) -> None:
        self.features = 0
        self.status = ST_READY
        self.error = DIAG_PASSED
        self._defaults()
        self.revert_on_reset = False
        self._signature()
        self._end_phase()
        self._set_pending(False)

    def _defaults(self) -> None:
        """The settings SET FEATURES CCh lets a software reset revert."""
        self.heads, self.sectors_per_track = DEFAULT_HEADS, DEFAULT_SECTORS_PER_TRACK
        self.cylinders = self.default_cylinders
        self.multiple = MAX_MULTIPLE       # word 59 may show the preferred value at power-on (§8.15.28; QEMU)
        self.write_cache = True
        self.pio_mode = MAX_PIO_MODE

    def _signature(self) -> None:
        """The ATA signature (the signature and persistence clause): count 1, LBA low 1, mid 0, high 0, Device 0."""
        self.sector_count, self.lba_low, self.lba_mid, self.lba_high, self.device = 1, 1, 0, 0, 0

    def _end_phase(self) -> None:
        self.phase = None
        self.buffer = bytearray()
        self.buffer_pos = 0
        self.xfer_lba = self.xfer_left = self.xfer_block = 0

    def software_reset(self, asserted: bool) -> None:
        """SRST (software reset protocol): while set the drive is busy; when cleared it has reset: no interrupt, the
        signature in the task file, Error = diagnostic code."""
        self._end_phase()
        self._set_pending(False)
        if asserted:
            self.status = ST_BSY | ST_DSC
            return
        if self.revert_on_reset:
            self._defaults()
        self.status = ST_READY
        self.error = DIAG_PASSED
        self._signature()

    def diagnostic(self) -> None:
        """EXECUTE DEVICE DIAGNOSTIC: the signature and the diagnostic code; device 0 ends it with an
        interrupt, device 1 without one (it reports to device 0 over PDIAG-)."""
        self._end_phase()
        self._set_pending(False)
        self._signature()
        self.error = DIAG_PASSED
        self.status = ST_READY
        if self.unit == MASTER:
            self._interrupt()

    # ---- interrupt -----------------------------------------------------------------------
    def _set_pending(self, pending: bool) -> None:
        self.intrq_pending = pending
        self._irq_changed()

    def _interrupt(self) -> None:
        self._set_pending(True)

    def acknowledge(self) -> None:
        """The host read Status: the pending interrupt is cleared."""
        if self.intrq_pending:
            self._set_pending(False)

    # ---- registers -----------------------------------------------------------------------
    def latch(self, offset: int, value: int) -> None:
        """A write to one of the task file registers (Features .. Device), which both drives take."""
        if offset == FEATURES:
            self.features = value
        elif offset == SECTOR_COUNT:
            self.sector_count = value
        elif offset == LBA_LOW:
            self.lba_low = value
        elif offset == LBA_MID:
            self.lba_mid = value
        elif offset == LBA_HIGH:
            self.lba_high = value
        elif offset == DEVICE:
            self.device = value

    def register(self, offset: int) -> int:
        """A read of Error .. Device while this drive is selected."""
        if self.status & ST_BSY:            # while BSY, the command block reads as Status (ATA-5)
            return self.status
        return {ERROR: self.error, SECTOR_COUNT: self.sector_count, LBA_LOW: self.lba_low,
                LBA_MID: self.lba_mid, LBA_HIGH: self.lba_high, DEVICE: self.device}[offset]

    # ---- data phase ----------------------------------------------------------------------
    def read_data_word(self) -> int:
        if self.phase not in ("identify", "read") or not self.status & ST_DRQ:
            return 0
        pos = self.buffer_pos
        value = self.buffer[pos] | self.buffer[pos + 1] << 8
        self.buffer_pos = pos + 2
        if self.buffer_pos >= len(self.buffer):
            self._block_done()
        return value

    def write_data_word(self, value: int) -> None:
        if self.phase != "write" or not self.status & ST_DRQ:
            return
        pos = self.buffer_pos
        self.buffer[pos] = value & 0xFF
        self.buffer[pos + 1] = value >> 8
        self.buffer_pos = pos + 2
        if self.buffer_pos >= len(self.buffer):
            self._block_done()

    def _block_done(self) -> None:
        """The host has moved the whole DRQ block."""
        if self.phase == "identify":
            self._end_phase()
            self.status = ST_READY          # PIO data-in: no interrupt after the last block
            return
        count = len(self.buffer) // SECTOR_SIZE
        if self.phase == "write":
            self.disk.write(self.xfer_lba, bytes(self.buffer))
            if not self.write_cache:
                self.disk.flush()
        self.xfer_lba += count
        self.xfer_left -= count
        self._set_address(self.xfer_lba)
        self.sector_count = self.xfer_left & 0xFF
        if self.xfer_left == 0:
            was_write = self.phase == "write"
            self._end_phase()
            self.status = ST_READY
            if was_write:
                self._interrupt()           # PIO data-out: the completion interrupt
            return
        if self.phase == "read":
            self._next_read_block()
        else:
            self._next_write_block(interrupt=True)

    def _next_read_block(self) -> None:
        count = min(self.xfer_block, self.xfer_left)
        if self._out_of_range(self.xfer_lba, count):
            return
        self.buffer = bytearray(self.disk.read(self.xfer_lba, count))
        self.buffer_pos = 0
        self.status = ST_READY | ST_DRQ
        self._interrupt()

    def _next_write_block(self, interrupt: bool) -> None:
        count = min(self.xfer_block, self.xfer_left)
        if self._out_of_range(self.xfer_lba, count):
            return
        self.buffer = bytearray(count * SECTOR_SIZE)
        self.buffer_pos = 0
        self.status = ST_READY | ST_DRQ
        if interrupt:
            self._interrupt()

    def _out_of_range(self, lba: int, count: int) -> bool:
        """End the command with IDNF if a sector of lba..lba+count-1 is beyond the medium (or
        LBA28's reach); the task file then names the first one."""
        if lba + count <= self.lba28_sectors:
            return False
        self._set_address(max(lba, self.lba28_sectors))
        self._fail(ERR_IDNF)
        return True

    # ---- addressing ----------------------------------------------------------------------
    def _command_lba(self) -> int | None:
        """The task file's address as an LBA, or None for a CHS address outside the geometry."""
        if self.device & DEV_LBA:
            return (self.device & DEV_HEAD) << 24 | self.lba_high << 16 | self.lba_mid << 8 | self.lba_low
        cylinder, head, sector = self.lba_high << 8 | self.lba_mid, self.device & DEV_HEAD, self.lba_low
        if not 1 <= sector <= self.sectors_per_track or head >= self.heads or cylinder >= self.cylinders:
            return None
        return (cylinder * self.heads + head) * self.sectors_per_track + sector - 1

    def _set_address(self, lba: int) -> None:
        """Put ``lba`` in the task file in the command's addressing mode."""
        if self.device & DEV_LBA:
            lba = min(lba, LBA28_LIMIT - 1)
            self.lba_low, self.lba_mid, self.lba_high = lba & 0xFF, (lba >> 8) & 0xFF, (lba >> 16) & 0xFF
            self.device = (self.device & ~DEV_HEAD) | (lba >> 24) & DEV_HEAD
            return
        track, sector = divmod(lba, self.sectors_per_track)
        cylinder, head = divmod(track, self.heads)
        if cylinder <= 0xFFFF:
            self.lba_low, self.lba_mid, self.lba_high = sector + 1, cylinder & 0xFF, cylinder >> 8
            self.device = (self.device & ~DEV_HEAD) | head

    def _sector_count(self) -> int:
        return self.sector_count or 256

    # ---- commands ------------------------------------------------------------------------
    def command(self, command: int) -> None:
        """A write to Command while this drive is selected (EXECUTE DEVICE DIAGNOSTIC is the channel's)."""
        if self.status & (ST_BSY | ST_DRQ):
            return                          # QEMU: a command in the middle of a data phase is dropped
        self._set_pending(False)            # writing Command clears a pending interrupt (INTRQ)
        self.error = 0
        handler = self._HANDLERS.get(command)
        if handler is None:
            self._fail(ERR_ABRT)
            return
        handler(self, command)

    def _fail(self, error: int) -> None:
        self._end_phase()
        self.error = error
        self.status = ST_READY | ST_ERR
        self._interrupt()

    def _complete(self) -> None:
        self.status = ST_READY
        self._interrupt()

    def _cmd_identify(self, command: int) -> None:
        self.buffer = bytearray(self.identify_data())
        self.buffer_pos = 0
        self.phase = "identify"
        self.status = ST_READY | ST_DRQ
        self._interrupt()

    def _start_transfer(self, phase: str, block: int) -> None:
        lba = self._command_lba()
        if lba is None:
            self._fail(ERR_IDNF)
            return
        self.phase = phase
        self.xfer_lba, self.xfer_left, self.xfer_block = lba, self._sector_count(), block
        if phase == "read":
            self._next_read_block()
        else:
            self._next_write_block(interrupt=False)    # the first DRQ block of PIO out has no interrupt

    def _cmd_read_sectors(self, command: int) -> None:
        self._start_transfer("read", 1)

    def _cmd_write_sectors(self, command: int) -> None:
        self._start_transfer("write", 1)

    def _cmd_read_multiple(self, command: int) -> None:
        if not self.multiple:               # READ/WRITE MULTIPLE: multiple mode disabled
            self._fail(ERR_ABRT)
            return
        self._start_transfer("read", self.multiple)

    def _cmd_write_multiple(self, command: int) -> None:
        if not self.multiple:
            self._fail(ERR_ABRT)
            return
        self._start_transfer("write", self.multiple)

    def _cmd_set_multiple(self, command: int) -> None:
        """§8.49: a power of two up to word 47's maximum, or 0 to disable (QEMU)."""
        count = self.sector_count
        if count > MAX_MULTIPLE or count & (count - 1):
            self._fail(ERR_ABRT)
            return
        self.multiple = count
        self._complete()

    def _cmd_read_verify(self, command: int) -> None:
        lba = self._command_lba()
        if lba is None:
            self._fail(ERR_IDNF)
            return
        count = self._sector_count()
        if self._out_of_range(lba, count):
            return
        self._set_address(lba + count)
        self.sector_count = 0
        self._complete()

    def _cmd_initialize_device_parameters(self, command: int) -> None:
        """ATA-5 INITIALIZE DEVICE PARAMETERS: logical sectors per track from Sector Count,
        heads from the Device head bits; the cylinders follow from the capacity."""
        sectors_per_track, heads = self.sector_count, (self.device & DEV_HEAD) + 1
        if sectors_per_track == 0:
            self._fail(ERR_ABRT)
            return
        self.heads, self.sectors_per_track = heads, sectors_per_track
        self.cylinders = min(0xFFFF, self.lba28_sectors // (heads * sectors_per_track))
        self._complete()

    def _cmd_set_features(self, command: int) -> None:
        feature = self.features
        if feature == FEAT_SET_TRANSFER_MODE:
            mode = self.sector_count
            if mode in (XFER_PIO_DEFAULT, XFER_PIO_DEFAULT_NO_IORDY):
                self.pio_mode = MAX_PIO_MODE
            elif XFER_PIO_FLOW_CONTROL <= mode <= XFER_PIO_FLOW_CONTROL + MAX_PIO_MODE:
                self.pio_mode = mode - XFER_PIO_FLOW_CONTROL
            else:                           # multiword or Ultra DMA: no DMA engine here
                self._fail(ERR_ABRT)
                return
        elif feature in (FEAT_ENABLE_WRITE_CACHE, FEAT_DISABLE_WRITE_CACHE):
            self.write_cache = feature == FEAT_ENABLE_WRITE_CACHE
            if not self.write_cache:
                self.disk.flush()
        elif feature in (FEAT_ENABLE_REVERTING, FEAT_DISABLE_REVERTING):
            self.revert_on_reset = feature == FEAT_ENABLE_REVERTING
        else:
            self._fail(ERR_ABRT)
            return
        self._complete()

    def _cmd_flush_cache(self, command: int) -> None:
        self.disk.flush()
        self._complete()

    _HANDLERS = {
        CMD_IDENTIFY_DEVICE: _cmd_identify,
        CMD_READ_SECTORS: _cmd_read_sectors, CMD_READ_SECTORS_NORETRY: _cmd_read_sectors,
        CMD_WRITE_SECTORS: _cmd_write_sectors, CMD_WRITE_SECTORS_NORETRY: _cmd_write_sectors,
        CMD_READ_MULTIPLE: _cmd_read_multiple, CMD_WRITE_MULTIPLE: _cmd_write_multiple,
        CMD_SET_MULTIPLE_MODE: _cmd_set_multiple,
        CMD_READ_VERIFY: _cmd_read_verify, CMD_READ_VERIFY_NORETRY: _cmd_read_verify,
        CMD_INITIALIZE_DEVICE_PARAMETERS: _cmd_initialize_device_parameters,
        CMD_SET_FEATURES: _cmd_set_features,
        CMD_FLUSH_CACHE: _cmd_flush_cache,
        # CMD_EXECUTE_DEVICE_DIAGNOSTIC is the channel's: both drives execute it (IdeController._diagnostic)
        # CMD_IDENTIFY_PACKET_DEVICE is not here: an ATA (not ATAPI) device aborts it (IDENTIFY PACKET DEVICE)
    }

    # ---- IDENTIFY DEVICE -----------------------------------------------------------------
    def identify_data(self) -> bytes:
        """The 256 words of IDENTIFY DEVICE data (§8.15), little-endian words."""
        w = [0] * 256
        w[0] = 0x0040                                   # bit 6: fixed device; bit 15 = 0: ATA
        w[1] = self.default_cylinders                  # default logical cylinders
        w[3] = DEFAULT_HEADS                           # default logical heads
        w[6] = DEFAULT_SECTORS_PER_TRACK               # default logical sectors per track
        w[47] = 0x8000 | MAX_MULTIPLE                  # bits 15:8 = 80h; bits 7:0 max sectors per block
        w[49] = 0x0200 | 0x0400 | 0x0800               # LBA; IORDY may be disabled; IORDY (no DMA)
        w[50] = 0x4000                                 # bit 14 shall be one
        w[51] = 0x0200                                 # PIO data transfer cycle timing mode 2 (obsolete)
        w[53] = 0x0003                                 # words 54-58 and 64-70 are valid
        w[54] = self.cylinders                         # current logical cylinders
        w[55] = self.heads                             # current logical heads
        w[56] = self.sectors_per_track                 # current logical sectors per track
        current_capacity = self.cylinders * self.heads * self.sectors_per_track
        w[57], w[58] = current_capacity & 0xFFFF, current_capacity >> 16
        w[59] = (0x0100 | self.multiple) if self.multiple else 0   # bit 8: the multiple setting is valid
        w[60], w[61] = self.lba28_sectors & 0xFFFF, self.lba28_sectors >> 16   # user-addressable sectors
        w[64] = 0x0003                                 # PIO modes 3 and 4 supported
        w[65] = w[66] = 120                            # multiword DMA cycle times (ns): unused, PIO only
        w[67] = w[68] = 120                            # minimum PIO cycle time without / with IORDY (ns)
        w[80] = 0x0078                                 # major version: ATA-3, ATA-4, ATA-5, ATA-6
        w[82] = 0x0020                                 # command sets supported: write cache
        w[83] = 0x4000 | 0x1000                        # bit 14 shall be one; FLUSH CACHE supported
        w[84] = 0x4000                                 # bit 14 shall be one
        w[85] = 0x0020 if self.write_cache else 0      # enabled: write cache
        w[86] = 0x1000                                 # enabled: FLUSH CACHE
        w[87] = 0x4000                                 # bit 14 shall be one
        data = bytearray(b"".join(v.to_bytes(2, "little") for v in w))
        data[20:40] = _ata_string(self.serial, 20)          # words 10-19
        data[46:54] = _ata_string(FIRMWARE, 8)         # words 23-26
        data[54:94] = _ata_string(MODEL, 40)           # words 27-46
        # word 255, integrity word: signature A5h and a checksum that makes the 512 bytes sum to 0
        data[510] = 0xA5
        data[511] = -sum(data[:511]) & 0xFF
        return bytes(data)

    # ---- state ---------------------------------------------------------------------------
    _STATE_KEYS = ("features", "sector_count", "lba_low", "lba_mid", "lba_high", "device", "status", "error",
                   "intrq_pending", "heads", "sectors_per_track", "cylinders", "multiple",
                   "write_cache", "pio_mode", "revert_on_reset", "phase", "buffer", "buffer_pos",
                   "xfer_lba", "xfer_left", "xfer_block", "disk")

    def export_state(self) -> dict:
        state = {k: getattr(self, k) for k in self._STATE_KEYS if k not in ("buffer", "disk")}
        state["buffer"] = self.buffer.hex()
        state["disk"] = self.disk.export_state()
        return state

    def check_state(self, state: dict) -> None:
        """ConfigError unless ``state`` is a drive state restore_state can take (the disk's own
        part is checked by the DiskImage)."""
        if not isinstance(state, dict):
            raise ConfigError(f"IDE {self.name} state is not a mapping")
        missing = [k for k in self._STATE_KEYS if k not in state]
        if missing:
            raise ConfigError(f"IDE {self.name} state is missing {', '.join(missing)}")
        if state["phase"] not in _PHASES:
            raise ConfigError(f"IDE {self.name} state has an unknown phase {state['phase']!r}")
        buffer = bytearray.fromhex(state["buffer"])
        pos = int(state["buffer_pos"])
        if len(buffer) % SECTOR_SIZE or not 0 <= pos <= len(buffer) or pos & 1:
            raise ConfigError(f"IDE {self.name} state has a bad data buffer ({len(buffer)} bytes, at {pos})")

    def restore_state(self, state: dict) -> None:
        """Everything but the disk's overlay (the channel restores that), after check_state."""
        for k in self._STATE_KEYS:
            if k not in ("buffer", "disk", "phase", "intrq_pending", "write_cache", "revert_on_reset"):
                setattr(self, k, int(state[k]))
        self.phase = state["phase"]
        self.write_cache = bool(state["write_cache"])
        self.revert_on_reset = bool(state["revert_on_reset"])
        self.buffer, self.buffer_pos = bytearray.fromhex(state["buffer"]), int(state["buffer_pos"])
        self.intrq_pending = bool(state["intrq_pending"])


class IdeController(PortDevice):
    """One ATA channel: ``drives[0]`` the master and ``drives[1]`` the slave, each an AtaDrive or
    None when absent (``master`` / ``slave`` give their DiskImages; ``attach`` adds one later).
    The channel holds what the drives share: the Device Control register and the Device
    register as last written (whose DEV bit selects a drive). Its IRQ line is ``irq``."""

    max_access_size = 4

    def __init__(self, master: DiskImage | None = None, slave: DiskImage | None = None):
        super().__init__()
        self.drives: list[AtaDrive | None] = [None, None]
        self.control = 0
        self.device = 0
        for unit, disk in ((MASTER, master), (SLAVE, slave)):
            if disk is not None:
                self.attach(unit, disk)

    def attach(self, unit: int, disk: DiskImage) -> AtaDrive:
        """Put a drive with ``disk`` at device ``unit`` (0 master, 1 slave), powered on."""
        if unit not in (MASTER, SLAVE):
            raise ConfigError(f"an IDE drive is device 0 (master) or 1 (slave), not {unit!r}")
        present = self.drives[unit]
        if present is not None:
            raise ConfigError(f"the IDE {DRIVE_NAMES[unit]} is attached already ({present.disk.path})")
        drive = AtaDrive(disk, unit, self._update_irq)
        self.drives[unit] = drive
        self._update_irq()
        return drive

    @property
    def disk(self) -> DiskImage | None:
        """The master's disk (None without a master); the slave's is ``drives[1].disk``."""
        master = self.drives[MASTER]
        return master.disk if master is not None else None

    @property
    def selected(self) -> int:
        """The selected device (the Device register's DEV bit)."""
        return SLAVE if self.device & DEV_DEV else MASTER

    def _selected_drive(self) -> AtaDrive | None:
        return self.drives[self.selected]

    def _present(self) -> list[AtaDrive]:
        return [d for d in self.drives if d is not None]

    # ---- interrupt -----------------------------------------------------------------------
    def _update_irq(self) -> None:
        drive = self._selected_drive()
        self.irq.set_level(drive is not None and drive.intrq_pending and not self.control & CTL_NIEN)

    # ---- port interface ------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        drive = self._selected_drive()
        if offset == DATA:
            if size == 1 or drive is None:
                return 0xFF if size == 1 else 0
            value = drive.read_data_word()
            if size == 4:
                value |= drive.read_data_word() << 16
            return value
        if size > 1:
            return sum(self.read(offset + k, 1) << (8 * k) for k in range(size))
        if drive is None:                   # an absent device: 0, but the Device register as written
            return self.device if offset == DEVICE else 0
        if offset == CONTROL:
            return drive.status
        if offset == STATUS:
            value = drive.status
            drive.acknowledge()
            return value
        return drive.register(offset)

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == DATA:
            drive = self._selected_drive()
            if size == 1 or drive is None:
                return
            drive.write_data_word(value & 0xFFFF)
            if size == 4:
                drive.write_data_word(value >> 16)
            return
        if size > 1:
            for k in range(size):
                self.write(offset + k, 1, (value >> (8 * k)) & 0xFF)
            return
        if offset == CONTROL:
            self._write_control(value)
            return
        if self.control & CTL_SRST:         # writes while the drives are in reset (BSY) are not taken
            return
        if offset == COMMAND:
            self._write_command(value)
            return
        for drive in self._present():       # both devices latch the task file
            drive.latch(offset, value)
        if offset == DEVICE:
            self.device = value
            self._update_irq()              # only the selected device drives INTRQ

    def _write_control(self, value: int) -> None:
        was_reset = bool(self.control & CTL_SRST)
        self.control = value & (CTL_SRST | CTL_NIEN)
        now_reset = bool(self.control & CTL_SRST)
        if now_reset != was_reset:
            for drive in self._present():   # SRST reaches both devices
                drive.software_reset(now_reset)
            if not now_reset:
                self.device = 0             # the signature selects device 0
        self._update_irq()

    def _write_command(self, command: int) -> None:
        drive = self._selected_drive()
        if command == CMD_EXECUTE_DEVICE_DIAGNOSTIC:
            if drive is None or not drive.status & (ST_BSY | ST_DRQ):
                self._diagnostic()
            return
        if drive is not None:               # an absent device does nothing
            drive.command(command)

    def _diagnostic(self) -> None:
        """EXECUTE DEVICE DIAGNOSTIC: both devices execute it whatever DEV says; the signature
        clears DEV, so device 0 is selected and its interrupt is the one seen."""
        self.device = 0
        for drive in self._present():
            drive.diagnostic()
        self._update_irq()

    # ---- state ---------------------------------------------------------------------------
    def export_state(self) -> dict:
        return {"control": self.control, "device": self.device,
                "drives": [d.export_state() if d is not None else None for d in self.drives]}

    def restore_state(self, state: dict) -> None:
        missing = [k for k in ("control", "device", "drives") if k not in state]
        if missing:
            raise ConfigError(f"IDE controller state is missing {', '.join(missing)}")
        drive_states = state["drives"]
        if not isinstance(drive_states, list) or len(drive_states) != 2:
            raise ConfigError("IDE controller state needs a list of two drive states (master, slave)")
        for unit, (drive, drive_state) in enumerate(zip(self.drives, drive_states)):
            if (drive is None) != (drive_state is None):
                has = "has" if drive_state is not None else "has no"
                attached = "none is" if drive is None else "one is"
                raise ConfigError(f"IDE controller state {has} {DRIVE_NAMES[unit]} drive and {attached} attached")
            if drive is not None:
                drive.check_state(drive_state)
        present = [(d, s) for d, s in zip(self.drives, drive_states) if d is not None]
        overlays = [d.disk.overlay for d, _ in present]
        try:
            for drive, drive_state in present:
                drive.disk.restore_state(drive_state["disk"])
        except Exception:
            for (drive, _), overlay in zip(present, overlays):
                drive.disk.overlay = overlay
            raise
        for drive, drive_state in present:
            drive.restore_state(drive_state)
        self.control = int(state["control"]) & (CTL_SRST | CTL_NIEN)
        self.device = int(state["device"]) & 0xFF
        self._update_irq()


# ---- the PIIX3's IDE function (PCI 00:01.1) --------------------------------------------------
CFG_BMIBA = 0x20            # BAR4: bus master interface base address (I/O, 16 bytes)
BMIBA_IO_SPACE = 0x01       # bit 0: resource type indicator, hardwired 1 (I/O)
CFG_IDETIM_PRIMARY = 0x40   # IDE timing, primary channel (16 bits)
CFG_IDETIM_SECONDARY = 0x42
CFG_SIDETIM = 0x44          # slave IDE timing
CMD_IO_SPACE = 0x0001
CMD_BUS_MASTER = 0x0004


class PiixIdeFunction(PciFunction):
    """The PIIX3 IDE interface (Intel 82371SB datasheet, 290550, "PCI configuration registers
    (IDE, function 1)"): vendor 8086, device 7010, class 01 01 80 (mass storage, IDE, bus-master
    capable, both channels in legacy mode: the ports are fixed at 0x1F0/0x3F6 and 0x170/0x376,
    IRQ 14 and 15, and not moved by any register). PCICMD I/O space and bus master bits, the
    latency timer (bits 7:4), BMIBA (a 16-byte I/O BAR: writing all ones reads back FFFFFFF1h,
    the size probe, as on QEMU, whose SeaBIOS sizes I/O BARs over 32 bits; the datasheet's
    PIIX3 hardwires bits 31:16 to 0) and the timing registers IDETIM 40h-43h and SIDETIM 44h are
    writable, all plain storage: decoding does not follow PCICMD or IDETIM's decode enable bit
    (as in QEMU), and no bus-master DMA engine sits behind BMIBA."""

    VENDOR, DEVICE, REVISION, CLASS_CODE = 0x8086, 0x7010, 0x00, 0x010180

    def __init__(self):
        config = bytearray(CONFIG_SPACE)
        config[CFG_VENDOR_ID:CFG_VENDOR_ID + 2] = self.VENDOR.to_bytes(2, "little")
        config[CFG_DEVICE_ID:CFG_DEVICE_ID + 2] = self.DEVICE.to_bytes(2, "little")
        config[CFG_STATUS:CFG_STATUS + 2] = (STATUS_FAST_BACK_TO_BACK | STATUS_DEVSEL_MEDIUM).to_bytes(2, "little")
        config[CFG_REVISION] = self.REVISION
        config[CFG_CLASS_PROG:CFG_CLASS_PROG + 3] = self.CLASS_CODE.to_bytes(3, "little")
        config[CFG_HEADER_TYPE] = 0x00
        config[CFG_BMIBA] = BMIBA_IO_SPACE
        mask = bytearray(CONFIG_SPACE)
        mask[CFG_COMMAND] = CMD_IO_SPACE | CMD_BUS_MASTER
        mask[CFG_LATENCY_TIMER] = 0xF0
        mask[CFG_BMIBA:CFG_BMIBA + 4] = (0xFFFFFFF0).to_bytes(4, "little")
        mask[CFG_IDETIM_PRIMARY:CFG_SIDETIM + 1] = b"\xFF" * (CFG_SIDETIM + 1 - CFG_IDETIM_PRIMARY)
        super().__init__(bytes(config), bytes(mask))
