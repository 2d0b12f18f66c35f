"""The Linux/x86 boot protocol loader (vmcore/loaders/bzimage.py): a synthetic bzImage built
here (tests/bzimage_guest.py) is loaded, its zero page read back, and its 32-bit code run to
show the CPU state the 32-bit boot protocol promises. Every malformed image is a LoaderError
naming the file and the field."""
import struct

import numpy as np
import pytest

from bzimage_guest import CODE, HEADER_END, bzimage
from vmcore import Exit, Machine
from vmcore.errors import LoaderError
from vmcore.loaders.bzimage import (BOOT_CS, BOOT_DS, CMDLINE_GPA, E820_RAM, E820_RESERVED, GDT_GPA,
                                    ZERO_PAGE_GPA, load_bzimage)

MB = 1 << 20


@pytest.fixture
def image(tmp_path):
    def write(data=None, name="bzImage", **kw):
        p = tmp_path / name
        p.write_bytes(bzimage(**kw) if data is None else data)
        return p
    return write


def ram(mb=32):
    return np.zeros(mb * MB, dtype=np.uint8)


def u32(mem, gpa):
    return struct.unpack_from("<I", mem, gpa)[0]


def test_zero_page_header_cmdline_and_e820(image):
    mem = ram(32)
    boot = load_bzimage(mem, image(), cmdline="console=ttyS0 quiet")
    assert boot.kernel_gpa == 0x100000 and boot.entry_gla == 0x100000 and boot.protocol == 0x020F
    assert mem[0x100000:0x100000 + len(CODE)].tobytes() == CODE
    zp = ZERO_PAGE_GPA
    assert mem[zp + 0x202:zp + 0x206].tobytes() == b"HdrS"            # the setup header copied in
    assert mem[zp + 0x210] == 0xFF                                      # type_of_loader: undefined
    assert mem[zp + 0x211] & 0x01                                       # LOADED_HIGH
    assert u32(mem, zp + 0x228) == CMDLINE_GPA
    assert mem[CMDLINE_GPA:CMDLINE_GPA + 20].tobytes() == b"console=ttyS0 quiet\0"
    assert mem[zp + HEADER_END:zp + 0x2D0].tobytes() == bytes(0x2D0 - HEADER_END)
    assert u32(mem, zp + 0x218) == 0 and u32(mem, zp + 0x21C) == 0     # no initrd
    assert mem[zp + 0x1E8] == 3
    e820 = [struct.unpack_from("<QQI", mem, zp + 0x2D0 + 20 * k) for k in range(3)]
    assert e820 == [(0, 0x9F000, E820_RAM), (0x9F000, 0x61000, E820_RESERVED), (MB, 31 * MB, E820_RAM)]
    assert boot.e820 == e820
    # the GDT: 0x10 flat code, 0x18 flat data
    assert struct.unpack_from("<QQ", mem, GDT_GPA + 0x10) == (0x00CF9B000000FFFF, 0x00CF93000000FFFF)


def test_initrd_goes_high_below_initrd_addr_max_and_ram_top(image, tmp_path):
    rd = tmp_path / "initrd.img"
    rd.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 40)
    mem = ram(32)
    boot = load_bzimage(mem, image(), initrd=rd)
    size = rd.stat().st_size
    assert boot.initrd_size == size and boot.initrd_gpa % 4096 == 0
    assert boot.initrd_gpa + size <= 32 * MB < boot.initrd_gpa + size + 4096
    assert mem[boot.initrd_gpa:boot.initrd_gpa + size].tobytes() == rd.read_bytes()
    assert (u32(mem, ZERO_PAGE_GPA + 0x218), u32(mem, ZERO_PAGE_GPA + 0x21C)) == (boot.initrd_gpa, size)
    mem = ram(32)
    boot = load_bzimage(mem, image(initrd_addr_max=0xFFFFFF), initrd=rd)    # below 16 MiB
    assert boot.initrd_gpa + size <= 16 * MB < boot.initrd_gpa + size + 4096


def test_relocatable_kernel_goes_to_its_preferred_address(image):
    mem = ram(64)
    boot = load_bzimage(mem, image(relocatable=1, kernel_alignment=16 * MB, pref_address=16 * MB))
    assert boot.kernel_gpa == boot.entry_gla == 16 * MB
    assert u32(mem, ZERO_PAGE_GPA + 0x214) == 16 * MB                 # code32_start moved with it
    assert mem[16 * MB:16 * MB + len(CODE)].tobytes() == CODE


@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_guest_enters_through_the_32_bit_boot_protocol(image, mode):
    m = Machine(memory_mb=32, mode=mode)
    m.load_linux(image(), cmdline="root=/dev/ram0 vmcore")
    assert m.reg_read("eip") == 0x100000 and m.reg_read("esi") == ZERO_PAGE_GPA
    assert (m.reg_read("ebp"), m.reg_read("edi"), m.reg_read("ebx")) == (0, 0, 0)
    assert m.reg_read("cs") == BOOT_CS
    assert all(m.reg_read(s) == BOOT_DS for s in ("ds", "es", "ss"))
    assert not m.reg_read("eflags") & 0x200 and not m.reg_read("cr0") & 0x80000000
    r = m.run(count=10_000)
    assert r.exit is Exit.DEBUG_EXIT and r.exit_code == (3 << 1) | 1        # e820_entries = 3
    assert r.console == "root=/dev/ram0 vmcore"


def _error(path, mem=None, **kw):
    with pytest.raises(LoaderError) as e:
        load_bzimage(ram(32) if mem is None else mem, path, **kw)
    assert str(path) in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("kw, words", [
    ({"truncate": 0x200}, "truncated"),
    ({"magic": b"HdrX"}, "magic"),
    ({"boot_flag": 0x1234}, "boot_flag"),
    ({"version": 0x0205}, "2.05"),
    ({"version": 0x0100}, "version"),
    ({"jump": b"\x90\x90"}, "jump"),
    ({"loadflags": 0}, "LOADED_HIGH"),
    ({"syssize": 0}, "syssize"),
    ({"syssize": 0x10000}, "syssize"),
    ({"code32_start": 0x10000}, "code32_start"),
    ({"init_size": 0x7F00000}, "init_size"),
    ({"relocatable": 1, "kernel_alignment": 0x3000}, "kernel_alignment"),
])
def test_malformed_bzimage_is_a_loader_error_naming_the_field(image, kw, words):
    assert words in _error(image(**kw))


def test_truncated_protected_mode_kernel(image):
    data = bzimage(syssize=0x100)            # 4 KiB promised, 32 bytes there
    msg = _error(image(data))
    assert "truncated" in msg and "syssize" in msg


def test_command_line_errors(image):
    assert "cmdline_size" in _error(image(cmdline_size=8), cmdline="console=ttyS0")
    assert "NUL" in _error(image(), cmdline="a\0b")


def test_oversized_initrd_names_the_initrd(image, tmp_path):
    rd = tmp_path / "big.img"
    rd.write_bytes(bytes(20 * MB))
    with pytest.raises(LoaderError) as e:
        load_bzimage(ram(16), image(), initrd=rd)
    assert str(rd) in str(e.value) and "initrd_addr_max" in str(e.value)
    with pytest.raises(LoaderError) as e:           # fits in RAM, not below initrd_addr_max
        load_bzimage(ram(64), image(initrd_addr_max=0x7FFFFF), initrd=rd)
    assert str(rd) in str(e.value)


def test_missing_files_and_too_little_ram(image, tmp_path):
    with pytest.raises(LoaderError, match="no such file"):
        load_bzimage(ram(32), tmp_path / "nothing")
    with pytest.raises(LoaderError, match="no such file"):
        load_bzimage(ram(32), image(), initrd=tmp_path / "nothing.img")
    with pytest.raises(LoaderError, match="16 MiB"):
        load_bzimage(ram(8), image())


def test_failed_load_leaves_ram_untouched(image, tmp_path):
    rd = tmp_path / "big.img"
    rd.write_bytes(bytes(40 * MB))
    mem = ram(32)
    with pytest.raises(LoaderError):
        load_bzimage(mem, image(), initrd=rd, cmdline="x")
    assert not mem.any()
