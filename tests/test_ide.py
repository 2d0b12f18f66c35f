"""The ATA/IDE PIO disks (vmcore/devices/ide.py, disk.py): driven through the port bus as a
driver drives them, checked against ATA/ATAPI-6 (sections cited): one drive, then a master and a
slave sharing the channel; the PIIX3 IDE function at PCI 00:01.1; the disk image's errors; the
CLI; then guests that IDENTIFY the drive and read it by port I/O, and one that does xv6's ide.c
on the slave, under bare and bt."""
import os
import struct

import pytest

import vmcore
from nasm_guests import assemble_text
from vmcore import Exit, cli
from vmcore.devices import PortBus, PortWindow
from vmcore.devices.disk import SECTOR_SIZE, DiskImage
from vmcore.devices.ide import CONTROL, IdeController
from vmcore.errors import ConfigError, DiskImageError

CMD, CTL = 0x1F0, 0x3F6
DATA, ERROR, FEATURES, COUNT, LBA0, LBA1, LBA2, DEVICE, STATUS, COMMAND = (
    CMD, CMD + 1, CMD + 1, CMD + 2, CMD + 3, CMD + 4, CMD + 5, CMD + 6, CMD + 7, CMD + 7)
BSY, DRDY, DSC, DRQ, ERR = 0x80, 0x40, 0x10, 0x08, 0x01
IDNF, ABRT = 0x10, 0x04
SRST, NIEN = 0x04, 0x02
LBA_MODE = 0xE0            # Device: obsolete bits 7 and 5, LBA, device 0
CHS_MODE = 0xA0
SECTORS = 2 * 16 * 63      # two cylinders of the default geometry


SLAVE_SECTORS = 3 * 16 * 63   # the slave's image: three cylinders
SLAVE_SEED = 0x5A


def sector_bytes(lba: int, seed: int = 0) -> bytes:
    """Sector ``lba`` of the test image: its number (``seed`` in the top byte), then a pattern of both."""
    return struct.pack("<I", lba | seed << 24) + bytes((lba * 7 + seed + i) & 0xFF for i in range(SECTOR_SIZE - 4))


def slave_bytes(lba: int) -> bytes:
    """Sector ``lba`` of the slave's test image."""
    return sector_bytes(lba, SLAVE_SEED)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(b"".join(sector_bytes(k) for k in range(SECTORS)))
    return path


@pytest.fixture
def slave_image(tmp_path):
    path = tmp_path / "slave.img"
    path.write_bytes(b"".join(slave_bytes(k) for k in range(SLAVE_SECTORS)))
    return path


class Driver:
    """A PIO driver's view: the controller on a port bus at 0x1F0 and 0x3F6; ``irqs`` counts
    the rising edges of its IRQ line."""

    def __init__(self, path, write_through=False, slave=None):
        master = DiskImage(path, write_through=write_through) if path is not None else None
        self.ide = IdeController(master, DiskImage(slave, write_through=write_through) if slave else None)
        self.bus = PortBus()
        self.bus.attach(CMD, 8, self.ide, name="ide0")
        self.bus.attach(CTL, 1, PortWindow(self.ide, CONTROL), name="ide0-control")
        self.irqs = 0

        def edge(level):
            self.irqs += level
        self.ide.irq.on_change = edge

    def inb(self, port):
        return self.bus.read(port, 1)

    def outb(self, port, value):
        self.bus.write(port, 1, value)

    @property
    def irq(self) -> bool:
        return self.ide.irq.level

    def lba_command(self, command, lba, count, device=LBA_MODE):
        self.outb(COUNT, count & 0xFF)
        self.outb(LBA0, lba & 0xFF)
        self.outb(LBA1, (lba >> 8) & 0xFF)
        self.outb(LBA2, (lba >> 16) & 0xFF)
        self.outb(DEVICE, device | (lba >> 24) & 0x0F)
        self.outb(COMMAND, command)

    def chs_command(self, command, cylinder, head, sector, count):
        self.outb(COUNT, count)
        self.outb(LBA0, sector)
        self.outb(LBA1, cylinder & 0xFF)
        self.outb(LBA2, cylinder >> 8)
        self.outb(DEVICE, CHS_MODE | head)
        self.outb(COMMAND, command)

    def read_words(self, n=256) -> list[int]:
        return [self.bus.read(DATA, 2) for _ in range(n)]

    def read_block(self, sectors=1) -> bytes:
        return b"".join(w.to_bytes(2, "little") for w in self.read_words(256 * sectors))

    def write_block(self, data: bytes):
        for i in range(0, len(data), 2):
            self.bus.write(DATA, 2, data[i] | data[i + 1] << 8)

    def task_file(self):
        return [self.inb(p) for p in (COUNT, LBA0, LBA1, LBA2, DEVICE)]

    def identify(self, device=CHS_MODE) -> list[int]:
        self.outb(DEVICE, device)
        self.outb(COMMAND, 0xEC)
        assert self.inb(STATUS) == DRDY | DSC | DRQ
        return self.read_words()


def ata_string(words) -> str:
    return b"".join(w.to_bytes(2, "big") for w in words).decode("ascii")


# ---- power-on, IDENTIFY DEVICE ----------------------------------------------------------------

def test_power_on_state_is_ready_with_the_signature(image):
    d = Driver(image)
    assert d.inb(STATUS) == DRDY | DSC                 # Status: ready, no BSY/DRQ/ERR/DF
    assert d.inb(ERROR) == 0x01                        # diagnostic code: device 0 passed
    assert d.task_file() == [1, 1, 0, 0, 0]            # the ATA signature
    assert not d.irq


def test_identify_device_words(image):
    d = Driver(image)
    w = d.identify()
    assert d.irqs == 1                                 # PIO data-in: the data block is ready: INTRQ
    assert d.inb(STATUS) == DRDY | DSC                 # all 256 words read: no DRQ, no interrupt
    assert d.irqs == 1 and not d.irq
    assert w[0] == 0x0040                              # ATA (bit 15 = 0), fixed device
    assert (w[1], w[3], w[6]) == (2, 16, 63)           # default cylinders, heads, sectors per track
    assert ata_string(w[10:20]) == "VC00001".ljust(20)  # serial number, two characters a word
    assert ata_string(w[23:27]) == "0.1.0".ljust(8)    # firmware revision
    assert ata_string(w[27:47]) == "VMCORE HARDDISK".ljust(40)   # model number
    assert w[47] == 0x8010                             # §8.15.22: 80h, up to 16 sectors a block
    assert w[49] & 0x0200 and not w[49] & 0x0100       # capabilities: LBA supported, DMA not
    assert w[50] == 0x4000
    assert w[53] & 0x0001                              # words 54-58 valid
    assert (w[54], w[55], w[56]) == (2, 16, 63)        # current geometry
    assert w[57] | w[58] << 16 == 2 * 16 * 63          # current capacity in sectors
    assert w[59] == 0x0110                             # §8.15.28: multiple setting valid, 16
    assert w[60] | w[61] << 16 == SECTORS              # LBA28 user-addressable sectors
    assert w[64] & 0x0003 == 0x0003                    # PIO modes 3 and 4
    assert w[80] == 0x0078 and w[80] & 0x0040          # major version, ATA-6 among them
    assert w[82] & 0x0020 and w[85] & 0x0020           # write cache supported and enabled
    assert w[83] == 0x5000 and w[86] & 0x1000          # bit 14 one; FLUSH CACHE supported, enabled
    assert not w[83] & 0x0400                          # no 48-bit address feature set
    assert w[84] == 0x4000 and w[87] == 0x4000
    raw = b"".join(v.to_bytes(2, "little") for v in w)
    assert w[255] & 0xFF == 0xA5 and sum(raw) & 0xFF == 0   # integrity word


def test_identify_through_32_bit_data_accesses(image):
    d = Driver(image)
    words = d.identify()
    d.outb(COMMAND, 0xEC)
    dwords = [d.bus.read(DATA, 4) for _ in range(128)]           # PIIX: two 16-bit cycles, low first
    assert [x for v in dwords for x in (v & 0xFFFF, v >> 16)] == words
    assert d.inb(STATUS) == DRDY | DSC
    assert d.bus.read(DATA, 2) == 0                              # DRQ clear: the data port reads 0 (QEMU)
    assert d.inb(DATA) == 0xFF                                    # a byte access to it: 0xFF (QEMU)


def test_identify_packet_device_is_aborted_by_an_ata_device(image):
    d = Driver(image)
    d.outb(COMMAND, 0xA1)                              # IDENTIFY PACKET DEVICE: not a packet device
    assert d.inb(STATUS) == DRDY | DSC | ERR and d.inb(ERROR) == ABRT
    assert d.irqs == 1


# ---- READ / WRITE SECTORS ----------------------------------------------------------------------

def test_read_sectors_by_lba_one_interrupt_per_sector(image):
    d = Driver(image)
    d.lba_command(0x20, 5, 3)
    for k in range(3):
        assert d.irq and d.irqs == k + 1               # PIO data-in: each sector ready raises INTRQ
        assert d.bus.read(CTL, 1) == DRDY | DSC | DRQ  # alternate status: the interrupt stays
        assert d.irq
        assert d.inb(STATUS) == DRDY | DSC | DRQ       # status: the interrupt is cleared
        assert not d.irq
        assert d.read_block() == sector_bytes(5 + k)
    assert d.inb(STATUS) == DRDY | DSC and d.irqs == 3  # no interrupt after the last block
    assert d.task_file() == [0, 8, 0, 0, LBA_MODE]     # next address, count 0 (QEMU)


def test_read_sectors_count_zero_is_256_and_no_retry_form(image):
    d = Driver(image)
    d.lba_command(0x21, 0x100, 0)
    data = b""
    for _ in range(256):
        assert d.irq and d.inb(STATUS) == DRDY | DSC | DRQ     # a driver reads Status per interrupt
        data += d.read_block()
    assert data == b"".join(sector_bytes(0x100 + k) for k in range(256))
    assert d.irqs == 256 and d.inb(STATUS) == DRDY | DSC


def test_read_sectors_by_chs(image):
    d = Driver(image)
    d.chs_command(0x20, 1, 2, 5, 2)                    # C/H/S 1/2/5: LBA (1*16 + 2)*63 + 4
    lba = (1 * 16 + 2) * 63 + 4
    assert d.read_block() == sector_bytes(lba)
    assert d.read_block() == sector_bytes(lba + 1)
    assert d.task_file() == [0, 7, 1, 0, CHS_MODE | 2]  # the next address, in CHS
    d.chs_command(0x20, 0, 15, 63, 2)                  # across a track and a head: 0/15/63 then 1/0/1
    assert d.read_block(2) == sector_bytes(15 * 63 + 62) + sector_bytes(16 * 63)
    assert d.task_file() == [0, 2, 1, 0, CHS_MODE]


def test_initialize_device_parameters_changes_the_chs_translation(image):
    d = Driver(image)
    d.outb(COUNT, 32)
    d.outb(DEVICE, CHS_MODE | 3)                       # ATA-5: 4 heads, 32 sectors per track
    d.outb(COMMAND, 0x91)
    assert d.inb(STATUS) == DRDY | DSC and d.irqs == 1
    w = d.identify()
    assert (w[54], w[55], w[56]) == (SECTORS // (4 * 32), 4, 32)
    assert w[57] | w[58] << 16 == (SECTORS // 128) * 128
    assert (w[1], w[3], w[6]) == (2, 16, 63)           # the default geometry is unchanged
    d.chs_command(0x20, 2, 1, 1, 1)                    # (2*4 + 1)*32 + 0
    assert d.read_block() == sector_bytes(9 * 32)
    d.chs_command(0x20, 0, 4, 1, 1)                    # head 4 does not exist in 4 heads
    assert d.inb(STATUS) == DRDY | DSC | ERR and d.inb(ERROR) == IDNF
    d.outb(COUNT, 0)
    d.outb(COMMAND, 0x91)                              # 0 sectors per track: aborted
    assert d.inb(ERROR) == ABRT


def test_write_sectors_interrupts_and_overlay(image):
    before = image.read_bytes()
    d = Driver(image)
    d.lba_command(0x30, 10, 2)
    assert d.inb(STATUS) == DRDY | DSC | DRQ and d.irqs == 0    # PIO data-out: the first DRQ has no interrupt
    d.write_block(b"\x11" * 512)
    assert d.irqs == 1 and d.inb(STATUS) == DRDY | DSC | DRQ    # sector 1 written, DRQ for sector 2
    d.write_block(b"\x22" * 512)
    assert d.irqs == 2 and d.inb(STATUS) == DRDY | DSC          # completion interrupt
    assert d.task_file() == [0, 12, 0, 0, LBA_MODE]
    d.lba_command(0x20, 9, 4)
    assert d.read_block(4) == sector_bytes(9) + b"\x11" * 512 + b"\x22" * 512 + sector_bytes(12)
    assert image.read_bytes() == before                         # the overlay kept the writes
    assert sorted(d.ide.disk.overlay) == [10, 11]
    d.outb(COMMAND, 0xE7)                                       # FLUSH CACHE: the file still untouched
    assert d.inb(STATUS) == DRDY | DSC and image.read_bytes() == before


def test_write_through_changes_the_file(image):
    d = Driver(image, write_through=True)
    d.lba_command(0x31, 3, 1)
    d.bus.write(DATA, 4, 0x44332211)                            # a 32-bit access: two words
    d.write_block(b"\x55" * 508)
    d.outb(COMMAND, 0xE7)
    assert d.inb(STATUS) == DRDY | DSC
    data = image.read_bytes()
    assert data[3 * 512:4 * 512] == bytes([0x11, 0x22, 0x33, 0x44]) + b"\x55" * 508
    assert data[2 * 512:3 * 512] == sector_bytes(2) and data[4 * 512:5 * 512] == sector_bytes(4)
    assert d.ide.disk.overlay == {}


def test_reads_and_writes_with_drq_clear_do_nothing(image):
    before = image.read_bytes()
    d = Driver(image, write_through=True)
    d.bus.write(DATA, 2, 0x1234)
    assert d.bus.read(DATA, 2) == 0
    d.lba_command(0x20, 0, 1)
    d.outb(COMMAND, 0x30)                              # a command while DRQ is set is dropped (QEMU)
    assert d.read_block() == sector_bytes(0)
    assert image.read_bytes() == before


# ---- READ / WRITE MULTIPLE -----------------------------------------------------------------------

def test_set_multiple_and_read_write_multiple_by_blocks(image):
    d = Driver(image)
    d.outb(COUNT, 4)
    d.outb(COMMAND, 0xC6)                              # §8.49: 4 sectors per block
    assert d.inb(STATUS) == DRDY | DSC and d.irqs == 1
    assert d.identify()[59] == 0x0104
    d.irqs = 0
    d.lba_command(0xC4, 20, 10)                        # blocks of 4, 4 and 2 sectors
    got = b""
    for sectors in (4, 4, 2):
        assert d.inb(STATUS) == DRDY | DSC | DRQ
        got += d.read_block(sectors)
    assert got == b"".join(sector_bytes(20 + k) for k in range(10))
    assert d.irqs == 3 and d.inb(STATUS) == DRDY | DSC
    d.irqs = 0
    d.lba_command(0xC5, 100, 6)
    d.write_block(b"\xAA" * 2048)
    assert d.irqs == 1 and d.inb(STATUS) & DRQ
    d.write_block(b"\xBB" * 1024)
    assert d.irqs == 2 and d.inb(STATUS) == DRDY | DSC
    d.lba_command(0x20, 100, 6)
    assert d.read_block(6) == b"\xAA" * 2048 + b"\xBB" * 1024


def test_set_multiple_rejects_bad_counts_and_zero_disables(image):
    d = Driver(image)
    for bad in (3, 32, 255):
        d.outb(COUNT, bad)
        d.outb(COMMAND, 0xC6)
        assert d.inb(STATUS) == DRDY | DSC | ERR and d.inb(ERROR) == ABRT, bad
    assert d.identify()[59] == 0x0110                  # unchanged
    d.outb(COUNT, 0)
    d.outb(COMMAND, 0xC6)
    assert d.inb(STATUS) == DRDY | DSC
    assert d.identify()[59] == 0                       # multiple mode disabled
    d.lba_command(0xC4, 0, 1)                          # READ MULTIPLE then aborts
    assert d.inb(STATUS) == DRDY | DSC | ERR and d.inb(ERROR) == ABRT


# ---- errors --------------------------------------------------------------------------------------

def test_read_past_the_end_is_idnf(image):
    before = image.read_bytes()
    d = Driver(image)
    d.lba_command(0x20, SECTORS, 1)
    assert d.irqs == 1 and d.inb(STATUS) == DRDY | DSC | ERR   # ERR, DRDY stays
    assert d.inb(ERROR) == IDNF
    assert d.bus.read(DATA, 2) == 0
    d.lba_command(0x20, SECTORS - 2, 4)                # the two last sectors, then IDNF at the end
    assert d.read_block(2) == sector_bytes(SECTORS - 2) + sector_bytes(SECTORS - 1)
    assert d.inb(STATUS) == DRDY | DSC | ERR and d.inb(ERROR) == IDNF
    lba = SECTORS
    assert d.task_file() == [2, lba & 0xFF, lba >> 8, 0, LBA_MODE]   # the first bad address
    d.lba_command(0x30, SECTORS - 1, 2)                # a write: the last sector, then IDNF
    d.write_block(b"\x99" * 512)
    assert d.inb(STATUS) == DRDY | DSC | ERR and d.inb(ERROR) == IDNF
    d.lba_command(0x30, 0x0FFFFFFF, 1)                 # the top of LBA28
    assert d.inb(ERROR) == IDNF and d.bus.read(DATA, 2) == 0
    d.lba_command(0x40, SECTORS - 1, 2)                # READ VERIFY across the end
    assert d.inb(ERROR) == IDNF
    d.chs_command(0x20, 0, 0, 0, 1)                    # CHS sector 0 does not exist
    assert d.inb(STATUS) == DRDY | DSC | ERR and d.inb(ERROR) == IDNF
    d.chs_command(0x20, 2, 0, 1, 1)                    # cylinder 2 of 2
    assert d.inb(ERROR) == IDNF
    assert image.read_bytes() == before
    assert sorted(d.ide.disk.overlay) == [SECTORS - 1]


def test_a_disk_beyond_lba28_shows_its_first_0fffffff_sectors(tmp_path):
    path = tmp_path / "big.img"                        # 128 GiB + 8 sectors, sparse
    with open(path, "wb") as f:
        f.truncate(((1 << 28) + 8) * SECTOR_SIZE)
    d = Driver(path)
    w = d.identify()
    assert w[60] | w[61] << 16 == 0x0FFFFFFF           # LBA28's most
    assert (w[1], w[3], w[6]) == (16383, 16, 63)       # over 8.4 GB the default geometry is 16383/16/63
    assert w[57] | w[58] << 16 == 16383 * 16 * 63
    d.lba_command(0x20, 0x0FFFFFFE, 1)                 # the last LBA28 sector
    assert d.inb(STATUS) == DRDY | DSC | DRQ and d.read_block() == bytes(512)
    d.lba_command(0x20, 0x0FFFFFFF, 1)                 # beyond what words 60-61 say
    assert d.inb(STATUS) == DRDY | DSC | ERR and d.inb(ERROR) == IDNF


@pytest.mark.parametrize("command", [0x00, 0x24, 0x34, 0x50, 0xA0, 0xC8, 0xCA, 0xF8, 0xFF])
def test_unknown_and_unsupported_commands_abort(image, command):
    d = Driver(image)                                  # NOP, LBA48 READ/WRITE EXT, FORMAT TRACK,
    d.lba_command(command, 0, 1)                       # PACKET, DMA, READ NATIVE MAX
    assert d.inb(STATUS) == DRDY | DSC | ERR
    assert d.inb(ERROR) == ABRT
    assert d.irqs == 1
    d.lba_command(0x20, 0, 1)                          # the next command clears ERR and the error
    assert d.inb(STATUS) == DRDY | DSC | DRQ and d.inb(ERROR) == 0


def test_read_verify_set_features_flush(image):
    d = Driver(image)
    d.lba_command(0x40, 7, 5)                          # READ VERIFY: no data, an interrupt at the end
    assert d.irqs == 1 and d.inb(STATUS) == DRDY | DSC and d.bus.read(DATA, 2) == 0
    assert d.task_file() == [0, 12, 0, 0, LBA_MODE]
    for count in (0x00, 0x01, 0x08, 0x0C):             # set transfer mode: PIO default, PIO flow control 0-4
        d.outb(FEATURES, 0x03)
        d.outb(COUNT, count)
        d.outb(COMMAND, 0xEF)
        assert d.inb(STATUS) == DRDY | DSC, hex(count)
    for count in (0x0D, 0x20, 0x22, 0x40, 0x45):       # PIO 5, multiword DMA, Ultra DMA: aborted
        d.outb(FEATURES, 0x03)
        d.outb(COUNT, count)
        d.outb(COMMAND, 0xEF)
        assert d.inb(STATUS) == DRDY | DSC | ERR and d.inb(ERROR) == ABRT, hex(count)
    d.outb(FEATURES, 0x82)                             # disable the write cache
    d.outb(COMMAND, 0xEF)
    assert d.inb(STATUS) == DRDY | DSC and not d.identify()[85] & 0x0020
    d.outb(FEATURES, 0x77)                             # an unknown subcommand
    d.outb(COMMAND, 0xEF)
    assert d.inb(ERROR) == ABRT
    d.irqs = 0
    d.outb(COMMAND, 0xE7)
    assert d.irqs == 1 and d.inb(STATUS) == DRDY | DSC


def test_execute_device_diagnostic(image):
    d = Driver(image)
    d.lba_command(0x40, 300, 1)
    d.outb(COMMAND, 0x90)                              # EXECUTE DEVICE DIAGNOSTIC
    assert d.irqs == 2 and d.inb(STATUS) == DRDY | DSC
    assert d.inb(ERROR) == 0x01                        # device 0 passed, device 1 absent
    assert d.task_file() == [1, 1, 0, 0, 0]            # the signature


# ---- reset, interrupts, device 1 -----------------------------------------------------------------

def test_software_reset_aborts_and_leaves_the_signature(image):
    d = Driver(image)
    d.outb(COUNT, 2)
    d.outb(COMMAND, 0xC6)
    d.lba_command(0x20, 40, 2)                         # a read in its data phase
    d.read_words(10)
    assert d.irq
    d.outb(CTL, SRST)                                  # software reset: the drive is held in reset
    assert d.inb(STATUS) & BSY and d.bus.read(CTL, 1) & BSY
    assert d.inb(LBA0) & BSY                           # while BSY the command block reads as Status
    assert not d.irq
    d.outb(COMMAND, 0xEC)                              # taken by no one while BSY
    d.outb(CTL, 0)
    assert d.inb(STATUS) == DRDY | DSC
    assert d.inb(ERROR) == 0x01 and d.task_file() == [1, 1, 0, 0, 0]
    assert not d.irq and d.bus.read(DATA, 2) == 0      # no interrupt, no data left
    assert d.identify()[59] == 0x0102                  # SET MULTIPLE survives a software reset
    d.outb(FEATURES, 0xCC)                             # ... unless reverting to defaults is on
    d.outb(COMMAND, 0xEF)
    d.outb(CTL, SRST)
    d.outb(CTL, 0)
    assert d.identify()[59] == 0x0110


def test_nien_masks_intrq_and_status_read_clears_the_pending_interrupt(image):
    d = Driver(image)
    d.outb(CTL, NIEN)
    d.lba_command(0x40, 0, 1)                          # completes with an interrupt pending
    assert not d.irq and d.irqs == 0                   # Device Control: nIEN releases INTRQ
    d.outb(CTL, 0)
    assert d.irq                                       # the pending interrupt asserts INTRQ again
    d.bus.read(CTL, 1)
    assert d.irq                                       # alternate status does not clear it
    d.inb(STATUS)
    assert not d.irq
    d.outb(CTL, 0)
    assert not d.irq
    d.outb(CTL, NIEN)
    d.lba_command(0x40, 0, 1)
    d.inb(STATUS)                                      # cleared while masked
    d.outb(CTL, 0)
    assert not d.irq
    d.lba_command(0x40, 0, 1)
    assert d.irq
    d.lba_command(0x40, 0, 1)                          # writing Command clears it, then completes
    assert d.irq and d.irqs == 3


def test_absent_device_1(image):
    d = Driver(image)
    d.lba_command(0x40, 0, 1)
    assert d.irq
    d.outb(DEVICE, 0xB0)                               # select device 1
    assert not d.irq                                   # only the selected device drives INTRQ
    assert d.inb(STATUS) == 0 and d.bus.read(CTL, 1) == 0
    assert [d.inb(p) for p in (ERROR, COUNT, LBA0, LBA1, LBA2)] == [0] * 5
    assert d.inb(DEVICE) == 0xB0
    d.outb(COMMAND, 0xEC)                              # ignored: no data, no interrupt
    assert d.bus.read(DATA, 2) == 0 and d.inb(STATUS) == 0 and not d.irq
    d.outb(LBA0, 0x42)                                 # the task file is shared
    d.outb(DEVICE, 0xA0)
    assert d.irq                                       # device 0's interrupt was pending all along
    assert d.inb(LBA0) == 0x42 and d.inb(STATUS) == DRDY | DSC
    d.outb(DEVICE, 0xB0)
    d.outb(COMMAND, 0x90)                              # both devices execute DIAGNOSTIC
    assert d.inb(DEVICE) == 0 and d.irq                # the signature selects device 0
    assert d.inb(STATUS) == DRDY | DSC and d.inb(ERROR) == 0x01


def test_wide_accesses_to_byte_registers_are_split(image):
    d = Driver(image)
    d.bus.write(LBA0, 2, 0x3412)                       # LBA low and mid in one word access
    assert d.inb(LBA0) == 0x12 and d.inb(LBA1) == 0x34
    assert d.bus.read(COUNT, 4) == 0x00341201          # count 1, LBA low, mid, high (0)
    assert d.bus.read(CTL, 2) == 0xFF00 | DRDY | DSC            # 0x3F7 is not the drive's


# ---- two drives: master (device 0) and slave (device 1) -------------------------------------------

SLAVE_LBA = LBA_MODE | 0x10    # Device: LBA, device 1 (xv6: 0xE0 | 1 << 4)
SLAVE_CHS = CHS_MODE | 0x10


def xv6_probe(d) -> bool:
    """xv6's ideinit: select device 1, poll Status for a nonzero value up to 1000 times, select device 0."""
    d.outb(DEVICE, 0xE0 | 1 << 4)
    found = any(d.inb(STATUS) != 0 for _ in range(1000))
    d.outb(DEVICE, 0xE0)
    return found


def test_slave_probe_as_xv6_does_it(image, slave_image):
    assert not xv6_probe(Driver(image))                # no slave: its Status reads 0
    d = Driver(image, slave=slave_image)
    d.outb(DEVICE, SLAVE_LBA)
    assert d.inb(STATUS) == DRDY | DSC                 # the slave answers: ready (idewait: BSY clear, DRDY set)
    assert d.inb(ERROR) == 0x01                        # its power-on diagnostic code: device 1 passed
    assert d.task_file() == [1, 1, 0, 0, SLAVE_LBA]    # the signature, and Device as just written
    assert xv6_probe(d)
    assert d.ide.selected == 0 and d.inb(STATUS) == DRDY | DSC


def test_identify_of_each_drive_gives_its_own_size_and_serial(image, slave_image):
    d = Driver(image, slave=slave_image)
    master, slave = d.identify(CHS_MODE), d.identify(SLAVE_CHS)
    assert master[60] | master[61] << 16 == SECTORS
    assert slave[60] | slave[61] << 16 == SLAVE_SECTORS                # §8.15.35: the slave's own capacity
    assert (slave[1], slave[3], slave[6]) == (3, 16, 63)               # its own default geometry
    assert ata_string(master[10:20]) == "VC00001".ljust(20)
    assert ata_string(slave[10:20]) == "VC00002".ljust(20)             # serial numbers differ
    assert ata_string(slave[27:47]) == ata_string(master[27:47]) == "VMCORE HARDDISK".ljust(40)
    raw = b"".join(v.to_bytes(2, "little") for v in slave)
    assert slave[255] & 0xFF == 0xA5 and sum(raw) & 0xFF == 0          # integrity word
    assert d.ide.drives[1].identify_data() == raw and d.ide.drives[1].disk.sectors == SLAVE_SECTORS


def test_reads_and_writes_land_in_each_drives_image(image, slave_image):
    master_before, slave_before = image.read_bytes(), slave_image.read_bytes()
    d = Driver(image, slave=slave_image)
    d.lba_command(0x20, 3, 2, device=SLAVE_LBA)        # READ SECTORS on the slave
    assert d.read_block(2) == slave_bytes(3) + slave_bytes(4)
    d.lba_command(0x20, 3, 1)                          # the same address on the master
    assert d.read_block() == sector_bytes(3)
    d.lba_command(0x30, 7, 1, device=SLAVE_LBA)        # WRITE SECTORS on the slave (xv6 writes right away)
    d.write_block(b"\xA1" * 512)
    assert d.inb(STATUS) == DRDY | DSC
    d.lba_command(0xC5, 7, 2)                          # WRITE MULTIPLE on the master, same LBA
    d.write_block(b"\xB2" * 1024)
    assert d.inb(STATUS) == DRDY | DSC
    d.lba_command(0xC4, 6, 3, device=SLAVE_LBA)        # READ MULTIPLE on the slave
    assert d.read_block(3) == slave_bytes(6) + b"\xA1" * 512 + slave_bytes(8)
    d.lba_command(0x20, 6, 3)
    assert d.read_block(3) == sector_bytes(6) + b"\xB2" * 1024
    assert sorted(d.ide.drives[0].disk.overlay) == [7, 8]              # one overlay per drive
    assert sorted(d.ide.drives[1].disk.overlay) == [7]
    assert image.read_bytes() == master_before and slave_image.read_bytes() == slave_before
    d.lba_command(0x20, SLAVE_SECTORS - 1, 1, device=SLAVE_LBA)        # the slave is the larger disk
    assert d.read_block() == slave_bytes(SLAVE_SECTORS - 1)
    d.lba_command(0x20, SLAVE_SECTORS - 1, 1)                          # beyond the master's end: IDNF
    assert d.inb(STATUS) == DRDY | DSC | ERR and d.inb(ERROR) == IDNF


def test_write_through_on_the_slave(image, slave_image):
    d = Driver(image, write_through=True, slave=slave_image)
    d.lba_command(0x30, 2, 1, device=SLAVE_LBA)
    d.write_block(b"\xC3" * 512)
    d.outb(COMMAND, 0xE7)                              # FLUSH CACHE on the slave
    assert d.inb(STATUS) == DRDY | DSC
    assert slave_image.read_bytes()[2 * 512:3 * 512] == b"\xC3" * 512
    assert image.read_bytes()[2 * 512:3 * 512] == sector_bytes(2)


def test_dev_bit_selects_registers_status_and_intrq(image, slave_image):
    d = Driver(image, slave=slave_image)
    d.lba_command(0x40, 100, 5, device=SLAVE_LBA)      # READ VERIFY on the slave: completes, interrupts
    assert d.irq and d.irqs == 1
    assert d.task_file() == [0, 105, 0, 0, SLAVE_LBA]  # the slave's task file: the next address
    d.outb(DEVICE, LBA_MODE)                           # select the master
    assert not d.irq                                   # only the selected device drives INTRQ
    assert d.task_file() == [5, 100, 0, 0, LBA_MODE]   # the master's copy: the values written
    assert d.inb(STATUS) == DRDY | DSC                 # the master's Status: does not clear the slave's
    d.outb(DEVICE, SLAVE_LBA)
    assert d.irq and d.irqs == 2                       # the slave's interrupt shows again
    assert d.bus.read(CTL, 1) == DRDY | DSC and d.irq
    assert d.inb(STATUS) == DRDY | DSC and not d.irq   # its Status read clears it
    d.outb(COMMAND, 0xC6)                              # SET MULTIPLE (count 0: disable) on the slave only
    assert d.identify(SLAVE_CHS)[59] == 0 and d.identify(CHS_MODE)[59] == 0x0110
    d.outb(COUNT, 32)                                  # INITIALIZE DEVICE PARAMETERS on the slave only
    d.outb(DEVICE, SLAVE_CHS | 3)
    d.outb(COMMAND, 0x91)
    assert (d.identify(SLAVE_CHS)[55], d.identify(SLAVE_CHS)[56]) == (4, 32)
    assert (d.identify(CHS_MODE)[55], d.identify(CHS_MODE)[56]) == (16, 63)
    d.chs_command(0x20, 0, 1, 1, 1)                    # master CHS 0/1/1 in 16 x 63
    assert d.read_block() == sector_bytes(63)
    d.outb(DEVICE, SLAVE_CHS | 1)                      # slave CHS 0/1/1 in 4 x 32
    d.outb(COMMAND, 0x20)
    assert d.read_block() == slave_bytes(32)
    d.outb(DEVICE, SLAVE_LBA)
    d.outb(COMMAND, 0xC4)                              # READ MULTIPLE: the slave's multiple mode is off
    assert d.inb(ERROR) == ABRT
    d.outb(DEVICE, LBA_MODE)
    assert d.inb(ERROR) == 0                           # the master's Error is its own


def test_data_port_follows_the_selected_drive(image, slave_image):
    d = Driver(image, slave=slave_image)
    d.lba_command(0x20, 9, 1, device=SLAVE_LBA)
    first = d.read_words(10)
    assert d.bus.read(CTL, 1) == DRDY | DSC | DRQ
    d.outb(DEVICE, LBA_MODE)
    assert d.bus.read(CTL, 1) == DRDY | DSC and d.bus.read(DATA, 2) == 0   # the master has no DRQ
    d.outb(DEVICE, SLAVE_LBA)
    rest = d.read_words(246)
    assert b"".join(w.to_bytes(2, "little") for w in first + rest) == slave_bytes(9)


def test_software_reset_resets_both_drives(image, slave_image):
    d = Driver(image, slave=slave_image)
    for device in (SLAVE_LBA, LBA_MODE):
        d.outb(COUNT, 4)
        d.outb(DEVICE, device)
        d.outb(COMMAND, 0xC6)                          # SET MULTIPLE 4 on each
    d.lba_command(0x20, 1, 2, device=SLAVE_LBA)        # the slave in a data phase, its interrupt pending
    d.read_words(3)
    assert d.irq
    d.outb(CTL, SRST)                                  # SRST reaches both devices
    assert d.inb(STATUS) & BSY and not d.irq           # the slave (selected) is busy
    d.outb(DEVICE, LBA_MODE)                           # taken by no one while in reset
    assert d.ide.selected == 1 and d.bus.read(CTL, 1) & BSY
    d.outb(CTL, 0)
    assert d.ide.selected == 0                         # the signature selects device 0
    assert d.inb(STATUS) == DRDY | DSC and d.inb(ERROR) == 0x01        # device 0 passed, device 1 passed
    assert d.task_file() == [1, 1, 0, 0, 0]
    d.outb(DEVICE, 0x10)                               # device 1, and nothing else, in Device
    assert d.inb(STATUS) == DRDY | DSC and d.inb(ERROR) == 0x01        # device 1 passed
    assert d.task_file() == [1, 1, 0, 0, 0x10]         # its signature
    assert not d.irq and d.bus.read(DATA, 2) == 0      # its data phase ended, no interrupt
    assert d.identify(SLAVE_CHS)[59] == 0x0104         # SET MULTIPLE survives on both
    assert d.identify(CHS_MODE)[59] == 0x0104


def test_execute_device_diagnostic_with_two_drives(image, slave_image):
    d = Driver(image, slave=slave_image)
    d.lba_command(0x00, 0, 1, device=SLAVE_LBA)        # NOP: the slave aborts, its interrupt pending
    assert d.inb(ERROR) == ABRT
    d.lba_command(0x40, SECTORS, 1)                    # the master: IDNF beyond its end
    assert d.inb(ERROR) == IDNF
    d.irqs = 0
    d.outb(DEVICE, SLAVE_LBA)
    d.outb(COMMAND, 0x90)                              # EXECUTE DEVICE DIAGNOSTIC with device 1 selected
    assert d.ide.selected == 0 and d.inb(DEVICE) == 0  # both executed it; DEV cleared: device 0 selected
    assert d.irqs == 1                                 # device 0 ends it with an interrupt
    assert d.inb(STATUS) == DRDY | DSC
    assert d.inb(ERROR) == 0x01                        # device 0 passed, device 1 passed (PDIAG-)
    assert d.task_file() == [1, 1, 0, 0, 0]
    d.outb(DEVICE, 0x10)
    assert not d.irq                                   # device 1 does not interrupt
    assert d.inb(STATUS) == DRDY | DSC and d.inb(ERROR) == 0x01        # device 1 passed, its ABRT gone
    assert d.task_file() == [1, 1, 0, 0, 0x10]


def test_slave_commands_raise_intrq_with_nien_clear(image, slave_image):
    """xv6's idestart: Device Control 0 (nIEN clear), then READ SECTORS / WRITE SECTORS on drive 1;
    ideintr reads the data once idewait (BSY clear, DRDY set) is done."""
    d = Driver(image, slave=slave_image)
    d.outb(CTL, 0)
    d.lba_command(0x20, 40, 1, device=SLAVE_LBA)
    assert d.irq and d.irqs == 1                       # PIO data-in: the sector is ready
    assert d.inb(STATUS) == DRDY | DSC | DRQ and not d.irq
    assert b"".join(d.bus.read(DATA, 4).to_bytes(4, "little") for _ in range(128)) == slave_bytes(40)
    d.lba_command(0x30, 41, 1, device=SLAVE_LBA)
    for k in range(128):                               # outsl right after the command
        d.bus.write(DATA, 4, 0x01020304 + k)
    assert d.irq and d.irqs == 2                       # PIO data-out: the completion interrupt
    assert d.inb(STATUS) == DRDY | DSC and not d.irq
    d.outb(CTL, NIEN)
    d.lba_command(0x40, 0, 1, device=SLAVE_LBA)
    assert not d.irq                                   # nIEN reaches the slave too
    d.outb(CTL, 0)
    assert d.irq and d.irqs == 3
    assert d.ide.drives[1].disk.overlay[41][:8] == bytes.fromhex("0403020105030201")


def test_slave_alone(slave_image):
    d = Driver(None, slave=slave_image)                # QEMU's -hdb without -hda
    assert d.inb(STATUS) == 0 and d.inb(ERROR) == 0    # the absent master reads 0
    d.outb(COMMAND, 0xEC)
    assert not d.irq and d.bus.read(DATA, 2) == 0
    assert xv6_probe(d)
    w = d.identify(SLAVE_CHS)
    assert w[60] | w[61] << 16 == SLAVE_SECTORS
    d.lba_command(0x20, 0, 1, device=SLAVE_LBA)
    assert d.irq and d.read_block() == slave_bytes(0)
    assert d.ide.disk is None and d.ide.drives[0] is None


def test_controller_rejects_bad_drives(image, slave_image):
    with pytest.raises(ConfigError, match="needs a DiskImage, not str"):
        IdeController(str(image))
    ide = IdeController(DiskImage(image))
    with pytest.raises(ConfigError, match="device 0 .master. or 1 .slave., not 2"):
        ide.attach(2, DiskImage(slave_image))
    with pytest.raises(ConfigError, match="the IDE master is attached already"):
        ide.attach(0, DiskImage(slave_image))
    assert ide.attach(1, DiskImage(slave_image)) is ide.drives[1] and ide.drives[1].name == "slave"


def test_export_and_restore_with_two_drives(image, slave_image):
    d = Driver(image, slave=slave_image)
    d.lba_command(0x30, 5, 1)                          # master: a write to its overlay
    d.write_block(b"\x66" * 512)
    d.lba_command(0x30, 6, 1, device=SLAVE_LBA)        # slave: a write, then a read in its data phase
    d.write_block(b"\x99" * 512)
    d.outb(COUNT, 2)
    d.outb(COMMAND, 0xC6)
    d.lba_command(0xC4, 5, 3, device=SLAVE_LBA)
    d.read_words(300)
    d.outb(CTL, NIEN)
    state = d.ide.export_state()
    assert state["control"] == NIEN and state["device"] == SLAVE_LBA
    e = Driver(image, slave=slave_image)
    e.ide.restore_state(state)
    assert e.ide.selected == 1 and not e.irq           # nIEN restored
    rest = e.read_words(212)
    assert b"".join(w.to_bytes(2, "little") for w in rest) == (slave_bytes(5) + b"\x99" * 512)[600:]
    assert e.inb(STATUS) == DRDY | DSC | DRQ and e.read_block() == slave_bytes(7)
    assert e.ide.drives[0].disk.overlay == {5: b"\x66" * 512}
    assert e.ide.drives[1].disk.overlay == {6: b"\x99" * 512}
    assert e.identify(CHS_MODE)[59] == 0x0110 and e.identify(SLAVE_CHS)[59] == 0x0102
    with pytest.raises(ConfigError, match="has slave drive and none is attached"):
        Driver(image).ide.restore_state(state)
    with pytest.raises(ConfigError, match="has no master drive and one is attached"):
        Driver(image, slave=slave_image).ide.restore_state(dict(state, drives=[None, state["drives"][1]]))
    f = Driver(image, slave=slave_image)
    bad = [state["drives"][0], dict(state["drives"][1], disk={"sectors": 1, "overlay": {}})]
    with pytest.raises(DiskImageError):
        f.ide.restore_state(dict(state, drives=bad))
    assert f.ide.drives[0].disk.overlay == {} and f.ide.selected == 0  # nothing restored


# ---- state ---------------------------------------------------------------------------------------

def test_export_and_restore_mid_transfer_with_the_overlay(image):
    d = Driver(image)
    d.lba_command(0x30, 50, 1)
    d.write_block(b"\x77" * 512)
    d.lba_command(0x20, 49, 3)
    first = d.read_block()
    d.read_words(100)
    state = d.ide.export_state()
    e = Driver(image)
    e.ide.restore_state(state)
    assert e.irq == d.irq
    rest = e.read_words(156)
    assert first == sector_bytes(49)
    assert b"".join(w.to_bytes(2, "little") for w in rest) == (b"\x77" * 512)[200:]
    assert e.read_block() == sector_bytes(51)
    assert e.ide.disk.overlay == {50: b"\x77" * 512}
    with pytest.raises(ConfigError):
        e.ide.restore_state({"status": 0x50})
    master = state["drives"][0]
    with pytest.raises(ConfigError, match="bad data buffer"):
        e.ide.restore_state(dict(state, drives=[dict(master, buffer="00" * 3), None]))
    with pytest.raises(DiskImageError):
        e.ide.restore_state(dict(state, drives=[dict(master, disk={"sectors": 5, "overlay": {}}), None]))
    with pytest.raises(ConfigError, match="has slave drive and none is attached"):
        e.ide.restore_state(dict(state, drives=[master, master]))
    assert e.ide.disk.overlay == {50: b"\x77" * 512}            # a refused state changes nothing


# ---- the disk image --------------------------------------------------------------------------------

def test_disk_image_errors(tmp_path):
    with pytest.raises(DiskImageError, match="cannot open.*No such file"):
        DiskImage(tmp_path / "missing.img")
    (tmp_path / "empty.img").write_bytes(b"")
    with pytest.raises(DiskImageError, match="empty"):
        DiskImage(tmp_path / "empty.img")
    (tmp_path / "odd.img").write_bytes(bytes(1000))
    with pytest.raises(DiskImageError, match="1000 bytes, not a multiple of the 512-byte sector"):
        DiskImage(tmp_path / "odd.img")
    with pytest.raises(DiskImageError, match="cannot open"):
        DiskImage(tmp_path)                            # a directory
    assert issubclass(DiskImageError, vmcore.VmError) and DiskImageError.code == "disk"
    path = tmp_path / "ok.img"
    path.write_bytes(bytes(1024))
    disk = DiskImage(path)
    assert disk.sectors == 2
    with pytest.raises(DiskImageError, match="outside the image"):
        disk.read(2)
    with pytest.raises(DiskImageError, match="outside the image"):
        disk.write(1, bytes(1024))
    with pytest.raises(DiskImageError, match="whole sectors"):
        disk.write(0, bytes(100))
    assert disk.overlay == {}
    if os.geteuid() != 0:                              # root reads a mode-000 file anyway
        path.chmod(0)
        with pytest.raises(DiskImageError, match="Permission denied"):
            DiskImage(path)
        path.chmod(0o600)
    path.chmod(0o400)
    if os.geteuid() != 0:
        with pytest.raises(DiskImageError, match="read-write"):
            DiskImage(path, write_through=True)
    assert DiskImage(path).read(0, 2) == bytes(1024)


# ---- the machine: PCI 00:01.1, IRQ 14, CLI -------------------------------------------------------

def cfg(m, dev, fn, reg, size=4, value=None):
    m.bus.write(0xCF8, 4, 0x80000000 | dev << 11 | fn << 8 | (reg & 0xFC))
    if value is not None:
        m.bus.write(0xCFC + (reg & 3), size, value)
    return m.bus.read(0xCFC + (reg & 3), size)


def test_piix3_ide_pci_function(image):
    m = vmcore.Machine(memory_mb=2, mode="bare")
    assert cfg(m, 1, 1, 0) == 0xFFFFFFFF                           # no function before a disk
    m.attach_disk(image)
    assert cfg(m, 1, 1, 0x00) == 0x70108086                        # 8086:7010
    assert cfg(m, 1, 1, 0x08) == 0x01018000                        # class 01 01 80, revision 00
    assert cfg(m, 1, 1, 0x0E, 1) == 0x00                           # header type 0
    assert cfg(m, 1, 1, 0x06, 2) == 0x0280                         # fast back-to-back, DEVSEL medium
    assert cfg(m, 1, 1, 0x04, 2, 0xFFFF) == 0x0005                 # I/O space, bus master writable
    assert cfg(m, 1, 1, 0x20) == 0x00000001                        # BMIBA: I/O, at 0
    assert cfg(m, 1, 1, 0x20, 4, 0xFFFFFFFF) == 0xFFFFFFF1         # size probe: 16 bytes of I/O (QEMU's 32 bits)
    assert cfg(m, 1, 1, 0x20, 4, 0xC000) == 0x0000C001
    assert cfg(m, 1, 1, 0x40, 4, 0x8000A307) == 0x8000A307         # IDETIM primary and secondary
    assert cfg(m, 1, 1, 0x44, 1, 0x5A) == 0x5A                     # SIDETIM
    assert cfg(m, 1, 1, 0x00, 4, 0) == 0x70108086                  # IDs are read only
    assert cfg(m, 1, 1, 0x08, 4, 0) == 0x01018000
    assert cfg(m, 0, 0, 0) == 0x12378086                           # the host bridge is still there
    assert m.bus.export_state()["pci-config"]["functions"]["00:01.1"]


def test_attach_disk_wires_irq_14_and_its_state(image, tmp_path):
    m = vmcore.Machine(memory_mb=2, mode="bare")
    ide = m.attach_disk(image)
    with pytest.raises(ConfigError, match="attached already"):
        m.attach_disk(image)
    assert m.pic.lines[14] is ide.irq
    m.bus.write(0x1F7, 1, 0x40)                        # READ VERIFY of sector 1: completes, interrupts
    assert m.pic.slave.export_state()["lines"] & 0x40  # slave IR6 = IRQ 14
    m.bus.read(0x1F7, 1)
    assert not m.pic.slave.export_state()["lines"] & 0x40
    assert "ide0" in m.bus.export_state()
    with pytest.raises(DiskImageError):
        vmcore.Machine(memory_mb=2, mode="bare").attach_disk(tmp_path / "none.img")
    with pytest.raises(ConfigError, match="devices"):
        vmcore.Machine(memory_mb=2, mode="bare", devices=False).attach_disk(image)


def test_attach_disk_as_the_slave(image, slave_image):
    m = vmcore.Machine(memory_mb=2, mode="bare")
    ide = m.attach_disk(slave_image, drive=1)          # a slave first: the channel, the PCI function
    assert m.ide is ide and ide.drives[0] is None and ide.drives[1].disk.path == slave_image
    assert cfg(m, 1, 1, 0x00) == 0x70108086
    assert m.attach_disk(image) is ide and ide.drives[0].disk.path == image    # then the master, same channel
    for drive, path in ((0, slave_image), (1, image)):
        with pytest.raises(ConfigError, match=f"attached already as the primary {('master', 'slave')[drive]}"):
            m.attach_disk(path, drive=drive)
    for bad in (2, -1, "1", True):
        with pytest.raises(ConfigError, match="drive is 0"):
            m.attach_disk(image, drive=bad)
    m.bus.write(0x1F6, 1, 0xF0)                        # device 1, LBA 0
    m.bus.write(0x1F7, 1, 0x40)                        # READ VERIFY on the slave: IRQ 14
    assert m.pic.slave.export_state()["lines"] & 0x40
    m.bus.write(0x1F6, 1, 0xE0)                        # selecting the master releases INTRQ
    assert not m.pic.slave.export_state()["lines"] & 0x40
    m.bus.write(0x1F6, 1, 0xF0)
    assert m.bus.read(0x1F7, 1) == DRDY | DSC and not m.pic.slave.export_state()["lines"] & 0x40
    state = m.bus.export_state()["ide0"]
    assert [d["disk"]["sectors"] for d in state["drives"]] == [SECTORS, SLAVE_SECTORS]


def test_cli_runs_a_rom_with_a_disk_and_prints_the_cga_screen(image, tmp_path, capsys):
    """`vmcore run --bios ROM -hda IMG`: a real-mode ROM reads sector 0 by PIO, puts its first
    bytes and '☺ IDE' on the screen, writes sector 1 and powers off."""
    image.write_bytes(b"DISK0 OK" + image.read_bytes()[8:])
    rom = assemble_text(ROM, "ide-rom", kind="ide-guests")
    assert len(rom) == 0x10000
    (tmp_path / "rom.bin").write_bytes(rom)
    before = image.read_bytes()
    status = cli.main(["run", "--bios", str(tmp_path / "rom.bin"), "-hda", str(image), "--count", "100000"])
    out = capsys.readouterr().out
    assert status == 0x10, out                         # the ROM's debug-exit value
    assert "disk disk.img (2016 sectors, writes kept in memory)" in out
    screen = out.split("--- CGA screen (80x25 text at 0xB8000) ---\n")[1].split("\n---")[0]
    assert screen == "DISK0 OK\n\n☺ IDE"
    assert image.read_bytes() == before
    status = cli.main(["run", "--bios", str(tmp_path / "rom.bin"), "--disk", str(image), "--disk-write"])
    assert status == 0x10 and image.read_bytes()[512:520] == b"WRITTEN!"    # sector 1, written through
    assert cli.main(["run", "--bios", str(tmp_path / "rom.bin"), "--disk", str(tmp_path / "none.img")]) == 2
    assert "vmcore: error:" in capsys.readouterr().err
    assert cli.main(["run", "--bios", str(tmp_path / "rom.bin"), "--disk-write"]) == 2


# A 64 KiB ROM: at F000:0000 real-mode code, at F000:FFF0 the jump to it. It reads sector 0 of
# the disk (LBA) into 0x7C00, copies its first 8 bytes onto row 0 of the CGA screen, writes
# "☺ IDE" on row 2, writes sector 1 as "WRITTEN!" + zeros, and exits through port 0xF4 with 0x10
# (the process's status), or 0x7F on an error.
ROM = r"""
bits 16
org 0
start:
    cli
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7000
    mov dx, 0x1F6
    mov al, 0xE0
    out dx, al
    mov dx, 0x1F2
    mov al, 1
    out dx, al
    inc dx
    xor al, al
    out dx, al              ; LBA low
    inc dx
    out dx, al
    inc dx
    out dx, al
    mov dx, 0x1F7
    mov al, 0x20            ; READ SECTORS
    out dx, al
.wait:
    in al, dx
    test al, 0x80
    jnz .wait
    test al, 0x01
    jnz fail
    test al, 0x08
    jz fail
    mov di, 0x7C00
    mov cx, 256
    mov dx, 0x1F0
    rep insw
    mov ax, 0xB800
    mov es, ax
    xor di, di
    mov si, 0x7C00
    mov cx, 8
    mov ah, 0x07
.copy:
    lodsb
    stosw
    loop .copy
    mov di, 2 * 160
    mov ax, 0x0701
    stosw
    mov al, ' '
    stosw
    mov al, 'I'
    stosw
    mov al, 'D'
    stosw
    mov al, 'E'
    stosw
    ; WRITE SECTORS: sector 1 = "WRITTEN!" and zeros
    mov dx, 0x1F2
    mov al, 1
    out dx, al
    inc dx
    out dx, al              ; LBA low = 1
    mov dx, 0x1F7
    mov al, 0x30
    out dx, al
.wait_drq:
    in al, dx
    test al, 0x08
    jz .wait_drq
    mov dx, 0x1F0
    mov ax, 'WR'
    out dx, ax
    mov ax, 'IT'
    out dx, ax
    mov ax, 'TE'
    out dx, ax
    mov ax, 'N!'
    out dx, ax
    xor ax, ax
    mov cx, 252
.zeros:
    out dx, ax
    loop .zeros
    mov dx, 0x1F7
.wait_done:
    in al, dx
    test al, 0x88
    jnz .wait_done
    test al, 0x01
    jnz fail
    mov al, 0xE7            ; FLUSH CACHE
    out dx, al
    mov al, 0x10
    out 0xF4, al
    hlt
fail:
    mov al, 0x7F
    out 0xF4, al
    hlt
    times 0xFFF0 - ($ - $$) db 0
    jmp 0xF000:start
    times 0x10000 - ($ - $$) db 0
"""


# ---- guests --------------------------------------------------------------------------------------

# flat 32-bit, paging off, polling: IDENTIFY into IDENT, READ SECTORS of sector 0 into SECTOR by
# 32-bit INSD, the dword sum of the sector into RESULT, IDENTIFY words 60-61 into RESULT + 4, the
# sum in hex on COM1; HLT. On an error RESULT = 0xDEADDEAD.
POLL_GUEST = r"""
IDENT equ 0x20000
SECTOR equ 0x21000
RESULT equ 0x22000
start:
    mov dx, 0x1F6
    mov al, 0xA0
    out dx, al
    mov dx, 0x1F7
    mov al, 0xEC            ; IDENTIFY DEVICE
    out dx, al
.ident:
    in al, dx
    test al, 0x80
    jnz .ident
    test al, 0x08
    jz fail
    mov edi, IDENT
    mov ecx, 256
    mov dx, 0x1F0
    rep insw
    mov dx, 0x1F2
    mov al, 1
    out dx, al
    inc dx
    xor al, al
    out dx, al
    inc dx
    out dx, al
    inc dx
    out dx, al
    inc dx
    mov al, 0xE0
    out dx, al
    inc dx
    mov al, 0x20            ; READ SECTORS, LBA 0
    out dx, al
.read:
    in al, dx
    test al, 0x80
    jnz .read
    test al, 0x01
    jnz fail
    mov edi, SECTOR
    mov ecx, 128
    mov dx, 0x1F0
    rep insd
    mov dx, 0x1F7
    in al, dx
    test al, 0x08           ; all read: DRQ clear
    jnz fail
    xor eax, eax
    mov esi, SECTOR
    mov ecx, 128
.sum:
    add eax, [esi]
    add esi, 4
    loop .sum
    mov [RESULT], eax
    mov ebx, [IDENT + 120]
    mov [RESULT + 4], ebx
    mov ebx, eax
    mov ecx, 8
    mov dx, 0x3F8
.hex:
    rol ebx, 4
    mov al, bl
    and al, 0x0F
    add al, '0'
    cmp al, '9'
    jbe .digit
    add al, 'a' - '9' - 1
.digit:
    out dx, al
    loop .hex
    mov al, 10
    out dx, al
    hlt
fail:
    mov dword [RESULT], 0xDEADDEAD
    hlt
"""


def sector_sum(data: bytes) -> int:
    return sum(struct.unpack("<128I", data)) & 0xFFFFFFFF


@pytest.mark.parametrize("mode", ["bare", "bt", "trap"])
def test_guest_identifies_and_reads_sector_0_by_polling(image, mode):
    code = assemble_text("bits 32\norg 0x10000\n" + POLL_GUEST, "ide-poll", kind="ide-guests")
    m = vmcore.Machine(memory_mb=4, mode=mode)
    m.attach_disk(image)
    m.mem_write(0x10000, code)
    m.reg_write("eip", 0x10000)
    m.reg_write("esp", 0x80000)
    r = m.run(count=10**6, timeout=60)
    assert r.exit is Exit.HLT, r.reason
    result, total = struct.unpack("<II", m.mem_read(0x22000, 8))
    assert result == sector_sum(sector_bytes(0)) and total == SECTORS
    assert m.mem_read(0x20000, 512) == m.ide.drives[0].identify_data()
    assert r.console == f"{result:08x}\n"


# flat 32-bit with the 8259A pair programmed (IRQ 14 = vector 0x2E) and interrupts on: READ
# MULTIPLE of 5 sectors at LBA 7 with 2 sectors a block; the IRQ 14 handler reads Status (which
# acknowledges the drive), counts in TICKS and sends EOI to both chips; the main loop waits for
# each interrupt with STI; HLT and reads each block by INSW into 0x10000.
IRQ_MAIN = r"""
    mov dx, 0x1F2
    mov al, 2
    out dx, al
    mov dx, 0x1F7
    mov al, 0xC6            ; SET MULTIPLE MODE 2
    out dx, al
    mov ebx, 1
    call wait_irq
    mov dx, 0x1F2
    mov al, 5
    out dx, al
    inc dx
    mov al, 7
    out dx, al              ; LBA 7
    inc dx
    xor al, al
    out dx, al
    inc dx
    out dx, al
    inc dx
    mov al, 0xE0
    out dx, al
    inc dx
    mov al, 0xC4            ; READ MULTIPLE
    out dx, al
    mov edi, 0x10000
    mov esi, 2
.block:
    inc ebx
    call wait_irq
    mov ecx, 512
    cmp esi, 4
    jne .whole
    mov ecx, 256            ; the last block: one sector
.whole:
    mov dx, 0x1F0
    rep insw
    inc esi
    cmp esi, 5
    jne .block
    cli
    hlt
wait_irq:                   ; until [TICKS] >= ebx, halting with interrupts on
    cli
    cmp [0x600], ebx
    jae .got
    sti
    hlt
    jmp wait_irq
.got:
    sti
    ret
"""

IRQ14_HANDLER = r"""
    push eax
    push edx
    mov dx, 0x1F7
    in al, dx               ; Status: clears the drive's interrupt
    mov [0x604], al
    inc dword [0x600]
    mov al, 0x20
    out 0xA0, al            ; EOI to the slave, then the master
    out 0x20, al
    pop edx
    pop eax
    iretd
"""


@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_guest_reads_multiple_blocks_on_irq_14(image, mode, monkeypatch):
    import pc_guest as g

    monkeypatch.setenv("VMCORE_MODE", mode)
    pic = g.pic_init(0xFB, 0xBF)                       # master: IR2 (the slave) only; slave: IR6 only
    main = pic + assemble_text(f"bits 32\norg {g.CODE + len(pic):#x}\n" + IRQ_MAIN, "ide-irq-main",
                               kind="ide-guests")
    handler = assemble_text(f"bits 32\norg {g.HANDLERS:#x}\n" + IRQ14_HANDLER, "ide-irq14", kind="ide-guests")
    m = g.machine(main, {0x2E: handler}, memory_mb=2)
    assert m.mode == mode
    m.attach_disk(image)
    r = m.run(count=10**6, timeout=60)
    assert r.exit is Exit.HLT and "interrupts enabled" not in r.reason, r.reason
    assert g.ticks(m) == 4                             # SET MULTIPLE, then one per block of 2, 2, 1
    assert m.mem_read(0x604, 1)[0] == DRDY | DSC | DRQ  # the handler saw the last block ready
    assert m.mem_read(0x10000, 5 * 512) == b"".join(sector_bytes(7 + k) for k in range(5))
    assert m.bus.read(0x1F7, 1) == DRDY | DSC


def test_cli_kernel_takes_a_disk(image, tmp_path, capfd):
    from bzimage_guest import bzimage

    kernel = tmp_path / "bzImage"
    kernel.write_bytes(bzimage())
    status = cli.main(["run", "--kernel", str(kernel), "-hda", str(image), "--disk-write", "-m", "32",
                       "--mode", "bare"])
    out = capfd.readouterr().out
    assert status == 3 and "disk disk.img (2016 sectors, writes to the file)" in out


def test_cli_takes_a_master_and_a_slave(image, slave_image, tmp_path, capsys):
    """`-hda`/`-hdb` as QEMU spells them, or `--disk` twice (master first); --disk-write for all."""
    rom = assemble_text(ROM, "ide-rom", kind="ide-guests")
    (tmp_path / "rom.bin").write_bytes(rom)
    run = ["run", "--bios", str(tmp_path / "rom.bin"), "--count", "100000"]
    slave_before = slave_image.read_bytes()
    assert cli.main(run + ["-hdb", str(slave_image), "-hda", str(image)]) == 0x10
    out = capsys.readouterr().out
    assert "disks disk.img (master, 2016 sectors) and slave.img (slave, 3024 sectors), writes kept in memory" in out
    assert cli.main(run + ["--disk", str(image), "--disk", str(slave_image), "--disk-write"]) == 0x10
    out = capsys.readouterr().out
    assert "disks disk.img (master, 2016 sectors) and slave.img (slave, 3024 sectors), writes to the files" in out
    assert image.read_bytes()[512:520] == b"WRITTEN!"            # the ROM wrote the master's sector 1
    assert slave_image.read_bytes() == slave_before                # and nothing on the slave
    assert cli.main(run + ["-hdb", str(slave_image), "--disk", str(image)]) == 0x10   # --disk takes the free master
    assert "disks disk.img (master" in capsys.readouterr().out
    assert cli.main(run + ["-hdb", str(slave_image)]) == 0x7F      # the ROM reads the absent master: Status 0
    assert "disk slave.img (slave, 3024 sectors), writes kept in memory" in capsys.readouterr().out
    for bad in (["--disk", str(image)] * 3, ["-hda", str(image), "-hda", str(image)],
                ["-hda", str(image), "-hdb", str(image), "--disk", str(image)]):
        assert cli.main(run + bad) == 2
        assert "vmcore: error:" in capsys.readouterr().err


# flat 32-bit, the 8259A pair programmed (IRQ 14 = vector 0x2E), xv6's ide.c done in assembly:
# idewait (until BSY clear and DRDY set), probe device 1 (0xE0 | 1 << 4, Status nonzero within
# 1000 reads), then with nIEN clear READ SECTORS of LBA 5 on drive 1, its IRQ 14, idewait and
# INSD into 0x10000; WRITE SECTORS of those 512 bytes to LBA 6 on drive 1 by OUTSD right after
# the command, its IRQ 14; [0x608] = 0x600D, or 0xBAD when no device 1 answered. The IRQ 14
# handler is IRQ14_HANDLER (Status into [0x604], a tick in [0x600], EOI).
XV6_SLAVE_MAIN = r"""
    call idewait
    mov dx, 0x1F6
    mov al, 0xE0 | 1 << 4
    out dx, al
    mov ecx, 1000
    mov dx, 0x1F7
.probe:
    in al, dx
    test al, al
    jnz .found
    loop .probe
    jmp fail
.found:
    mov dx, 0x1F6
    mov al, 0xE0
    out dx, al
    mov bl, 5
    mov bh, 0x20            ; READ SECTORS
    call idestart
    mov ebx, 1
    call wait_irq
    call idewait            ; ideintr: the data, once ready
    mov edi, 0x10000
    mov ecx, 128
    mov dx, 0x1F0
    rep insd
    mov bl, 6
    mov bh, 0x30            ; WRITE SECTORS
    call idestart
    mov esi, 0x10000
    mov ecx, 128
    mov dx, 0x1F0
    rep outsd
    mov ebx, 2
    call wait_irq
    call idewait
    mov dword [0x608], 0x600D
    cli
    hlt
fail:
    mov dword [0x608], 0xBAD
    cli
    hlt
idestart:                   ; one sector at LBA bl on drive 1, command bh
    call idewait
    mov dx, 0x3F6
    xor al, al
    out dx, al              ; nIEN clear: generate interrupts
    mov dx, 0x1F2
    mov al, 1
    out dx, al
    inc dx
    mov al, bl
    out dx, al              ; LBA 7:0
    inc dx
    xor al, al
    out dx, al
    inc dx
    out dx, al
    inc dx
    mov al, 0xE0 | 1 << 4   ; LBA, drive 1, LBA 27:24 = 0
    out dx, al
    inc dx
    mov al, bh
    out dx, al
    ret
idewait:                    ; until BSY clear and DRDY set
    mov dx, 0x1F7
.poll:
    in al, dx
    and al, 0xC0
    cmp al, 0x40
    jne .poll
    ret
wait_irq:                   ; until [TICKS] >= ebx, halting with interrupts on
    cli
    cmp [0x600], ebx
    jae .got
    sti
    hlt
    jmp wait_irq
.got:
    sti
    ret
"""


@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_guest_reads_and_writes_the_slave_as_xv6_does(image, slave_image, mode, monkeypatch):
    import pc_guest as g

    monkeypatch.setenv("VMCORE_MODE", mode)
    pic = g.pic_init(0xFB, 0xBF)                       # master: IR2 (the slave PIC) only; slave: IR6 only
    main = pic + assemble_text(f"bits 32\norg {g.CODE + len(pic):#x}\n" + XV6_SLAVE_MAIN, "ide-xv6-slave",
                               kind="ide-guests")
    handler = assemble_text(f"bits 32\norg {g.HANDLERS:#x}\n" + IRQ14_HANDLER, "ide-irq14", kind="ide-guests")
    m = g.machine(main, {0x2E: handler}, memory_mb=2)
    assert m.mode == mode
    m.attach_disk(image)
    m.attach_disk(slave_image, drive=1)
    r = m.run(count=10**6, timeout=60)
    assert r.exit is Exit.HLT and "interrupts enabled" not in r.reason, r.reason
    assert m.mem_read(0x608, 4) == (0x600D).to_bytes(4, "little")
    assert g.ticks(m) == 2                             # the read's data ready, the write's completion
    assert m.mem_read(0x604, 1)[0] == DRDY | DSC       # the handler saw the write done
    assert m.mem_read(0x10000, 512) == slave_bytes(5)  # the slave's sector, not the master's
    assert m.ide.drives[1].disk.overlay == {6: slave_bytes(5)}
    assert m.ide.drives[0].disk.overlay == {}


def test_guest_finds_no_slave_without_one(image, monkeypatch):
    import pc_guest as g

    monkeypatch.setenv("VMCORE_MODE", "bare")
    pic = g.pic_init(0xFB, 0xBF)
    main = pic + assemble_text(f"bits 32\norg {g.CODE + len(pic):#x}\n" + XV6_SLAVE_MAIN, "ide-xv6-slave",
                               kind="ide-guests")
    handler = assemble_text(f"bits 32\norg {g.HANDLERS:#x}\n" + IRQ14_HANDLER, "ide-irq14", kind="ide-guests")
    m = g.machine(main, {0x2E: handler}, memory_mb=2)
    m.attach_disk(image)
    r = m.run(count=10**6, timeout=60)
    assert r.exit is Exit.HLT, r.reason
    assert m.mem_read(0x608, 4) == (0xBAD).to_bytes(4, "little") and g.ticks(m) == 0
