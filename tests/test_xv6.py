"""xv6-public built from its source (tools/fetch_xv6.py) and its QEMU reference run
(tools/xv6_bench.py), issue 12.

The images come from tools/fetch_xv6.py: $XV6_SRC (a directory holding xv6-public's files),
else a build cached in build/xv6/, else `git clone` of the pinned commit. Without any of them
(no network here) the image tests skip and say so. Layouts checked below are xv6's own:
Makefile (xv6.img = 10000 sectors: bootblock then kernel), sign.pl (0x55 0xAA at 510),
kernel.ld (linked at 0x80100000, loaded at 0x100000), entry.S (multiboot header), mkfs.c and
fs.h (the superblock, dinode and dirent formats, FSSIZE 1000 blocks of 512 bytes).
"""
from __future__ import annotations

import shutil
import struct
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import fetch_xv6  # noqa: E402
import xv6_bench  # noqa: E402

BSIZE = 512
ROOTINO = 1                      # fs.h
T_DIR, T_FILE = 1, 2             # stat.h
DINODE = struct.Struct("<hhhhI13I")   # fs.h struct dinode: type major minor nlink size addrs[NDIRECT+1]
DIRENT = struct.Struct("<H14s")       # fs.h struct dirent: inum, name[DIRSIZ]
SUPERBLOCK = struct.Struct("<7I")     # size nblocks ninodes nlog logstart inodestart bmapstart
IPB = BSIZE // DINODE.size            # inodes per block (8)


@pytest.fixture(scope="module")
def images() -> Path:
    try:
        return fetch_xv6.fetch_and_build()
    except fetch_xv6.Xv6SourceUnavailable as exc:
        pytest.skip(f"xv6 images cannot be built here: {exc}")


# ---- tools/fetch_xv6.py: the source check ---------------------------------------------------

def test_check_source_names_the_missing_files(tmp_path):
    (tmp_path / "Makefile").write_text("all:\n")
    (tmp_path / "proc.c").write_text("")
    with pytest.raises(fetch_xv6.Xv6BuildError) as err:
        fetch_xv6.check_source(tmp_path)
    message = str(err.value)
    assert "not an xv6-public source tree" in message
    for name in ("kernel.ld", "bootasm.S", "usertests.c", "mkfs.c"):
        assert name in message
    missing = message.split("missing ", 1)[1].split(", ")
    assert "proc.c" not in missing and "Makefile" not in missing
    assert len(missing) == len(fetch_xv6.REQUIRED_FILES) - 2


def test_check_source_rejects_a_missing_directory(tmp_path):
    with pytest.raises(fetch_xv6.Xv6BuildError, match="does not exist"):
        fetch_xv6.check_source(tmp_path / "nowhere")


def test_source_digest_follows_every_file(tmp_path):
    for name in fetch_xv6.REQUIRED_FILES:
        (tmp_path / name).write_text(name)
    before = fetch_xv6.source_digest(tmp_path)
    assert fetch_xv6.source_digest(tmp_path) == before
    (tmp_path / "usertests.c").write_text("changed")
    assert fetch_xv6.source_digest(tmp_path) != before


def test_no_source_is_reported_as_unavailable(tmp_path, monkeypatch):
    # no --source, no $XV6_SRC, an empty cache, and git clone failing (no network)
    monkeypatch.delenv("XV6_SRC", raising=False)

    def no_network(where):
        raise fetch_xv6.Xv6BuildError("git clone: Could not resolve host: github.com")

    monkeypatch.setattr(fetch_xv6, "clone", no_network)
    with pytest.raises(fetch_xv6.Xv6SourceUnavailable, match=r"no \$XV6_SRC.*Could not resolve host"):
        fetch_xv6.fetch_and_build(cache=tmp_path / "cache")


def test_required_files_are_the_makefile_programs():
    # Makefile UPROGS: _cat ... _zombie, each built from its .c
    for prog in ("cat", "echo", "forktest", "grep", "init", "kill", "ln", "ls", "mkdir", "rm", "sh",
                 "stressfs", "usertests", "wc", "zombie"):
        assert f"{prog}.c" in fetch_xv6.REQUIRED_FILES


# ---- the images -------------------------------------------------------------------------------

def test_xv6_img_is_a_signed_boot_sector_then_the_kernel(images):
    disk = (images / "xv6.img").read_bytes()
    assert len(disk) == 10000 * 512                     # Makefile: dd count=10000
    assert disk[510:512] == b"\x55\xaa"                 # sign.pl: boot signature at 510
    assert disk[0] == 0xFA                              # bootasm.S: start: cli
    kernel = disk[512:]                                 # Makefile: dd if=kernel seek=1
    assert kernel[:4] == b"\x7fELF"
    assert kernel[4] == 1 and kernel[5] == 1            # ELFCLASS32, little endian
    e_machine, = struct.unpack_from("<H", kernel, 18)
    assert e_machine == 3                               # EM_386
    e_entry, e_phoff = struct.unpack_from("<II", kernel, 24)
    # entry.S: _start = V2P_WO(entry), the physical address bootmain.c jumps to
    assert 0x100000 <= e_entry < 0x200000
    p_type, p_offset, p_vaddr, p_paddr = struct.unpack_from("<IIII", kernel, e_phoff)
    assert p_type == 1 and p_vaddr == 0x80100000 and p_paddr == 0x100000   # kernel.ld: KERNLINK, AT(0x100000)


def test_kernel_has_a_multiboot_header(images):
    # entry.S: magic 0x1badb002, flags 0, checksum -(magic+flags), 4-byte aligned in the first
    # 8 KiB (Multiboot Specification 0.6.96, 3.1.1)
    kernel = (images / "xv6.img").read_bytes()[512:512 + 8192]
    for off in range(0, len(kernel) - 12, 4):
        magic, flags, checksum = struct.unpack_from("<III", kernel, off)
        if magic == 0x1BADB002 and (magic + flags + checksum) & 0xFFFFFFFF == 0:
            assert flags == 0
            return
    pytest.fail("no multiboot header in the first 8 KiB of the kernel")


def read_block(fs: bytes, bno: int) -> bytes:
    return fs[bno * BSIZE:(bno + 1) * BSIZE]


def read_inode(fs: bytes, sb: tuple, inum: int) -> tuple:
    block = read_block(fs, sb[5] + inum // IPB)       # IBLOCK(i, sb)
    return DINODE.unpack_from(block, (inum % IPB) * DINODE.size)


def file_bytes(fs: bytes, dinode: tuple) -> bytes:
    size, addrs = dinode[4], dinode[5:]
    data = b"".join(read_block(fs, b) for b in addrs[:12] if b)
    if size > 12 * BSIZE:                               # NDIRECT 12, then one indirect block
        indirect = struct.unpack("<128I", read_block(fs, addrs[12]))
        data += b"".join(read_block(fs, b) for b in indirect if b)
    return data[:size]


def test_fs_img_superblock(images):
    fs = (images / "fs.img").read_bytes()
    assert len(fs) == 1000 * BSIZE                      # param.h FSSIZE
    size, nblocks, ninodes, nlog, logstart, inodestart, bmapstart = SUPERBLOCK.unpack_from(read_block(fs, 1))
    assert size == 1000
    assert ninodes == 200                               # mkfs.c NINODES
    assert nlog == 30                                   # param.h LOGSIZE = MAXOPBLOCKS*3
    assert logstart == 2                                # after the boot and super blocks
    assert inodestart == logstart + nlog
    assert bmapstart == inodestart + ninodes // IPB + 1
    assert nblocks == size - (bmapstart + 1)            # one bitmap block (FSSIZE/(BSIZE*8) + 1)


def test_fs_img_root_directory_holds_readme_and_the_programs(images):
    fs = (images / "fs.img").read_bytes()
    sb = SUPERBLOCK.unpack_from(read_block(fs, 1))
    root = read_inode(fs, sb, ROOTINO)
    assert root[0] == T_DIR
    entries = {}
    raw = file_bytes(fs, root)
    for off in range(0, len(raw), DIRENT.size):
        inum, name = DIRENT.unpack_from(raw, off)
        if inum:
            entries[name.rstrip(b"\0").decode()] = inum
    assert entries["."] == ROOTINO and entries[".."] == ROOTINO
    programs = {"cat", "echo", "forktest", "grep", "init", "kill", "ln", "ls", "mkdir", "rm", "sh",
                "stressfs", "usertests", "wc", "zombie"}       # mkfs strips the leading _
    assert set(entries) == programs | {".", "..", "README"}
    for prog in programs:
        dinode = read_inode(fs, sb, entries[prog])
        assert dinode[0] == T_FILE
        body = file_bytes(fs, dinode)
        assert body[:4] == b"\x7fELF", prog
        assert struct.unpack_from("<I", body, 24)[0] < 0x10000, prog   # user programs: -Ttext 0, entry main
    readme = file_bytes(fs, read_inode(fs, sb, entries["README"]))
    assert readme.startswith(b"NOTE: we have stopped maintaining the x86 version of xv6")


# ---- tools/xv6_bench.py: the console driver -------------------------------------------------

class ScriptedGuest:
    """A console that prints `boot`, then `reply` once the guest is sent `usertests\\n`."""

    def __init__(self, boot: bytes, reply: bytes):
        self.pending = [boot[i:i + 7] for i in range(0, len(boot), 7)]   # arrives in pieces
        self.reply = reply
        self.typed = b""

    def read(self, timeout: float) -> bytes:
        return self.pending.pop(0) if self.pending else b""

    def write(self, data: bytes) -> None:
        self.typed += data
        if self.typed.endswith(b"usertests\n"):
            self.pending.append(b"usertests\n" + self.reply)


BOOT = b"xv6...\ncpu0: starting 0\nsb: size 1000 nblocks 941\ninit: starting sh\n$ "


def test_drive_console_types_usertests_at_the_prompt_and_waits_for_the_marker():
    guest = ScriptedGuest(BOOT, b"usertests starting\nexec test\nALL TESTS PASSED\n$ ")
    result = xv6_bench.drive_console(guest.read, guest.write, boot_timeout=5, tests_timeout=5)
    assert guest.typed == b"usertests\n"
    assert result["console"].endswith("ALL TESTS PASSED\n$ ")
    assert 0 <= result["boot_s"] <= result["total_s"]
    assert 0 <= result["usertests_s"] <= result["total_s"]


def test_drive_console_reports_a_usertests_failure_when_the_prompt_returns():
    guest = ScriptedGuest(BOOT, b"usertests starting\nsbrk test\nsbrk test failed post-fork\n$ ")
    with pytest.raises(xv6_bench.ConsoleFailure, match="usertests: sbrk test failed post-fork"):
        xv6_bench.drive_console(guest.read, guest.write, boot_timeout=5, tests_timeout=5)


def test_drive_console_reports_a_kernel_panic_during_boot():
    guest = ScriptedGuest(b"xv6...\nlapicid 0: panic: Expect to run on an SMP\n 80103a4e 0", b"")
    with pytest.raises(xv6_bench.ConsoleFailure, match="boot: lapicid 0: panic: Expect to run on an SMP"):
        xv6_bench.drive_console(guest.read, guest.write, boot_timeout=5)
    assert guest.typed == b""


def test_drive_console_times_out_without_a_prompt():
    guest = ScriptedGuest(b"cpu0: starting 0\n", b"")
    with pytest.raises(xv6_bench.ConsoleTimeout, match=r"boot: no b'\$ ' after 0 s"):
        xv6_bench.drive_console(guest.read, guest.write, boot_timeout=0.2)


# ---- QEMU TCG, the reference ------------------------------------------------------------------

needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-i386") is None,
                                reason="qemu-system-i386 is not installed (apt-get install qemu-system-x86)")


@needs_qemu
def test_qemu_boots_xv6_through_seabios_to_the_shell(images):
    with xv6_bench.qemu_console(images, smp=1) as (read, write, t0, cmd):
        out = bytearray()
        at = xv6_bench.wait_for(read, out, b"$ ", 0, 60, (xv6_bench.PANIC,), "boot")
        write(b"ls\n")
        xv6_bench.wait_for(read, out, b"\n$ ", at, 30, (xv6_bench.PANIC,), "ls")
    text = out.decode(errors="replace")
    assert "SeaBIOS" in text and "Booting from Hard Disk" in text
    assert "cpu0: starting 0" in text
    assert "sb: size 1000 nblocks 941 ninodes 200 nlog 30 logstart 2 inodestart 32 bmap start 58" in text
    assert "init: starting sh" in text
    listing = text[text.index("$ ls"):]
    assert "README         2 2 " in listing and "usertests      2 " in listing   # ls.c: name, T_FILE, inum, size


@needs_qemu
def test_qemu_runs_usertests_to_all_tests_passed(images):
    result = xv6_bench.run_qemu(images, smp=1, boot_timeout=60, tests_timeout=300)
    assert "usertests starting" in result["console"]
    assert result["console"].count(" ok") >= 20
    assert result["boot_s"] < 30


# ---- vmcore ----------------------------------------------------------------------------------

needs_seabios = pytest.mark.skipif(not xv6_bench.SEABIOS.exists(),
                                   reason=f"{xv6_bench.SEABIOS} is missing (apt-get install seabios)")


@needs_seabios
@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_vmcore_boots_xv6_through_seabios_and_runs_usertests(images, mode):
    """SeaBIOS from the reset vector, the boot sector of xv6.img, xv6's kernel through PIO, the MP
    table SeaBIOS built, LAPIC timer and IOAPIC interrupts, fs.img as the primary slave, the shell,
    and usertests typed on the keyboard, to ALL TESTS PASSED; both modes run the same instructions."""
    result = xv6_bench.run_vmcore(images, mode, boot_timeout=120, tests_timeout=900)
    console = result["console"]
    assert "cpu0: starting 0" in console and "init: starting sh" in console
    assert "usertests starting" in console and "ALL TESTS PASSED" in console
    assert "FAILED" not in console and "panic" not in console
    stats = result["stats"]
    assert stats["mmio_const_reads"] > 1000 * stats["exits_mmio"]   # the LAPIC ID, read without exits
    test_vmcore_boots_xv6_through_seabios_and_runs_usertests.counts[mode] = result["instructions"]
    if len(test_vmcore_boots_xv6_through_seabios_and_runs_usertests.counts) == 2:
        bare, bt = (test_vmcore_boots_xv6_through_seabios_and_runs_usertests.counts[k] for k in ("bare", "bt"))
        # typing is paced by the keyboard buffer at slice boundaries: the same in both modes
        assert bare == bt


test_vmcore_boots_xv6_through_seabios_and_runs_usertests.counts = {}
