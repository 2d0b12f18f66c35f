"""Hostile guests against the engine's block cache (issue 15 item 1 and 6, issue 14): run by
tests/test_hostile.py with run(timeout=2) in every mode, and by tests/test_block_cache.py.

Each guest loops forever, so its exit is the timeout; what it attacks shows in how long run() takes
to return and in the engine's counters (a lookup that never hits decodes a new block every pass).
"""
from __future__ import annotations

import struct

import numpy as np

import vmcore
from hostile import HostileCase, load_rom_image

TIMEOUT = frozenset({"timeout"})
# a guest whose blocks are found again decodes a handful of them; one whose lookups miss decodes
# a new block on every pass (hundreds of thousands in 2 s)
FEW_BLOCKS = 2000


def real_mode(m: vmcore.Machine, cs: int, ip: int) -> None:
    m.reset()
    m.reg_write("cs", cs)
    m.reg_write("eip", ip)


def decoded_few_blocks(m: vmcore.Machine, r) -> None:
    decoded = m.stats["blocks_decoded"]
    assert decoded < FEW_BLOCKS, f"{decoded} blocks decoded: the guest's code misses the block cache"


# ---- 61,184 blocks at IP 0, one per real-mode CS base (all in one hash bucket before the fix) ------

def setup_cs_bases_at_ip0(m: vmcore.Machine) -> None:
    image = np.zeros(0xF0000, dtype=np.uint8)
    for seg in range(0x100, 0xF000):
        nxt = seg + 1 if seg + 1 < 0xF000 else 0x100
        image[seg * 16:seg * 16 + 5] = list(bytes([0xEA, 0x00, 0x00]) + struct.pack("<H", nxt))  # jmp far nxt:0000
    m.mem_write(0x1000, image[0x1000:].tobytes())
    real_mode(m, 0x100, 0)


# ---- A20 closed: code above 1 MiB runs the bytes at its alias below -------------------------------

CLOSE_A20 = bytes.fromhex(
    "b0 00"             # 7c00: mov al, 0
    "e6 92")            # 7c02: out 0x92, al           (port 92 bit 1 clear: A20 closed)


def setup_a20_alias_loop(m: vmcore.Machine) -> None:
    m.mem_write(0x7C00, CLOSE_A20 + bytes.fromhex(
        "ea 10 00 ff ff"))  # 7c04: jmp far ffff:0010   (linear 0x100000, masked to 0)
    m.mem_write(0x0000, bytes.fromhex(
        "eb fe"))           # ffff:0010 = gpa 0: jmp $
    real_mode(m, 0, 0x7C00)


def check_a20_alias_loop(m: vmcore.Machine, r) -> None:
    assert not m.a20
    assert m.reg_read("cs") == 0xFFFF and m.reg_read("eip") == 0x10
    decoded_few_blocks(m, r)


# ---- a 16-bit JMP at IP 0xFFFF: its displacement byte would lie past the CS limit ----------------
# The instruction runs past offset 0xFFFF: #GP(0), not a wrap to IP 0 (80286 "segment overrun", SDM
# Vol. 3 §20.1.4). Before the fix the block ended at IP 1 and marking its code walked all 2**20
# linear pages on every decode; with A20 closed every pass decoded again.

GP_HANDLER = 0x500          # real-mode #GP handler: jmp $


def setup_ip_wrap(a20_closed: bool):
    def setup(m: vmcore.Machine) -> None:
        jmp_gla = 0xFFFF0 + 0xFFFF                      # FFFF:FFFF = linear 0x10ffef
        m.mem_write(jmp_gla & (0xFFEFFFFF if a20_closed else 0xFFFFFFFF), b"\xeb")   # jmp short ...
        m.mem_write(0xFFFF0, b"\xfe")                   # ... (the byte at FFFF:0000)
        m.mem_write(13 * 4, struct.pack("<HH", GP_HANDLER, 0))      # IVT: #GP -> 0000:0500
        m.mem_write(GP_HANDLER, b"\xeb\xfe")            # jmp $
        m.mem_write(0x7C00, (CLOSE_A20 if a20_closed else b"") + bytes.fromhex(
            "ea ff ff ff ff"))                          # jmp far ffff:ffff
        real_mode(m, 0, 0x7C00)
    return setup


def check_ip_wrap(m: vmcore.Machine, r) -> None:
    assert (m.reg_read("cs"), m.reg_read("eip")) == (0, GP_HANDLER), "the JMP at IP 0xFFFF did not raise #GP"
    stack = m.mem_read(m.reg_read("esp") & 0xFFFF, 6)
    assert struct.unpack("<HH", stack[:4]) == (0xFFFF, 0xFFFF), "the #GP frame must point at FFFF:FFFF"
    decoded_few_blocks(m, r)


# ---- the same in a 16-bit protected-mode segment with paging on: decoding has no side effects -----

PAGED_PD = 0x80000
PAGED_PT = 0x81000
CR2_MARK = 0x1234


def setup_paged_ip_wrap(m: vmcore.Machine) -> None:
    def desc(base, limit, access, flags):
        return struct.pack("<HHBBBB", limit & 0xFFFF, base & 0xFFFF, (base >> 16) & 0xFF, access,
                           (flags << 4) | ((limit >> 16) & 0xF), base >> 24)
    gdt = bytes(8) + desc(0, 0xFFFFF, 0x9A, 0xC) + desc(0, 0xFFFFF, 0x92, 0xC) + desc(0x10000, 0xFFFF, 0x9A, 0x0)
    m.mem_write(0x500, gdt)
    m.mem_write(0x600, struct.pack("<HI", len(gdt) - 1, 0x500))
    m.mem_write(0x1000, bytes.fromhex(
        "0f 01 15 00 06 00 00"      # 1000: lgdt [0x600]
        "ea ff ff 00 00 18 00"))    # 1007: jmp far 0x18:0x0000ffff  (16-bit code, base 0x10000)
    m.mem_write(0x1FFFF, b"\xeb")  # 0x18:ffff: jmp short ...
    m.mem_write(0x10000, b"\xfe")  # 0x18:0000: ... -2: back to 0x18:ffff
    # the first 4 MiB identity mapped, every PTE present with its accessed bit clear
    m.mem_write(PAGED_PD, struct.pack("<I", PAGED_PT | 7))
    m.mem_write(PAGED_PT, ((np.arange(1024, dtype=np.uint32) << 12) | 7).tobytes())
    m.reg_write("cr3", PAGED_PD)
    m.reg_write("cr2", CR2_MARK)
    m.reg_write("cr0", m.reg_read("cr0") | 0x80000000)
    m.reg_write("eip", 0x1000)


def check_paged_ip_wrap(m: vmcore.Machine, r) -> None:
    assert r.exception is not None and r.exception[0] == 13, r.reason     # #GP, and no IDT: shutdown
    assert m.reg_read("cr2") == CR2_MARK, f"decoding changed CR2 to {m.reg_read('cr2'):#x}"
    ptes = np.frombuffer(m.mem_read(PAGED_PT, 4096), dtype=np.uint32)
    accessed = int(np.count_nonzero(ptes & 0x20))
    # the pages the guest really used: its code, the GDT, the 16-bit segment's first and last page
    assert accessed <= 8, f"{accessed} PTEs have their accessed bit set"



# ---- code in a paged ROM page, reached through an indirect jump with three targets ----------------

ROM_SIZE = 0x10000
ROM_BASE = 0x100000000 - ROM_SIZE           # the ROM at the top of 4 GiB: 0xFFFF0000
ROM_PD = 0x80000
ROM_PT_LOW = 0x81000
ROM_PT_TOP = 0x82000


def rom_image() -> bytes:
    rom = bytearray(b"\xf4" * ROM_SIZE)

    def put(offset, code):
        rom[offset:offset + len(code)] = code

    put(0xFFF0, bytes.fromhex("ea 00 e0 00 f0"))   # f000:fff0: jmp far f000:e000 (the low window)
    put(0xE000, bytes.fromhex(
        "fa"                        # f000:e000: cli
        "66 2e 0f 01 16 00 ef"      # e001: lgdt cs:[0xef00]   (o32: all 32 bits of the base)
        "0f 20 c0"                  # e008: mov eax, cr0
        "0c 01"                     # e00b: or al, 1
        "0f 22 c0"                  # e00d: mov cr0, eax
        "66 ea 00 c1 ff ff 08 00")) # e010: jmp far dword 0x08:0xffffc100
    put(0xEF00, struct.pack("<HI", 0x17, ROM_BASE + 0xEF10))             # GDTR
    put(0xEF10, bytes(8) + bytes.fromhex("ffff 0000 009a cf00 ffff 0000 0092 cf00"))   # null, code, data
    table = ROM_BASE + 0xC180
    put(0xC100, bytes.fromhex(
        "66 b8 10 00"               # ffffc100: mov ax, 0x10
        "8e d8 8e c0 8e d0"         # ffffc104: mov ds, ax; mov es, ax; mov ss, ax
        "bc 00 f0 00 00"            # ffffc10a: mov esp, 0xf000
        "b8 00 00 08 00"            # ffffc10f: mov eax, 0x80000
        "0f 22 d8"                  # ffffc114: mov cr3, eax
        "0f 20 c0"                  # ffffc117: mov eax, cr0
        "0d 00 00 00 80"            # ffffc11a: or eax, 0x80000000
        "0f 22 c0"                  # ffffc11f: mov cr0, eax      (paging on: this page maps to itself; not
                                    #   0xffffe000, which the old ROM placeholder 0xfffffffe << 12 hit by chance)
        "31 db")                    # ffffc122: xor ebx, ebx
        + bytes.fromhex("ff 24 9d") + struct.pack("<I", table) +   # ffffc124: jmp [ebx*4 + table]
        bytes.fromhex(
        "43 eb f6"                  # ffffc12b: inc ebx; jmp 0xffffc124   (target A)
        "43 eb f3"                  # ffffc12e: inc ebx; jmp 0xffffc124   (target B)
        "31 db eb ef"))             # ffffc131: xor ebx, ebx; jmp 0xffffc124   (target C)
    put(0xC180, struct.pack("<III", ROM_BASE + 0xC12B, ROM_BASE + 0xC12E, ROM_BASE + 0xC131))
    return bytes(rom)


def setup_paged_rom_loop(m: vmcore.Machine) -> None:
    load_rom_image(m, rom_image())
    m.mem_write(ROM_PD, struct.pack("<I", ROM_PT_LOW | 3))
    m.mem_write(ROM_PD + 4 * 1023, struct.pack("<I", ROM_PT_TOP | 3))
    m.mem_write(ROM_PT_LOW, ((np.arange(1024, dtype=np.uint32) << 12) | 3).tobytes())
    m.mem_write(ROM_PT_TOP + 4 * 0x3F0, ((np.arange(0xFFFF0, 0x100000, dtype=np.uint32) << 12) | 3).tobytes())     # the ROM's 16 pages at the top of 4 GiB map to themselves


def check_paged_rom_loop(m: vmcore.Machine, r) -> None:
    assert m.reg_read("cr0") & 0x80000001 == 0x80000001
    assert 0xFFFFC124 <= m.reg_read("eip") < 0xFFFFC135, hex(m.reg_read("eip"))
    decoded_few_blocks(m, r)


CASES = [
    HostileCase("cs_bases_at_ip0", setup_cs_bases_at_ip0, TIMEOUT, check=None),   # its 61,184 blocks are all different
    HostileCase("a20_alias_loop", setup_a20_alias_loop, TIMEOUT, check=check_a20_alias_loop),
    HostileCase("ip_wrap_a20_open", setup_ip_wrap(False), TIMEOUT, check=check_ip_wrap),
    HostileCase("ip_wrap_a20_closed", setup_ip_wrap(True), TIMEOUT, check=check_ip_wrap),
    HostileCase("paged_ip_wrap_16bit", setup_paged_ip_wrap, frozenset({"shutdown"}), check=check_paged_ip_wrap),
    HostileCase("paged_rom_loop", setup_paged_rom_loop, TIMEOUT, check=check_paged_rom_loop),
]
