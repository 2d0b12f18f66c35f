"""IA-32 32-bit paging checked against a pure-Python reference page walker
(tests/paging_reference.py, written from the SDM Vol. 3 §4.3, §4.6-§4.8).

Hypothesis builds random page directories and page tables in guest memory (entries with
random P/RW/US/PWT/PCD/A/D/PS/G bits, frames inside guest RAM, aliases of the paging
structures themselves included), picks CR0.WP, CR4.PSE, CPL 0 or 3 and one access (read or
write of 1, 2 or 4 bytes within a page), runs ONE guest instruction that makes it, and
compares with the model: the value read or the bytes written, or the #PF (vector, error code,
CR2), and every byte of guest memory afterwards (so the A/D bits of every entry).

Then hand-written guests for the TLB flush rules (SDM Vol. 3 §4.10.4): a PTE changed in
memory is not seen until INVLPG or a CR3 load; with CR4.PGE a global page survives a CR3
load but not INVLPG.

CI runs a fixed, derandomized set of 300 examples (about 2 s); HYPOTHESIS_PROFILE=long runs
20,000 (PAGING_EXAMPLES=N for another number) with a random seed.
"""
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import vmcore
from vmcore import Exit

import paging_reference as ref
from paging_reference import A, CR0_PG, CR0_WP, CR4_PGE, CR4_PSE, D, G, P, PCD, PS, PWT, RW, US

if os.environ.get("HYPOTHESIS_PROFILE") == "long":
    SETTINGS = settings(max_examples=int(os.environ.get("PAGING_EXAMPLES", 20_000)), deadline=None,
                        derandomize=False, suppress_health_check=[HealthCheck.too_slow])
else:
    SETTINGS = settings(max_examples=300, deadline=None, derandomize=True,
                        suppress_health_check=[HealthCheck.too_slow])

MEMORY_MB = 16
CODE = 0x1000          # the one instruction, identity-mapped by PDE 0 / PT0[1], user-readable
PT0 = 0x2000           # page table for linear 0..4 MiB: maps only the code page
PD = 0x3000            # the page directory (CR3)
# page tables for the random mappings; the 4 MiB-aligned ones double as 4 MiB frames (a PDE
# with PS = 1 is a page-table pointer when CR4.PSE = 0 and a 4 MiB page when CR4.PSE = 1)
BIG_FRAMES = (0x000000, 0x400000, 0x800000, 0xC00000)
PT_POOL = BIG_FRAMES + (0x10000, 0x11000)
DATA_FRAMES = tuple(0x100000 + 0x1000 * k for k in range(12))
# 4 KiB frames the random PTEs point to: data, and aliases of the paging structures
FRAMES = DATA_FRAMES + PT_POOL + (PD,)

# every byte of RAM starts as a fixed pseudo-random pattern, so a read tells where it landed
IMAGE = np.random.default_rng(0x1A32).integers(0, 256, MEMORY_MB << 20, dtype=np.uint8)

# the access, by (write, size): encoding with EBX = the linear address, EAX the data
INSN = {
    (False, 1): bytes.fromhex("8a 03"),      # mov al, [ebx]
    (False, 2): bytes.fromhex("66 8b 03"),   # mov ax, [ebx]
    (False, 4): bytes.fromhex("8b 03"),      # mov eax, [ebx]
    (True, 1): bytes.fromhex("88 03"),       # mov [ebx], al
    (True, 2): bytes.fromhex("66 89 03"),    # mov [ebx], ax
    (True, 4): bytes.fromhex("89 03"),       # mov [ebx], eax
}


class OverlayMemory:
    """The model's view of guest RAM: the initial image plus what the model wrote."""

    def __init__(self, base: np.ndarray):
        self.base = base
        self.writes: dict[int, int] = {}

    def _byte(self, gpa):
        return self.writes.get(gpa, int(self.base[gpa]))

    def read(self, gpa, size):
        return bytes(self._byte(gpa + k) if gpa + k < self.base.size else 0xFF for k in range(size))

    def write(self, gpa, data):
        if gpa + len(data) <= self.base.size:          # beyond RAM, writes vanish
            for k, b in enumerate(data):
                self.writes[gpa + k] = b

    def read32(self, gpa):
        return struct.unpack("<I", self.read(gpa, 4))[0] if gpa + 4 <= self.base.size else 0xFFFFFFFF

    def write32(self, gpa, value):
        self.write(gpa, struct.pack("<I", value & 0xFFFFFFFF))

    def changed(self) -> dict[int, int]:
        return {gpa: b for gpa, b in self.writes.items() if b != self.base[gpa]}


# ---- random paging structures --------------------------------------------------------------

def entry_bits(draw, leaf: bool):
    """P, R/W and U/S mostly set (so most accesses get through both levels); the others even."""
    bits = draw(st.integers(0, 0x1FF)) & (PWT | PCD | A | D | G | (0 if leaf else PS))
    for bit, odds in ((P, 8), (RW, 6), (US, 4)):
        if draw(st.integers(0, odds - 1)) != odds - 1:   # (integers() favours its ends)
            bits |= bit
    return bits


# an even coin: integers() favours both its ends, one even and one odd (booleans() favours False)
COIN = st.integers(0, 9).map(lambda n: n % 2 == 1)


def mostly(draw, likely, other):
    return draw(likely if draw(st.integers(0, 7)) != 7 else other)


@st.composite
def scenarios(draw):
    pde_idx = draw(st.lists(st.integers(1, 1023), min_size=1, max_size=4, unique=True))
    pdes = {}
    for i in pde_idx:
        bits = entry_bits(draw, leaf=False)
        frame = draw(st.sampled_from(BIG_FRAMES if bits & PS else PT_POOL))
        pdes[i] = frame | bits
    ptes = {}                                                 # (pt gpa, index) -> entry
    pte_idx = draw(st.lists(st.integers(0, 1023), min_size=1, max_size=4, unique=True))
    for pt in sorted({e & 0xFFFFF000 for e in pdes.values()}):
        for j in pte_idx:
            if draw(st.integers(0, 7)) != 7:
                ptes[(pt, j)] = draw(st.sampled_from(FRAMES)) | entry_bits(draw, leaf=True)
    di = mostly(draw, st.sampled_from(pde_idx), st.integers(1, 1023))
    ti = mostly(draw, st.sampled_from(pte_idx), st.integers(0, 1023))
    size = draw(st.sampled_from((1, 2, 4)))
    offset = draw(st.integers(0, 0x1000 - size))
    return dict(pdes=pdes, ptes=ptes, gla=(di << 22) | (ti << 12) | offset, size=size,
                write=draw(COIN), value=draw(st.integers(0, 0xFFFFFFFF)),
                cpl=3 if draw(COIN) else 0, wp=draw(COIN), pse=draw(COIN))


# RAM as every example starts: the pattern with the paging structures cleared, then PDE 0
# -> PT0 -> the code page (A already set: the instruction fetch changes nothing)
BASE = IMAGE.copy()
for _table in (PT0, PD) + PT_POOL:
    BASE[_table:_table + 0x1000] = 0
BASE[PD:PD + 4] = np.frombuffer(struct.pack("<I", PT0 | P | RW | US | A), dtype=np.uint8)
BASE[PT0 + 4 * (CODE >> 12):][:4] = np.frombuffer(struct.pack("<I", CODE | P | US | A), dtype=np.uint8)

_machine = None
_dirty = False       # an example ended before restoring RAM


def machine(initial: dict[int, int]):
    """The engine with RAM = BASE + ``initial`` (gpa -> byte) and a CPU fresh from
    reset_flat32 (flat 32-bit protected mode, CPL 0, paging off, TLB and code cache empty).
    One Machine serves every example: a new one costs more than the whole check."""
    global _machine, _dirty
    if _machine is None:
        _machine = vmcore.Machine(memory_mb=MEMORY_MB, devices=False)
        _dirty = True
    m = _machine
    if _dirty:
        m.memory[:] = BASE
    _dirty = True
    m._engine.reset_flat32()
    for gpa, b in initial.items():
        m.memory[gpa] = b
    m._engine.flush()
    return m


def changed_bytes(m) -> dict[int, int]:
    """gpa -> byte of every byte of RAM that differs from BASE."""
    words = np.flatnonzero(m.memory.view(np.uint64) != BASE.view(np.uint64))
    out = {}
    for w in words:
        for gpa in range(8 * int(w), 8 * int(w) + 8):
            if m.memory[gpa] != BASE[gpa]:
                out[gpa] = int(m.memory[gpa])
    return out


def restore(m, changed) -> None:
    global _dirty
    for gpa in changed:
        m.memory[gpa] = BASE[gpa]
    _dirty = False


def user_mode(m):
    """CPL 3 with flat DPL-3 segments (CS with RPL 3 sets CPL 3 in the engine)."""
    m._engine.seg_set(1, 0x1B, 0, 0xFFFFFFFF, 0xC0FB)     # CS: DPL 3 32-bit code
    for index in (0, 2, 3):                                # ES, SS, DS: DPL 3 data
        m._engine.seg_set(index, 0x23, 0, 0xFFFFFFFF, 0xC0F3)


@SETTINGS
@given(scenarios())
def test_one_access_matches_reference_walker(s):
    gla, size, write = s["gla"], s["size"], s["write"]
    cr0 = 0x11 | CR0_PG | (CR0_WP if s["wp"] else 0)
    cr4 = CR4_PSE if s["pse"] else 0
    insn = INSN[(write, size)]

    # the paging structures and the instruction, as bytes over BASE
    model = OverlayMemory(BASE)
    for i, e in s["pdes"].items():
        model.write32(PD + 4 * i, e)
    for (pt, j), e in s["ptes"].items():
        model.write32(pt + 4 * j, e)
    model.write(CODE, insn)
    initial = dict(model.writes)
    image = OverlayMemory(BASE)
    image.writes = dict(initial)

    # the model
    data = struct.pack("<I", s["value"])[:size]
    try:
        result = ref.access(model, PD, cr4, cr0, s["cpl"], gla, size, data if write else None)
        fault = None
    except ref.PageFault as e:
        fault = e

    # the engine: one instruction
    m = machine(initial)
    m.reg_write("cr3", PD)
    m.reg_write("cr4", cr4)
    m.reg_write("cr0", cr0)
    if s["cpl"] == 3:
        user_mode(m)
    m.reg_write("ebx", gla)
    m.reg_write("eax", s["value"])
    m.reg_write("eip", CODE)
    r = m.run(count=1)
    event("fault" if fault else "write" if write else "read")
    event(f"cpl {s['cpl']}, {'4 MiB' if s['pse'] and s['pdes'].get(gla >> 22, 0) & PS else '4 KiB'}")
    got = changed_bytes(m)
    restore(m, got)

    if fault is not None:
        assert r.exit == Exit.SHUTDOWN, (r.exit, r.reason)
        assert r.exception == (14, fault.error_code, CODE), r.reason
        assert m.reg_read("cr2") == gla
    else:
        assert r.exit == Exit.BUDGET, (r.exit, r.reason)
        assert m.reg_read("eip") == CODE + len(insn)
        if not write:
            mask = (1 << (8 * size)) - 1
            expect = (s["value"] & ~mask) | int.from_bytes(result, "little")
            assert m.reg_read("eax") == expect, f"read {m.reg_read('eax'):#x}, model {expect:#x}"
    # every byte of RAM: the data written and the A/D bits, nothing else
    want = model.changed()
    if got != want:
        words = sorted({gpa & ~3 for gpa in set(got) | set(want)})
        def word(get, w):
            return int.from_bytes(bytes(get(w + k) for k in range(4)), "little")
        lines = [f"{w:#x}: was {image.read32(w):#010x} "
                 f"engine {word(lambda g: got.get(g, int(BASE[g])), w):#010x} "
                 f"model {model.read32(w):#010x}" for w in words]
        pytest.fail("memory after the access differs from the model:\n" + "\n".join(lines))


# ---- TLB flush rules (SDM Vol. 3 §4.10.4) ----------------------------------------------------
# Low 4 MiB identity-mapped (PDE 0 -> PT0, supervisor, writable); linear 0x400000 (PDE 1 ->
# PT1[0]) maps frame 0x5000 holding 0x11111111. The guest rewrites PT1[0] to point at frame
# 0x6000 (0x22222222) and reads linear 0x400000 again: a translation cached in the TLB hides
# the change until INVLPG or a CR3 load drops it. EBX = 0x400000, ESI = &PT1[0], ECX = the new PTE.
# (The SDM lets a processor drop any TLB entry at any time, so hardware may show the new frame
# early; vmcore's TLB is deterministic and keeps every entry until an architectural flush, as
# the processors' TLBs do in practice, and these tests pin exactly that.)

TLB_CODE, TLB_PT0, TLB_PD, TLB_PT1 = 0x1000, 0x2000, 0x3000, 0x4000
OLD_FRAME, NEW_FRAME, TLB_GLA = 0x5000, 0x6000, 0x400000


def tlb_machine(code: bytes, pte_flags: int = 0, cr4: int = 0, **regs):
    m = vmcore.Machine(memory_mb=4, devices=False)
    m.mem_write(TLB_PT0, b"".join(struct.pack("<I", (k << 12) | P | RW) for k in range(1024)))
    m.mem_write(TLB_PD, struct.pack("<II", TLB_PT0 | P | RW, TLB_PT1 | P | RW))
    m.mem_write(TLB_PT1, struct.pack("<I", OLD_FRAME | P | RW | pte_flags))
    m.mem_write(OLD_FRAME, struct.pack("<I", 0x11111111))
    m.mem_write(NEW_FRAME, struct.pack("<I", 0x22222222))
    m.mem_write(TLB_CODE, code)
    m.reg_write("cr3", TLB_PD)
    m.reg_write("cr4", cr4)
    m.reg_write("cr0", m.reg_read("cr0") | CR0_PG)
    m.reg_write("ebx", TLB_GLA)
    m.reg_write("esi", TLB_PT1)
    m.reg_write("ecx", NEW_FRAME | P | RW | pte_flags)
    m.reg_write("eip", TLB_CODE)
    for name, value in regs.items():
        m.reg_write(name, value)
    r = m.run(count=100)
    assert r.exit == Exit.HLT, r.reason
    return m


def pt1_entry(m):
    return struct.unpack("<I", m.mem_read(TLB_PT1, 4))[0]


@pytest.mark.parametrize("pte_flags, cr4", [(0, 0), (G, 0), (0, CR4_PGE)],
                         ids=["plain", "G without PGE", "PGE, not G"])
def test_invlpg_drops_a_stale_translation(pte_flags, cr4):
    code = bytes.fromhex(
        "8b 03"          # mov eax, [ebx]      fills the TLB: 0x11111111
        "89 0e"          # mov [esi], ecx      PT1[0] -> frame 0x6000
        "8b 13"          # mov edx, [ebx]      still the cached translation: 0x11111111
        "0f 01 3b"       # invlpg [ebx]
        "8b 3b"          # mov edi, [ebx]      walked again: 0x22222222
        "f4")            # hlt
    m = tlb_machine(code, pte_flags, cr4)
    assert (m.reg_read("eax"), m.reg_read("edx"), m.reg_read("edi")) == (0x11111111, 0x11111111, 0x22222222)
    # the stale read did not walk (a TLB hit sets no A bit); the walk after INVLPG set it
    assert pt1_entry(m) == NEW_FRAME | P | RW | pte_flags | A


@pytest.mark.parametrize("pte_flags, cr4", [(0, 0), (G, 0), (0, CR4_PGE)],
                         ids=["plain", "G without PGE", "PGE, not G"])
def test_cr3_load_drops_non_global_translations(pte_flags, cr4):
    code = bytes.fromhex(
        "8b 03"          # mov eax, [ebx]      fills the TLB: 0x11111111
        "89 0e"          # mov [esi], ecx      PT1[0] -> frame 0x6000
        "8b 13"          # mov edx, [ebx]      still cached: 0x11111111
        "0f 20 dd"       # mov ebp, cr3
        "0f 22 dd"       # mov cr3, ebp        the same CR3: flushes every non-global entry
        "8b 3b"          # mov edi, [ebx]      0x22222222
        "f4")            # hlt
    m = tlb_machine(code, pte_flags, cr4)
    assert (m.reg_read("eax"), m.reg_read("edx"), m.reg_read("edi")) == (0x11111111, 0x11111111, 0x22222222)


def test_global_page_survives_cr3_load_but_not_invlpg():
    code = bytes.fromhex(
        "8b 03"          # mov eax, [ebx]      fills the TLB with a global translation
        "89 0e"          # mov [esi], ecx      PT1[0] -> frame 0x6000 (still G)
        "0f 20 dd"       # mov ebp, cr3
        "0f 22 dd"       # mov cr3, ebp        CR4.PGE = 1: the global entry stays
        "8b 13"          # mov edx, [ebx]      0x11111111
        "0f 01 3b"       # invlpg [ebx]        INVLPG drops it, global or not
        "8b 3b"          # mov edi, [ebx]      0x22222222
        "f4")            # hlt
    m = tlb_machine(code, G, CR4_PGE)
    assert (m.reg_read("eax"), m.reg_read("edx"), m.reg_read("edi")) == (0x11111111, 0x11111111, 0x22222222)


def test_clearing_cr4_pge_drops_global_translations():
    code = bytes.fromhex(
        "8b 03"              # mov eax, [ebx]      a global translation: 0x11111111
        "89 0e"              # mov [esi], ecx      PT1[0] -> frame 0x6000
        "0f 20 dd"           # mov ebp, cr3
        "0f 22 dd"           # mov cr3, ebp        kept (global)
        "8b 13"              # mov edx, [ebx]      0x11111111
        "0f 20 e5"           # mov ebp, cr4
        "81 e5 7f ff ff ff"  # and ebp, 0xffffff7f clear PGE
        "0f 22 e5"           # mov cr4, ebp        changing PGE flushes the whole TLB
        "8b 3b"              # mov edi, [ebx]      0x22222222
        "f4")                # hlt
    m = tlb_machine(code, G, CR4_PGE)
    assert (m.reg_read("eax"), m.reg_read("edx"), m.reg_read("edi")) == (0x11111111, 0x11111111, 0x22222222)
    assert m.reg_read("cr4") & CR4_PGE == 0


def test_a_cached_dirty_translation_does_not_set_d_again():
    """A write through a TLB entry that already has D set writes no paging entry (§4.8):
    the guest clears A and D in PT1[0] behind the TLB's back; a second write neither walks
    nor sets them again, until INVLPG."""
    code = bytes.fromhex(
        "89 03"          # mov [ebx], eax      walk: PT1[0] gets A and D, the TLB caches D
        "89 0e"          # mov [esi], ecx      PT1[0] = frame 0x5000 with A and D clear
        "89 13"          # mov [ebx], edx      TLB hit: PT1[0] unchanged
        "8b 3e"          # mov edi, [esi]      edi = PT1[0] as it is now
        "0f 01 3b"       # invlpg [ebx]
        "89 03"          # mov [ebx], eax      walks again: A and D set
        "f4")            # hlt
    m = tlb_machine(code, ecx=OLD_FRAME | P | RW, eax=0xAAAAAAAA, edx=0xBBBBBBBB)
    assert m.reg_read("edi") == OLD_FRAME | P | RW
    assert pt1_entry(m) == OLD_FRAME | P | RW | A | D
    assert struct.unpack("<I", m.mem_read(OLD_FRAME, 4))[0] == 0xAAAAAAAA
