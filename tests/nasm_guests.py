"""Build and boot the system guests in tests/guests/ (NASM sources).

Each guest is a flat binary loaded at 0x7C00 and started in real mode at 0000:7C00 like a
boot sector; it checks itself and reports through the debug ports (text to 0xE9, status to
0xF4: 0 = pass, n = check n failed). Binaries are assembled on first use into
``$VMCORE_CACHE_DIR/guests`` (default ``~/.cache/vmcore/guests``), keyed by a hash of the
source and of the shared include file, so an edit rebuilds and nothing else does.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import vmcore

GUESTS = Path(__file__).resolve().parent / "guests"
LOAD_GPA = 0x7C00
INCLUDES = ("lib.inc",)


def cache_dir(kind: str = "guests") -> Path:
    env = os.environ.get("VMCORE_CACHE_DIR")
    return (Path(env) if env else Path.home() / ".cache" / "vmcore") / kind


def assemble_text(source: str, name: str, kind: str = "guests", include_dir: Path | None = None) -> bytes:
    """The flat binary of NASM source text, from ``cache_dir(kind)`` or freshly assembled; the cache key
    hashes the text and, with ``include_dir``, the shared include files there."""
    digest = hashlib.sha256(source.encode())
    if include_dir is not None:
        for inc in INCLUDES:
            digest.update((include_dir / inc).read_bytes())
    out = cache_dir(kind) / f"{name}-{digest.hexdigest()[:16]}.bin"
    if out.exists():
        return out.read_bytes()
    nasm = shutil.which("nasm")
    if nasm is None:
        raise RuntimeError(f"nasm is not installed (apt-get install nasm); the {kind} guests need it")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        src = Path(tmp) / f"{name}.asm"
        src.write_text(source)
        tmp_out = Path(tmp) / out.name
        includes = ["-i", f"{include_dir}/"] if include_dir is not None else []
        proc = subprocess.run([nasm, "-f", "bin", "-w+all", *includes, "-o", str(tmp_out), str(src)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"nasm failed on {name}:\n{proc.stderr}")
        os.replace(tmp_out, out)                 # atomic: a parallel run sees all or nothing
    return out.read_bytes()


def assemble(name: str) -> bytes:
    """The flat binary of tests/guests/<name>.asm, from the cache or freshly assembled."""
    return assemble_text((GUESTS / f"{name}.asm").read_text(), name, include_dir=GUESTS)


def boot(name: str, count: int = 10**7, timeout: float = 30, memory_mb: int = 16, mode: str | None = None,
         engine: str | None = None, setup=None):
    """Assemble guest ``name``, load it at 0x7C00, start it in real mode, run it in a machine of
    ``mode`` on ``engine`` (defaults: the Machine's). ``setup(machine)`` runs before the guest.
    Returns (machine, RunResult)."""
    binary = assemble(name)
    m = vmcore.Machine(memory_mb=memory_mb, mode=mode, engine=engine)
    if setup is not None:
        setup(m)
    m.reset()
    m.mem_write(LOAD_GPA, binary)
    m.reg_write("cs", 0)
    m.reg_write("eip", LOAD_GPA)
    r = m.run(count=count, timeout=timeout)
    return m, r


def status(r) -> int | None:
    """The guest's status from a debug-exit run (None if it did not exit that way)."""
    if r.exit != vmcore.Exit.DEBUG_EXIT:
        return None
    return r.exit_code >> 1
