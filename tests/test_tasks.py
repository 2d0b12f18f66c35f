"""Hardware task switches (SDM Vol. 3 §7.3) and virtual-8086 mode (§20.2-20.3)."""
import struct

import vmcore
from vmcore import Exit

GDT, IDT = 0x500, 0x800
TSS_A, TSS_B = 0x4000, 0x4100
KCODE, KDATA, UCODE, UDATA, SEL_TSS_A, SEL_TSS_B, SEL_GATE_B = 0x08, 0x10, 0x1B, 0x23, 0x28, 0x30, 0x38


def descriptor(base, limit, access, flags=0xC):
    return struct.pack("<HHBBBB", limit & 0xFFFF, base & 0xFFFF, (base >> 16) & 0xFF, access,
                       (flags << 4) | ((limit >> 16) & 0xF), base >> 24)


def gate(selector, offset, typ_dpl):
    return struct.pack("<HHBBH", offset & 0xFFFF, selector, 0, typ_dpl, offset >> 16)


def tss(eip, esp, eflags=0x2, cs=KCODE, ds=KDATA, regs=(0,) * 8, esp0=0, ss0=0):
    t = bytearray(0x68)
    struct.pack_into("<II", t, 4, esp0, ss0)
    struct.pack_into("<II", t, 0x20, eip, eflags)
    struct.pack_into("<8I", t, 0x28, *regs)
    struct.pack_into("<IIIIII", t, 0x48, ds, cs, ds, ds, ds, ds)      # ES CS SS DS FS GS
    struct.pack_into("<I", t, 0x38, esp)
    struct.pack_into("<I", t, 0x66 - 2, 0)
    return bytes(t)


def machine(code_a: bytes, code_b: bytes, idt_entries=()):
    m = vmcore.Machine(memory_mb=4)
    gdt = (bytes(8) + descriptor(0, 0xFFFFF, 0x9A) + descriptor(0, 0xFFFFF, 0x92)
           + descriptor(0, 0xFFFFF, 0xFA) + descriptor(0, 0xFFFFF, 0xF2)
           + descriptor(TSS_A, 0x67, 0x89, 0) + descriptor(TSS_B, 0x67, 0x89, 0)
           + struct.pack("<HHBBH", 0, SEL_TSS_B, 0, 0x85, 0))            # task gate to B
    m.mem_write(GDT, gdt)
    m._engine.gdtr_set(GDT, len(gdt) - 1)
    idt = bytearray(256 * 8)
    for vector, entry in idt_entries:
        idt[vector * 8:vector * 8 + 8] = entry
    m.mem_write(IDT, bytes(idt))
    m._engine.idtr_set(IDT, len(idt) - 1)
    m.mem_write(TSS_A, tss(0, 0, esp0=0x7000, ss0=KDATA))
    m.mem_write(TSS_B, tss(0x2000, 0x6000, regs=(0xB0, 0, 0, 0, 0, 0, 0, 0)))
    m.mem_write(0x1000, bytes.fromhex("66 b8 28 00 0f 00 d8") + code_a)     # mov ax, 0x28 ; ltr ax
    m.mem_write(0x2000, code_b)
    m.reg_write("eip", 0x1000)
    m.reg_write("esp", 0x8000)
    return m


def busy(m, sel):
    return bool(m.mem_read(GDT + sel + 5, 1)[0] & 0x02)


def test_jmp_to_a_tss_and_back():
    a = bytes.fromhex(
        "bb 11 00 00 00"         # mov ebx, 0x11
        "ea 00 00 00 00 30 00"   # jmp 0x30:0          task B
        "f4")                    # hlt                 (task A resumes here)
    b = bytes.fromhex(
        "89 c1"                  # mov ecx, eax        EAX of task B = 0xb0
        "ea 00 00 00 00 28 00")  # jmp 0x28:0          back to task A
    m = machine(a, b)
    r = m.run(count=1000)
    assert r.exit is Exit.HLT, r.reason
    assert m.reg_read("ebx") == 0x11                 # task A's registers came back
    saved_b = struct.unpack("<I", m.mem_read(TSS_B + 0x2C, 4))[0]
    assert saved_b == 0xB0                          # task B's ECX saved in its TSS
    assert busy(m, SEL_TSS_A) and not busy(m, SEL_TSS_B)
    assert m.reg_read("cr0") & 0x8                   # CR0.TS
    assert struct.unpack("<H", m.mem_read(TSS_B, 2))[0] == 0   # JMP leaves no back link


def test_call_through_a_task_gate_and_iret_back():
    a = bytes.fromhex(
        "9a 00 00 00 00 38 00"   # call 0x38:0         task gate -> task B
        "f4")
    b = bytes.fromhex(
        "9c"                     # pushfd
        "5a"                     # pop edx             NT must be set in the called task
        "cf")                    # iretd               NT = 1: return to the back link
    m = machine(a, b)
    r = m.run(count=1000)
    assert r.exit is Exit.HLT, r.reason
    assert struct.unpack("<H", m.mem_read(TSS_B, 2))[0] == SEL_TSS_A     # back link
    assert m.reg_read("eip") == 0x1000 + 7 + 7 + 1
    saved_edx = struct.unpack("<I", m.mem_read(TSS_B + 0x30, 4))[0]
    assert saved_edx & 0x4000                        # NT in the nested task
    assert not busy(m, SEL_TSS_B) and busy(m, SEL_TSS_A)


def test_exception_through_a_task_gate():
    a = bytes.fromhex("31 c9 f7 f1")                 # xor ecx, ecx ; div ecx   -> #DE -> task B
    b = bytes.fromhex("f4")
    m = machine(a, b, idt_entries=[(0, struct.pack("<HHBBH", 0, SEL_TSS_B, 0, 0x85, 0))])
    r = m.run(count=1000)
    assert r.exit is Exit.HLT, r.reason
    assert m.reg_read("eip") == 0x2001
    # the interrupted task resumes at the faulting instruction
    assert struct.unpack("<I", m.mem_read(TSS_A + 0x20, 4))[0] == 0x1000 + 7 + 2


def test_error_code_through_a_task_gate_is_sized_by_the_tss_not_the_stack():
    """A task-gate exception pushes its error code on the new task's stack as a dword from a
    32-bit TSS, even when that task's SS is a 16-bit segment (SDM Vol. 3 §6.12.2; Bochs pushes
    by the TSS type). ESP = 0x6000 becomes 0x5FFC through the 16-bit SP."""
    a = bytes.fromhex(
        "66 b8 80 00"            # mov ax, 0x80        past the GDT's limit
        "8e d8")                 # mov ds, ax          -> #GP(0x80) -> task B
    b = bytes.fromhex(
        "89 e1"                  # mov ecx, esp
        "8b 04 24"               # mov eax, [esp]      the error code
        "f4")                    # hlt
    m = machine(a, b, idt_entries=[(13, struct.pack("<HHBBH", 0, SEL_TSS_B, 0, 0x85, 0))])
    sel_stack16 = SEL_GATE_B + 8                    # the next GDT entry after machine()'s
    m.mem_write(GDT + sel_stack16, descriptor(0, 0xFFFF, 0x92, flags=0x0))     # 16-bit data, byte limit
    m._engine.gdtr_set(GDT, sel_stack16 + 8 - 1)
    m.mem_write(TSS_B + 0x50, struct.pack("<I", sel_stack16))                  # task B's SS
    m.mem_write(0x5FFC, b"\xAA" * 4)
    r = m.run(count=1000)
    assert r.exit is Exit.HLT, r.reason
    assert m.reg_read("ecx") == 0x5FFC
    assert m.reg_read("eax") == 0x80


def v86_machine(v86_code: bytes, iopl: int, handlers):
    m = machine(b"", b"", idt_entries=[(v, gate(KCODE, addr, 0xEE)) for v, addr, _ in handlers])
    for _, addr, code in handlers:
        m.mem_write(addr, code)
    # ring 0: build an IRET frame with VM = 1 and return into virtual-8086 mode at 0800:0010
    eflags = 0x20002 | (iopl << 12)
    enter = bytes.fromhex(
        "66 b8 28 00 0f 00 d8"  # mov ax, 0x28 ; ltr ax
        "6a 00 6a 00"           # push 0 (GS) ; push 0 (FS)
        "68 00 09 00 00"        # push 0x900          DS
        "6a 00"                 # push 0              ES
        "68 00 07 00 00"        # push 0x700          SS
        "68 00 10 00 00"        # push 0x1000         ESP
        "68" + struct.pack("<I", eflags).hex() +     # push eflags (VM)
        "68 00 08 00 00"        # push 0x800          CS
        "6a 10"                 # push 0x10           EIP
        "cf")                   # iretd
    m.mem_write(0x1000, enter)
    m.mem_write(0x8010, v86_code)
    m.mem_write(0x9000, bytes([0x5A]))               # DS:0 = 0x5a in virtual-8086 segment 0x900
    return m


def test_virtual_8086_mode_entry_segment_arithmetic_and_exit_by_interrupt():
    code = bytes.fromhex(
        "a0 00 00"               # mov al, [0]         DS = 0x900 -> linear 0x9000
        "8c cb"                  # mov bx, cs
        "cd 30")                 # int 0x30            leaves v86 for the ring-0 handler
    handler = bytes.fromhex(
        "8b 4c 24 08"            # mov ecx, [esp+8]    EFLAGS pushed (VM set)
        "8b 54 24 18"            # mov edx, [esp+24]   DS pushed (after EIP CS EFLAGS ESP SS ES)
        "8c df"                  # mov edi, ds         nulled
        "f4")
    m = v86_machine(code, 3, [(0x30, 0x3000, handler)])
    r = m.run(count=1000)
    assert r.exit is Exit.HLT, r.reason
    assert m.reg_read("al") == 0x5A and m.reg_read("bx") == 0x800
    assert m.reg_read("ecx") & 0x20000
    assert m.reg_read("edx") & 0xFFFF == 0x900
    assert m.reg_read("edi") & 0xFFFF == 0
    assert m.reg_read("cpl") == 0


def test_virtual_8086_cli_with_iopl_below_3_is_gp():
    code = bytes.fromhex("fa")   # cli
    handler = bytes.fromhex("8b 5c 24 04 f4")        # mov ebx, [esp+4]   EIP, after the error code
    m = v86_machine(code, 0, [(13, 0x3000, handler)])
    r = m.run(count=1000)
    assert r.exit is Exit.HLT, r.reason
    assert m.reg_read("ebx") & 0xFFFF == 0x10        # the faulting instruction's IP
