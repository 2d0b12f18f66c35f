#!/usr/bin/env python3
"""Fetch Debian 12's i386 Linux kernel (the non-PAE 686 flavour) and busybox-static:i386 with
Debian's own tools, and build the busybox initramfs that tests/test_linux_boot.py boots.

    python tools/fetch_linux.py [--cache build/linux]

Needs root (dpkg --add-architecture, apt-get update) unless the cache is already filled.
Writes, in the cache directory (gitignored; nothing downloaded is committed):

    bzImage        the kernel, /boot/vmlinuz-6.1.0-*-686 from linux-image-6.1.0-*-686:i386
    initrd.img     a gzip'ed newc cpio: busybox (static, i386) and /init below
    busybox        the static i386 busybox from busybox-static:i386 (for --rebuild-initrd)
    config         the kernel's build configuration
    VERSION        the two package versions

/init (a busybox sh script) mounts proc, sys and devtmpfs, prints INIT_MARKER and ends the
machine. How it ends: a PC without ACPI (and without APM, a module in Debian's kernel) has no
power-off Linux can reach: `poweroff -f` prints "reboot: System halted" and stops the CPU with
HLT and interrupts off (measured on vmcore: Exit.HLT). So /init writes a byte to vmcore's
isa-debug-exit port 0xF4 through /dev/port (CONFIG_DEVPORT=y in Debian's kernel):
`printf '\000' | dd of=/dev/port bs=1 seek=244 count=1`. The value 0 gives the exit status
(0 << 1) | 1 = 1, the clean power-off of the tests and of `vmcore run` (process status 0);
QEMU ends the same way with `-device isa-debug-exit,iobase=0xf4,iosize=0x04`. Without
/dev/port, `poweroff -f` follows. With `vmcore.shell` on the kernel command line, /init starts
an interactive shell on the console instead after the marker.

The cpio archive is written here in Python (format "newc", as the kernel's
Documentation/driver-api/early-userspace/buffer-format.rst describes), so no cpio tool is needed.
"""
from __future__ import annotations

import argparse
import gzip
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO / "build" / "linux"
INIT_MARKER = "VMCORE-LINUX-SHELL-OK"
DEBUG_EXIT_PORT = 0xF4

INIT_SCRIPT = f"""#!/bin/sh
# vmcore's busybox initramfs (tools/fetch_linux.py)
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox --install -s /bin
echo "init: $(uname -srm), $(grep -c ^processor /proc/cpuinfo) cpu, $(grep MemTotal /proc/meminfo)"
grep -q vmcore.shell /proc/cmdline && {{ echo {INIT_MARKER}; exec setsid cttyhack sh; }}
echo {INIT_MARKER}
# power off: vmcore's isa-debug-exit port {DEBUG_EXIT_PORT:#x} through /dev/port, else busybox poweroff
[ -c /dev/port ] && printf '\\000' | dd of=/dev/port bs=1 seek={DEBUG_EXIT_PORT} count=1 2>/dev/null
poweroff -f
"""


def run(cmd: list[str], **kw) -> str:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, text=True, stdout=subprocess.PIPE, **kw).stdout


def ensure_i386() -> None:
    foreign = run(["dpkg", "--print-foreign-architectures"]).split()
    if "i386" not in foreign:
        run(["dpkg", "--add-architecture", "i386"])
        run(["apt-get", "update", "-qq"])
    else:
        try:
            run(["apt-cache", "show", "busybox-static:i386"], stderr=subprocess.DEVNULL)
        except subprocess.CalledProcessError:
            run(["apt-get", "update", "-qq"])


def kernel_package() -> str:
    """linux-image-686:i386 (the metapackage) depends on the current linux-image-6.1.0-N-686."""
    out = run(["apt-cache", "depends", "linux-image-686:i386"])
    names = re.findall(r"Depends:\s*(linux-image-6\.1\.0-\d+-686)\b", out)
    if not names:
        raise SystemExit(f"fetch_linux: no linux-image-6.1.0-*-686 in the dependencies of linux-image-686:i386:\n{out}")
    return names[0]


def download(packages: list[str], where: Path) -> list[Path]:
    run(["apt-get", "download", "-q"] + packages, cwd=where)
    return sorted(where.glob("*.deb"))


def cpio_newc(entries: list[tuple]) -> bytes:
    """entries: (path, mode, data[, (rdevmajor, rdevminor)]); a symlink's data is its target."""
    out = io.BytesIO()

    def pad4():
        out.write(b"\0" * (-out.tell() % 4))

    for ino, entry in enumerate(list(entries) + [("TRAILER!!!", 0, b"")], start=1):
        name, mode, data = entry[:3]
        rdev = entry[3] if len(entry) > 3 else (0, 0)
        nb = name.encode() + b"\0"
        trailer = name == "TRAILER!!!"
        nlink = 2 if mode & 0o170000 == 0o040000 else 1
        # c_ino c_mode c_uid c_gid c_nlink c_mtime c_filesize c_devmajor c_devminor
        # c_rdevmajor c_rdevminor c_namesize c_check
        fields = [0 if trailer else ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(nb), 0]
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.write(nb)
        pad4()
        out.write(data)
        pad4()
    return out.getvalue()


def build_initramfs(busybox: Path) -> bytes:
    entries = [(d, 0o040755, b"") for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "usr", "usr/bin",
                                             "usr/sbin")]
    entries.append(("dev/console", 0o020600, b"", (5, 1)))   # the kernel opens it for init's stdio
    entries.append(("bin/busybox", 0o100755, busybox.read_bytes()))
    entries.append(("bin/sh", 0o120777, b"busybox"))
    entries.append(("init", 0o100755, INIT_SCRIPT.encode()))
    return gzip.compress(cpio_newc(entries), compresslevel=9, mtime=0)


def fetch(cache: Path, rebuild_initrd: bool = False) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    if rebuild_initrd and (cache / "busybox").exists():
        (cache / "initrd.img").write_bytes(build_initramfs(cache / "busybox"))
        print(f"fetch_linux: rebuilt {cache}/initrd.img")
        return
    if (cache / "bzImage").exists() and (cache / "initrd.img").exists():
        print(f"fetch_linux: {cache} already holds bzImage and initrd.img")
        return
    if os.geteuid() != 0:
        raise SystemExit("fetch_linux: needs root for dpkg --add-architecture and apt-get update")
    ensure_i386()
    kpkg = kernel_package()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        debs = download([f"{kpkg}:i386", "busybox-static:i386"], tmp)
        root = tmp / "root"
        versions = []
        for deb in debs:
            run(["dpkg-deb", "-x", str(deb), str(root)])
            versions.append(deb.name)
        kernels = sorted((root / "boot").glob("vmlinuz-*-686"))
        busybox = root / "bin" / "busybox"
        if not kernels or not busybox.exists():
            raise SystemExit(f"fetch_linux: the packages did not hold boot/vmlinuz-*-686 and bin/busybox: {debs}")
        shutil.copyfile(kernels[0], cache / "bzImage")
        config = sorted((root / "boot").glob("config-*-686"))
        if config:
            shutil.copyfile(config[0], cache / "config")
        shutil.copyfile(busybox, cache / "busybox")
        (cache / "initrd.img").write_bytes(build_initramfs(busybox))
        (cache / "VERSION").write_text("\n".join(versions) + "\n")
    print(f"fetch_linux: wrote {cache}/bzImage, initrd.img ({', '.join(versions)})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--rebuild-initrd", action="store_true", help="rebuild initrd.img from a cached busybox")
    args = ap.parse_args(argv)
    fetch(args.cache, args.rebuild_initrd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
