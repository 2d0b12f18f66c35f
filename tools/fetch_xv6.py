#!/usr/bin/env python3
"""Build xv6-public (MIT's x86 teaching Unix, rev11 era) from its source with Debian's toolchain.

    python tools/fetch_xv6.py [--source DIR] [--cache build/xv6] [--force]

Where the source comes from, first that applies:

  --source DIR, or $XV6_SRC   a directory that already holds xv6-public's files (checked: every
                              file the build needs must be there, see REQUIRED_FILES)
  a cached build              build/xv6/<commit>-*/ from an earlier run (its src/ holds the
                              source it was built from)
  otherwise                   `git clone https://github.com/mit-pdos/xv6-public` and
                              `git checkout XV6_COMMIT` (needs the network; nothing of it is
                              committed to vmcore)

The build runs xv6's own Makefile (`make xv6.img fs.img`) on a copy of the source in
build/xv6/<commit>-<digest>/src, with the Debian toolchain: gcc -m32 (package gcc-multilib),
ld -m elf_i386, objcopy, perl, dd (as root, missing packages are installed with apt-get).
xv6's Makefile predates gcc 12, so the script hands it make variables instead of editing any
source file:

  TOOLPREFIX=       native tools (skips the i386-jos-elf- probe)
  CFLAGS=...        xv6's own CFLAGS, minus -Werror (gcc 12 warns where gcc 5 did not:
                    -Warray-bounds on mp.c's P2V() of the BIOS data area, -Winfinite-recursion
                    on sh.c's runcmd), plus -fno-pie -no-pie -fno-stack-protector (Debian's
                    gcc builds PIE by default) and -fcf-protection=none (no endbr32: the boot
                    sector must stay within 510 bytes)
  LDFLAGS=-m elf_i386

The host tool mkfs is built by xv6's own recipe (gcc -Werror -Wall, which gcc 12 accepts).

Writes into the cache directory (gitignored):

  xv6.img    the boot disk: bootblock (sector 0, ends 0x55 0xAA) then the kernel (sector 1...)
  fs.img     the file system disk: README and the user programs (mkfs, FSSIZE 1000 blocks)
  BUILD      the commit, the source digest and the make command line

Builds are cached by commit and by a digest of the source files, so a second call is instant.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from vmcore.errors import WorkloadError  # noqa: E402

DEFAULT_CACHE = REPO / "build" / "xv6"
XV6_URL = "https://github.com/mit-pdos/xv6-public"
# mit-pdos/xv6-public master: the last commit, "NOTE: we have stopped maintaining the x86
# version of xv6" in README. git accepts the abbreviated hash for checkout.
XV6_COMMIT = "eeb7b415"

CLONE_TIMEOUT = 120.0            # seconds; without network git fails or hangs on connect

SECTOR = 512
XV6_IMG_SECTORS = 10000          # Makefile: dd if=/dev/zero of=xv6.img count=10000
FSSIZE_BLOCKS = 1000             # param.h: FSSIZE, the size of fs.img in 512-byte blocks
BSIZE = 512                      # fs.h: block size

USER_PROGRAMS = ("cat", "echo", "forktest", "grep", "init", "kill", "ln", "ls", "mkdir", "rm",
                 "sh", "stressfs", "usertests", "wc", "zombie")
KERNEL_FILES = (
    "Makefile", "README", "kernel.ld", "vectors.pl", "sign.pl",
    "bootasm.S", "bootmain.c", "entry.S", "entryother.S", "initcode.S", "swtch.S", "trapasm.S",
    "usys.S",
    "asm.h", "buf.h", "date.h", "defs.h", "elf.h", "fcntl.h", "file.h", "fs.h", "kbd.h",
    "memlayout.h", "mmu.h", "mp.h", "param.h", "proc.h", "sleeplock.h", "spinlock.h", "stat.h",
    "syscall.h", "traps.h", "types.h", "user.h", "x86.h",
    "bio.c", "console.c", "exec.c", "file.c", "fs.c", "ide.c", "ioapic.c", "kalloc.c", "kbd.c",
    "lapic.c", "log.c", "main.c", "memide.c", "mp.c", "picirq.c", "pipe.c", "proc.c",
    "sleeplock.c", "spinlock.c", "string.c", "syscall.c", "sysfile.c", "sysproc.c", "trap.c",
    "uart.c", "vm.c",
    "mkfs.c", "ulib.c", "printf.c", "umalloc.c",
)
REQUIRED_FILES = KERNEL_FILES + tuple(f"{p}.c" for p in USER_PROGRAMS)

# xv6's Makefile CFLAGS without -Werror, plus what Debian's gcc 12 needs to build it as gcc 5 did.
CFLAGS = ("-fno-pic -static -fno-builtin -fno-strict-aliasing -O2 -Wall -MD -ggdb -m32 "
          "-fno-omit-frame-pointer -fno-stack-protector -fno-pie -no-pie -fcf-protection=none")
MAKE_VARS = {"TOOLPREFIX": "", "CFLAGS": CFLAGS, "LDFLAGS": "-m elf_i386"}
# Part of the cache key: change it when the build recipe changes.
RECIPE = "make xv6.img fs.img " + " ".join(f"{k}='{v}'" for k, v in MAKE_VARS.items())


class Xv6BuildError(WorkloadError):
    """The xv6 source is missing or incomplete, git or the toolchain is missing, or the build failed."""

    code = "xv6-build"


class Xv6SourceUnavailable(Xv6BuildError):
    """Nothing to build from or with: no source (no --source, $XV6_SRC, cached build, or
    network for git clone), or no 32-bit toolchain."""

    code = "xv6-source"


def run(cmd: list[str], cwd: Path | None = None, timeout: float | None = None) -> str:
    print("+", " ".join(cmd), flush=True)
    try:
        proc = subprocess.run(cmd, cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Xv6BuildError(f"{' '.join(cmd)} did not finish in {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise Xv6BuildError(f"{' '.join(cmd)} failed with status {proc.returncode}:\n{proc.stdout[-4000:]}")
    return proc.stdout


def missing_files(src: Path) -> list[str]:
    return [name for name in REQUIRED_FILES if not (src / name).is_file()]


def check_source(src: Path) -> None:
    if not src.is_dir():
        raise Xv6BuildError(f"xv6 source directory {src} does not exist")
    missing = missing_files(src)
    if missing:
        raise Xv6BuildError(f"{src} is not an xv6-public source tree: missing {', '.join(missing)}")


def source_digest(src: Path) -> str:
    h = hashlib.sha256()
    for name in sorted(REQUIRED_FILES):
        data = (src / name).read_bytes()
        h.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    h.update(RECIPE.encode())
    return h.hexdigest()


def clone(where: Path) -> Path:
    """git clone + checkout of XV6_COMMIT; raises Xv6BuildError without network."""
    dest = where / "xv6-public"
    try:
        run(["git", "clone", "-q", XV6_URL, str(dest)], timeout=CLONE_TIMEOUT)
        run(["git", "-c", "advice.detachedHead=false", "checkout", "-q", XV6_COMMIT], cwd=dest)
        head = run(["git", "rev-parse", "HEAD"], cwd=dest).strip()
    except FileNotFoundError as exc:
        raise Xv6BuildError(f"git is not installed: {exc}") from exc
    if not head.startswith(XV6_COMMIT):
        raise Xv6BuildError(f"checked out {head}, expected {XV6_COMMIT}")
    return dest


def find_source(source: Path | None) -> Path | None:
    if source is not None:
        return source
    env = os.environ.get("XV6_SRC")
    return Path(env) if env else None


def toolchain_problem() -> str | None:
    """None when gcc -m32, ld, objcopy, perl and make are usable, else what is missing."""
    for tool in ("gcc", "ld", "objcopy", "objdump", "perl", "make", "dd"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = subprocess.run(["gcc", "-m32", "-c", "-x", "c", "-o", os.devnull, "-"], input="int x;\n",
                           text=True, capture_output=True)
    if probe.returncode != 0:
        return "gcc -m32 cannot compile (apt-get install -y gcc-multilib)"
    return None


TOOLCHAIN_PACKAGES = ("gcc-multilib", "binutils", "perl", "make")


def install_toolchain() -> bool:
    """As root with apt-get: install Debian's gcc-multilib, binutils, perl and make; True if
    apt-get succeeded (apt-get update first when the package lists are stale)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    install = ["apt-get", "install", "-y", "-q", *TOOLCHAIN_PACKAGES]
    try:
        run(install, timeout=600)
    except Xv6BuildError:
        try:
            run(["apt-get", "update", "-q"], timeout=600)
            run(install, timeout=600)
        except Xv6BuildError as exc:
            print(f"fetch_xv6: {exc}", file=sys.stderr)
            return False
    return True


def build(src: Path, cache: Path = DEFAULT_CACHE, commit: str = XV6_COMMIT, force: bool = False) -> Path:
    """Build xv6.img and fs.img from the source tree src; returns the output directory."""
    check_source(src)
    problem = toolchain_problem()
    if problem and install_toolchain():
        problem = toolchain_problem()
    if problem:
        raise Xv6SourceUnavailable(f"cannot build xv6: {problem}")
    digest = source_digest(src)
    out = cache / f"{commit}-{digest[:12]}"
    if not force and (out / "xv6.img").is_file() and (out / "fs.img").is_file():
        print(f"fetch_xv6: {out} already holds xv6.img and fs.img")
        return out
    work = out / "src"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for name in REQUIRED_FILES:
        shutil.copy2(src / name, work / name)
    for script in ("vectors.pl", "sign.pl"):
        (work / script).chmod(0o755)
    run(["make", "-j2", "xv6.img", "fs.img"] + [f"{k}={v}" for k, v in MAKE_VARS.items()], cwd=work)
    for image in ("xv6.img", "fs.img"):
        shutil.copy2(work / image, out / image)
    check_images(out)
    (out / "BUILD").write_text(f"commit {commit}\nsource-sha256 {digest}\nrecipe {RECIPE}\n")
    print(f"fetch_xv6: built {out}/xv6.img and {out}/fs.img")
    return out


def check_images(out: Path) -> None:
    xv6 = (out / "xv6.img").read_bytes()
    if len(xv6) != XV6_IMG_SECTORS * SECTOR or xv6[510:512] != b"\x55\xaa":
        raise Xv6BuildError(f"{out}/xv6.img: {len(xv6)} bytes, boot signature {xv6[510:512].hex()}")
    fs = (out / "fs.img").stat().st_size
    if fs != FSSIZE_BLOCKS * BSIZE:
        raise Xv6BuildError(f"{out}/fs.img: {fs} bytes, expected {FSSIZE_BLOCKS * BSIZE}")


def cached_build(cache: Path, commit: str = XV6_COMMIT) -> Path | None:
    """The newest complete build of commit in cache (its src/ copy is the verified source)."""
    builds = [d for d in cache.glob(f"{commit}-*") if (d / "xv6.img").is_file() and (d / "fs.img").is_file()
              and (d / "BUILD").is_file()]
    return max(builds, key=lambda d: (d / "BUILD").stat().st_mtime) if builds else None


def fetch_and_build(source: Path | None = None, cache: Path = DEFAULT_CACHE, force: bool = False) -> Path:
    """Images for XV6_COMMIT: from source / $XV6_SRC, else a cached build, else git clone."""
    src = find_source(source)
    if src is not None:
        return build(src, cache, force=force)
    cached = cached_build(cache)
    if cached is not None and not force:
        print(f"fetch_xv6: no --source or $XV6_SRC; using the cached build {cached}")
        return cached
    with tempfile.TemporaryDirectory() as tmp:
        try:
            src = clone(Path(tmp))
        except Xv6BuildError as exc:
            raise Xv6SourceUnavailable(f"no xv6-public source: no --source, no $XV6_SRC, no cached build in {cache}, "
                                f"and git clone {XV6_URL} failed ({exc})") from None
        return build(src, cache, force=force)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, help="xv6-public source directory (default: $XV6_SRC, else git clone)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="output directory (default build/xv6)")
    ap.add_argument("--force", action="store_true", help="rebuild even when the cache holds the images")
    args = ap.parse_args(argv)
    try:
        out = fetch_and_build(args.source, args.cache, args.force)
    except Xv6BuildError as exc:
        print(f"fetch_xv6: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
