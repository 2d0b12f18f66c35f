"""A synthetic bzImage for the loader and CLI tests: a real-mode part that is only a setup
header (Documentation/arch/x86/boot.rst) and a protected-mode part of a few instructions that
reads the zero page the loader built, as a kernel entered through the 32-bit boot protocol
would: it prints the command line (boot_params.hdr.cmd_line_ptr) to the debug console 0xE9
and writes boot_params.e820_entries to the isa-debug-exit port 0xF4."""
from __future__ import annotations

import struct

# ESI = the zero page at entry
CODE = bytes.fromhex(
    "8b 9e 28 02 00 00"    # mov ebx, [esi+0x228]      ; hdr.cmd_line_ptr
    "8a 03"                # next: mov al, [ebx]
    "84 c0"                # test al, al
    "74 05"                # jz done
    "e6 e9"                # out 0xe9, al
    "43"                   # inc ebx
    "eb f5"                # jmp next
    "8a 86 e8 01 00 00"    # done: mov al, [esi+0x1e8] ; e820_entries
    "e6 f4"                # out 0xf4, al
    "f4"                   # hlt
)

SETUP_SECTS = 1
HEADER_END = 0x268          # the jump at 0x200 is EB 66: the header ends at 0x202 + 0x66


def bzimage(code: bytes = CODE, *, version=0x020F, magic=b"HdrS", boot_flag=0xAA55, loadflags=0x01,
            setup_sects=SETUP_SECTS, syssize=None, code32_start=0x100000, initrd_addr_max=0x7FFFFFFF,
            kernel_alignment=0x200000, relocatable=0, cmdline_size=2047, pref_address=0x100000,
            init_size=0x20000, jump=b"\xeb\x66", truncate=None) -> bytes:
    setup = bytearray((setup_sects + 1) * 512 if setup_sects else 5 * 512)
    setup[0x1F1] = setup_sects
    struct.pack_into("<I", setup, 0x1F4, (len(code) + 15) // 16 if syssize is None else syssize)
    struct.pack_into("<H", setup, 0x1FE, boot_flag)
    setup[0x200:0x202] = jump
    setup[0x202:0x206] = magic
    struct.pack_into("<H", setup, 0x206, version)
    setup[0x211] = loadflags
    struct.pack_into("<I", setup, 0x214, code32_start)
    struct.pack_into("<I", setup, 0x22C, initrd_addr_max)
    struct.pack_into("<I", setup, 0x230, kernel_alignment)
    setup[0x234] = relocatable
    struct.pack_into("<I", setup, 0x238, cmdline_size)
    struct.pack_into("<Q", setup, 0x258, pref_address)
    struct.pack_into("<I", setup, 0x260, init_size)
    body = code + bytes(-len(code) % 16)
    image = bytes(setup) + body
    return image if truncate is None else image[:truncate]
