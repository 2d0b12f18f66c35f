"""The guest workloads: build them, find them, and run them natively.

Each workload is one C file in ``workloads/`` built twice from the same source:
as a freestanding multiboot v1 i386 guest (an ELF linked at 1 MiB that prints on
the debug console, port 0xE9, and exits through the debug-exit port, 0xF4) and as
a native host program. For the same size both print the same line,
``<name> size=<size> checksum=0x<8 hex digits>``.

Builds are cached in ``$VMCORE_CACHE_DIR`` (default ``~/.cache/vmcore/workloads``)
under a key hashed from the sources, the compiler flags and ``gcc --version``, so
an edit rebuilds; each build goes to a temporary file that is renamed into place,
so concurrent processes never see a half-written binary.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from vmcore.errors import WorkloadError

WORKLOAD_DIR = Path(__file__).resolve().parent.parent / "workloads"
"""The C sources; found next to the package in a source checkout (``pip install -e .``)."""

MAX_SIZE = 0xFFFFFFFF       # sizes are 32-bit unsigned in the guest

GUEST_CFLAGS = (
    "-m32", "-march=i686", "-O2", "-ffreestanding", "-fno-pic", "-fno-pie", "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables", "-nostdlib", "-static", "-Wall", "-Wextra",
    "-Wl,-m,elf_i386", "-Wl,--build-id=none",
)
NATIVE_CFLAGS = ("-O2", "-Wall", "-Wextra")

# Files under WORKLOAD_DIR/common that each build compiles; both also hash wl.h, the guest link.ld.
_GUEST_COMMON = ("multiboot.S", "guest.c", "wl.c")
_NATIVE_COMMON = ("native.c", "wl.c")


@dataclasses.dataclass(frozen=True)
class Workload:
    """What a workload does, its calibrated sizes and the guest RAM it needs."""

    name: str
    description: str
    sizes: Mapping[str, int]
    """``tiny``: about 1e5-2e6 guest instructions (tests); ``small``: about 1e7-3e7;
    ``bench``: about 0.5 s natively."""
    memory_mb: int
    """Guest RAM (MiB) enough for every listed size."""


@dataclasses.dataclass(frozen=True)
class NativeRun:
    """One native run: what it printed, the best wall time over the repeats, its exit status."""

    output: str
    seconds: float
    returncode: int


def _workload(name: str, description: str, tiny: int, small: int, bench: int, memory_mb: int) -> Workload:
    return Workload(name, description, {"tiny": tiny, "small": small, "bench": bench}, memory_mb)


WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    _workload("sieve", "segmented sieve of Eratosthenes: the primes up to size",
              tiny=20_000, small=1_200_000, bench=260_000_000, memory_mb=4),
    _workload("crc32", "table-driven CRC-32 of size bytes of a 64 KiB pseudo-random buffer",
              tiny=40_000, small=3_000_000, bench=240_000_000, memory_mb=4),
    _workload("matmul", "integer matrix multiply of two size x size matrices",
              tiny=32, small=136, bench=1_000, memory_mb=16),
    _workload("dhry", "Dhrystone-like mix of calls, structs, enums, strings and arrays, size iterations",
              tiny=1_000, small=25_000, bench=14_000_000, memory_mb=4),
    _workload("qsort", "quicksort of size pseudo-random signed 32-bit ints",
              tiny=4_000, small=100_000, bench=7_000_000, memory_mb=32),
    _workload("ptrchase", "pointer chase once around a random cycle of size 32-bit slots",
              tiny=16_000, small=524_288, bench=4_194_304, memory_mb=24),
)}


def _lookup(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise WorkloadError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}") from None


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_SIZE:
        raise WorkloadError(f"workload size must be an int in [0, {MAX_SIZE:#x}], not {size!r}")
    return size


def cache_dir() -> Path:
    """Where built workloads go: ``$VMCORE_CACHE_DIR`` or ``~/.cache/vmcore/workloads``."""
    env = os.environ.get("VMCORE_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "vmcore" / "workloads"


def _compiler() -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise WorkloadError("gcc not found on PATH: it is needed to build the workloads")
    return gcc


@functools.lru_cache(maxsize=None)
def _compiler_version(gcc: str) -> str:
    try:
        proc = subprocess.run([gcc, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise WorkloadError(f"cannot run {gcc} --version: {exc}") from exc
    return proc.stdout


def _build(name: str, kind: str) -> Path:
    """Builds workload ``name`` as ``kind`` ("guest" or "native") unless the cache has it."""
    _lookup(name)
    if not WORKLOAD_DIR.is_dir():
        raise WorkloadError(f"workload sources not found at {WORKLOAD_DIR}: vmcore.workloads needs a source "
                            f"checkout installed in editable mode (pip install -e .)")
    common = WORKLOAD_DIR / "common"
    if kind == "guest":
        sources = [common / f for f in _GUEST_COMMON]
        flags = [*GUEST_CFLAGS, "-T", str(common / "link.ld")]
        hashed_extra = [common / "wl.h", common / "link.ld"]
        suffix = ".elf"
    else:
        sources = [common / f for f in _NATIVE_COMMON]
        flags = list(NATIVE_CFLAGS)
        hashed_extra = [common / "wl.h"]
        suffix = ""
    sources.append(WORKLOAD_DIR / f"{name}.c")

    gcc = _compiler()
    key = hashlib.sha256()
    for part in (kind, gcc, _compiler_version(gcc), *flags):
        key.update(part.encode() + b"\0")
    for path in (*sources, *hashed_extra):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise WorkloadError(f"cannot read workload source {path}: {exc}") from exc
        key.update(path.relative_to(WORKLOAD_DIR).as_posix().encode() + b"\0" + data)

    out_dir = cache_dir()
    out = out_dir / f"{name}-{key.hexdigest()[:16]}{suffix}"
    if out.exists():
        return out

    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    cmd = [gcc, *flags, "-I", str(common), "-o", str(tmp), *map(str, sources)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise WorkloadError(f"building the {kind} {name} failed (gcc exit {proc.returncode}):\n"
                                f"{' '.join(cmd)}\n{proc.stderr}")
        tmp.chmod(0o755)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def guest_elf(name: str) -> Path:
    """The multiboot i386 ELF of workload ``name``, built on first use."""
    return _build(name, "guest")


def native_exe(name: str) -> Path:
    """The native host executable of workload ``name``, built on first use."""
    return _build(name, "native")


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A guest ELF: the built guest of a workload name, or an existing ELF file's path."""
    if isinstance(name_or_path, str) and name_or_path in WORKLOADS:
        return guest_elf(name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        raise WorkloadError(f"{str(name_or_path)!r} is neither a workload ({', '.join(WORKLOADS)}) "
                            f"nor an existing file")
    with path.open("rb") as f:
        if f.read(4) != b"\x7fELF":
            raise WorkloadError(f"{path} is not an ELF file")
    return path


def guest_cmdline(size: int) -> str:
    """The multiboot command line that tells a guest workload its size."""
    return f"size={_check_size(size)}"


def run_native(name: str, size: int, repeat: int = 1) -> NativeRun:
    """Runs the native build of ``name`` at ``size`` ``repeat`` times; ``seconds`` is the best wall time.

    A nonzero exit is reported in ``returncode``, not raised; outputs that differ
    between repeats raise WorkloadError.
    """
    exe = native_exe(name)
    _check_size(size)
    if repeat < 1:
        raise WorkloadError(f"repeat must be at least 1, not {repeat}")
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run([str(exe), str(size)], stdout=subprocess.PIPE)
        runs.append((time.perf_counter() - start, proc))
    outputs = {proc.stdout for _, proc in runs}
    if len(outputs) > 1:
        raise WorkloadError(f"native {name} size={size} printed different output on different runs")
    proc = runs[-1][1]
    return NativeRun(proc.stdout.decode("latin-1"), min(t for t, _ in runs), proc.returncode)
