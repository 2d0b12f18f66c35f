"""The table of sensitive instructions (vmcore/monitor/sensitive.py): complete for the lists it cites, one class
per instruction, every entry with a reason and a capstone id that exists."""

import capstone
import pytest
from capstone import x86_const

from vmcore.monitor.sensitive import (
    BY_KEY, CALLOUT, CALLOUTS, FORM_ANY, FORM_DEPENDENT_IDS, FORM_FAR_MEM, FORM_FROM_CR, FORM_FROM_CS, FORM_FROM_DR,
    FORM_FROM_SS, FORM_TO_CR, FORM_TO_DR, FORM_TO_SREG, OPERAND_FORMS, ROBIN_IRVINE, TABLE, TRAP, ActionKind,
    InsnClass, lookup)

# Robin & Irvine (USENIX Security 2000), each name with the capstone form(s) it covers and the callout it becomes.
ROBIN_IRVINE_FORMS = {
    "SGDT": [("SGDT", FORM_ANY, "read_gdtr")],
    "SIDT": [("SIDT", FORM_ANY, "read_idtr")],
    "SLDT": [("SLDT", FORM_ANY, "read_ldtr")],
    "SMSW": [("SMSW", FORM_ANY, "read_msw")],
    "PUSHF": [("PUSHF", FORM_ANY, "pushf"), ("PUSHFD", FORM_ANY, "pushf")],
    "POPF": [("POPF", FORM_ANY, "popf"), ("POPFD", FORM_ANY, "popf")],
    "LAR": [("LAR", FORM_ANY, "lar")],
    "LSL": [("LSL", FORM_ANY, "lsl")],
    "VERR": [("VERR", FORM_ANY, "verr")],
    "VERW": [("VERW", FORM_ANY, "verw")],
    "POP": [("POP", FORM_TO_SREG, "pop_sreg")],
    "PUSH": [("PUSH", FORM_FROM_CS, "read_cs"), ("PUSH", FORM_FROM_SS, "read_ss")],
    "CALL": [("LCALL", FORM_ANY, "far_call"), ("CALL", FORM_FAR_MEM, "far_call")],
    "JMP": [("LJMP", FORM_ANY, "far_jmp"), ("JMP", FORM_FAR_MEM, "far_jmp")],
    "INT n": [("INT", FORM_ANY, "int")],
    "RET": [("RETF", FORM_ANY, "far_ret")],
    "STR": [("STR", FORM_ANY, "read_tr")],
    "MOV": [("MOV", FORM_TO_SREG, "mov_to_sreg"), ("MOV", FORM_FROM_CS, "read_cs"),
            ("MOV", FORM_FROM_SS, "read_ss")],
}

# SDM Vol. 3 §5.9 "Privileged Instructions" (#GP at CPL > 0; RDPMC/RDTSC subject to CR4.PCE/TSD), the IOPL-sensitive
# instructions of SDM Vol. 1 "I/O Privilege Level" (#GP at CPL > IOPL), and SYSEXIT (CPL 0 only).
SDM_PRIVILEGED = [
    ("LGDT", FORM_ANY), ("LLDT", FORM_ANY), ("LTR", FORM_ANY), ("LIDT", FORM_ANY),
    ("MOV", FORM_TO_CR), ("MOV", FORM_FROM_CR), ("LMSW", FORM_ANY), ("CLTS", FORM_ANY),
    ("MOV", FORM_TO_DR), ("MOV", FORM_FROM_DR), ("INVD", FORM_ANY), ("WBINVD", FORM_ANY), ("INVLPG", FORM_ANY),
    ("HLT", FORM_ANY), ("RDMSR", FORM_ANY), ("WRMSR", FORM_ANY), ("RDPMC", FORM_ANY), ("RDTSC", FORM_ANY),
    ("IN", FORM_ANY), ("INSB", FORM_ANY), ("INSW", FORM_ANY), ("INSD", FORM_ANY),
    ("OUT", FORM_ANY), ("OUTSB", FORM_ANY), ("OUTSW", FORM_ANY), ("OUTSD", FORM_ANY),
    ("CLI", FORM_ANY), ("STI", FORM_ANY), ("SYSEXIT", FORM_ANY),
]

# ARCHITECTURE.md, "The engine contract": CLI/STI/PUSHF/POPF against the virtual IF and reads of virtual
# descriptor-table registers stay inside run.
FAST_CALLOUTS = {"cli", "sti", "pushf", "popf", "read_gdtr", "read_idtr", "read_ldtr", "read_tr", "read_msw",
                 "read_cs", "read_ss"}

NEAR_CONTROL_FLOW = ["JMP", "CALL", "RET", "JO", "JNO", "JB", "JAE", "JE", "JNE", "JBE", "JA", "JS", "JNS", "JP",
                     "JNP", "JL", "JGE", "JLE", "JG", "JCXZ", "JECXZ", "LOOP", "LOOPE", "LOOPNE"]


def ins_id(name):
    return getattr(x86_const, "X86_INS_" + name)


def test_robin_irvine_list_is_the_papers():
    assert set(ROBIN_IRVINE_FORMS) == set(ROBIN_IRVINE)
    assert len(ROBIN_IRVINE) == 18      # the paper's "seventeen", spelled out by mnemonic
    assert {e.robin_irvine for e in TABLE if e.robin_irvine} == set(ROBIN_IRVINE)


@pytest.mark.parametrize("paper_name", ROBIN_IRVINE)
def test_each_of_robin_irvine_is_a_sensitive_unprivileged_callout(paper_name):
    for name, form, callout in ROBIN_IRVINE_FORMS[paper_name]:
        entry = lookup(ins_id(name), form)
        assert entry is not None, (name, form)
        assert entry.insn_class is InsnClass.SENSITIVE_UNPRIVILEGED
        assert entry.robin_irvine == paper_name
        assert entry.action == CALLOUT(callout)
        assert len(entry.reason) > 20


@pytest.mark.parametrize("name, form", SDM_PRIVILEGED)
def test_each_sdm_privileged_instruction_is_privileged(name, form):
    entry = lookup(ins_id(name), form)
    assert entry is not None, (name, form)
    assert entry.insn_class is InsnClass.PRIVILEGED
    assert entry.reason
    # left to fault, but for CLI/STI, which kernels run too often to trap
    assert entry.action == ({"CLI": CALLOUT("cli"), "STI": CALLOUT("sti")}.get(name, TRAP))


@pytest.mark.parametrize("name", NEAR_CONTROL_FLOW)
def test_near_transfers_are_control_flow_that_run_as_they_are(name):
    entry = lookup(ins_id(name))
    assert entry.insn_class is InsnClass.CONTROL_FLOW
    assert entry.action.kind is ActionKind.IDENT
    assert entry.ends_block


@pytest.mark.parametrize("name, callout", [("IRET", "iret"), ("IRETD", "iret"), ("INT3", "int"),
                                           ("INTO", "into"), ("SYSENTER", "sysenter")])
def test_control_flow_that_changes_the_virtual_cpl_is_a_callout(name, callout):
    entry = lookup(ins_id(name))
    assert entry.insn_class is InsnClass.CONTROL_FLOW
    assert entry.action == CALLOUT(callout)


def test_no_instruction_is_in_two_entries():
    keys = [(i, e.form) for e in TABLE for i in e.ins_ids]
    assert len(keys) == len(set(keys)) == len(BY_KEY)


def test_every_entry_names_a_capstone_id_that_exists():
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    for entry in TABLE:
        for name, ident in zip(entry.names, entry.ins_ids):
            assert hasattr(x86_const, "X86_INS_" + name)
            assert md.insn_name(ident) == name.lower()


def test_every_entry_has_a_class_reason_and_known_form():
    for entry in TABLE:
        assert isinstance(entry.insn_class, InsnClass)
        assert len(entry.reason) > 10
        assert entry.form in OPERAND_FORMS
        if entry.insn_class is InsnClass.SENSITIVE_UNPRIVILEGED:
            assert entry.action.kind is ActionKind.CALLOUT
        if entry.insn_class is InsnClass.CONTROL_FLOW or entry.action.kind is ActionKind.TRAP:
            assert entry.ends_block


def test_only_mov_push_pop_jmp_call_depend_on_their_operands():
    assert FORM_DEPENDENT_IDS == {ins_id(n) for n in ("MOV", "PUSH", "POP", "JMP", "CALL")}


def test_callouts_are_all_used_numbered_and_fast_as_the_architecture_says():
    used = {e.action.callout for e in TABLE if e.action.kind is ActionKind.CALLOUT}
    assert used == set(CALLOUTS)
    assert [c.number for c in CALLOUTS.values()] == list(range(len(CALLOUTS)))
    # the frequent ones must run inside the engine; this monitor runs every kind there
    assert FAST_CALLOUTS <= {kind for kind, c in CALLOUTS.items() if c.fast} == set(CALLOUTS)
    assert all(c.does for c in CALLOUTS.values())
    with pytest.raises(KeyError):
        CALLOUT("no_such_kind")
