"""The monitor inside the engine, instruction by instruction: guest-kernel code (CPL 0, flat 32-bit
protected mode as a new Machine starts) under `bare`, `bt` and `trap`.

`bt` must show the guest what `bare` shows; `trap` runs the same code deprivileged without translation, so the
sensitive-unprivileged instructions give what the hardware gives at CPL 1 (ARCHITECTURE.md "Modes"). The counters
say which path the monitor took: callouts (bt), traps, shadow fills, traced writes.
"""
import pytest

import vmcore
from vmcore import Exit
from vmcore.monitor.supervisor import CALLOUT_KINDS, TRAP_KINDS

CODE = 0x1000
DATA = 0x2000
IF = 0x200


def boot(mode, code, *, eflags=0x2, count=100, regs=None):
    """mode: a Machine mode, or "bt:scanner" for bt with the capstone scanner as classifier."""
    mode, _, classifier = mode.partition(":")
    m = vmcore.Machine(memory_mb=8, mode=mode, devices=False, classifier=classifier or None)
    m.mem_write(CODE, bytes(code))
    m.reg_write("eip", CODE)
    m.reg_write("eflags", eflags)
    m.reg_write("esp", 0x8000)
    for name, value in (regs or {}).items():
        m.reg_write(name, value)
    r = m.run(count=count)
    return m, r


def test_stats_name_every_callout_and_trap_kind():
    m = vmcore.Machine(memory_mb=4, mode="bt", devices=False)
    s = m.stats
    for kind in CALLOUT_KINDS:
        assert s[f"callout_{kind}"] == 0
    for kind in TRAP_KINDS:
        assert s[f"trap_{kind}"] == 0
    for key in ("mon_translations", "callouts", "traps", "reflections", "hidden_faults", "true_faults",
                "traced_writes", "shadow_fills", "shadows_reused", "shadows_dropped"):
        assert s[key] == 0
    assert len(CALLOUT_KINDS) <= 32 and len(TRAP_KINDS) == 32      # the engine's counter arrays


@pytest.mark.parametrize("mode", ["bare", "bt", "bt:scanner", "trap"])
def test_pushf_after_cli(mode):
    m, r = boot(mode, [
        0xFA,           # cli
        0x9C,           # pushfd
        0x58,           # pop eax
        0xF4,           # hlt
    ], eflags=0x202)
    assert r.exit is Exit.HLT, r.reason         # HLT with IF = 0 ends the run
    shown_if = m.reg_read("eax") & IF
    s = m.stats
    if mode == "trap":
        assert shown_if == IF                   # PUSHF at CPL 1 pushes the real IF, the monitor's 1
        assert s["trap_cli"] == 1 and s["trap_hlt"] == 1
    else:
        assert shown_if == 0
    if mode.startswith("bt"):
        assert s["callout_cli"] == 1 and s["callout_pushf"] == 1 and s["trap_hlt"] == 1
        # classified at decode time (the default), or scanned by the supervisor
        assert s["mon_translations" if m.classifier == "scanner" else "mon_classified"] >= 1
    assert m.reg_read("eflags") & IF == 0       # the virtual IF, in every mode


@pytest.mark.parametrize("mode", ["bare", "bt", "trap"])
def test_popf_restoring_if(mode):
    m, r = boot(mode, [
        0xFA,                           # cli
        0x68, 0x02, 0x02, 0x00, 0x00,   # push 0x202
        0x9D,                           # popfd
        0xEB, 0xFE,                     # jmp $
    ], eflags=0x202, count=3)
    assert r.exit is Exit.BUDGET
    if mode == "trap":
        # POPF at CPL 1 > IOPL 0 keeps IF without a fault: the monitor never sees it (Robin & Irvine)
        assert m.reg_read("eflags") & IF == 0
    else:
        assert m.reg_read("eflags") & IF == IF


SGDT_SIDT = [
    0x0F, 0x01, 0x05, 0x00, 0x20, 0x00, 0x00,   # sgdt [0x2000]
    0x0F, 0x01, 0x0D, 0x08, 0x20, 0x00, 0x00,   # sidt [0x2008]
]


@pytest.mark.parametrize("mode", ["bt", "trap"])
def test_sgdt_sidt(mode):
    bare, _ = boot("bare", SGDT_SIDT, count=2)
    m, r = boot(mode, SGDT_SIDT, count=2)
    stored = m.mem_read(DATA, 14)
    if mode == "bt":
        assert stored == bare.mem_read(DATA, 14)
        assert m.stats["callout_read_gdtr"] == 1 and m.stats["callout_read_idtr"] == 1
    else:
        # run as they are at CPL 1, they store the real registers: the monitor's tables
        assert int.from_bytes(stored[2:6], "little") == 0xFFC00000
        assert int.from_bytes(stored[10:14], "little") == 0xFFC10000


@pytest.mark.parametrize("mode", ["bare", "bt", "trap"])
def test_stack_segment_reload(mode):
    m = vmcore.Machine(memory_mb=8, mode=mode, devices=False)
    m.mem_write(0x3000, bytes(8) + (0x00CF9A000000FFFF).to_bytes(8, "little")
                + (0x00CF92000000FFFF).to_bytes(8, "little"))      # null, flat code 0x08, flat data 0x10
    m.mem_write(DATA + 0x100, (0x17).to_bytes(2, "little") + (0x3000).to_bytes(4, "little"))
    m.mem_write(CODE, bytes([
        0x0F, 0x01, 0x15, 0x00, 0x21, 0x00, 0x00,   # lgdt [0x2100]
        0xB8, 0x10, 0x00, 0x00, 0x00,   # mov eax, 0x10
        0x8E, 0xD0,     # mov ss, eax       (RPL 0: #GP at CPL 1, emulated at the virtual CPL 0)
        0x8C, 0xD3,     # mov ebx, ss
    ]))
    m.reg_write("eip", CODE)
    r = m.run(count=4)
    assert r.exit is Exit.BUDGET, r.reason
    ss = 0x10
    assert m.reg_read("ss") == ss               # the virtual SS
    if mode == "trap":
        assert m.reg_read("ebx") & 0xFFFF == ss | 1     # read as it is at CPL 1: RPL 1
        assert m.stats["trap_mov_to_sreg"] == 1
    else:
        assert m.reg_read("ebx") & 0xFFFF == ss
    if mode == "bt":
        assert m.stats["callout_read_ss"] == 1 and m.stats["callout_mov_to_sreg"] == 1


@pytest.mark.parametrize("mode", ["bare", "bt", "bt:scanner"])
def test_self_modifying_kernel_code_is_scanned_again(mode):
    # the first pass runs a NOP; it is then overwritten with CLI, which bt must see as a callout
    m, r = boot(mode, [
        0x90,                                       # 1000: nop   (becomes cli)
        0x9C,                                       # 1001: pushfd
        0x58,                                       # 1002: pop eax
        0x83, 0xFB, 0x00,                           # 1003: cmp ebx, 0
        0x75, 0x0A,                                 # 1006: jne 0x1012
        0x43,                                       # 1008: inc ebx
        0xC6, 0x05, 0x00, 0x10, 0x00, 0x00, 0xFA,   # 1009: mov byte [0x1000], 0xfa
        0xEB, 0xEE,                                 # 1010: jmp 0x1000
        0xF4,                                       # 1012: hlt
    ], eflags=0x202)
    assert r.exit is Exit.HLT, r.reason
    assert m.reg_read("eax") & IF == 0
    if mode.startswith("bt"):
        s = m.stats
        # the written page's actions go: scanned again, or its blocks decoded (and classified) again
        assert s["mon_translations_invalidated" if m.classifier == "scanner" else "smc_invalidations"] >= 1
        assert s["callout_cli"] == 1 and s["callout_pushf"] == 2


PD, PT = 0x10000, 0x11000
P_RW = 0x3


def paging_machine(mode, code):
    """Identity map of the low 4 MiB, except linear 0x200000 -> frame 0x5000 (holding 0x11111111)."""
    m = vmcore.Machine(memory_mb=8, mode=mode, devices=False)
    for k in range(1024):
        m.mem_write(PT + 4 * k, ((k << 12) | P_RW).to_bytes(4, "little"))
    m.mem_write(PT + 4 * 0x200, (0x5000 | P_RW).to_bytes(4, "little"))
    m.mem_write(PD, (PT | P_RW).to_bytes(4, "little"))
    m.mem_write(0x5000, (0x11111111).to_bytes(4, "little"))
    m.mem_write(0x6000, (0x22222222).to_bytes(4, "little"))
    m.mem_write(CODE, bytes(code))
    m.reg_write("cr3", PD)
    m.reg_write("cr0", m.reg_read("cr0") | 0x80000000)
    m.reg_write("eip", CODE)
    return m


@pytest.mark.parametrize("mode", ["bare", "bt", "trap"])
def test_shadow_page_tables_follow_guest_pte_writes(mode):
    m = paging_machine(mode, [
        0x8B, 0x1D, 0x00, 0x00, 0x20, 0x00,                         # mov ebx, [0x200000]
        0xC7, 0x05, 0x00, 0x18, 0x01, 0x00, 0x03, 0x60, 0x00, 0x00, # mov dword [PT + 0x800], 0x6003
        0x0F, 0x01, 0x3D, 0x00, 0x00, 0x20, 0x00,                   # invlpg [0x200000]
        0x8B, 0x0D, 0x00, 0x00, 0x20, 0x00,                         # mov ecx, [0x200000]
        0x0F, 0x20, 0xD8,                                           # mov eax, cr3
        0x0F, 0x22, 0xD8,                                           # mov cr3, eax
        0x8B, 0x15, 0x00, 0x00, 0x20, 0x00,                         # mov edx, [0x200000]
        0xF4,                                                       # hlt
    ])
    r = m.run(count=100)
    assert r.exit is Exit.HLT, r.reason
    assert (m.reg_read("ebx"), m.reg_read("ecx"), m.reg_read("edx")) == (0x11111111, 0x22222222, 0x22222222)
    # the accessed and dirty bits land in the guest's own PTE, as the hardware sets them
    assert int.from_bytes(m.mem_read(PT + 4 * 0x200, 4), "little") == 0x6003 | 0x20
    if mode != "bare":
        s = m.stats
        assert s["traced_writes"] >= 1              # the PTE write reached the monitor
        assert s["hidden_faults"] >= 3 and s["shadow_fills"] == s["hidden_faults"]
        assert s["shadows_reused"] >= 1             # the CR3 reload found its shadow
        assert s["true_faults"] == 0
        assert s["trap_invlpg"] == 1 and s["trap_mov_to_cr"] >= 1
        assert m.stats["page_walks"] == s["hidden_faults"]      # the guest's tables: walked only on a miss


@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_a_pte_outside_guest_ram_reaches_nothing(mode):
    m = paging_machine(mode, [
        0xC7, 0x05, 0x00, 0x18, 0x01, 0x00, 0x03, 0x00, 0x00, 0xF0, # mov dword [PT + 0x800], 0xF0000003
        0x0F, 0x01, 0x3D, 0x00, 0x00, 0x20, 0x00,                   # invlpg [0x200000]
        0xC7, 0x05, 0x00, 0x00, 0x20, 0x00, 0x78, 0x56, 0x34, 0x12, # mov dword [0x200000], 0x12345678
        0x8B, 0x1D, 0x00, 0x00, 0x20, 0x00,                         # mov ebx, [0x200000]
        0xF4,                                                       # hlt
    ])
    other = vmcore.Machine(memory_mb=4, mode="bare", devices=False)
    other.memory[:] = 0xA5
    r = m.run(count=100)
    assert r.exit is Exit.HLT, r.reason
    assert m.reg_read("ebx") == 0xFFFFFFFF          # open bus
    assert m.stats["unmapped_writes"] == 1 and m.stats["unmapped_reads"] >= 1
    assert (other.memory == 0xA5).all()


# ---- adaptive translation: an instruction that keeps trapping becomes a callout ----------

ADAPT_AFTER = 8     # monitor.pxi: traps before an instruction is retranslated


def trap_loop(insn: list[int], times: int) -> list[int]:
    body = [*insn, 0x49]                        # <insn>; dec ecx
    return [0xB9, *times.to_bytes(4, "little"),  # mov ecx, times
            *body, 0x75, (-(len(body) + 2)) & 0xFF,  # jnz back to <insn>
            0xF4]                               # hlt


ADAPTIVE_CASES = {
    "out": [0xE6, 0x80],                                    # out 0x80, al
    "invlpg": [0x0F, 0x01, 0x3D, *DATA.to_bytes(4, "little")],  # invlpg [0x2000]
    "mov_from_cr": [0x0F, 0x20, 0xC0],                      # mov eax, cr0
}


@pytest.mark.parametrize("kind", sorted(ADAPTIVE_CASES))
@pytest.mark.parametrize("mode", ["bt", "bt:scanner"])
def test_a_privileged_instruction_that_keeps_trapping_is_retranslated(mode, kind):
    times = 20
    ref, r_ref = boot("bare", trap_loop(ADAPTIVE_CASES[kind], times), count=1000)
    m, r = boot(mode, trap_loop(ADAPTIVE_CASES[kind], times), count=1000)
    assert r.exit is Exit.HLT and r_ref.exit is Exit.HLT, (r.reason, r_ref.reason)
    assert r.instructions == r_ref.instructions == 2 + 3 * times
    assert m.reg_read("eax") == ref.reg_read("eax") and m.reg_read("ecx") == 0
    s = m.stats
    assert s[f"trap_{kind}"] == ADAPT_AFTER                 # then its block is decoded again
    assert s["mon_adaptive_retranslations"] == 1
    assert s["mon_adaptive_calls"] == times - ADAPT_AFTER
    assert s["trap_hlt"] == 1 and s["mon_adaptive_calls"] + s["traps"] == times + 1


@pytest.mark.parametrize("mode", ["bt", "trap"])
def test_an_instruction_that_traps_rarely_stays_a_trap(mode):
    times = 5 if mode == "bt" else 20   # trap mode never translates, so never retranslates
    m, r = boot(mode, trap_loop(ADAPTIVE_CASES["out"], times), count=1000)
    assert r.exit is Exit.HLT, r.reason
    s = m.stats
    assert s["trap_out"] == times
    assert s["mon_adaptive_retranslations"] == 0 == s["mon_adaptive_calls"]


def test_a_retranslated_instruction_still_faults_as_the_guest_would():
    """mov cr4, eax with a reserved bit set is #GP(0) at CPL 0 (SDM Vol. 3A §2.5): as a callout
    too, the guest gets the fault, through its IDT, whose handler counts it in ebx."""
    times = 20
    handler = CODE + 0x100
    idt, gdt = DATA + 0x800, DATA + 0x400
    prog = [0xB9, *times.to_bytes(4, "little"),   # mov ecx, times
            0x31, 0xC0,                             # L: xor eax, eax
            0x83, 0xF9, 0x01,                       # cmp ecx, 1
            0x75, 0x05,                             # jne S
            0xB8, 0x00, 0x00, 0x00, 0x80,           # mov eax, 0x80000000 (CR4 bit 31: reserved)
            0x0F, 0x22, 0xE0,                       # S: mov cr4, eax
            0x49,                                   # dec ecx
            0x75, (-(2 + 3 + 2 + 5 + 3 + 1 + 2)) & 0xFF,  # jnz L
            0xF4]                                   # hlt
    machines = {}
    for mode in ("bare", "bt"):
        m = vmcore.Machine(memory_mb=8, mode=mode, devices=False)
        m.mem_write(CODE, bytes(prog))
        m.mem_write(handler, bytes([0x43,                       # inc ebx
                                    0x83, 0xC4, 0x04,           # add esp, 4 (the error code)
                                    0x83, 0x04, 0x24, 0x03,     # add dword [esp], 3 (past mov cr4)
                                    0xCF]))                     # iretd
        cs = m.reg_read("cs")
        assert cs == 0x08                                       # a new Machine's flat code selector
        flat = 0xFFFF | 0xCF << 48                              # base 0, limit 4 GiB, 32-bit
        m.mem_write(gdt, bytes(8) + (flat | 0x9A << 40).to_bytes(8, "little")
                    + (flat | 0x92 << 40).to_bytes(8, "little"))    # null, code, data (DPL 0)
        m._engine.gdtr_set(gdt, 3 * 8 - 1)
        gate = (cs << 16 | handler & 0xFFFF) | ((handler & 0xFFFF0000) | 0x8E00) << 32  # interrupt gate, DPL 0
        m.mem_write(idt + 13 * 8, gate.to_bytes(8, "little"))
        m._engine.idtr_set(idt, 8 * 32 - 1)
        m.reg_write("eip", CODE)
        m.reg_write("esp", 0x8000)
        m.reg_write("eflags", 0x2)
        machines[mode] = m, m.run(count=1000)
    (ref, r_ref), (m, r) = machines["bare"], machines["bt"]
    assert r.exit is Exit.HLT and r_ref.exit is Exit.HLT, (r.reason, r_ref.reason)
    assert m.reg_read("ebx") == ref.reg_read("ebx") == 1
    assert r.instructions == r_ref.instructions
    s = m.stats
    assert s["trap_mov_to_cr"] == ADAPT_AFTER and s["mon_adaptive_retranslations"] == 1
    assert s["mon_adaptive_calls"] == times - ADAPT_AFTER  # the last of them faults
    assert s["reflections"] == 1
