"""A pure-Python reference model of IA-32 32-bit paging, written from the SDM and
independent of the engine: the oracle that tests/test_paging.py checks vmcore's page walker
and TLB against.

It covers what the SDM Vol. 3 describes for 32-bit paging (CR4.PAE = 0):

- §4.3  translation: CR3[31:12] locates the page directory; PDE = PD[gla[31:22]]; with
        CR4.PSE = 1 and PDE.PS = 1 the PDE maps a 4 MiB page (gpa = PDE[31:22] | gla[21:0]),
        otherwise PDE[31:12] locates a page table and PTE = PT[gla[21:12]] maps a 4 KiB page
        (gpa = PTE[31:12] | gla[11:0]). With CR4.PSE = 0 the PS bit is ignored.
- §4.6  access rights: a user-mode access (CPL 3) needs U/S = 1 in every entry used, and a
        user write needs R/W = 1 in every entry used; a supervisor access may use any page,
        and a supervisor write to a page with R/W = 0 in some entry faults only if CR0.WP = 1.
        (No SMEP/SMAP/NX on a 32-bit-paging i686.)
- §4.7  a #PF error code: bit 0 P (0 = the entry was not present, 1 = a protection
        violation), bit 1 W/R (the access was a write), bit 2 U/S (the access was user-mode);
        CR2 = the faulting linear address.
- §4.8  on a successful translation the accessed bit is set in the PDE and in the PTE (for a
        4 MiB page, in the PDE alone), and on a write the dirty bit is set in the PTE (or the
        4 MiB PDE). The D bit of a PDE that points to a page table is ignored and left alone.
        This model changes no A/D bit on a faulting access (which is what the SDM requires
        of a permission fault found before the entry is used; vmcore follows it for
        not-present faults too).

Reserved-bit checks (PDE bits 21:13 of a 4 MiB page) are out of scope: the tests generate
entries with those bits clear. Memory is anything with ``read32(gpa)`` / ``write32(gpa, v)``
(``Memory`` below wraps a bytearray); an address outside it reads as all ones, as on the PC.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

P, RW, US, PWT, PCD, A, D, PS, G = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40, 0x80, 0x100
CR0_WP, CR0_PG = 0x10000, 0x80000000
CR4_PSE, CR4_PGE = 0x10, 0x80
PF_P, PF_W, PF_U = 0x1, 0x2, 0x4
PF_VECTOR = 14


class Memory:
    """Guest physical memory for the model: a bytearray at gpa 0."""

    def __init__(self, data: bytes | bytearray):
        self.data = bytearray(data)

    def read32(self, gpa: int) -> int:
        if gpa + 4 > len(self.data):
            return 0xFFFFFFFF
        return struct.unpack_from("<I", self.data, gpa)[0]

    def write32(self, gpa: int, value: int) -> None:
        if gpa + 4 <= len(self.data):
            struct.pack_into("<I", self.data, gpa, value & 0xFFFFFFFF)

    def read(self, gpa: int, size: int) -> bytes:
        return bytes(self.data[gpa:gpa + size])

    def write(self, gpa: int, data: bytes) -> None:
        if gpa + len(data) <= len(self.data):
            self.data[gpa:gpa + len(data)] = data


@dataclass(frozen=True)
class PageFault(Exception):
    """The access faults with #PF: CR2 = ``gla``, error code ``error_code``."""

    gla: int
    error_code: int

    @property
    def vector(self) -> int:
        return PF_VECTOR


@dataclass(frozen=True)
class Translation:
    """A successful walk: where the access lands and which entries it used (their gpas)."""

    gpa: int
    pde_gpa: int
    pte_gpa: int | None      # None for a 4 MiB page
    large: bool
    global_page: bool        # G = 1 in the entry that maps the page (kept by a CR3 load when CR4.PGE)


def walk(mem, cr3: int, cr4: int, wp: bool, gla: int, write: bool, user: bool,
         set_bits: bool = True) -> Translation:
    """Translate linear address ``gla`` for one access (SDM Vol. 3 §4.3, §4.6-§4.8).

    Raises PageFault for a not-present entry or a rights violation, changing nothing.
    Otherwise sets the accessed (and, for a write, dirty) bits in ``mem`` when ``set_bits``
    and returns the Translation."""
    gla &= 0xFFFFFFFF
    err = (PF_W if write else 0) | (PF_U if user else 0)
    pde_gpa = (cr3 & 0xFFFFF000) | ((gla >> 22) << 2)
    pde = mem.read32(pde_gpa)
    if not pde & P:
        raise PageFault(gla, err)
    large = bool(cr4 & CR4_PSE) and bool(pde & PS)
    if large:
        leaf, leaf_gpa, pte_gpa = pde, pde_gpa, None
        rw, us = pde & RW, pde & US
    else:
        pte_gpa = (pde & 0xFFFFF000) | (((gla >> 12) & 0x3FF) << 2)
        pte = mem.read32(pte_gpa)
        if not pte & P:
            raise PageFault(gla, err)
        leaf, leaf_gpa = pte, pte_gpa
        rw, us = pde & pte & RW, pde & pte & US        # both levels must allow it
    if user and (not us or (write and not rw)):
        raise PageFault(gla, err | PF_P)
    if not user and write and not rw and wp:
        raise PageFault(gla, err | PF_P)
    if set_bits:
        if not large and not pde & A:
            mem.write32(pde_gpa, pde | A)
        new_leaf = leaf | A | (D if write else 0)
        if new_leaf != leaf:
            mem.write32(leaf_gpa, new_leaf)
    if large:
        gpa = (pde & 0xFFC00000) | (gla & 0x3FFFFF)
    else:
        gpa = (leaf & 0xFFFFF000) | (gla & 0xFFF)
    return Translation(gpa=gpa, pde_gpa=pde_gpa, pte_gpa=pte_gpa, large=large,
                       global_page=bool(leaf & G))


def access(mem: Memory, cr3: int, cr4: int, cr0: int, cpl: int, gla: int, size: int,
           write_data: bytes | None = None) -> bytes | Translation:
    """One data access of ``size`` bytes at ``gla`` that does not cross a page, as an
    instruction at privilege ``cpl`` makes it with paging on: walks (setting A/D), then
    reads (returns the bytes) or writes ``write_data`` (returns the Translation).
    Raises PageFault with nothing changed."""
    if (gla & 0xFFF) + size > 0x1000:
        raise ValueError("the model takes accesses within one page")
    write = write_data is not None
    t = walk(mem, cr3, cr4, bool(cr0 & CR0_WP), gla, write, user=cpl == 3)
    if write:
        assert len(write_data) == size
        mem.write(t.gpa, write_data)
        return t
    return mem.read(t.gpa, size)
