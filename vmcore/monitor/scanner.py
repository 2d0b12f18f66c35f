"""The scanner: what each instruction of a guest-kernel block becomes under the `bt` mode.

Given the code bytes at a guest linear address, the scanner disassembles them with capstone and classifies each
instruction by capstone id and operand form against the table in ``sensitive.py``: IDENT, CALLOUT(kind) or TRAP.
Translation is in place: an IDENT instruction runs from the guest's own bytes at its own address, so return
addresses, relative branches and self-reads need no fixing up.

A block (one ``Translation``) stops after the first instruction that ends a block (a control transfer, a trap),
after an instruction that reaches or crosses the end of the first page (as the engine's own blocks do), after
``max_insns`` instructions, or at bytes capstone cannot decode. Those bytes become a TRAP of unknown length: the
engine, running them, raises what the hardware raises (#UD, or #PF if the instruction runs onto an unmapped page).
Encodings capstone decodes but the CPU rejects (``mov cs, ax``) are TRAPs too.

Translations are cached by (gpa page, offset in the page, code size); ``invalidate_page`` drops the ones that read a
page when the guest writes it. Addresses say their space: ``gla`` guest linear, ``gpa`` guest physical, ``gpa_page``
a guest physical page number (gpa >> 12, as in the engine).
"""
from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

import capstone
from capstone import x86_const as X

from vmcore.errors import ConfigError
from vmcore.monitor.sensitive import (
    CALLOUTS, FORM_ANY, FORM_DEPENDENT_IDS, FORM_FAR_MEM, FORM_FROM_CR, FORM_FROM_CS, FORM_FROM_DR, FORM_FROM_SS,
    FORM_INVALID, FORM_TO_CR, FORM_TO_DR, FORM_TO_SREG, IDENT, TRAP, Action, ActionKind, lookup)

PAGE_SIZE = 4096
MAX_INSN_BYTES = 15             # longer is #GP (SDM Vol. 2 §2.3.11); capstone refuses them too
MAX_BLOCK_INSNS = 64            # the engine's MAX_BLOCK_INSNS (vmcore/_core/defs.pxi)
UNKNOWN_LENGTH = 0              # the length of a TRAP on bytes capstone cannot decode


class BlockEnd(enum.Enum):
    CONTROL_FLOW = "control flow"       # a control transfer, or a callout that may change CS or the CPL
    TRAP = "trap"                       # a trapping instruction: the monitor emulates it, maybe changing the mode
    UNDECODABLE = "undecodable"         # bytes capstone cannot decode, with 15 bytes to decode them from
    TRUNCATED = "truncated"             # cannot decode the last bytes given: maybe the rest is on an unmapped page
    PAGE_BOUNDARY = "page boundary"     # the last instruction reaches or crosses the end of the first page
    MAX_INSNS = "max instructions"


class ScannedInsn(NamedTuple):
    gla: int
    length: int
    action: Action


@dataclass(frozen=True)
class Translation:
    """One scanned block of guest-kernel code."""

    gla: int                            # first instruction
    gpa: int                            # where its first byte is
    code_size: int                      # 16 or 32
    cs_base: int                        # gla = cs_base + eip; relative branch targets wrap in eip
    insns: tuple[ScannedInsn, ...]
    end: BlockEnd
    end_gla: int                        # just past the last instruction (UNDECODABLE/TRUNCATED: at its bytes)
    successors: tuple[int, ...]
    """The glas where execution may go on after the last instruction that the code alone tells: the fall-through
    and a relative branch's target. Targets known only at run time (indirect, returns, far transfers, interrupts)
    are not listed, so () means "ask the CPU"."""
    gpa_pages: tuple[int, ...]          # the pages its bytes came from: one, or two if the last crosses

    @property
    def callouts(self) -> tuple[ScannedInsn, ...]:
        return tuple(i for i in self.insns if i.action.kind is ActionKind.CALLOUT)

    @property
    def traps(self) -> tuple[ScannedInsn, ...]:
        return tuple(i for i in self.insns if i.action.kind is ActionKind.TRAP)


_CR_REGS = frozenset(getattr(X, f"X86_REG_CR{n}") for n in range(16))
_DR_REGS = frozenset(getattr(X, f"X86_REG_DR{n}") for n in range(16))
_SEG_REGS = frozenset((X.X86_REG_CS, X.X86_REG_DS, X.X86_REG_ES, X.X86_REG_FS, X.X86_REG_GS, X.X86_REG_SS))
_FAR_MEM_MODRM_REG = {X.X86_INS_CALL: 3, X.X86_INS_JMP: 5}          # FF /3 CALL m16:32, FF /5 JMP m16:32
_RELATIVE_BRANCHES = frozenset((
    X.X86_INS_JMP, X.X86_INS_CALL, X.X86_INS_JO, X.X86_INS_JNO, X.X86_INS_JB, X.X86_INS_JAE, X.X86_INS_JE,
    X.X86_INS_JNE, X.X86_INS_JBE, X.X86_INS_JA, X.X86_INS_JS, X.X86_INS_JNS, X.X86_INS_JP, X.X86_INS_JNP,
    X.X86_INS_JL, X.X86_INS_JGE, X.X86_INS_JLE, X.X86_INS_JG, X.X86_INS_JCXZ, X.X86_INS_JECXZ, X.X86_INS_LOOP,
    X.X86_INS_LOOPE, X.X86_INS_LOOPNE))
_UNCONDITIONAL = frozenset((X.X86_INS_JMP, X.X86_INS_CALL))
_OPERAND_SIZE_PREFIX = 0x66


def operand_form(insn: capstone.CsInsn) -> str:
    """The operand form of a MOV/PUSH/POP/JMP/CALL that decides whether it is sensitive (FORM_*)."""
    ins_id = insn.id
    if ins_id in _FAR_MEM_MODRM_REG:
        if insn.opcode[0] == 0xFF and (insn.modrm >> 3) & 7 == _FAR_MEM_MODRM_REG[ins_id]:
            return FORM_FAR_MEM if insn.modrm >> 6 != 3 else FORM_INVALID
        return FORM_ANY
    regs = [op.reg if op.type == X.X86_OP_REG else None for op in insn.operands]
    if ins_id == X.X86_INS_PUSH:
        dest, source = None, regs[0]
    elif ins_id == X.X86_INS_POP:
        dest, source = regs[0], None
    else:                                   # MOV: Intel order, destination first
        dest, source = regs[0], regs[1]
    if dest in _CR_REGS:
        return FORM_TO_CR
    if source in _CR_REGS:
        return FORM_FROM_CR
    if dest in _DR_REGS:
        return FORM_TO_DR
    if source in _DR_REGS:
        return FORM_FROM_DR
    if dest in _SEG_REGS:
        return FORM_INVALID if dest == X.X86_REG_CS else FORM_TO_SREG
    if source == X.X86_REG_CS:
        return FORM_FROM_CS
    if source == X.X86_REG_SS:
        return FORM_FROM_SS
    return FORM_ANY     # includes reads of DS/ES/FS/GS: the monitor keeps the guest's selectors in them


class Classified(NamedTuple):
    action: Action
    ends_block: bool
    transfers_control: bool     # the next instruction is not the one after it in memory (or not only)


_PLAIN = Classified(IDENT, False, False)
_INVALID = Classified(TRAP, True, True)         # #UD: goes to the guest's #UD handler


def classify(insn: capstone.CsInsn) -> Classified:
    """What the instruction becomes, by its capstone id and (for MOV/PUSH/POP/JMP/CALL) operand form."""
    form = operand_form(insn) if insn.id in FORM_DEPENDENT_IDS else FORM_ANY
    if form == FORM_INVALID:
        return _INVALID
    entry = lookup(insn.id, form)
    if entry is None:
        return _PLAIN
    return Classified(entry.action, entry.ends_block, entry.transfers_control)


class Scanner:
    """Scans guest-kernel blocks and caches the translations; one per virtual machine."""

    def __init__(self, max_insns: int = MAX_BLOCK_INSNS):
        if not 1 <= max_insns <= 4096:
            raise ConfigError(f"scanner max_insns must be in [1, 4096], not {max_insns!r}")
        self.max_insns = max_insns
        self._disassemblers: dict[int, capstone.Cs] = {}
        for code_size, mode in ((16, capstone.CS_MODE_16), (32, capstone.CS_MODE_32)):
            md = capstone.Cs(capstone.CS_ARCH_X86, mode)
            md.detail = True
            self._disassemblers[code_size] = md
        self._cache: dict[tuple[int, int, int], Translation] = {}
        self._keys_by_page: dict[int, set[tuple[int, int, int]]] = {}
        self._counts: Counter[str] = Counter()

    def scan(self, code: bytes, gla: int, gpa: int, code_size: int = 32, *, cs_base: int = 0,
             next_gpa_page: int | None = None) -> Translation:
        """The translation of the block at ``gla`` (guest physical ``gpa``), from the cache when it is there.

        ``code`` holds the bytes from ``gla`` on: up to the end of its page, and, when the next linear page is
        mapped, up to 14 more from it, whose page number is then ``next_gpa_page`` (without it, bytes past the end
        of the page are not used: an instruction crossing it becomes a TRAP, and the engine faults on the fetch).
        """
        if code_size not in self._disassemblers:
            raise ConfigError(f"code size must be 16 or 32, not {code_size!r}")
        gpa_page, page_offset = gpa >> 12, gpa & (PAGE_SIZE - 1)
        if page_offset != gla & (PAGE_SIZE - 1):
            raise ConfigError(f"gla {gla:#x} and gpa {gpa:#x} are not at the same offset in their pages")
        key = (gpa_page, page_offset, code_size)
        cached = self._cache.get(key)
        if cached is not None and cached.gla == gla and cached.cs_base == cs_base:
            self._counts["cache_hits"] += 1
            return cached
        self._counts["cache_misses"] += 1
        translation = self._translate(code, gla, gpa, code_size, cs_base, next_gpa_page)
        if translation.end is not BlockEnd.TRUNCATED:     # its end depends on a page it could not see
            self._drop(key)
            self._cache[key] = translation
            for page in translation.gpa_pages:
                self._keys_by_page.setdefault(page, set()).add(key)
        return translation

    def invalidate_page(self, gpa_page: int) -> int:
        """The guest wrote to ``gpa_page``: forget every translation that read it. Returns how many."""
        keys = self._keys_by_page.pop(gpa_page, set())
        for key in keys:
            self._drop(key)
        self._counts["translations_invalidated"] += len(keys)
        return len(keys)

    def flush(self) -> None:
        self._counts["translations_invalidated"] += len(self._cache)
        self._cache.clear()
        self._keys_by_page.clear()

    @property
    def stats(self) -> dict[str, int]:
        """Counters: blocks scanned, instructions by action, callouts by kind, cache hits and misses."""
        counts = {name: self._counts[name] for name in (
            "blocks_scanned", "insns_scanned", "insns_ident", "insns_callout", "insns_trap",
            "cache_hits", "cache_misses", "translations_invalidated")}
        counts["translations_cached"] = len(self._cache)
        counts.update({f"callout_{kind}": self._counts[f"callout_{kind}"] for kind in CALLOUTS})
        return counts

    def _drop(self, key: tuple[int, int, int]) -> None:
        old = self._cache.pop(key, None)
        if old is not None:
            for page in old.gpa_pages:
                keys = self._keys_by_page.get(page)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._keys_by_page[page]

    def _translate(self, code: bytes, gla: int, gpa: int, code_size: int, cs_base: int,
                   next_gpa_page: int | None) -> Translation:
        page_end = PAGE_SIZE - (gla & (PAGE_SIZE - 1))      # bytes from gla to the end of its page
        window = bytes(code[:page_end + (MAX_INSN_BYTES - 1 if next_gpa_page is not None else 0)])
        eip = (gla - cs_base) & 0xFFFFFFFF
        disassembler = self._disassemblers[code_size]
        insns: list[ScannedInsn] = []
        offset = 0
        end: BlockEnd
        successors: tuple[int, ...]
        while True:
            # one instruction a call: capstone's disasm decodes all it is given before yielding the first
            insn_gla = (gla + offset) & 0xFFFFFFFF
            insn = next(disassembler.disasm(window[offset:offset + MAX_INSN_BYTES], eip + offset, 1), None)
            if insn is None:    # bytes capstone cannot decode, or too few bytes to decode
                end = BlockEnd.UNDECODABLE if len(window) - offset >= MAX_INSN_BYTES else BlockEnd.TRUNCATED
                insns.append(ScannedInsn(insn_gla, UNKNOWN_LENGTH, TRAP))
                successors = ()
                break
            action, ends, transfers_control = classify(insn)
            insns.append(ScannedInsn(insn_gla, insn.size, action))
            offset += insn.size
            fall_through = (gla + offset) & 0xFFFFFFFF
            if ends:
                end = BlockEnd.TRAP if action.kind is ActionKind.TRAP else BlockEnd.CONTROL_FLOW
                if transfers_control:
                    successors = _branch_successors(insn, code_size, cs_base, fall_through)
                else:           # a trap the monitor emulates, then resumes after (HLT, MOV CRn, OUT...)
                    successors = (fall_through,)
                break
            if offset >= page_end:
                end, successors = BlockEnd.PAGE_BOUNDARY, (fall_through,)
                break
            if len(insns) >= self.max_insns:
                end, successors = BlockEnd.MAX_INSNS, (fall_through,)
                break
        gpa_pages = (gpa >> 12,) if offset <= page_end else (gpa >> 12, next_gpa_page)
        self._count(insns)
        end_gla = (gla + offset) & 0xFFFFFFFF
        return Translation(gla, gpa, code_size, cs_base, tuple(insns), end, end_gla, successors, gpa_pages)

    def _count(self, insns: list[ScannedInsn]) -> None:
        counts = self._counts
        counts["blocks_scanned"] += 1
        counts["insns_scanned"] += len(insns)
        for insn in insns:
            counts["insns_" + insn.action.kind.name.lower()] += 1
            if insn.action.kind is ActionKind.CALLOUT:
                counts["callout_" + insn.action.callout] += 1


def _branch_successors(insn: capstone.CsInsn, code_size: int, cs_base: int, fall_through: int) -> tuple[int, ...]:
    """Fall-through and target of a near relative branch; () for every other control transfer but INTO."""
    if insn.id == X.X86_INS_INTO:
        return (fall_through,)     # and the #OF handler, from the IDT
    if insn.id not in _RELATIVE_BRANCHES or insn.opcode[0] == 0xFF:     # indirect: jmp eax, call [mem]
        return ()
    rel = int.from_bytes(insn.bytes[insn.imm_offset:insn.imm_offset + insn.imm_size], "little", signed=True)
    operand_size_16 = (code_size == 16) != (_OPERAND_SIZE_PREFIX in insn.prefix)
    eip_mask = 0xFFFF if operand_size_16 else 0xFFFFFFFF       # SDM Vol. 2 JMP/Jcc: EIP AND 0000FFFFH
    target_eip = ((fall_through - cs_base) + rel) & eip_mask
    target = (cs_base + target_eip) & 0xFFFFFFFF
    return (target,) if insn.id in _UNCONDITIONAL else (target, fall_through)
