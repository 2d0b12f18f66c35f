"""Multiboot v1 loader (Multiboot Specification 0.6.96).

Finds the multiboot header (§3.1.1-§3.1.3), loads the image by the a.out-kludge address
fields (§3.1.4) or else by the ELF program headers, and builds the multiboot information
structure (§3.3) in low memory. Everything is checked before guest RAM is written: a
failed load leaves it untouched.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from vmcore.errors import LoaderError
from vmcore.loaders.elf import is_elf, parse_elf32_exec
from vmcore.loaders.image import check_ram, copy_to_ram, read_image

# §3.1.1: the header lies wholly in the first 8192 bytes, 32-bit aligned.
HEADER_SEARCH_BYTES = 8192
HEADER_MAGIC = 0x1BADB002
BOOTLOADER_MAGIC = 0x2BADB002      # §3.2: EAX at entry

# §3.1.2 header flags. Bits 0-15 are requirements: a loader must refuse what it cannot do.
MB_PAGE_ALIGN = 1 << 0             # align boot modules on 4 KiB: we load no modules, so met
MB_MEMORY_INFO = 1 << 1            # mem_* fields in the info structure: always given
MB_VIDEO_MODE = 1 << 2             # video mode table: not supported
MB_AOUT_KLUDGE = 1 << 16           # header address fields are valid (§3.1.4)
SUPPORTED_REQUIREMENTS = MB_PAGE_ALIGN | MB_MEMORY_INFO
_REQUIREMENT_NAMES = {2: "video mode table"}

# §3.3 information structure flags and field offsets.
MBI_MEM = 1 << 0
MBI_CMDLINE = 1 << 2
MBI_MMAP = 1 << 6
MBI_BOOT_LOADER_NAME = 1 << 9
MBI_FLAGS, MBI_MEM_LOWER, MBI_MEM_UPPER, MBI_CMDLINE_ADDR = 0, 4, 8, 16
MBI_MMAP_LENGTH, MBI_MMAP_ADDR, MBI_BOOT_LOADER_NAME_ADDR = 44, 48, 64
MBI_SIZE = 116                     # up to and including the framebuffer fields
MMAP_AVAILABLE = 1                 # §3.3 memory map type 1: available RAM
_MMAP_ENTRY = struct.Struct("<IQQI")   # size, base_addr, length, type; 'size' (20) excludes itself

# Where the information lives: below 640 KiB, away from a kernel linked at 1 MiB.
INFO_GPA = 0x9000
INFO_AREA_LIMIT_GPA = 0x9FC00      # end of conventional memory reported in the mmap
LOWER_MEMORY_KIB = 640
HIGH_MEMORY_GPA = 0x100000
MIN_RAM_BYTES = 2 << 20
BOOT_LOADER_NAME = b"vmcore"

_U32 = 1 << 32


@dataclass(frozen=True)
class LoadSegment:
    gpa: int           # where the bytes go
    file_offset: int
    filesz: int        # bytes copied from the file
    memsz: int         # bytes occupied; memsz - filesz are zeroed

    @property
    def end_gpa(self) -> int:
        return self.gpa + self.memsz


@dataclass(frozen=True)
class MultibootBoot:
    """The result of a load: how to enter the kernel (§3.2) and what was put where."""

    path: str
    entry_gla: int              # EIP at entry (paging off: gla == gpa)
    eax: int                    # BOOTLOADER_MAGIC
    ebx: int                    # gpa of the information structure
    segments: list[LoadSegment]
    image_end_gpa: int          # end of the highest loaded segment (bss included)
    header_offset: int          # file offset of the multiboot header
    header_flags: int
    cmdline_gpa: int
    mmap_gpa: int
    info_end_gpa: int           # the info area is INFO_GPA..info_end_gpa

    @property
    def info_gpa(self) -> int:
        return self.ebx


def load_multiboot(memory, path, cmdline: str = "") -> MultibootBoot:
    """Loads the multiboot v1 kernel at ``path`` into guest RAM (``memory[gpa]``) and writes its
    information structure; the caller sets EAX/EBX/EIP from the result and enters it flat 32-bit."""
    ram_size = check_ram(memory)
    if ram_size < MIN_RAM_BYTES:
        raise LoaderError(f"{path}: guest RAM is {ram_size:#x} bytes; multiboot needs at least 2 MiB")
    name, data = read_image(path)
    header_offset, flags = _find_header(data, name)
    unsupported = flags & 0xFFFF & ~SUPPORTED_REQUIREMENTS
    if unsupported:
        bits = ", ".join(f"bit {b}" + (f" ({_REQUIREMENT_NAMES[b]})" if b in _REQUIREMENT_NAMES else "")
                         for b in range(16) if unsupported >> b & 1)
        raise LoaderError(f"{name}: multiboot header at offset {header_offset:#x} requires features vmcore does "
                          f"not support: flags {bits}")
    if flags & MB_AOUT_KLUDGE:
        segments, entry_gla = _aout_kludge_segments(data, name, header_offset)
    elif is_elf(data):
        segments, entry_gla = _elf_segments(data, name)
    else:
        raise LoaderError(f"{name}: not an ELF file, and its multiboot header at offset {header_offset:#x} does "
                          f"not set flag bit 16 (a.out kludge address fields)")
    info, cmdline_gpa, mmap_gpa, info_end_gpa = _build_info(ram_size, cmdline, name)
    _check_placement(segments, ram_size, info_end_gpa, name)

    for seg in segments:
        copy_to_ram(memory, seg.gpa, data, seg.file_offset, seg.filesz, seg.memsz)
    copy_to_ram(memory, INFO_GPA, bytes(info), 0, len(info), len(info))
    return MultibootBoot(path=name, entry_gla=entry_gla, eax=BOOTLOADER_MAGIC, ebx=INFO_GPA,
                         segments=segments, image_end_gpa=max(s.end_gpa for s in segments),
                         header_offset=header_offset, header_flags=flags, cmdline_gpa=cmdline_gpa,
                         mmap_gpa=mmap_gpa, info_end_gpa=info_end_gpa)


def _find_header(data: bytes, name: str) -> tuple[int, int]:
    """§3.1.1: the first 4-byte-aligned magic in the first 8192 bytes whose checksum holds."""
    if len(data) < 12:
        raise LoaderError(f"{name}: truncated file ({len(data)} bytes) cannot hold a multiboot header")
    bad = None
    limit = min(len(data), HEADER_SEARCH_BYTES)
    for off in range(0, limit - 3, 4):
        if struct.unpack_from("<I", data, off)[0] != HEADER_MAGIC:
            continue
        if off + 12 > limit:
            cut = "end of the file" if limit == len(data) else f"{HEADER_SEARCH_BYTES}-byte search limit"
            bad = bad or f"multiboot header at offset {off:#x} is truncated by the {cut}"
            continue
        _, flags, checksum = struct.unpack_from("<III", data, off)
        if (HEADER_MAGIC + flags + checksum) % _U32 == 0:       # §3.1.2 checksum
            return off, flags
        bad = bad or (f"multiboot header at offset {off:#x} has a bad checksum {checksum:#010x} "
                      f"(magic + flags + checksum must be 0 mod 2^32; expected {-(HEADER_MAGIC + flags) % _U32:#010x})")
    if bad:
        raise LoaderError(f"{name}: {bad}")
    raise LoaderError(f"{name}: no multiboot header (magic {HEADER_MAGIC:#x} at a 4-byte aligned offset) "
                      f"in the first {HEADER_SEARCH_BYTES} bytes")


def _aout_kludge_segments(data: bytes, name: str, off: int) -> tuple[list[LoadSegment], int]:
    """§3.1.4: header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr say where to load."""
    if off + 32 > min(len(data), HEADER_SEARCH_BYTES):
        raise LoaderError(f"{name}: multiboot header at offset {off:#x} sets flag bit 16 but its address "
                          f"fields (offsets 12-31) are truncated")
    header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr = struct.unpack_from("<5I", data, off + 12)
    where = f"{name}: multiboot header at offset {off:#x}"
    if load_addr > header_addr:
        raise LoaderError(f"{where}: load_addr {load_addr:#x} is above header_addr {header_addr:#x}")
    file_offset = off - (header_addr - load_addr)
    if file_offset < 0:
        raise LoaderError(f"{where}: header_addr - load_addr = {header_addr - load_addr:#x} puts the start of the "
                          f"image before the start of the file")
    if load_end_addr == 0:                  # text and data fill the rest of the file
        filesz = len(data) - file_offset
    elif load_end_addr < load_addr:
        raise LoaderError(f"{where}: load_end_addr {load_end_addr:#x} is below load_addr {load_addr:#x}")
    else:
        filesz = load_end_addr - load_addr
        if file_offset + filesz > len(data):
            raise LoaderError(f"{where}: load_addr..load_end_addr needs file bytes {file_offset:#x}.."
                              f"{file_offset + filesz:#x}, past the end of the file ({len(data):#x} bytes)")
    if bss_end_addr == 0:
        memsz = filesz
    elif bss_end_addr < load_addr + filesz:
        raise LoaderError(f"{where}: bss_end_addr {bss_end_addr:#x} is below the end of the loaded data "
                          f"{load_addr + filesz:#x}")
    else:
        memsz = bss_end_addr - load_addr
    if load_addr + memsz > _U32:
        raise LoaderError(f"{where}: image at gpa {load_addr:#x} ({memsz:#x} bytes) wraps around the 32-bit "
                          f"address space")
    if not load_addr <= entry_addr < load_addr + memsz:
        raise LoaderError(f"{where}: entry_addr {entry_addr:#x} is outside the loaded image "
                          f"(gpa {load_addr:#x}..{load_addr + memsz:#x})")
    return [LoadSegment(load_addr, file_offset, filesz, memsz)], entry_addr


def _elf_segments(data: bytes, name: str) -> tuple[list[LoadSegment], int]:
    """ELF kernels load at p_paddr. As GRUB does, an e_entry inside a segment's p_vaddr range is
    moved by that segment's p_paddr - p_vaddr (paging is off at entry, §3.2)."""
    image = parse_elf32_exec(data, name)
    segments = [LoadSegment(s.paddr, s.file_offset, s.filesz, s.memsz) for s in image.segments]
    for s in image.segments:
        if s.vaddr <= image.entry < s.vaddr + s.memsz:
            return segments, image.entry - s.vaddr + s.paddr
    raise LoaderError(f"{name}: entry point {image.entry:#x} is outside every loaded segment")


def _check_placement(segments: list[LoadSegment], ram_size: int, info_end_gpa: int, name: str) -> None:
    spans = sorted(segments, key=lambda s: s.gpa)
    for seg in spans:
        span = f"gpa {seg.gpa:#x}..{seg.end_gpa:#x}"
        if seg.end_gpa > ram_size:
            raise LoaderError(f"{name}: segment at {span} lies beyond guest RAM (0..{ram_size:#x})")
        if seg.gpa < info_end_gpa and INFO_GPA < seg.end_gpa:
            raise LoaderError(f"{name}: segment at {span} overlaps the multiboot information area "
                              f"(gpa {INFO_GPA:#x}..{info_end_gpa:#x})")
    for a, b in zip(spans, spans[1:]):
        if b.gpa < a.end_gpa:
            raise LoaderError(f"{name}: segments at gpa {a.gpa:#x}..{a.end_gpa:#x} and {b.gpa:#x}..{b.end_gpa:#x} "
                              f"overlap")


def _build_info(ram_size: int, cmdline: str, name: str) -> tuple[bytearray, int, int, int]:
    """§3.3: the information structure at INFO_GPA, then the boot loader name, the memory map and
    the command line. Returns (bytes, cmdline gpa, mmap gpa, end gpa)."""
    cmdline_bytes = cmdline.encode("utf-8")
    if b"\0" in cmdline_bytes:
        raise LoaderError(f"{name}: the command line contains a NUL character")
    name_gpa = INFO_GPA + MBI_SIZE
    mmap_gpa = (name_gpa + len(BOOT_LOADER_NAME) + 1 + 7) & ~7
    mmap = [(0, INFO_AREA_LIMIT_GPA), (HIGH_MEMORY_GPA, ram_size - HIGH_MEMORY_GPA)]
    mmap_length = len(mmap) * _MMAP_ENTRY.size
    cmdline_gpa = mmap_gpa + mmap_length
    end_gpa = cmdline_gpa + len(cmdline_bytes) + 1
    if end_gpa > INFO_AREA_LIMIT_GPA:
        raise LoaderError(f"{name}: the command line ({len(cmdline_bytes)} bytes) does not fit in the multiboot "
                          f"information area (gpa {INFO_GPA:#x}..{INFO_AREA_LIMIT_GPA:#x})")
    info = bytearray(end_gpa - INFO_GPA)
    mem_upper_kib = min((ram_size - HIGH_MEMORY_GPA) >> 10, _U32 - 1)
    struct.pack_into("<IIII", info, MBI_FLAGS, MBI_MEM | MBI_CMDLINE | MBI_MMAP | MBI_BOOT_LOADER_NAME,
                     LOWER_MEMORY_KIB, mem_upper_kib, 0)
    struct.pack_into("<I", info, MBI_CMDLINE_ADDR, cmdline_gpa)
    struct.pack_into("<II", info, MBI_MMAP_LENGTH, mmap_length, mmap_gpa)
    struct.pack_into("<I", info, MBI_BOOT_LOADER_NAME_ADDR, name_gpa)
    info[name_gpa - INFO_GPA:name_gpa - INFO_GPA + len(BOOT_LOADER_NAME)] = BOOT_LOADER_NAME
    for i, (base_gpa, length) in enumerate(mmap):
        # 'size' counts the bytes after itself; mmap_addr points at the first 'size' field.
        _MMAP_ENTRY.pack_into(info, mmap_gpa - INFO_GPA + i * _MMAP_ENTRY.size,
                              _MMAP_ENTRY.size - 4, base_gpa, length, MMAP_AVAILABLE)
    info[cmdline_gpa - INFO_GPA:end_gpa - INFO_GPA - 1] = cmdline_bytes
    return info, cmdline_gpa, mmap_gpa, end_gpa
