"""vmcore.workloads: every workload builds as a multiboot guest and as a native program, and runs natively."""

import os
import re
import shutil
import struct
from concurrent.futures import ThreadPoolExecutor

import capstone
import pytest

from vmcore import workloads
from vmcore.errors import WorkloadError

NAMES = list(workloads.WORKLOADS)

MB_HEADER_MAGIC = 0x1BADB002
MB_HEADER_SEARCH_BYTES = 8192
MB_FLAG_MEMINFO = 1 << 1
MB_FLAG_AOUT_KLUDGE = 1 << 16
LOAD_GPA = 0x100000
PT_LOAD = 1
ET_EXEC = 2
EM_386 = 3

# Capstone groups of instructions the workloads must not use: the engine has no MMX or SIMD, and the
# workloads are integer code by their rules (workloads/README.md), x87 included.
FORBIDDEN_GROUPS = {
    getattr(capstone.x86, f"X86_GRP_{g}")
    for g in ("FPU", "MMX", "3DNOW", "SSE1", "SSE2", "SSE3", "SSSE3", "SSE41", "SSE42", "SSE4A", "AVX", "AVX2",
              "AVX512", "FMA", "FMA4", "F16C")
}
SIMD_OR_X87_REGISTER = re.compile(r"\b(st\(\d\)|x?mm\d+|ymm\d+|zmm\d+)\b")


@pytest.fixture
def private_sources(tmp_path, monkeypatch):
    """A private copy of the workload sources and an empty cache, for tests that edit sources."""
    src = tmp_path / "workloads"
    shutil.copytree(workloads.WORKLOAD_DIR, src)
    monkeypatch.setattr(workloads, "WORKLOAD_DIR", src)
    monkeypatch.setenv("VMCORE_CACHE_DIR", str(tmp_path / "cache"))
    return src


def elf32(path):
    """(header fields, program headers, section headers by name) of an ELF32 little-endian file."""
    image = path.read_bytes()
    assert image[:4] == b"\x7fELF" and image[4] == 1 and image[5] == 1, "not an ELF32 little-endian file"
    e_type, e_machine, _, e_entry, e_phoff, e_shoff, _, _, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx = \
        struct.unpack_from("<HHIIIIIHHHHHH", image, 16)
    phdrs = [dict(zip(("type", "offset", "vaddr", "paddr", "filesz", "memsz", "flags", "align"),
                      struct.unpack_from("<8I", image, e_phoff + i * e_phentsize))) for i in range(e_phnum)]
    raw_sections = [struct.unpack_from("<10I", image, e_shoff + i * e_shentsize) for i in range(e_shnum)]
    strtab_offset = raw_sections[e_shstrndx][4]
    sections = {}
    for name_offset, _, _, addr, offset, size, *_ in raw_sections:
        name = image[strtab_offset + name_offset:image.index(b"\0", strtab_offset + name_offset)].decode()
        sections[name] = dict(addr=addr, offset=offset, size=size)
    header = dict(type=e_type, machine=e_machine, entry=e_entry)
    return image, header, phdrs, sections


def test_catalogue():
    assert {"sieve", "crc32", "matmul", "dhry", "qsort", "ptrchase"} <= set(NAMES)
    for wl in workloads.WORKLOADS.values():
        assert wl.description
        assert list(wl.sizes) == ["tiny", "small", "bench"]
        assert 0 < wl.sizes["tiny"] < wl.sizes["small"] < wl.sizes["bench"]
        assert wl.memory_mb >= 2
    # ptrchase's bench buffer (4-byte slots) is at least 16 MiB and fits its memory.
    ptrchase = workloads.WORKLOADS["ptrchase"]
    assert 16 << 20 <= ptrchase.sizes["bench"] * 4 < (ptrchase.memory_mb - 1) << 20


@pytest.mark.parametrize("name", NAMES)
def test_builds_both_ways(name):
    elf = workloads.guest_elf(name)
    exe = workloads.native_exe(name)
    assert elf.suffix == ".elf" and elf.read_bytes()[:4] == b"\x7fELF"
    assert os.access(exe, os.X_OK)
    # The second call is served from the cache.
    assert workloads.guest_elf(name) == elf
    assert workloads.native_exe(name) == exe


@pytest.mark.parametrize("name", NAMES)
def test_guest_is_a_multiboot_elf_at_1mib(name):
    image, header, phdrs, _ = elf32(workloads.guest_elf(name))
    assert header["type"] == ET_EXEC and header["machine"] == EM_386

    loads = [p for p in phdrs if p["type"] == PT_LOAD]
    assert loads[0]["vaddr"] == loads[0]["paddr"] == LOAD_GPA
    assert all(p["paddr"] >= LOAD_GPA for p in loads)
    text = loads[0]
    assert text["vaddr"] <= header["entry"] < text["vaddr"] + text["filesz"]

    offset = image.find(struct.pack("<I", MB_HEADER_MAGIC), 0, MB_HEADER_SEARCH_BYTES)
    assert offset >= 0 and offset % 4 == 0, "multiboot header not in the first 8 KiB, 4-byte aligned"
    magic, flags, checksum = struct.unpack_from("<3I", image, offset)
    assert (magic + flags + checksum) & 0xFFFFFFFF == 0
    assert flags & MB_FLAG_MEMINFO and not flags & MB_FLAG_AOUT_KLUDGE


FLOATING_POINT = {"nbody"}      # the x87 workload; the others are integer-only (workloads/README.md)


@pytest.mark.parametrize("name", NAMES)
def test_guest_code_has_no_x87_or_simd(name):
    """Integer workloads hold no x87 or SIMD instruction; the floating-point one holds x87 and no SIMD
    (the guest CPU has no MMX or SSE)."""
    image, _, _, sections = elf32(workloads.guest_elf(name))
    text = sections[".text"]
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    md.detail = True
    decoded = x87 = 0
    for insn in md.disasm(image[text["offset"]:text["offset"] + text["size"]], text["addr"]):
        decoded += insn.size
        where = f"{insn.address:#x}: {insn.mnemonic} {insn.op_str}"
        if name in FLOATING_POINT and (insn.mnemonic.startswith("f") or "st(" in insn.op_str):
            x87 += 1
            continue
        assert not FORBIDDEN_GROUPS & set(insn.groups), where
        assert not insn.mnemonic.startswith("f") and not SIMD_OR_X87_REGISTER.search(insn.op_str), where
    assert decoded == text["size"], "capstone stopped before the end of .text"
    assert (x87 > 0) == (name in FLOATING_POINT)


@pytest.mark.parametrize("name", NAMES)
def test_native_tiny_output(name):
    size = workloads.WORKLOADS[name].sizes["tiny"]
    run = workloads.run_native(name, size)
    assert run.returncode == 0, run.output
    assert re.fullmatch(rf"{name} size={size} checksum=0x[0-9a-f]{{8}}\n", run.output)
    assert run.seconds > 0


@pytest.mark.parametrize("name", NAMES)
def test_size_changes_the_checksum(name):
    sizes = workloads.WORKLOADS[name].sizes
    tiny = workloads.run_native(name, sizes["tiny"])
    small = workloads.run_native(name, sizes["small"])
    assert tiny.returncode == small.returncode == 0
    assert tiny.output.split("checksum=")[1] != small.output.split("checksum=")[1]


def test_run_native_repeats_and_keeps_the_best_time():
    run = workloads.run_native("crc32", 1000, repeat=3)
    assert run.returncode == 0 and run.output.startswith("crc32 size=1000 ")
    with pytest.raises(WorkloadError):
        workloads.run_native("crc32", 1000, repeat=0)


def test_out_of_range_size_is_an_exit_status():
    run = workloads.run_native("qsort", 0)
    assert run.returncode == 2
    assert "out of range" in run.output


def test_compile_error_raises_with_the_compiler_message(private_sources):
    (private_sources / "sieve.c").write_text("int wl_run(unsigned size) { return size + ; }\n")
    with pytest.raises(WorkloadError, match=r"(?s)native sieve failed.*sieve\.c.*error"):
        workloads.native_exe("sieve")
    with pytest.raises(WorkloadError, match=r"(?s)guest sieve failed.*sieve\.c.*error"):
        workloads.guest_elf("sieve")
    assert not any(p.name.endswith(".tmp") for p in (private_sources.parent / "cache").iterdir())


def test_editing_a_source_rebuilds(private_sources):
    elf, exe = workloads.guest_elf("sieve"), workloads.native_exe("sieve")
    with (private_sources / "common" / "wl.h").open("a") as f:
        f.write("/* edited */\n")
    assert workloads.guest_elf("sieve") != elf
    assert workloads.native_exe("sieve") != exe


def test_concurrent_builds_agree(private_sources):
    with ThreadPoolExecutor(4) as pool:
        paths = set(pool.map(lambda _: workloads.guest_elf("crc32"), range(4)))
    assert len(paths) == 1
    assert elf32(paths.pop())[1]["machine"] == EM_386


def test_missing_gcc(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(WorkloadError, match="gcc not found"):
        workloads.native_exe("sieve")


def test_missing_sources(monkeypatch, tmp_path):
    monkeypatch.setattr(workloads, "WORKLOAD_DIR", tmp_path / "nowhere")
    with pytest.raises(WorkloadError, match="workload sources not found"):
        workloads.guest_elf("sieve")


def test_resolve(tmp_path):
    elf = workloads.guest_elf("sieve")
    assert workloads.resolve("sieve") == elf
    assert workloads.resolve(str(elf)) == elf
    assert workloads.resolve(elf) == elf
    not_elf = tmp_path / "x.elf"
    not_elf.write_text("hello")
    with pytest.raises(WorkloadError, match="not an ELF"):
        workloads.resolve(not_elf)
    with pytest.raises(WorkloadError, match="neither a workload"):
        workloads.resolve("no-such-workload")


def test_unknown_workload():
    with pytest.raises(WorkloadError, match="unknown workload"):
        workloads.native_exe("nope")


def test_guest_cmdline():
    assert workloads.guest_cmdline(2000) == "size=2000"
    for bad in (-1, 1 << 32, True, "10"):
        with pytest.raises(WorkloadError):
            workloads.guest_cmdline(bad)
