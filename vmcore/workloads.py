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
    kernel_program: bool = True
    """Also a user program of the guest kernel (workloads/kernel), which is built without an FPU."""


@dataclasses.dataclass(frozen=True)
class NativeRun:
    """One native run: what it printed, the best wall time over the repeats, its exit status."""

    output: str
    seconds: float
    returncode: int


def _workload(name: str, description: str, tiny: int, small: int, bench: int, memory_mb: int,
              kernel_program: bool = True) -> Workload:
    return Workload(name, description, {"tiny": tiny, "small": small, "bench": bench}, memory_mb, kernel_program)


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
    # bench: 0.1 s natively, not 0.5: the guest's x87 instructions run in the interpreter (~10 MIPS)
    _workload("nbody", "five-body gravitational simulation in double precision (x87 on the guest), size steps",
              tiny=500, small=40_000, bench=1_000_000, memory_mb=4, kernel_program=False),
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

    ``name`` is a workload (``WORKLOADS``) or a kernel workload (``KERNEL_WORKLOADS``, whose
    native build uses POSIX fork, wait and pipes). A nonzero exit is reported in
    ``returncode``, not raised; outputs that differ between repeats raise WorkloadError.
    """
    exe = kernel_native_exe(name) if name in KERNEL_WORKLOADS else native_exe(name)
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


# ---- the guest kernel (workloads/kernel) ----------------------------------------------------
#
# A multiboot kernel with ring-3 processes, paging, preemption and system calls, into which
# user programs are embedded: every workload above (the same source, with a user-mode
# runtime: wl_printf -> write, wl_alloc -> sbrk, exit -> exit), the kernel-intensive
# workloads below, init and the nanobenchmark driver. See workloads/kernel/README.md.

KERNEL_DIR = WORKLOAD_DIR / "kernel"
KERNEL_SOURCES = ("entry.S", "gdt.c", "trap.c", "syscall.c", "mm.c", "proc.c", "pipe.c", "nano.c", "main.c",
                  "lib.c")
KERNEL_CFLAGS = (*GUEST_CFLAGS, "-mno-sse", "-mno-mmx", "-mno-80387")
_USER_RUNTIME = ("crt0.S", "ulib.c")
_KERNEL_RECIPE = "2"        # bump when kernel_elf() builds differently (it is part of the cache key)

KERNEL_WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    _workload("forkwait", "size rounds of fork (copy-on-write) and wait, the child writing 4 of 16 shared pages",
              tiny=20, small=500, bench=6_000, memory_mb=64),
    _workload("pingpong", "size round trips of a 4-byte message between two processes over two pipes",
              tiny=200, small=10_000, bench=250_000, memory_mb=64),
    _workload("touchpages", "size fresh pages touched once each (a demand-zero fault per page), 16 MiB at a time",
              tiny=1_024, small=65_536, bench=500_000, memory_mb=64),
)}
"""The kernel-intensive workloads: user programs of the guest kernel (``workloads/kernel/user``),
also built natively against POSIX so that both print the same line."""


@dataclasses.dataclass(frozen=True)
class Nanobenchmark:
    """One operation timed in a tight loop (Adams & Agesen, ASPLOS 2006), run by the kernel's
    ``nano`` program; ``sizes`` are iteration counts."""

    name: str
    description: str
    sizes: Mapping[str, int]


def _nano(name: str, description: str, tiny: int, small: int, bench: int) -> Nanobenchmark:
    return Nanobenchmark(name, description, {"tiny": tiny, "small": small, "bench": bench})


NANOBENCHMARKS: dict[str, Nanobenchmark] = {n.name: n for n in (
    _nano("syscall", "int 0x80 null system call round trip from ring 3", 200, 50_000, 1_000_000),
    _nano("in", "inb from the CMOS data port 0x71 in the kernel (an exit to the device model)",
          50, 10_000, 200_000),
    _nano("cli_sti", "cli; sti pair in the kernel", 1_000, 1_000_000, 20_000_000),
    _nano("callret", "call to a function that returns at once, in the kernel", 1_000, 1_000_000, 20_000_000),
    _nano("pgfault", "ring-3 store to a not-present page, mapped by the #PF handler and resumed",
          200, 20_000, 400_000),
    _nano("divzero", "ring-3 divide by zero, skipped by the #DE handler and resumed", 200, 50_000, 1_000_000),
    _nano("ptemod", "PTE write plus INVLPG in the kernel", 1_000, 500_000, 10_000_000),
    _nano("cr3", "CR3 load (two page directories, alternating) in the kernel", 1_000, 100_000, 2_000_000),
)}

KERNEL_INIT_PROGRAMS = ("init", "nano", "probe")     # user programs with their own umain()
KERNEL_COMPUTE = tuple(name for name, w in WORKLOADS.items() if w.kernel_program)   # the workloads it runs too


def kernel_programs() -> tuple[str, ...]:
    """Every user program embedded in the kernel, by the name ``run=`` and spawn use."""
    return (*KERNEL_INIT_PROGRAMS, *KERNEL_COMPUTE, *KERNEL_WORKLOADS)


def _program_sources(name: str) -> list[Path]:
    user = KERNEL_DIR / "user"
    runtime = [user / f for f in _USER_RUNTIME] + [WORKLOAD_DIR / "common" / "wl.c"]
    if name in KERNEL_INIT_PROGRAMS:
        return [*runtime, user / f"{name}.c"]
    if name in KERNEL_WORKLOADS:
        return [*runtime, user / "wlmain.c", user / f"{name}.c"]
    return [*runtime, user / "wlmain.c", WORKLOAD_DIR / f"{name}.c"]


def _hash_files(key, paths) -> None:
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise WorkloadError(f"cannot read workload source {path}: {exc}") from exc
        key.update(path.relative_to(WORKLOAD_DIR).as_posix().encode() + b"\0" + data)


def _run_all(cmds: list[list[str]], what: str) -> None:
    """Runs the commands, a few at a time; raises WorkloadError naming the first that failed."""
    width = max(1, os.cpu_count() or 1)
    for i in range(0, len(cmds), width):
        procs = [(cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
                 for cmd in cmds[i:i + width]]
        failed = None
        for cmd, proc in procs:
            _, err = proc.communicate()
            if proc.returncode != 0 and failed is None:
                failed = (cmd, proc.returncode, err)
        if failed:
            cmd, code, err = failed
            raise WorkloadError(f"building {what} failed ({Path(cmd[0]).name} exit {code}):\n{' '.join(cmd)}\n{err}")


def kernel_elf() -> Path:
    """The guest kernel (a multiboot i386 ELF) with every user program embedded, built on first use.

    Boot it with ``kernel_cmdline(...)``: ``run=NAME:SIZE,...`` runs programs concurrently as
    ring-3 processes, ``nano=OP:ITERS,...`` runs nanobenchmarks; it exits through the
    debug-exit port with status 0 when every program exited with 0.
    """
    if not KERNEL_DIR.is_dir():
        raise WorkloadError(f"kernel sources not found at {KERNEL_DIR}: vmcore.workloads needs a source "
                            f"checkout installed in editable mode (pip install -e .)")
    gcc = _compiler()
    objcopy = shutil.which("objcopy")
    if objcopy is None:
        raise WorkloadError("objcopy not found on PATH: it is needed to build the guest kernel")
    common = WORKLOAD_DIR / "common"
    user = KERNEL_DIR / "user"
    programs = kernel_programs()

    key = hashlib.sha256()
    for part in ("kernel", _KERNEL_RECIPE, gcc, _compiler_version(gcc), *KERNEL_CFLAGS, *programs):
        key.update(part.encode() + b"\0")
    files = sorted({*(KERNEL_DIR / f for f in KERNEL_SOURCES), *KERNEL_DIR.glob("*.h"), KERNEL_DIR / "kernel.ld",
                    *user.glob("*.h"), user / "user.ld", common / "wl.h",
                    *(p for name in programs for p in _program_sources(name))})
    _hash_files(key, files)

    out_dir = cache_dir()
    out = out_dir / f"kernel-{key.hexdigest()[:16]}.elf"
    if out.exists():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".kernel-build-") as tmp_name:
        tmp = Path(tmp_name)
        includes = ["-I", str(common), "-I", str(KERNEL_DIR), "-I", str(user)]
        _run_all([[gcc, *KERNEL_CFLAGS, "-T", str(user / "user.ld"), *includes, "-o", str(tmp / f"{name}.elf"),
                   *map(str, _program_sources(name))] for name in programs], "the kernel's user programs")
        _run_all([[objcopy, "-O", "binary", str(tmp / f"{name}.elf"), str(tmp / f"{name}.bin")]
                  for name in programs], "the kernel's user programs")
        lines = ["/* generated by vmcore/workloads.py: the embedded user programs */"]
        for i, name in enumerate(programs):
            lines += ['    .section .progs, "a"', "    .balign 4096", f"prog_{i}_start:",
                      f'    .incbin "{name}.bin"', "    .balign 4096", f"prog_{i}_end:",
                      "    .section .rodata", f'prog_{i}_name: .asciz "{name}"']
        lines += ["    .section .rodata", "    .balign 4", "    .global programs", "programs:"]
        lines += [f"    .long prog_{i}_name, prog_{i}_start, prog_{i}_end" for i in range(len(programs))]
        lines += ["    .global nprograms", f"nprograms: .long {len(programs)}",
                  '    .section .note.GNU-stack, "", @progbits', ""]
        (tmp / "progs.S").write_text("\n".join(lines))
        elf = tmp / "kernel.elf"
        _run_all([[gcc, *KERNEL_CFLAGS, "-T", str(KERNEL_DIR / "kernel.ld"), *includes, f"-Wa,-I,{tmp}",
                   "-o", str(elf), *(str(KERNEL_DIR / f) for f in KERNEL_SOURCES), str(common / "wl.c"),
                   str(tmp / "progs.S")]], "the guest kernel")
        os.replace(elf, out)
    return out


def kernel_native_exe(name: str) -> Path:
    """The native (POSIX) build of kernel workload ``name``, built on first use."""
    if name not in KERNEL_WORKLOADS:
        raise WorkloadError(f"unknown kernel workload {name!r}; known: {', '.join(KERNEL_WORKLOADS)}")
    gcc = _compiler()
    common, user = WORKLOAD_DIR / "common", KERNEL_DIR / "user"
    sources = [common / "native.c", common / "wl.c", user / "native_sys.c", user / f"{name}.c"]
    key = hashlib.sha256()
    for part in ("kernel-native", gcc, _compiler_version(gcc), *NATIVE_CFLAGS):
        key.update(part.encode() + b"\0")
    _hash_files(key, [*sources, common / "wl.h", user / "wlsys.h"])
    out_dir = cache_dir()
    out = out_dir / f"{name}-{key.hexdigest()[:16]}"
    if out.exists():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _run_all([[gcc, *NATIVE_CFLAGS, "-I", str(common), "-I", str(user), "-o", str(tmp), *map(str, sources)]],
                 f"the native {name}")
        tmp.chmod(0o755)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _pairs(items) -> list[tuple[str, int]]:
    return list(items.items()) if isinstance(items, Mapping) else [tuple(p) for p in items]


def kernel_cmdline(run=None, nano=None, hz: int | None = None) -> str:
    """The kernel's command line: programs to run concurrently (a mapping name -> size, or
    (name, size) pairs, so that a program can run more than once), then nanobenchmarks to run
    one after the other (op -> iterations), and the timer rate (default 1000 Hz; 0: no timer)."""
    words = []
    if run:
        run = _pairs(run)
        for name, _ in run:
            if name not in kernel_programs():
                raise WorkloadError(f"the kernel has no program {name!r}")
        words.append("run=" + ",".join(f"{n}:{s if n in KERNEL_INIT_PROGRAMS else _check_size(s)}" for n, s in run))
    if nano:
        nano = _pairs(nano)
        for name, _ in nano:
            if name not in NANOBENCHMARKS:
                raise WorkloadError(f"unknown nanobenchmark {name!r}; known: {', '.join(NANOBENCHMARKS)}")
        words.append("nano=" + ",".join(f"{n}:{_check_size(s)}" for n, s in nano))
    if hz is not None:
        words.append(f"hz={_check_size(hz)}")
    if len(" ".join(words)) >= 500:
        raise WorkloadError("the kernel command line is limited to 500 characters")
    return " ".join(words)


def kernel_counters(console: str) -> dict[str, int]:
    """The guest kernel's counters from the lines it prints at shutdown
    (``kernel: hz=... ticks=... preemptions=... switches=...`` and ``kernel: frames_free=...``)."""
    counters = {}
    for line in console.splitlines():
        if line.startswith("kernel: ") and "=" in line and not line.startswith("kernel: exit"):
            for word in line[len("kernel: "):].split():
                key, eq, value = word.partition("=")
                if eq and value.isdigit():
                    counters[key] = int(value)
    return counters


@dataclasses.dataclass(frozen=True)
class NanoResult:
    """One ``nano op=OP iters=N insns=I base=B`` line of the kernel's nano program."""

    op: str
    iters: int
    insns: int
    """Guest instructions (the guest's RDTSC) over the timed loop of ``iters`` iterations."""
    base: int
    """The same for 0 iterations: what the measurement itself costs."""

    @property
    def insns_per_op(self) -> float:
        return (self.insns - self.base) / self.iters if self.iters else 0.0


def nano_results(console: str) -> dict[str, NanoResult]:
    """The nanobenchmark lines of a kernel run's console, by operation."""
    out = {}
    for line in console.splitlines():
        if line.startswith("nano op="):
            f = dict(w.split("=", 1) for w in line.split()[1:])
            out[f["op"]] = NanoResult(f["op"], int(f["iters"]), int(f["insns"]), int(f["base"]))
    return out


def bench_sizes(workload: str) -> Mapping[str, int] | None:
    """The calibrated sizes of what a benchmark's ``workload`` names: a workload, a kernel
    workload, or a nanobenchmark (``nano-<op>``, sized in iterations); None if none of them."""
    if workload in WORKLOADS:
        return WORKLOADS[workload].sizes
    if workload in KERNEL_WORKLOADS:
        return KERNEL_WORKLOADS[workload].sizes
    if workload.startswith("nano-") and workload[5:] in NANOBENCHMARKS:
        return NANOBENCHMARKS[workload[5:]].sizes
    return None
