"""The table of sensitive instructions: what the scanner does with each instruction of guest-kernel code.

Guest kernel code (virtual CPL 0) runs at real CPL 1. An instruction there is IDENT (runs as it is), CALLOUT(kind)
(the monitor's replacement runs instead) or TRAP (left to fault into the monitor, which emulates it). This file
lists every instruction that is not IDENT, once, with its class and the reason:

PRIVILEGED
    Faults at CPL > 0 (or at CPL > IOPL), so running the guest kernel at CPL 1 already sends it to the monitor.
    SDM Vol. 3 §5.9 "Privileged Instructions" lists LGDT, LLDT, LTR, LIDT, MOV CRn, LMSW, CLTS, MOV DRn, INVD,
    WBINVD, INVLPG, HLT, RDMSR, WRMSR, RDPMC, RDTSC (the last two only when CR4.PCE/CR4.TSD say so); SDM Vol. 1
    "I/O Privilege Level" adds IN, INS, OUT, OUTS, CLI, STI (#GP when CPL > IOPL, I/O ones unless the TSS I/O
    bitmap allows the port); SYSEXIT is CPL 0 only (SDM Vol. 2 SYSEXIT). CLI/STI are too frequent in kernels to
    trap, so they get (fast) callouts; the rest trap.
SENSITIVE_UNPRIVILEGED
    Do not fault at CPL 1 but behave or read differently there: the classic list of J. S. Robin and C. E. Irvine,
    "Analysis of the Intel Pentium's Ability to Support a Secure Virtual Machine Monitor", 9th USENIX Security
    Symposium, 2000, pp. 129-144 (https://www.usenix.org/legacy/events/sec00/full_papers/robin/robin_html/):
    sensitive register instructions SGDT, SIDT, SLDT, SMSW, PUSHF, POPF; protection system references LAR, LSL,
    VERR, VERW, POP, PUSH, CALL, JMP, INT n, RET, STR, MOV (as the paper's summaries give it, e.g. Hennessy &
    Patterson's table of 80x86 instructions that break virtualization). "Seventeen" is the usual count; spelled out
    by mnemonic they are the eighteen of ROBIN_IRVINE below. For the ones that depend on operands (PUSH/POP/MOV of
    segment registers, far CALL/JMP/RET) the entries name the operand form. Reads of DS/ES/FS/GS (``push ds``,
    ``mov ax, ds``) stay IDENT: the monitor keeps the guest's own selectors in those registers (its shadow GDT
    holds the guest's descriptors at the same indices, DPL 0 shown as 1), whereas CS and SS must carry RPL = real
    CPL. LDS/LES/LFS/LGS/LSS load segment registers like MOV Sreg and are added here. Every entry of this class is
    a callout.
CONTROL_FLOW
    End a translated block (the next address is not the next instruction) or may change the virtual CPL: near
    jumps, calls, returns, loops (IDENT: the target is looked up and scanned when reached), IRET, INT3, INTO,
    SYSENTER (callouts), SYSCALL, INT1, UD0/UD1/UD2 (trap: they fault on this CPU model or always).

Classification is by capstone instruction id (``capstone.x86_const.X86_INS_*``) and, for the few ids whose
sensitivity depends on the operands, an operand form (FORM_*) that the scanner reads from capstone's operand
detail. Capstone's instruction groups are not used: they are incomplete for this (in capstone 5, X86_GRP_PRIVILEGE
holds ``hlt`` and ``mov eax, cr0`` but not ``rdmsr``, and holds ``str`` but not ``sgdt``, ``sldt`` or ``smsw``;
``push cs``, ``mov eax, ds``, ``popfd`` and ``lar`` are in no group that says what they are).

CALLOUTS says, per callout kind, whether the engine handles it inside ``run`` against the virtual CPU in its C state
or exits to the monitor in Python. ARCHITECTURE.md ("The engine contract") requires the frequent ones inside the
engine: CLI/STI/PUSHF/POPF against the virtual IF and reads of virtual descriptor-table registers and selectors. This
monitor runs every kind inside the engine: a callout runs the engine's own handler for the instruction in the
virtual context (virtual CPL, IF and IOPL, the guest's descriptors), so none exits to Python.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from capstone import x86_const


class InsnClass(enum.Enum):
    PRIVILEGED = "privileged"
    SENSITIVE_UNPRIVILEGED = "sensitive-unprivileged"
    CONTROL_FLOW = "control-flow"


class ActionKind(enum.IntEnum):
    IDENT = 0       # runs as it is
    CALLOUT = 1     # the monitor's replacement runs instead
    TRAP = 2        # left to fault into the monitor (or raise what the hardware raises)


class Action(NamedTuple):
    kind: ActionKind
    callout: str | None = None      # the callout kind, for CALLOUT

    def __repr__(self) -> str:
        return f"CALLOUT({self.callout!r})" if self.kind is ActionKind.CALLOUT else self.kind.name


IDENT = Action(ActionKind.IDENT)
TRAP = Action(ActionKind.TRAP)


def CALLOUT(kind: str) -> Action:   # noqa: N802 - named as the architecture writes it
    if kind not in CALLOUTS:
        raise KeyError(f"no callout kind {kind!r}; known: {', '.join(CALLOUTS)}")
    return Action(ActionKind.CALLOUT, kind)


@dataclass(frozen=True)
class Callout:
    kind: str
    number: int     # its index in CALLOUTS: the id the engine's C code will use
    fast: bool      # True: inside engine.run; False: an exit to the monitor in Python
    does: str       # what the monitor does instead of the instruction


_CALLOUT_DEFS = (
    # fast: frequent in kernels, need only the virtual CPU's registers
    ("cli", True, "virtual IF := 0 (#GP if virtual CPL > virtual IOPL)"),
    ("sti", True, "virtual IF := 1 with the one-instruction interrupt shadow (#GP if virtual CPL > virtual IOPL)"),
    ("pushf", True, "push EFLAGS with the virtual IF and IOPL in place of the real ones"),
    ("popf", True, "pop EFLAGS; IF and IOPL go to the virtual CPU as POPF's rules allow at the virtual CPL"),
    ("read_gdtr", True, "SGDT: store the virtual GDTR (limit, base)"),
    ("read_idtr", True, "SIDT: store the virtual IDTR (limit, base)"),
    ("read_ldtr", True, "SLDT: store the virtual LDTR selector"),
    ("read_tr", True, "STR: store the virtual TR selector"),
    ("read_msw", True, "SMSW: store the virtual CR0 (its low 16 bits to memory)"),
    ("read_cs", True, "PUSH CS / MOV r/m, CS: the virtual CS selector, whose RPL is the virtual CPL"),
    ("read_ss", True, "PUSH SS / MOV r/m, SS: the virtual SS selector, whose RPL is the virtual CPL"),
    # need the guest's descriptor tables and privilege rules: still inside engine.run, as the engine's own
    # handler for the instruction run at the virtual CPL against the guest's tables (vmcore/_core/monitor.pxi)
    ("lar", True, "LAR against the guest's descriptor, checked at the virtual CPL"),
    ("lsl", True, "LSL against the guest's descriptor, checked at the virtual CPL"),
    ("verr", True, "VERR against the guest's descriptor, checked at the virtual CPL"),
    ("verw", True, "VERW against the guest's descriptor, checked at the virtual CPL"),
    ("mov_to_sreg", True, "MOV Sreg, r/m: load from the guest's GDT/LDT with the virtual CPL's checks"),
    ("pop_sreg", True, "POP Sreg: as mov_to_sreg, from the stack"),
    ("load_far_pointer", True, "LDS/LES/LFS/LGS/LSS: as mov_to_sreg, plus the offset into the register"),
    ("far_call", True, "far CALL through the guest's descriptors, call gates and virtual CPL"),
    ("far_jmp", True, "far JMP through the guest's descriptors, call/task gates and virtual CPL"),
    ("far_ret", True, "far RET: may return to virtual CPL 3 (user code then runs directly)"),
    ("int", True, "INT n / INT3: deliver through the guest's IDT, gate DPL checked against the virtual CPL"),
    ("into", True, "INTO: as int with vector 4 when OF = 1, else nothing"),
    ("iret", True, "IRET: return through the virtual CPU (virtual IF/IOPL, maybe to virtual CPL 3 or a task)"),
    ("sysenter", True, "SYSENTER: enter the guest kernel from the guest's SYSENTER MSRs"),
)
CALLOUTS: dict[str, Callout] = {
    kind: Callout(kind, number, fast, does) for number, (kind, fast, does) in enumerate(_CALLOUT_DEFS)}

# Operand forms, for the capstone ids whose sensitivity depends on the operands (MOV, PUSH, POP, JMP, CALL).
FORM_ANY = "any"
FORM_TO_CR = "to CRn"                   # mov cr3, eax
FORM_FROM_CR = "from CRn"               # mov eax, cr0
FORM_TO_DR = "to DRn"
FORM_FROM_DR = "from DRn"
FORM_TO_SREG = "to Sreg"                # mov ds, ax / pop ds (CS is never a valid destination)
FORM_FROM_CS = "from CS"                # push cs / mov ax, cs
FORM_FROM_SS = "from SS"                # push ss / mov ax, ss
FORM_FAR_MEM = "far m16:16/m16:32"      # jmp far [mem] / call far [mem] (FF /5, FF /3)
FORM_INVALID = "invalid"                # decoded by capstone, #UD on the CPU (mov cs, ax): the scanner traps it
OPERAND_FORMS = (FORM_ANY, FORM_TO_CR, FORM_FROM_CR, FORM_TO_DR, FORM_FROM_DR, FORM_TO_SREG,
                 FORM_FROM_CS, FORM_FROM_SS, FORM_FAR_MEM)

ROBIN_IRVINE = ("SGDT", "SIDT", "SLDT", "SMSW", "PUSHF", "POPF", "LAR", "LSL", "VERR", "VERW",
                "POP", "PUSH", "CALL", "JMP", "INT n", "RET", "STR", "MOV")
"""Robin & Irvine's sensitive, unprivileged instructions as the paper names them."""


@dataclass(frozen=True)
class Sensitive:
    """One entry: instructions of the same behaviour, by capstone id and operand form."""

    names: tuple[str, ...]          # capstone names without X86_INS_ ("PUSHFD")
    form: str                       # FORM_ANY or the operand form that makes the id sensitive
    insn_class: InsnClass
    action: Action
    transfers_control: bool         # the next instruction is not the next in memory, or the CPL may change
    reason: str
    robin_irvine: str | None = None  # its name in ROBIN_IRVINE

    @property
    def ins_ids(self) -> tuple[int, ...]:
        return tuple(getattr(x86_const, "X86_INS_" + name) for name in self.names)

    @property
    def ends_block(self) -> bool:
        """A translated block ends after it: it transfers control, or it traps (the monitor may change the mode)."""
        return self.transfers_control or self.action.kind is ActionKind.TRAP


def _p(names: str, reason: str, action: Action = TRAP, form: str = FORM_ANY, control: bool = False) -> Sensitive:
    return Sensitive(tuple(names.split()), form, InsnClass.PRIVILEGED, action, control, reason)


def _s(names: str, robin_irvine: str | None, callout: str, reason: str, form: str = FORM_ANY,
       control: bool = False) -> Sensitive:
    return Sensitive(tuple(names.split()), form, InsnClass.SENSITIVE_UNPRIVILEGED, CALLOUT(callout), control,
                     reason, robin_irvine)


def _c(names: str, action: Action, reason: str, form: str = FORM_ANY) -> Sensitive:
    return Sensitive(tuple(names.split()), form, InsnClass.CONTROL_FLOW, action, True, reason)


_CPL0 = "#GP(0) at CPL > 0 (SDM Vol. 3 §5.9)"
_IOPL = "#GP(0) at CPL > IOPL (SDM Vol. 1, I/O privilege level)"
_IO = _IOPL + " unless the TSS I/O permission bitmap allows the port"
_LATER = ("not in the P6 CPU model (#UD); privileged where it exists, so never run at CPL 1 as if it were not")

TABLE: tuple[Sensitive, ...] = (
    # --- privileged: fault at CPL 1 by themselves ---
    _p("HLT", _CPL0 + "; halts until an interrupt: the monitor waits for a virtual one"),
    _p("LGDT", _CPL0 + "; loads the virtual GDTR (the real one is the monitor's)"),
    _p("LIDT", _CPL0 + "; loads the virtual IDTR (the real one is the monitor's)"),
    _p("LLDT", _CPL0 + "; loads the virtual LDTR"),
    _p("LTR", _CPL0 + "; loads the virtual TR"),
    _p("LMSW", _CPL0 + "; writes the virtual CR0 (PE, MP, EM, TS)"),
    _p("CLTS", _CPL0 + "; clears CR0.TS in the virtual CR0"),
    _p("MOV", _CPL0 + "; writes the virtual CR0/CR2/CR3/CR4 (paging, mode)", form=FORM_TO_CR),
    _p("MOV", _CPL0 + "; reads the virtual CR0/CR2/CR3/CR4", form=FORM_FROM_CR),
    _p("MOV", _CPL0 + "; writes a virtual debug register", form=FORM_TO_DR),
    _p("MOV", _CPL0 + "; reads a virtual debug register", form=FORM_FROM_DR),
    _p("INVD WBINVD", _CPL0 + "; cache control, a no-op for the virtual machine"),
    _p("INVLPG", _CPL0 + "; drops one translation of the guest's and its shadow page table entry"),
    _p("RDMSR WRMSR", _CPL0 + "; model-specific registers of the virtual CPU"),
    _p("RDPMC", "#GP(0) at CPL > 0 unless CR4.PCE = 1 (SDM Vol. 3 §5.9); reads a virtual counter"),
    _p("RDTSC", "#GP(0) at CPL > 0 when CR4.TSD = 1 (SDM Vol. 3 §5.9); the monitor gives the virtual TSC"),
    _p("IN INSB INSW INSD", _IO + "; reads a virtual device"),
    _p("OUT OUTSB OUTSW OUTSD", _IO + "; writes a virtual device"),
    _p("CLI", _IOPL + "; frequent in kernels, so a callout on the virtual IF",
       action=CALLOUT("cli")),
    _p("STI", _IOPL + "; frequent in kernels, so a callout on the virtual IF",
       action=CALLOUT("sti")),
    _p("SYSEXIT", "#GP(0) at CPL > 0 (SDM Vol. 2 SYSEXIT); returns to virtual CPL 3", control=True),
    _p("SYSRET", "#UD on Intel outside 64-bit mode, #GP at CPL > 0 where it exists (SDM Vol. 2 SYSRET)",
       control=True),
    _p("RSM", "#UD outside system-management mode (SDM Vol. 2 RSM)", control=True),
    _p("RDTSCP", "as RDTSC (CR4.TSD); " + _LATER),
    _p("MONITOR MWAIT XSETBV SWAPGS INVPCID WBNOINVD CLAC STAC", "#GP or #UD at CPL > 0; " + _LATER),
    _p("VMXON VMXOFF VMLAUNCH VMRESUME VMPTRLD VMPTRST VMCLEAR VMREAD VMWRITE INVEPT INVVPID",
       "VMX, CPL 0 only (SDM Vol. 3 ch. 30); " + _LATER),
    _p("VMRUN VMLOAD VMSAVE STGI CLGI SKINIT INVLPGA", "AMD SVM, CPL 0 only; " + _LATER),

    # --- sensitive but unprivileged: run silently at CPL 1 with the wrong result ---
    _s("SGDT", "SGDT", "read_gdtr", "stores the real GDTR, the monitor's, at any CPL"),
    _s("SIDT", "SIDT", "read_idtr", "stores the real IDTR, the monitor's, at any CPL"),
    _s("SLDT", "SLDT", "read_ldtr", "stores the real LDTR selector at any CPL"),
    _s("STR", "STR", "read_tr", "stores the real TR selector at any CPL"),
    _s("SMSW", "SMSW", "read_msw", "stores the real CR0 bits (PE, MP, EM, TS, ET...) at any CPL"),
    _s("PUSHF PUSHFD", "PUSHF", "pushf", "pushes the real IF and IOPL, not the virtual ones"),
    _s("POPF POPFD", "POPF", "popf",
       "at CPL > 0 silently keeps IOPL, and IF when CPL > IOPL: a kernel's POPF would not restore IF"),
    _s("LAR", "LAR", "lar", "the result depends on DPL against the real CPL and on the real descriptor tables"),
    _s("LSL", "LSL", "lsl", "the result depends on DPL against the real CPL and on the real descriptor tables"),
    _s("VERR", "VERR", "verr", "the result depends on DPL against the real CPL and on the real descriptor tables"),
    _s("VERW", "VERW", "verw", "the result depends on DPL against the real CPL and on the real descriptor tables"),
    _s("PUSH", "PUSH", "read_cs", "pushes the real CS, whose RPL is the real CPL (1, not 0)", form=FORM_FROM_CS),
    _s("PUSH", "PUSH", "read_ss", "pushes the real SS, whose RPL is the real CPL (1, not 0)", form=FORM_FROM_SS),
    _s("POP", "POP", "pop_sreg",
       "loads a segment register: descriptor DPL and selector RPL are checked against the real CPL",
       form=FORM_TO_SREG),
    _s("MOV", "MOV", "mov_to_sreg",
       "loads a segment register: descriptor DPL and selector RPL are checked against the real CPL",
       form=FORM_TO_SREG),
    _s("MOV", "MOV", "read_cs", "reads the real CS, whose RPL is the real CPL", form=FORM_FROM_CS),
    _s("MOV", "MOV", "read_ss", "reads the real SS, whose RPL is the real CPL", form=FORM_FROM_SS),
    _s("LDS LES LFS LGS LSS", None, "load_far_pointer",
       "load a segment register like MOV Sreg (LSS: SS's RPL must equal the real CPL); not in Robin & Irvine"),
    _s("LCALL", "CALL", "far_call",
       "far CALL checks DPL/RPL against the real CPL and may go through a call gate to another ring", control=True),
    _s("CALL", "CALL", "far_call", "far CALL through memory (FF /3), as LCALL", form=FORM_FAR_MEM, control=True),
    _s("LJMP", "JMP", "far_jmp", "far JMP checks DPL/RPL against the real CPL", control=True),
    _s("JMP", "JMP", "far_jmp", "far JMP through memory (FF /5), as LJMP", form=FORM_FAR_MEM, control=True),
    _s("RETF", "RET", "far_ret",
       "far RET compares the popped CS's RPL with the real CPL: returns to CPL 1 code as an inter-ring return",
       control=True),
    _s("INT", "INT n", "int", "checks the gate DPL against the real CPL and goes through the real IDT",
       control=True),

    # --- control flow: the block ends here ---
    _c("JMP CALL RET", IDENT, "near transfer: the target is scanned when reached"),
    _c("JO JNO JB JAE JE JNE JBE JA JS JNS JP JNP JL JGE JLE JG", IDENT,
       "conditional near jump: two successors"),
    _c("JCXZ JECXZ LOOP LOOPE LOOPNE", IDENT, "conditional near jump on eCX: two successors"),
    _c("IRET IRETD", CALLOUT("iret"),
       "sensitive like POPF (IF, IOPL) and returns to another ring or task: goes through the virtual CPU"),
    _c("INT3", CALLOUT("int"), "INT 3 through the guest's IDT, as INT n"),
    _c("INTO", CALLOUT("into"), "INT 4 through the guest's IDT when OF = 1"),
    _c("SYSENTER", CALLOUT("sysenter"), "loads CS, SS, ESP, EIP from the SYSENTER MSRs: the guest's are virtual"),
    _c("SYSCALL", TRAP, "#UD on Intel outside 64-bit mode (SDM Vol. 2 SYSCALL): left to fault"),
    _c("INT1", TRAP, "ICEBP: #DB through the real IDT, which reaches the monitor; it reflects it"),
    _c("UD0 UD1 UD2", TRAP, "always #UD (SDM Vol. 2 UD): left to fault"),
)


def _index(table: tuple[Sensitive, ...]) -> dict[tuple[int, str], Sensitive]:
    by_key: dict[tuple[int, str], Sensitive] = {}
    for entry in table:
        for ins_id in entry.ins_ids:
            key = (ins_id, entry.form)
            if key in by_key:
                raise ValueError(f"X86_INS_{entry.names} ({entry.form}) is in the table twice")
            by_key[key] = entry
    return by_key


BY_KEY: dict[tuple[int, str], Sensitive] = _index(TABLE)
"""(capstone id, operand form) -> entry. An instruction not found here is IDENT."""

FORM_DEPENDENT_IDS: frozenset[int] = frozenset(ins_id for ins_id, form in BY_KEY if form != FORM_ANY)
"""Capstone ids the scanner must look at the operands of (MOV, PUSH, POP, JMP, CALL)."""


def lookup(ins_id: int, form: str = FORM_ANY) -> Sensitive | None:
    """The entry for an instruction, or None: it runs as it is (IDENT)."""
    return BY_KEY.get((ins_id, form))
