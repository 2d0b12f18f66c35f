"""The sensitive-but-unprivileged instructions seen from guest kernel code (tests/guests/sensitive.asm).

The guest boots to protected mode at CPL 0 with its own GDT, IDT, TSS and LDT and prints what
SGDT, SIDT, SLDT, STR, SMSW, PUSH CS/SS, MOV r,CS/SS, LAR, LSL, VERR, VERW, PUSHF, far CALL/RETF,
far JMP, INT n/IRET and POPF show it, as ``name=value`` lines (hex). None of them faults outside
ring 0, so a monitor that runs the guest kernel deprivileged must make each one show what it
shows at CPL 0 (vmcore/monitor/sensitive.py, SENSITIVE_UNPRIVILEGED).

- ``bare``: what the SDM says CPL-0 hardware gives for the guest's own setup;
- ``bt``: exactly the bare output (the kernel runs translated at real CPL 1, every one of these
  instructions replaced by a callout);
- ``trap``: the kernel is deprivileged without translation, so POPF at CPL 1 silently keeps IF = 0
  and the timer interrupt the guest waits for never comes: x86 is not classically virtualizable
  (Popek and Goldberg; Robin and Irvine, USENIX Security 2000).
"""
import pytest

import vmcore
from vmcore import Exit

from nasm_guests import LOAD_GPA, assemble

GDT_ADDR, LDT_ADDR, TSS_ADDR, IDT_ADDR = 0x7D00, 0x7D80, 0x7DC0, 0x1000   # as sensitive.asm places them
KCODE, KDATA, UDATA, TSS_SEL, LDT_SEL = 0x08, 0x10, 0x23, 0x28, 0x30

# What an IA-32 processor (P6 family, CPU model "i686") gives at CPL 0, IOPL 0, paging off, for the
# guest's tables (SDM Vol. 2 for each instruction; Vol. 3 §3.4-3.5 for the descriptors).
EXPECTED = {
    "sgdt_limit": 7 * 8 - 1,        # seven descriptors: null, 4 segments, TSS, LDT
    "sgdt_base": GDT_ADDR,
    "sidt_limit": 0x41 * 8 - 1,     # vectors 0..0x40
    "sidt_base": IDT_ADDR,
    "sldt": LDT_SEL,
    "str": TSS_SEL,
    "smsw": 0x0011,                 # CR0 low word: PE, ET (hard-wired 1 on the 486 and later)
    "push_cs": KCODE,               # RPL 0 = CPL 0
    "mov_cs": KCODE,
    "mov_ss": KDATA,
    "push_ss": KDATA,
    # LAR: the descriptor's second dword & 0x00F0FF00 (bits 19:16 masked by the guest):
    # G=1 D=1 | P=1 DPL S type
    "lar_kcode_zf": 1,
    "lar_kcode": 0x00C09B00,        # DPL 0, code execute/read, accessed
    "lsl_kcode_zf": 1,
    "lsl_kcode": 0xFFFFFFFF,        # limit 0xFFFFF in 4 KiB units
    "lar_udata_zf": 1,              # DPL 3 >= CPL 0 and >= RPL 3: visible
    "lar_udata": 0x00C0F300,        # DPL 3, data read/write, accessed
    "lsl_udata_zf": 1,
    "lsl_udata": 0xFFFFFFFF,
    "lar_tss_zf": 1,
    "lar_tss": 0x00008B00,          # G=0, DPL 0, busy 32-bit TSS (LTR set the busy bit)
    "lsl_tss": 0x67,
    "lar_ldt": 0x00008200,          # DPL 0, LDT
    "lsl_ldt": 0x0F,
    "verr_kdata": 1,
    "verw_kdata": 1,
    "pushf_cli_if": 0,
    "pushf_iopl": 0,                # the guest never set IOPL
    "pushf_sti_if": 0x200,
    "far_call_cs": KCODE,           # the caller's CS as pushed, RPL 0
    "far_call_eip_ok": 1,
    "far_jmp_cs": KCODE,
    "int_cs": KCODE,                # pushed by INT 0x40 through the DPL-0 interrupt gate
    "int_frame_if": 0x200,          # the INT ran with IF = 1
    "int_handler_if": 0,            # an interrupt gate clears IF
    "popf_if_irq": 1,               # POPF at CPL 0 set IF, and IRQ 0 came
    "irq_cs": KCODE,
    "irq_frame_if": 0x200,
}


def run_sensitive(mode):
    binary = assemble("sensitive")
    m = vmcore.Machine(memory_mb=16, mode=mode, devices=True, clock="virtual")
    m.reset()
    m.mem_write(LOAD_GPA, binary)
    m.reg_write("cs", 0)
    m.reg_write("eip", LOAD_GPA)
    r = m.run(count=10 ** 8, timeout=60)
    return m, r


def parse(console):
    values = {}
    for line in console.splitlines():
        name, sep, value = line.partition("=")
        assert sep and name not in values, f"bad or repeated line {line!r} in {console!r}"
        values[name] = int(value, 16)
    return values


@pytest.fixture(scope="module")
def bare():
    m, r = run_sensitive("bare")
    assert r.exit == Exit.DEBUG_EXIT, f"{r.exit} ({r.reason}); console so far: {r.console!r}"
    assert r.exit_code >> 1 == 0, f"status {r.exit_code >> 1:#x}; console: {r.console!r}"
    return r.console


def test_bare_shows_what_cpl0_hardware_shows(bare):
    got = parse(bare)
    assert list(got) == list(EXPECTED), "the guest printed other lines, or in another order"
    wrong = {k: (f"{got[k]:#x}", f"{v:#x}") for k, v in EXPECTED.items() if got[k] != v}
    assert not wrong, f"(got, expected): {wrong}"


@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_mode_prints_exactly_the_bare_output(mode, bare):
    m, r = run_sensitive(mode)
    assert r.exit == Exit.DEBUG_EXIT, f"{mode}: {r.exit} ({r.reason}); console so far: {r.console!r}"
    assert r.exit_code >> 1 == 0, f"{mode}: status {r.exit_code >> 1:#x}; console: {r.console!r}"
    diff = [(b, g) for b, g in zip(bare.splitlines(), r.console.splitlines()) if b != g]
    assert r.console == bare, f"{mode} differs from bare, (bare, {mode}) lines: {diff}"


def test_trap_mode_loses_the_popf_interrupt_flag(bare):
    m, r = run_sensitive("trap")
    assert r.exit == Exit.DEBUG_EXIT, f"trap: {r.exit} ({r.reason}); console so far: {r.console!r}"
    got = parse(r.console)
    assert parse(bare)["popf_if_irq"] == 1
    # POPF at real CPL 1 with IOPL 0 leaves IF alone without faulting: the monitor never learns
    # that the guest enabled interrupts, and IRQ 0 is never delivered
    assert got["popf_if_irq"] == 0, r.console
    assert r.console != bare
