"""Multiboot v1 and flat loaders: images are crafted here with struct, loaded into a numpy RAM
array, and read back. Every malformation must give a LoaderError naming the file and the reason."""
import struct

import numpy as np
import pytest

from vmcore.errors import LoaderError
from vmcore.loaders.flat import load_flat
from vmcore.loaders.multiboot import load_multiboot

RAM_BYTES = 4 << 20
MB_MAGIC = 0x1BADB002
MB_AOUT_KLUDGE = 1 << 16
INFO_GPA = 0x9000


def mb_header(flags=0, checksum=None, aout=None):
    """A multiboot header; ``aout`` = (header_addr, load_addr, load_end_addr, bss_end_addr, entry_addr)."""
    if checksum is None:
        checksum = -(MB_MAGIC + flags) & 0xFFFFFFFF
    header = struct.pack("<III", MB_MAGIC, flags, checksum)
    return header + (struct.pack("<5I", *aout) if aout else b"")


def build_elf(segments, entry, *, header=None, header_offset=None, ei_class=1, e_type=2, e_machine=3,
              phoff=None, phnum=None, file_offsets=None):
    """An ELF32 executable. ``segments``: (paddr, data, memsz[, vaddr]) tuples, each a PT_LOAD.
    The multiboot header goes after the program headers unless ``header_offset`` says where."""
    header = mb_header() if header is None else header
    real_phoff = 52
    body_start = real_phoff + 32 * len(segments)
    mb_off = header_offset if header_offset is not None else (body_start + 3) & ~3
    cursor = (mb_off + len(header) + 15) & ~15
    phdrs, blobs = b"", []
    for i, seg in enumerate(segments):
        paddr, data, memsz = seg[:3]
        vaddr = seg[3] if len(seg) > 3 else paddr
        offset = file_offsets[i] if file_offsets else cursor
        phdrs += struct.pack("<8I", 1, offset, vaddr, paddr, len(data), memsz, 5, 0x1000)
        blobs.append((offset, data))
        cursor = (offset + len(data) + 15) & ~15
    ident = b"\x7fELF" + bytes([ei_class, 1, 1]) + bytes(9)
    ehdr = struct.pack("<16sHHIIIIIHHHHHH", ident, e_type, e_machine, 1, entry,
                       real_phoff if phoff is None else phoff, 0, 0, 52, 32,
                       len(segments) if phnum is None else phnum, 40, 0, 0)
    image = bytearray(max([mb_off + len(header)] + [o + len(d) for o, d in blobs]))
    image[0:52] = ehdr
    image[real_phoff:real_phoff + len(phdrs)] = phdrs
    image[mb_off:mb_off + len(header)] = header
    for offset, data in blobs:
        image[offset:offset + len(data)] = data
    return bytes(image)


CODE = bytes(range(1, 0x21))          # 32 bytes at 1 MiB
DATA = b"DATADATA"


def standard_elf(**kw):
    return build_elf([(0x100000, CODE, len(CODE)), (0x101000, DATA, 0x100)], 0x100004, **kw)


@pytest.fixture
def ram():
    return np.full(RAM_BYTES, 0xAA, dtype=np.uint8)


@pytest.fixture
def write(tmp_path):
    def _write(data, name="kernel.elf"):
        path = tmp_path / name
        path.write_bytes(data)
        return path
    return _write


def u32(ram, gpa):
    return int.from_bytes(ram[gpa:gpa + 4].tobytes(), "little")


def c_string(ram, gpa):
    raw = ram[gpa:gpa + 4096].tobytes()
    return raw[:raw.index(0)].decode()


def expect_error(ram, path, *words, cmdline=""):
    before = ram.copy()
    with pytest.raises(LoaderError) as info:
        load_multiboot(ram, path, cmdline)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message, message
    assert np.array_equal(ram, before), "a failed load must leave guest RAM untouched"
    return message


# ---- loading ---------------------------------------------------------------------------------
def test_elf_segments_are_loaded_and_bss_zeroed(ram, write):
    boot = load_multiboot(ram, write(standard_elf()), "size=10")
    assert ram[0x100000:0x100020].tobytes() == CODE
    assert ram[0x101000:0x101008].tobytes() == DATA
    assert not ram[0x101008:0x101100].any()
    assert ram[0x101100] == 0xAA and ram[0x100020] == 0xAA     # nothing beyond memsz is touched
    assert boot.entry_gla == 0x100004
    assert boot.eax == 0x2BADB002
    assert boot.ebx == boot.info_gpa == INFO_GPA
    assert boot.image_end_gpa == 0x101100
    assert [(s.gpa, s.filesz, s.memsz) for s in boot.segments] == [(0x100000, 32, 32), (0x101000, 8, 0x100)]


def test_info_structure(ram, write):
    boot = load_multiboot(ram, write(standard_elf()), "size=1000 verbose")
    flags = u32(ram, INFO_GPA)
    assert flags == (1 << 0) | (1 << 2) | (1 << 6) | (1 << 9)
    assert u32(ram, INFO_GPA + 4) == 640
    assert u32(ram, INFO_GPA + 8) == (RAM_BYTES - (1 << 20)) // 1024
    assert u32(ram, INFO_GPA + 16) == boot.cmdline_gpa
    assert c_string(ram, boot.cmdline_gpa) == "size=1000 verbose"
    assert c_string(ram, u32(ram, INFO_GPA + 64)) == "vmcore"
    assert u32(ram, INFO_GPA + 12) == 0 and u32(ram, INFO_GPA + 20) == 0   # boot_device, mods_count
    assert boot.cmdline_gpa < boot.info_end_gpa <= 0x9FC00


def test_memory_map(ram, write):
    load_multiboot(ram, write(standard_elf()))
    mmap_length, mmap_addr = u32(ram, INFO_GPA + 44), u32(ram, INFO_GPA + 48)
    entries, gpa = [], mmap_addr
    while gpa < mmap_addr + mmap_length:        # §3.3: 'size' excludes itself; the next entry is at +size+4
        size = u32(ram, gpa)
        base, length, kind = struct.unpack("<QQI", ram[gpa + 4:gpa + 24].tobytes())
        entries.append((size, base, length, kind))
        gpa += size + 4
    assert gpa == mmap_addr + mmap_length
    assert entries == [(20, 0, 0x9FC00, 1), (20, 0x100000, RAM_BYTES - 0x100000, 1)]


def test_empty_cmdline_is_an_empty_string(ram, write):
    boot = load_multiboot(ram, write(standard_elf()))
    assert u32(ram, INFO_GPA) & (1 << 2)
    assert c_string(ram, boot.cmdline_gpa) == ""


def test_entry_given_as_vaddr_is_moved_to_paddr(ram, write):
    image = build_elf([(0x100000, CODE, 0x40, 0xC0100000)], 0xC0100010)
    boot = load_multiboot(ram, write(image))
    assert boot.entry_gla == 0x100010
    assert ram[0x100000:0x100020].tobytes() == CODE


def test_header_anywhere_in_first_8k_and_memory_flags_accepted(ram, write):
    image = standard_elf(header=mb_header(flags=0b11), header_offset=4096)
    boot = load_multiboot(ram, write(image))
    assert boot.header_offset == 4096 and boot.header_flags == 3


def test_segment_below_1mib_away_from_info_area(ram, write):
    boot = load_multiboot(ram, write(build_elf([(0x20000, CODE, 0x1000)], 0x20000)))
    assert ram[0x20000:0x20020].tobytes() == CODE and boot.entry_gla == 0x20000


def test_aout_kludge_loads_rest_of_file_and_bss(ram, write):
    # header at file offset 0 = gpa 0x100000; text+data = whole file; bss up to 0x100200
    body = b"\x90" * 64
    image = mb_header(MB_AOUT_KLUDGE, aout=(0x100000, 0x100000, 0, 0x100200, 0x100020)) + body
    boot = load_multiboot(ram, write(image, "kernel.bin"), "x")
    assert ram[0x100000:0x100000 + len(image)].tobytes() == image
    assert not ram[0x100000 + len(image):0x100200].any()
    assert boot.entry_gla == 0x100020 and boot.image_end_gpa == 0x100200


def test_aout_kludge_with_load_end_and_leading_bytes(ram, write):
    # 16 bytes of text before the header; only load_addr..load_end_addr is taken from the file
    text = b"T" * 16
    header = mb_header(MB_AOUT_KLUDGE, aout=(0x200010, 0x200000, 0x200040, 0, 0x200000))
    image = text + header + b"D" * 64
    load_multiboot(ram, write(image, "k.bin"))
    assert ram[0x200000:0x200040].tobytes() == image[:0x40]
    assert ram[0x200040] == 0xAA


def test_aout_kludge_used_even_for_elf(ram, write):
    # §3.1.3: with bit 16 the address fields win over the executable's own headers
    image = standard_elf(header=mb_header(MB_AOUT_KLUDGE, aout=(0x300000 + 0x74, 0x300000, 0, 0, 0x300000)))
    boot = load_multiboot(ram, write(image))
    assert boot.segments[0].gpa == 0x300000 and boot.entry_gla == 0x300000
    assert ram[0x300000:0x300004].tobytes() == b"\x7fELF"


# ---- malformed images: one test each ------------------------------------------------------------
def test_missing_file(ram, tmp_path):
    expect_error(ram, tmp_path / "nope.elf", "no such file")


def test_empty_file(ram, write):
    expect_error(ram, write(b""), "empty file")


def test_truncated_file(ram, write):
    expect_error(ram, write(b"\x7fELF\x01"), "truncated")


def test_truncated_header_at_end_of_file(ram, write):
    expect_error(ram, write(b"\0" * 8 + struct.pack("<II", MB_MAGIC, 0)), "offset 0x8", "truncated")


def test_no_header(ram, write):
    image = build_elf([(0x100000, CODE, 32)], 0x100000, header=b"")
    expect_error(ram, write(image), "no multiboot header", "8192")


def test_header_beyond_first_8k_is_not_found(ram, write):
    expect_error(ram, write(standard_elf(header_offset=8192)), "no multiboot header")


def test_bad_checksum(ram, write):
    message = expect_error(ram, write(standard_elf(header=mb_header(checksum=0x12345678))), "bad checksum",
                           "0x12345678")
    assert "offset 0x74" in message                      # after the ELF header and two program headers

def test_unsupported_required_flag(ram, write):
    expect_error(ram, write(standard_elf(header=mb_header(flags=1 << 2))), "bit 2", "video mode")


def test_unknown_required_flag(ram, write):
    expect_error(ram, write(standard_elf(header=mb_header(flags=1 << 9))), "bit 9", "not support")


def test_not_elf_without_aout_kludge(ram, write):
    expect_error(ram, write(mb_header() + b"\0" * 64, "kernel.bin"), "not an ELF file", "bit 16")


def test_elf_wrong_class(ram, write):
    expect_error(ram, write(standard_elf(ei_class=2)), "ELFCLASS64", "32-bit")


def test_elf_wrong_machine(ram, write):
    expect_error(ram, write(standard_elf(e_machine=62)), "machine is 62", "EM_386")


def test_elf_wrong_type(ram, write):
    expect_error(ram, write(standard_elf(e_type=3)), "ET_DYN", "ET_EXEC")


def test_program_headers_out_of_file(ram, write):
    expect_error(ram, write(standard_elf(phoff=0x10000)), "program header table", "0x10000", "past the end")


def test_segment_bytes_out_of_file(ram, write):
    image = build_elf([(0x100000, CODE, 32)], 0x100000, file_offsets=[0x100])
    expect_error(ram, write(image[:0x110]), "segment 0", "past the end of the file")


def test_filesz_larger_than_memsz(ram, write):
    expect_error(ram, write(build_elf([(0x100000, CODE, 16)], 0x100000)), "p_filesz", "p_memsz")


def test_segment_beyond_guest_ram(ram, write):
    image = build_elf([(RAM_BYTES - 0x10, CODE, 0x100)], RAM_BYTES - 0x10)
    expect_error(ram, write(image), "beyond guest RAM", f"{RAM_BYTES - 0x10:#x}")


def test_segment_overlapping_info_area(ram, write):
    image = build_elf([(0x8000, CODE, 0x1800)], 0x8000)
    expect_error(ram, write(image), "overlaps the multiboot information area", "0x9000")


def test_overlapping_segments(ram, write):
    image = build_elf([(0x100000, CODE, 0x100), (0x1000F0, DATA, 8)], 0x100000)
    expect_error(ram, write(image), "0x1000f0", "overlap")


def test_segment_wraps_around_32_bits(ram, write):
    image = build_elf([(0xFFFFF000, CODE, 0x2000)], 0xFFFFF000)
    expect_error(ram, write(image), "0xfffff000", "wrap around")


def test_entry_outside_segments(ram, write):
    image = build_elf([(0x100000, CODE, 32)], 0x200000)
    expect_error(ram, write(image), "entry point 0x200000", "outside")


def test_aout_entry_outside_image(ram, write):
    image = mb_header(MB_AOUT_KLUDGE, aout=(0x100000, 0x100000, 0, 0, 0x500000)) + b"\0" * 16
    expect_error(ram, write(image, "k.bin"), "entry_addr 0x500000", "outside")


def test_aout_load_addr_above_header_addr(ram, write):
    image = mb_header(MB_AOUT_KLUDGE, aout=(0x100000, 0x100100, 0, 0, 0x100100)) + b"\0" * 16
    expect_error(ram, write(image, "k.bin"), "load_addr 0x100100", "header_addr")


def test_aout_image_before_start_of_file(ram, write):
    image = mb_header(MB_AOUT_KLUDGE, aout=(0x100040, 0x100000, 0, 0, 0x100000)) + b"\0" * 16
    expect_error(ram, write(image, "k.bin"), "before the start of the file")


def test_aout_load_end_past_end_of_file(ram, write):
    image = mb_header(MB_AOUT_KLUDGE, aout=(0x100000, 0x100000, 0x110000, 0, 0x100000)) + b"\0" * 16
    expect_error(ram, write(image, "k.bin"), "past the end of the file")


def test_aout_fields_truncated(ram, write):
    expect_error(ram, write(mb_header(MB_AOUT_KLUDGE) + b"\0" * 8, "k.bin"), "bit 16", "truncated")


def test_aout_wraps_around_32_bits(ram, write):
    image = mb_header(MB_AOUT_KLUDGE, aout=(0xFFFFFF00, 0xFFFFFF00, 0, 0, 0xFFFFFF00)) + b"\0" * 0x200
    expect_error(ram, write(image, "k.bin"), "wraps around")


def test_ram_too_small(write):
    small = np.zeros(1 << 20, dtype=np.uint8)
    with pytest.raises(LoaderError, match="at least 2 MiB"):
        load_multiboot(small, write(standard_elf()))


def test_cmdline_too_long_or_with_nul(ram, write):
    path = write(standard_elf())
    expect_error(ram, path, "does not fit", cmdline="x" * 0x100000)
    expect_error(ram, path, "NUL", cmdline="a\0b")


# ---- flat images ------------------------------------------------------------------------------
def test_flat_image(ram, write):
    assert load_flat(ram, write(b"\xEA\x00\x00\x00\xF0", "rom.bin"), 0xFFFF0) == (0xFFFF0, 5)
    assert ram[0xFFFF0:0xFFFF5].tobytes() == b"\xEA\x00\x00\x00\xF0"


def test_flat_image_errors(ram, write, tmp_path):
    path = write(b"abcd", "rom.bin")
    for call, words in [(lambda: load_flat(ram, path, RAM_BYTES - 2), ("rom.bin", "do not fit")),
                        (lambda: load_flat(ram, path, -1), ("rom.bin", "gpa")),
                        (lambda: load_flat(ram, tmp_path / "none.bin", 0), ("none.bin", "no such file")),
                        (lambda: load_flat(ram, write(b"", "e.bin"), 0), ("e.bin", "empty"))]:
        with pytest.raises(LoaderError) as info:
            call()
        assert all(w in str(info.value) for w in words), str(info.value)
