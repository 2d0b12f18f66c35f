"""The monitor's Python half: translation misses and the monitor's counters.

In the ``bt`` mode the engine exits with EXIT_TRANSLATE when guest-kernel code reaches an instruction no scan has
covered. The supervisor reads the code bytes there, has the scanner classify the block (``scanner.py`` against the
table in ``sensitive.py``) and installs one action per instruction into the engine: IDENT, TRAP, or CALLOUT(kind),
whose emulation then runs inside the engine. The engine keeps the installed actions per guest-physical page until a
write to the page drops them (with its decoded blocks); the scanner's own cache is dropped for such a page too.
"""
from __future__ import annotations

from vmcore.errors import VmError
from vmcore.monitor.scanner import Scanner
from vmcore.monitor.sensitive import CALLOUTS, ActionKind

PAGE_SIZE = 4096
MAX_INSN_BYTES = 15

# the engine's action codes (vmcore/_core/monitor.pxi ACT_*)
ACT_IDENT = 1
ACT_TRAP = 2
ACT_CALLOUT = 3

# the engine's trap kinds, in its order (vmcore/_core/monitor.pxi TK_*)
TRAP_KINDS = ("other", "hlt", "lgdt", "lidt", "lldt", "ltr", "lmsw", "clts", "mov_to_cr", "mov_from_cr", "mov_dr",
              "wbinvd", "invlpg", "rdmsr", "wrmsr", "in", "out", "ins", "outs", "cli", "sti", "iret", "far_ret",
              "far_jmp", "far_call", "mov_to_sreg", "pop_sreg", "load_far_pointer", "popf", "sysexit", "rdtsc",
              "int")
CALLOUT_KINDS = tuple(sorted(CALLOUTS, key=lambda kind: CALLOUTS[kind].number))


def action_code(action) -> int:
    if action.kind is ActionKind.IDENT:
        return ACT_IDENT
    if action.kind is ActionKind.TRAP:
        return ACT_TRAP
    return ACT_CALLOUT + CALLOUTS[action.callout].number


class Supervisor:
    """Answers the engine's translation misses for one machine."""

    def __init__(self, engine, memory, scanner: Scanner | None = None):
        self.engine = engine
        self.memory = memory                # the guest RAM array, index = gpa
        self.scanner = scanner or Scanner()
        self.translations = 0               # blocks scanned and installed
        self.misses = 0
        self._last_miss: tuple[int, int, int] | None = None

    def translate_miss(self) -> None:
        """Scan the block the engine is waiting for and install its actions."""
        engine = self.engine
        gla, gpa = engine.xlat_miss
        self.misses += 1
        # the same miss again with nothing run and nothing written in between: the actions
        # installed last time did not reach the engine's decoder (a monitor bug, never a loop)
        miss = (gla, engine.progress, engine.xlat_invalidations)
        if self._last_miss == miss:
            raise VmError(f"the engine asked twice for the translation of gla {gla:#x} (gpa {gpa:#x}) "
                          "without running it: the installed actions did not reach it")
        self._last_miss = miss
        ram_size = self.memory.size
        page_end = (gpa | (PAGE_SIZE - 1)) + 1
        if not engine.xlat_page_present(gpa >> 12):
            self.scanner.invalidate_page(gpa >> 12)     # written since it was scanned: the scan is stale
        # the bytes the engine will fetch (BIOS ROM windows included), never RAM read directly
        code = engine.code_bytes(gpa, min(page_end, ram_size) - gpa)
        next_gpa = engine.code_gpa_of(((gla | (PAGE_SIZE - 1)) + 1) & 0xFFFFFFFF)   # wraps at 4 GiB
        next_page = None
        if next_gpa is not None and next_gpa + MAX_INSN_BYTES - 1 <= ram_size:
            if not engine.xlat_page_present(next_gpa >> 12):
                self.scanner.invalidate_page(next_gpa >> 12)
            code += engine.code_bytes(next_gpa, MAX_INSN_BYTES - 1)
            next_page = next_gpa >> 12
        cs_base = engine.seg_get(1)[1]
        translation = self.scanner.scan(code, gla, gpa, 32 if engine.code32 else 16, cs_base=cs_base,
                                        next_gpa_page=next_page)
        first_page_bytes = page_end - gpa
        installed = 0
        for insn in translation.insns:
            offset = (insn.gla - gla) & 0xFFFFFFFF
            if offset < first_page_bytes:
                insn_gpa = gpa + offset
            elif next_gpa is not None:
                insn_gpa = next_gpa + (offset - first_page_bytes)
            else:
                break
            engine.xlat_install(insn_gpa, action_code(insn.action), insn.length)
            installed += 1
        if installed == 0:
            # nothing decodable here: the engine runs it as a TRAP and raises what the CPU raises
            engine.xlat_install(gpa, ACT_TRAP, 1)
        self.translations += 1


def monitor_stats(engine, supervisor: Supervisor | None = None) -> dict[str, int]:
    """The monitor's counters, flat: callout_<kind> and trap_<kind> per kind, and their totals."""
    s = engine.monitor_stats()
    out = {"mon_translations": supervisor.translations if supervisor else 0,
           "mon_translation_misses": supervisor.misses if supervisor else 0,
           "mon_translations_invalidated": s["translations_invalidated"],
           "mon_classified": s["classified"],
           "mon_adaptive_retranslations": s["adaptive_retranslations"],
           "mon_adaptive_calls": s["adaptive_calls"]}
    callouts = s["callouts_by_kind"]
    traps = s["traps_by_kind"]
    for number, kind in enumerate(CALLOUT_KINDS):
        out[f"callout_{kind}"] = callouts[number]
    for number, kind in enumerate(TRAP_KINDS):
        out[f"trap_{kind}"] = traps[number]
    out["callouts"] = sum(callouts)
    out["traps"] = sum(traps)
    for key in ("reflections", "hidden_faults", "true_faults", "traced_writes", "shadow_fills",
                "shadows_created", "shadows_reused", "shadows_dropped"):
        out[key] = s[key]
    return out
