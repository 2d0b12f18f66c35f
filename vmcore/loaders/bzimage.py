"""Linux/x86 boot protocol loader: a bzImage entered through the 32-bit boot protocol.

Documentation/arch/x86/boot.rst (the kernel's "Linux/x86 Boot Protocol"): the real-mode
setup is ``setup_sects`` 512-byte sectors after the boot sector; the protected-mode kernel
follows it and is loaded at 1 MiB (``code32_start``, LOADED_HIGH), or, for a relocatable
kernel that prefers it and fits, at ``pref_address``. No BIOS runs: the loader itself fills
the zero page (``struct boot_params``) with the setup header, an e820 memory map, the
command line pointer and the initrd, builds a flat GDT and enters at the 32-bit entry point
with CS = __BOOT_CS (0x10), DS = ES = SS = __BOOT_DS (0x18), ESI = the zero page, EBP = EDI
= EBX = 0, interrupts and paging off (boot.rst "32-bit Boot Protocol").

Everything is checked before guest RAM is written: a failed load leaves it untouched.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from vmcore.errors import LoaderError
from vmcore.loaders.image import check_ram, copy_to_ram, read_image

# the setup header in the bzImage file and in boot_params (boot.rst "The Real-Mode Kernel Header")
HDR_SETUP_SECTS = 0x1F1       # u8: 0 means 4
HDR_SYSSIZE = 0x1F4           # u32: protected-mode code size in 16-byte paragraphs (2.04+)
HDR_BOOT_FLAG = 0x1FE         # u16: 0xAA55
HDR_JUMP = 0x200              # u16: a short jump; its offset byte (0x201) gives the header's end
HDR_HEADER = 0x202            # u32: "HdrS"
HDR_VERSION = 0x206           # u16: protocol version
HDR_TYPE_OF_LOADER = 0x210    # u8
HDR_LOADFLAGS = 0x211         # u8
HDR_CODE32_START = 0x214      # u32
HDR_RAMDISK_IMAGE = 0x218     # u32
HDR_RAMDISK_SIZE = 0x21C      # u32
HDR_HEAP_END_PTR = 0x224      # u16
HDR_CMD_LINE_PTR = 0x228      # u32
HDR_INITRD_ADDR_MAX = 0x22C   # u32
HDR_KERNEL_ALIGNMENT = 0x230  # u32
HDR_RELOCATABLE = 0x234       # u8
HDR_CMDLINE_SIZE = 0x238      # u32 (2.06+)
HDR_PREF_ADDRESS = 0x258      # u64 (2.10+)
HDR_INIT_SIZE = 0x260         # u32 (2.10+)

HDRS_MAGIC = b"HdrS"
BOOT_FLAG = 0xAA55
MIN_PROTOCOL = 0x0206
PROTOCOL_2_10 = 0x020A        # pref_address and init_size exist from 2.10
LOADED_HIGH = 0x01            # loadflags bit 0: the protected-mode code loads at 1 MiB
KEEP_SEGMENTS = 0x40          # loadflags bit 6: not set by us (the kernel reloads its segments)
CAN_USE_HEAP = 0x80           # loadflags bit 7: heap_end_ptr is valid
TYPE_OF_LOADER_UNDEFINED = 0xFF   # boot.rst: "0xFF: undefined" (a loader with no assigned ID)
DEFAULT_SETUP_SECTS = 4

# struct boot_params (arch/x86/include/uapi/asm/bootparam.h)
BP_SIZE = 0x1000
BP_EXT_RAMDISK_IMAGE = 0x0C0
BP_EXT_RAMDISK_SIZE = 0x0C4
BP_EXT_CMD_LINE_PTR = 0x0C8
BP_ALT_MEM_K = 0x1E0
BP_E820_ENTRIES = 0x1E8
BP_SETUP_HEADER = 0x1F1
BP_E820_TABLE = 0x2D0
E820_MAX_ENTRIES = 128
_E820_ENTRY = struct.Struct("<QQI")     # addr, size, type
E820_RAM = 1
E820_RESERVED = 2

# where the loader puts things in low memory (all inside the first usable e820 range)
GDT_GPA = 0x1000
ZERO_PAGE_GPA = 0x10000
CMDLINE_GPA = 0x20000
CMDLINE_AREA_END_GPA = 0x90000
LOW_RAM_END_GPA = 0x9F000     # conventional memory reported usable (the EBDA would sit above)
HIGH_MEMORY_GPA = 0x100000
MIN_RAM_BYTES = 16 << 20
BOOT_CS = 0x10                # __BOOT_CS, __BOOT_DS: what the 32-bit boot protocol requires
BOOT_DS = 0x18
# the GDT: null, null, 0x10 code (base 0, limit 4 GiB, execute/read, 32-bit), 0x18 data (read/write)
GDT = struct.pack("<QQQQ", 0, 0, 0x00CF9B000000FFFF, 0x00CF93000000FFFF)
CS_ATTR = 0xC09B              # the engine's descriptor-cache attributes of those two descriptors
DS_ATTR = 0xC093
INITRD_ALIGN = 0x1000

_U32 = 1 << 32


@dataclass(frozen=True)
class LinuxBoot:
    """The result of a load: where everything went and how to enter the kernel."""

    path: str
    protocol: int               # e.g. 0x020F
    entry_gla: int              # code32_start, moved with the kernel (paging off: gla == gpa)
    kernel_gpa: int             # where the protected-mode kernel was copied
    kernel_size: int
    zero_page_gpa: int          # ESI at entry
    gdt_gpa: int
    cmdline_gpa: int
    initrd_gpa: int             # 0 without an initrd
    initrd_size: int
    e820: list[tuple[int, int, int]]   # (gpa, size, type)


def _u8(d, off):
    return d[off]


def _u16(d, off):
    return struct.unpack_from("<H", d, off)[0]


def _u32(d, off):
    return struct.unpack_from("<I", d, off)[0]


def e820_map(ram_size: int) -> list[tuple[int, int, int]]:
    """The machine's RAM as a PC BIOS reports it: conventional memory below the EBDA, the
    EBDA/VGA/ROM hole reserved up to 1 MiB, and the rest of RAM from 1 MiB."""
    return [(0, LOW_RAM_END_GPA, E820_RAM),
            (LOW_RAM_END_GPA, HIGH_MEMORY_GPA - LOW_RAM_END_GPA, E820_RESERVED),
            (HIGH_MEMORY_GPA, ram_size - HIGH_MEMORY_GPA, E820_RAM)]


def load_bzimage(memory, path, initrd=None, cmdline: str = "") -> LinuxBoot:
    """Loads the bzImage at ``path`` (and the initrd file at ``initrd``) into guest RAM
    (``memory[gpa]``) and writes the zero page, command line and GDT; the caller enters it
    with the CPU state of the 32-bit boot protocol (Machine.load_linux)."""
    ram_size = check_ram(memory)
    name, data = read_image(path)
    if ram_size < MIN_RAM_BYTES:
        raise LoaderError(f"{name}: guest RAM is {ram_size >> 20} MiB; a Linux kernel needs at least "
                          f"{MIN_RAM_BYTES >> 20} MiB")
    if len(data) < 0x264:
        raise LoaderError(f"{name}: truncated bzImage ({len(data)} bytes): the setup header ends at 0x264")
    if data[HDR_HEADER:HDR_HEADER + 4] != HDRS_MAGIC:
        raise LoaderError(f"{name}: header magic at offset {HDR_HEADER:#x} is "
                          f"{data[HDR_HEADER:HDR_HEADER + 4]!r}, not {HDRS_MAGIC!r}: not a bzImage "
                          f"(or a kernel older than boot protocol 2.00)")
    if _u16(data, HDR_BOOT_FLAG) != BOOT_FLAG:
        raise LoaderError(f"{name}: boot_flag at offset {HDR_BOOT_FLAG:#x} is {_u16(data, HDR_BOOT_FLAG):#06x}, "
                          f"not {BOOT_FLAG:#06x}")
    version = _u16(data, HDR_VERSION)
    if version < MIN_PROTOCOL:
        raise LoaderError(f"{name}: boot protocol version {version >> 8}.{version & 0xFF:02d} "
                          f"(field 'version' at {HDR_VERSION:#x}); vmcore needs 2.06 or later")
    header_end = HDR_JUMP + 2 + data[HDR_JUMP + 1]
    if data[HDR_JUMP] != 0xEB or header_end < HDR_CMDLINE_SIZE + 4 or header_end > BP_E820_TABLE:
        raise LoaderError(f"{name}: the jump at offset {HDR_JUMP:#x} ({data[HDR_JUMP:HDR_JUMP + 2].hex(' ')}) "
                          f"does not end the setup header where protocol {version >> 8}.{version & 0xFF:02d} "
                          f"needs it")
    loadflags = _u8(data, HDR_LOADFLAGS)
    if not loadflags & LOADED_HIGH:
        raise LoaderError(f"{name}: loadflags ({loadflags:#04x}) lack LOADED_HIGH: a zImage loaded at 0x10000 is "
                          f"not supported")
    setup_sects = _u8(data, HDR_SETUP_SECTS) or DEFAULT_SETUP_SECTS
    kernel_offset = (setup_sects + 1) * 512
    syssize = _u32(data, HDR_SYSSIZE)
    kernel_size = syssize * 16
    if syssize == 0:
        raise LoaderError(f"{name}: syssize (offset {HDR_SYSSIZE:#x}) is 0: no protected-mode kernel")
    if kernel_offset + kernel_size > len(data):
        raise LoaderError(f"{name}: truncated bzImage: setup_sects {setup_sects} and syssize {syssize:#x} "
                          f"({kernel_size:#x} bytes) need {kernel_offset + kernel_size:#x} bytes, the file has "
                          f"{len(data):#x}")
    code32_start = _u32(data, HDR_CODE32_START)
    alignment = _u32(data, HDR_KERNEL_ALIGNMENT)
    relocatable = _u8(data, HDR_RELOCATABLE)
    if relocatable and (alignment == 0 or alignment & (alignment - 1)):
        raise LoaderError(f"{name}: kernel_alignment {alignment:#x} (offset {HDR_KERNEL_ALIGNMENT:#x}) is not "
                          f"a power of two")
    initrd_addr_max = _u32(data, HDR_INITRD_ADDR_MAX)
    cmdline_size = _u32(data, HDR_CMDLINE_SIZE)
    pref_address = struct.unpack_from("<Q", data, HDR_PREF_ADDRESS)[0] if version >= PROTOCOL_2_10 else 0
    init_size = _u32(data, HDR_INIT_SIZE) if version >= PROTOCOL_2_10 else 0

    # where the kernel goes: 1 MiB, where code32_start says; a relocatable kernel at its
    # preferred address when that is aligned and the kernel fits below the top of RAM there
    kernel_gpa = code32_start
    if relocatable and pref_address and pref_address % alignment == 0 \
            and pref_address + max(init_size, kernel_size) <= ram_size:
        kernel_gpa = pref_address
    if kernel_gpa < HIGH_MEMORY_GPA:
        raise LoaderError(f"{name}: code32_start {code32_start:#x} (offset {HDR_CODE32_START:#x}) is below 1 MiB")
    entry_gla = kernel_gpa            # code32_start moves with the kernel
    # the kernel decompresses in place, or (relocatable) at its load address aligned up, and
    # never below its link address (pref_address): init_size bytes from there are its own
    footprint_gpa = kernel_gpa
    if relocatable:
        footprint_gpa = -(-kernel_gpa // alignment) * alignment
    footprint_gpa = max(footprint_gpa, pref_address)
    footprint_end = footprint_gpa + max(init_size, kernel_size)
    if footprint_end > ram_size:
        raise LoaderError(f"{name}: the kernel needs gpa {footprint_gpa:#x}..{footprint_end:#x} (init_size "
                          f"{init_size:#x} at offset {HDR_INIT_SIZE:#x}, syssize), beyond guest RAM ({ram_size:#x})")

    cmdline_bytes = cmdline.encode("utf-8")
    if b"\0" in cmdline_bytes:
        raise LoaderError(f"{name}: the command line contains a NUL character")
    if len(cmdline_bytes) > cmdline_size:
        raise LoaderError(f"{name}: the command line is {len(cmdline_bytes)} bytes; the kernel's cmdline_size "
                          f"(offset {HDR_CMDLINE_SIZE:#x}) allows {cmdline_size}")
    if CMDLINE_GPA + len(cmdline_bytes) + 1 > CMDLINE_AREA_END_GPA:
        raise LoaderError(f"{name}: the command line ({len(cmdline_bytes)} bytes) does not fit below "
                          f"{CMDLINE_AREA_END_GPA:#x}")

    initrd_name, initrd_data, initrd_gpa = None, b"", 0
    if initrd is not None:
        initrd_name, initrd_data = read_image(initrd)
        # highest page-aligned place that ends below initrd_addr_max (the last byte it may
        # occupy) and the top of RAM, above the kernel's decompression footprint
        top = min(initrd_addr_max + 1, ram_size)
        initrd_gpa = (top - len(initrd_data)) & ~(INITRD_ALIGN - 1)
        if initrd_gpa < footprint_end:
            raise LoaderError(f"{initrd_name}: the initrd ({len(initrd_data):#x} bytes) does not fit between the "
                              f"kernel's end {footprint_end:#x} and {top:#x} (min of the kernel's initrd_addr_max "
                              f"{initrd_addr_max:#x} + 1 and guest RAM {ram_size:#x})")

    e820 = e820_map(ram_size)
    zero_page = bytearray(BP_SIZE)
    zero_page[BP_SETUP_HEADER:header_end] = data[BP_SETUP_HEADER:header_end]
    zero_page[HDR_TYPE_OF_LOADER] = TYPE_OF_LOADER_UNDEFINED
    # no real-mode setup runs, so no heap; keep the kernel from reloading our segments on its own terms
    zero_page[HDR_LOADFLAGS] = (loadflags | LOADED_HIGH) & ~(CAN_USE_HEAP | KEEP_SEGMENTS)
    struct.pack_into("<I", zero_page, HDR_CODE32_START, entry_gla)
    struct.pack_into("<I", zero_page, HDR_CMD_LINE_PTR, CMDLINE_GPA)
    struct.pack_into("<II", zero_page, HDR_RAMDISK_IMAGE, initrd_gpa, len(initrd_data))
    struct.pack_into("<I", zero_page, BP_ALT_MEM_K, min((ram_size - HIGH_MEMORY_GPA) >> 10, _U32 - 1))
    zero_page[BP_E820_ENTRIES] = len(e820)
    for k, entry in enumerate(e820):
        _E820_ENTRY.pack_into(zero_page, BP_E820_TABLE + k * _E820_ENTRY.size, *entry)

    copy_to_ram(memory, kernel_gpa, data, kernel_offset, kernel_size, kernel_size)
    if initrd_data:
        copy_to_ram(memory, initrd_gpa, initrd_data, 0, len(initrd_data), len(initrd_data))
    copy_to_ram(memory, ZERO_PAGE_GPA, bytes(zero_page), 0, BP_SIZE, BP_SIZE)
    cmd = cmdline_bytes + b"\0"
    copy_to_ram(memory, CMDLINE_GPA, cmd, 0, len(cmd), len(cmd))
    copy_to_ram(memory, GDT_GPA, GDT, 0, len(GDT), len(GDT))
    return LinuxBoot(path=name, protocol=version, entry_gla=entry_gla, kernel_gpa=kernel_gpa,
                     kernel_size=kernel_size, zero_page_gpa=ZERO_PAGE_GPA, gdt_gpa=GDT_GPA, cmdline_gpa=CMDLINE_GPA,
                     initrd_gpa=initrd_gpa, initrd_size=len(initrd_data), e820=e820)
