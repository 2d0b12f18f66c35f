"""Privilege transitions in protected mode: IRET to ring 3, INT n through a DPL-3 gate
into ring 0 on the TSS stack, IRET back, call gates and RETF to an outer ring, and the
sensitive-unprivileged behaviour of POPF at CPL 3 (SDM Vol. 3 §5.8, §6.12)."""
import struct

import pytest

import vmcore
from vmcore import Exit

GDT, IDT, TSS = 0x500, 0x800, 0x4000
KCODE, KDATA, UCODE, UDATA, TSS_SEL, GATE_SEL = 0x08, 0x10, 0x1B, 0x23, 0x28, 0x30


def descriptor(base, limit, access, flags=0xC):
    return struct.pack("<HHBBBB", limit & 0xFFFF, base & 0xFFFF, (base >> 16) & 0xFF, access,
                       (flags << 4) | ((limit >> 16) & 0xF), base >> 24)


def gate(selector, offset, typ_dpl, params=0):
    return struct.pack("<HHBBH", offset & 0xFFFF, selector, params, typ_dpl, offset >> 16)


def machine(user_code: bytes, handlers: dict[int, bytes], extra=b""):
    m = vmcore.Machine(memory_mb=4)
    gdt = (bytes(8) + descriptor(0, 0xFFFFF, 0x9A) + descriptor(0, 0xFFFFF, 0x92)
           + descriptor(0, 0xFFFFF, 0xFA) + descriptor(0, 0xFFFFF, 0xF2)
           + descriptor(TSS, 0x67, 0x89, 0) + gate(KCODE, 0x3200, 0xEC, 1))     # call gate, DPL 3, 1 param
    m.mem_write(GDT, gdt)
    m._engine.gdtr_set(GDT, len(gdt) - 1)
    idt = bytearray(256 * 8)
    for vector, code in handlers.items():
        addr = 0x3000 + 0x100 * (vector - 0x80) if vector >= 0x80 else 0x3800 + 0x40 * vector
        idt[vector * 8:vector * 8 + 8] = gate(KCODE, addr, 0xEE)      # 32-bit interrupt gate, DPL 3
        m.mem_write(addr, code)
    m.mem_write(IDT, bytes(idt))
    m._engine.idtr_set(IDT, len(idt) - 1)
    m.mem_write(TSS + 4, struct.pack("<II", 0x7000, KDATA))              # ESP0, SS0
    # ring 0 start: ltr, then IRET to ring 3 at 0x2000 with user stack 0x9000
    kernel = bytes.fromhex(
        "66 b8 28 00"        # mov ax, 0x28
        "0f 00 d8"           # ltr ax
        "6a 23"              # push 0x23          user SS
        "68 00 90 00 00"     # push 0x9000        user ESP
        "68 02 02 00 00"     # push 0x202         EFLAGS (IF)
        "6a 1b"              # push 0x1b          user CS
        "68 00 20 00 00"     # push 0x2000        user EIP
        "cf")                # iretd
    m.mem_write(0x1000, kernel)
    m.mem_write(0x2000, user_code)
    m.mem_write(0x3200, extra)
    m.reg_write("eip", 0x1000)
    m.reg_write("esp", 0x6000)
    return m


# int 0x81 handler: hlt at ring 0 (the end of every test)
HALT = bytes.fromhex("f4")


def test_iret_to_ring3_and_int_gate_back_with_tss_stack():
    user = bytes.fromhex(
        "b8 34 12 00 00"     # mov eax, 0x1234
        "cd 80"              # int 0x80
        "89 c3"              # mov ebx, eax
        "8c ce"              # mov esi, cs       (RPL 3 again)
        "cd 81")             # int 0x81          -> hlt in ring 0
    syscall = bytes.fromhex(
        "8b 4c 24 0c"        # mov ecx, [esp+12]  the user ESP pushed by the gate
        "8b 7c 24 10"        # mov edi, [esp+16]  the user SS
        "8c ca"              # mov edx, cs
        "40"                 # inc eax
        "cf")                # iretd
    m = machine(user, {0x80: syscall, 0x81: HALT})
    r = m.run(count=1000)
    assert r.exit is Exit.HLT, r.reason
    assert m.reg_read("ebx") == 0x1235
    assert m.reg_read("ecx") == 0x9000 and m.reg_read("edi") == UDATA
    assert m.reg_read("edx") & 0xFFFF == KCODE
    assert m.reg_read("esi") & 0xFFFF == UCODE
    assert m.reg_read("cpl") == 0
    assert m.reg_read("esp") == 0x7000 - 20          # the 0x81 frame on the ring-0 stack


def test_privileged_instruction_at_ring3_is_gp():
    user = bytes.fromhex("f4")                       # hlt at CPL 3
    gp = bytes.fromhex(
        "8b 04 24"           # mov eax, [esp]      error code
        "8b 5c 24 04"        # mov ebx, [esp+4]    faulting EIP
        "f4")
    m = machine(user, {13: gp})
    r = m.run(count=1000)
    assert r.exit is Exit.HLT
    assert (m.reg_read("eax"), m.reg_read("ebx")) == (0, 0x2000)


def test_popf_at_ring3_keeps_if_silently():
    """The sensitive unprivileged instruction: no fault, IF unchanged (SDM POPF)."""
    user = bytes.fromhex(
        "6a 00"              # push 0
        "9d"                 # popf               tries to clear IF
        "9c"                 # pushf
        "5b"                 # pop ebx
        "cd 81")
    m = machine(user, {0x81: HALT})
    r = m.run(count=1000)
    assert r.exit is Exit.HLT
    assert m.reg_read("ebx") & 0x200


def test_call_gate_to_ring0_and_retf_to_ring3():
    user = bytes.fromhex(
        "6a 77"              # push 0x77           one parameter
        "9a 00 00 00 00 30 00"  # call 0x30:0       through the call gate
        "89 c3"              # mov ebx, eax
        "8c cf"              # mov edi, cs
        "cd 81")
    ring0 = bytes.fromhex(
        "8b 44 24 08"        # mov eax, [esp+8]    the copied parameter
        "8c ca"              # mov edx, cs
        "ca 04 00")          # retf 4              back to ring 3, releasing the parameter
    m = machine(user, {0x81: HALT}, extra=ring0)
    r = m.run(count=1000)
    assert r.exit is Exit.HLT, r.reason
    assert m.reg_read("ebx") == 0x77
    assert m.reg_read("edx") & 0xFFFF == KCODE
    assert m.reg_read("edi") & 0xFFFF == UCODE


def test_int_through_dpl0_gate_from_ring3_is_gp():
    user = bytes.fromhex("cd 40")                    # int 0x40: its gate has DPL 0
    gp = bytes.fromhex("8b 04 24 f4")                # mov eax, [esp] ; hlt
    m = machine(user, {13: gp})
    m.mem_write(IDT + 0x40 * 8, gate(KCODE, 0x3F00, 0x8E))
    r = m.run(count=1000)
    assert r.exit is Exit.HLT
    assert m.reg_read("eax") == 0x40 * 8 + 2          # IDT vector, not external


def paged(m, user_pages):
    """Identity-map the first 4 MiB with 4 KiB pages, user-accessible only for user_pages."""
    pd, pt = 0x100000, 0x101000
    m.mem_write(pd, struct.pack("<I", pt | 0x7))
    m.mem_write(pt, b"".join(struct.pack("<I", (k << 12) | (0x7 if k in user_pages else 0x3))
                             for k in range(1024)))
    m.reg_write("cr3", pd)
    m.reg_write("cr0", m.reg_read("cr0") | 0x80010000)      # PG | WP


def test_interrupt_frame_goes_onto_a_supervisor_only_ring0_stack():
    """The inner-ring frame is written with ring 0's rights (SDM Vol. 3 §6.12.1)."""
    user = bytes.fromhex("cd 80 cd 81")                      # int 0x80 ; int 0x81
    syscall = bytes.fromhex("bb 01 00 00 00 cf")             # mov ebx, 1 ; iretd
    m = machine(user, {0x80: syscall, 0x81: HALT})
    paged(m, user_pages={0x2, 0x8})                          # user code 0x2000, user stack 0x8000-0x8fff
    r = m.run(count=1000)
    assert r.exit is Exit.HLT, r.reason
    assert m.reg_read("ebx") == 1


@pytest.mark.parametrize("probe", [
    bytes.fromhex("a1 00 08 00 00"),                         # mov eax, [0x800]        the IDT
    bytes.fromhex("a3 00 05 00 00"),                         # mov [0x500], eax        the GDT
    bytes.fromhex("a1 00 40 00 00"),                         # mov eax, [0x4000]       the TSS
], ids=["read-idt", "write-gdt", "read-tss"])
def test_ring3_cannot_use_what_an_interrupt_touched_for_it(probe):
    """Descriptor-table and TSS accesses made for ring 3 are supervisor accesses and must
    not leave their translations where ring 3 can use them."""
    # 66 b8 23 00 8e d8   mov ax, 0x23 ; mov ds, ax   (the IRET into ring 3 nulled DS)
    user = bytes.fromhex("66 b8 23 00 8e d8 cd 80") + probe + bytes.fromhex("cd 81")
    pf = bytes.fromhex("0f 20 d0 f4")                        # mov eax, cr2 ; hlt
    m = machine(user, {0x80: bytes.fromhex("cf"), 0x81: HALT, 14: pf})
    paged(m, user_pages={0x2, 0x8})
    r = m.run(count=1000)
    assert r.exit is Exit.HLT, r.reason
    assert m.reg_read("eip") == 0x3800 + 0x40 * 14 + 4       # the #PF handler ran
    assert m.reg_read("eax") == struct.unpack("<I", probe[1:5])[0]
