"""ELF32 i386 executables: the header checks and PT_LOAD program headers a loader needs.

Layouts from the System V gABI ("ELF Header", "Program Header") and the i386 psABI
(ELFCLASS32, ELFDATA2LSB, EM_386). Every failure is a LoaderError naming the file.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from vmcore.errors import LoaderError

ELF_MAGIC = b"\x7fELF"
EI_CLASS, EI_DATA, EI_VERSION = 4, 5, 6
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB = 1
EV_CURRENT = 1
ET_EXEC = 2
EM_386 = 3
PT_LOAD = 1

_EHDR = struct.Struct("<16sHHIIIIIHHHHHH")   # Elf32_Ehdr, 52 bytes
_PHDR = struct.Struct("<IIIIIIII")           # Elf32_Phdr, 32 bytes
_ET_NAMES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}


@dataclass(frozen=True)
class ElfSegment:
    """One PT_LOAD program header."""

    index: int         # position in the program header table
    file_offset: int   # p_offset
    vaddr: int         # p_vaddr: where the program expects it once it maps itself
    paddr: int         # p_paddr: the gpa a boot loader puts it at
    filesz: int        # p_filesz
    memsz: int         # p_memsz (memsz - filesz bytes are zeroed: bss)
    flags: int         # p_flags (PF_X=1, PF_W=2, PF_R=4)


@dataclass(frozen=True)
class ElfImage:
    entry: int                        # e_entry, a virtual address
    segments: tuple[ElfSegment, ...]  # PT_LOAD headers with p_memsz > 0, in table order


def is_elf(data: bytes) -> bool:
    return data[:4] == ELF_MAGIC


def parse_elf32_exec(data: bytes, name: str) -> ElfImage:
    """Checks that ``data`` is an ELF32 little-endian i386 ET_EXEC and returns its loadable segments."""
    if not is_elf(data):
        raise LoaderError(f"{name}: not an ELF file (no \\x7fELF magic)")
    if len(data) < _EHDR.size:
        raise LoaderError(f"{name}: truncated ELF header ({len(data)} bytes, need {_EHDR.size})")
    (ident, e_type, e_machine, e_version, e_entry, e_phoff, _shoff, _flags, _ehsize,
     e_phentsize, e_phnum, _shentsize, _shnum, _shstrndx) = _EHDR.unpack_from(data, 0)
    if ident[EI_CLASS] != ELFCLASS32:
        kind = "64-bit ELFCLASS64" if ident[EI_CLASS] == ELFCLASS64 else f"class {ident[EI_CLASS]}"
        raise LoaderError(f"{name}: ELF class is {kind}; a multiboot kernel must be 32-bit (ELFCLASS32)")
    if ident[EI_DATA] != ELFDATA2LSB:
        raise LoaderError(f"{name}: ELF data encoding {ident[EI_DATA]} is not little-endian (ELFDATA2LSB)")
    if ident[EI_VERSION] != EV_CURRENT or e_version != EV_CURRENT:
        raise LoaderError(f"{name}: ELF version {ident[EI_VERSION]}/{e_version} is not EV_CURRENT (1)")
    if e_machine != EM_386:
        raise LoaderError(f"{name}: ELF machine is {e_machine}, not i386 (EM_386 = 3)")
    if e_type != ET_EXEC:
        raise LoaderError(f"{name}: ELF type is {_ET_NAMES.get(e_type, e_type)}, not an executable (ET_EXEC)")
    if e_phnum == 0:
        raise LoaderError(f"{name}: ELF file has no program headers")
    if e_phentsize < _PHDR.size:
        raise LoaderError(f"{name}: ELF program header size {e_phentsize} is smaller than {_PHDR.size}")
    table_end = e_phoff + e_phnum * e_phentsize
    if table_end > len(data):
        raise LoaderError(f"{name}: program header table at file offset {e_phoff:#x} ({e_phnum} x {e_phentsize} "
                          f"bytes) ends at {table_end:#x}, past the end of the file ({len(data):#x} bytes)")
    segments = []
    for i in range(e_phnum):
        p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags, _align = \
            _PHDR.unpack_from(data, e_phoff + i * e_phentsize)
        if p_type != PT_LOAD or p_memsz == 0:
            continue
        where = f"{name}: segment {i} (PT_LOAD at paddr {p_paddr:#x})"
        if p_filesz > p_memsz:
            raise LoaderError(f"{where}: p_filesz {p_filesz:#x} is larger than p_memsz {p_memsz:#x}")
        if p_offset + p_filesz > len(data):
            raise LoaderError(f"{where}: file bytes {p_offset:#x}..{p_offset + p_filesz:#x} extend past the end "
                              f"of the file ({len(data):#x} bytes)")
        if p_paddr + p_memsz > 1 << 32 or p_vaddr + p_memsz > 1 << 32:
            raise LoaderError(f"{where}: {p_memsz:#x} bytes wrap around the 32-bit address space")
        segments.append(ElfSegment(i, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags))
    if not segments:
        raise LoaderError(f"{name}: ELF file has no loadable (PT_LOAD) segment")
    return ElfImage(e_entry, tuple(segments))
