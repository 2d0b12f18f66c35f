"""Run a multiboot workload guest under Unicorn: console, exit status, instruction count.

A reference outside vmcore, for calibrating workload sizes (the guest's
instruction count at each size) and for checking a guest build prints what
its native build prints. Needs the test extras (unicorn, capstone).

    python tools/wl_unicorn.py sieve tiny          # a workload name and a size name or number
    python tools/wl_unicorn.py path/to/x.elf 2000  # or any multiboot ELF and a number
"""

import argparse
import struct
import sys
import time
from pathlib import Path

import capstone
import unicorn
from unicorn import x86_const

from vmcore import workloads

MBI_GPA = 0x9000            # multiboot info, in low memory below the image
CMDLINE_GPA = 0x9100
MB_BOOT_MAGIC = 0x2BADB002
MBI_FLAG_MEM = 1 << 0
MBI_FLAG_CMDLINE = 1 << 2
DEBUG_CONSOLE_PORT = 0xE9
DEBUG_EXIT_PORT = 0xF4
PT_LOAD = 1


def load_elf(uc, image):
    """Copies the PT_LOAD segments of an ELF32 image into guest memory; returns the entry gpa."""
    entry, phoff = struct.unpack_from("<II", image, 24)
    phentsize, phnum = struct.unpack_from("<HH", image, 42)
    for i in range(phnum):
        p_type, p_offset, _, p_paddr, p_filesz, _ = struct.unpack_from("<6I", image, phoff + i * phentsize)
        if p_type == PT_LOAD and p_filesz:
            uc.mem_write(p_paddr, image[p_offset:p_offset + p_filesz])
    return entry


def run(elf_path, cmdline, memory_mb=64, max_instructions=0):
    """Runs the guest to its debug exit (or for at most max_instructions, if nonzero).

    Returns (console text, exit value or None, instructions executed).
    """
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_32)
    uc.mem_map(0, memory_mb << 20)
    entry = load_elf(uc, Path(elf_path).read_bytes())
    uc.mem_write(MBI_GPA, struct.pack("<5I", MBI_FLAG_MEM | MBI_FLAG_CMDLINE, 639, (memory_mb - 1) * 1024, 0,
                                      CMDLINE_GPA))
    uc.mem_write(CMDLINE_GPA, cmdline.encode() + b"\0")
    uc.reg_write(x86_const.UC_X86_REG_EAX, MB_BOOT_MAGIC)
    uc.reg_write(x86_const.UC_X86_REG_EBX, MBI_GPA)

    console = bytearray()
    state = {"exit": None, "instructions": 0}
    block_lengths = {}
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)

    def on_block(uc, address, size, _):
        key = (address, size)
        n = block_lengths.get(key)
        if n is None:
            n = block_lengths[key] = sum(1 for _ in md.disasm_lite(bytes(uc.mem_read(address, size)), address))
        state["instructions"] += n

    def on_out(uc, port, size, value, _):
        if port == DEBUG_CONSOLE_PORT:
            console.append(value & 0xFF)
        elif port == DEBUG_EXIT_PORT:
            state["exit"] = value
            uc.emu_stop()

    uc.hook_add(unicorn.UC_HOOK_BLOCK, on_block)
    uc.hook_add(unicorn.UC_HOOK_INSN, on_out, None, 1, 0, x86_const.UC_X86_INS_OUT)
    uc.emu_start(entry, 0xFFFFFFFF, count=max_instructions)
    return console.decode("latin-1"), state["exit"], state["instructions"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", help="workload name or path to a multiboot ELF")
    parser.add_argument("size", help="size name (tiny, small, bench) or number")
    parser.add_argument("--memory-mb", type=int, default=64)
    parser.add_argument("--max-instructions", type=int, default=0, help="stop after this many (0: no limit)")
    args = parser.parse_args()

    if args.size.isdigit():
        size = int(args.size)
    elif args.workload in workloads.WORKLOADS and args.size in workloads.WORKLOADS[args.workload].sizes:
        size = workloads.WORKLOADS[args.workload].sizes[args.size]
    else:
        parser.error(f"size must be a number, or tiny/small/bench after a workload name, not {args.size!r}")
    start = time.perf_counter()
    console, status, instructions = run(workloads.resolve(args.workload), workloads.guest_cmdline(size),
                                        args.memory_mb, args.max_instructions)
    seconds = time.perf_counter() - start
    sys.stdout.write(console)
    print(f"exit value {status}, {instructions} instructions, {seconds:.2f} s under unicorn")
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
