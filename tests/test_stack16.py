"""16-bit stacks in protected mode (issue 12): with SS.B = 0 every push/pop family wraps SP at
64 KiB and leaves ESP's high word alone (SDM Vol. 1 §6.2.3, Vol. 2 StackAddrSize in each
instruction's pseudocode); an instruction that loads SS steps the pointer with the stack size
in force before it. Guest code is raw bytes, the disassembly beside it; every test runs in
`bare` and `bt` (ring-0 code deprivileged and translated)."""
import struct

import pytest

import vmcore
from vmcore import Exit

GDT, IDT, TSS = 0x500, 0x800, 0x4000
CODE32, DATA32, CODE16, STK16, STK32, UCODE16, USTK16, TSS_SEL, CGATE, STKDN, UDATA = (
    0x08, 0x10, 0x18, 0x20, 0x28, 0x33, 0x3B, 0x40, 0x4B, 0x50, 0x5B)
STACK_BASE, USTACK_BASE = 0x20000, 0x40000
OUT = 0x3000            # the handlers' and tests' results (DS = UDATA, flat)
MODES = ["bare", "bt"]


def descriptor(base, limit, access, flags):
    return struct.pack("<HHBBBB", limit & 0xFFFF, base & 0xFFFF, (base >> 16) & 0xFF, access,
                       (flags << 4) | ((limit >> 16) & 0xF), base >> 24)


def gate(selector, offset, typ_dpl, params=0):
    return struct.pack("<HHBBH", offset & 0xFFFF, selector, params, typ_dpl, offset >> 16)


def machine(mode, body16: bytes, esp: int, handlers=None, user16: bytes = b"", tss_esp0=0xFFF0,
            ss=STK16):
    """Ring-0 16-bit code `body16` at CODE16:0x2000 with SS = ss, ESP = esp; handlers is
    {vector: (gate type/DPL byte, 16-bit code)}; user16 is ring-3 code at UCODE16:0x2800."""
    m = vmcore.Machine(memory_mb=4, mode=mode)
    gdt = (bytes(8)
           + descriptor(0, 0xFFFFF, 0x9A, 0xC)              # 08 code32, ring 0
           + descriptor(0, 0xFFFFF, 0x92, 0xC)              # 10 data32
           + descriptor(0, 0xFFFF, 0x9A, 0x0)               # 18 code16 (D = 0), base 0
           + descriptor(STACK_BASE, 0xFFFF, 0x92, 0x0)      # 20 16-bit stack (B = 0)
           + descriptor(STACK_BASE, 0xFFFFF, 0x92, 0xC)     # 28 32-bit stack (B = 1), same base
           + descriptor(0, 0xFFFF, 0xFA, 0x0)               # 30 code16, ring 3
           + descriptor(USTACK_BASE, 0xFFFF, 0xF2, 0x0)     # 38 16-bit stack, ring 3
           + descriptor(TSS, 0x67, 0x89, 0)                 # 40 32-bit TSS
           + gate(CODE16, 0x2600, 0xE4, 1)                  # 48 16-bit call gate, DPL 3, 1 word
           + descriptor(STACK_BASE, 0x0FFF, 0x96, 0x0)      # 50 expand-down 16-bit: 0x1000-0xFFFF
           + descriptor(0, 0xFFFFF, 0xF2, 0xC))             # 58 flat data, DPL 3
    m.mem_write(GDT, gdt)
    m._engine.gdtr_set(GDT, len(gdt) - 1)
    idt = bytearray(256 * 8)
    for k, (vector, (typ, code)) in enumerate((handlers or {}).items()):
        addr = 0x2400 + 0x40 * k
        idt[vector * 8:vector * 8 + 8] = gate(CODE16, addr, typ)
        m.mem_write(addr, code)
    m.mem_write(IDT, bytes(idt))
    m._engine.idtr_set(IDT, len(idt) - 1)
    m.mem_write(TSS + 4, struct.pack("<II", tss_esp0, STK16))             # ESP0, SS0
    prologue = (bytes.fromhex("66 b8") + struct.pack("<H", TSS_SEL)     # mov ax, TSS_SEL
                + bytes.fromhex("0f 00 d8")                             # ltr ax
                + bytes.fromhex("66 b8") + struct.pack("<H", UDATA)     # mov ax, UDATA
                + bytes.fromhex("8e d8")                                # mov ds, ax
                + bytes.fromhex("66 b8") + struct.pack("<H", ss)        # mov ax, ss
                + bytes.fromhex("8e d0")                                # mov ss, ax
                + b"\xbc" + struct.pack("<I", esp)                      # mov esp, esp
                + b"\xea" + struct.pack("<IH", 0x2000, CODE16))         # jmp far CODE16:0x2000
    m.mem_write(0x1000, prologue)
    m.mem_write(0x2000, body16)
    m.mem_write(0x2800, user16)
    m.reg_write("eip", 0x1000)
    return m


def run(m):
    r = m.run(count=10000)
    assert r.exit is Exit.HLT, (r.exit, r.reason)
    return r


def stack_word(m, off, base=STACK_BASE):
    return int.from_bytes(m.mem_read(base + off, 2), "little")


def out_dword(m, k=0):
    return int.from_bytes(m.mem_read(OUT + 4 * k, 4), "little")


HLT = b"\xf4"


@pytest.mark.parametrize("mode", MODES)
def test_push_pop_wrap_at_zero_and_ffff(mode):
    body = bytes.fromhex(
        "b8 11 11"          # mov ax, 0x1111
        "50"                # push ax          SP 0002 -> 0000
        "b8 22 22"          # mov ax, 0x2222
        "50"                # push ax          SP 0000 -> FFFE (wraps)
        "66 89 26 00 30"    # mov [0x3000], esp
        "5b"                # pop bx           SP FFFE -> 0000 (wraps)
        "59"                # pop cx           SP 0000 -> 0002
        "f4")               # hlt
    m = machine(mode, body, 0xABCD0002)
    run(m)
    assert out_dword(m) == 0xABCDFFFE
    assert stack_word(m, 0) == 0x1111 and stack_word(m, 0xFFFE) == 0x2222
    assert m.reg_read("ebx") & 0xFFFF == 0x2222 and m.reg_read("ecx") & 0xFFFF == 0x1111
    assert m.reg_read("esp") == 0xABCD0002


@pytest.mark.parametrize("mode", MODES)
def test_push_dword_imm_and_segment_registers_wrap(mode):
    body = bytes.fromhex(
        "66 68 78 56 34 12"  # push dword 0x12345678   SP 0004 -> 0000
        "1e"                 # push ds                 SP 0000 -> FFFE
        "66 06"              # push es (o32)           SP FFFE -> FFFA
        "66 89 26 00 30"     # mov [0x3000], esp
        "66 07"              # pop es (o32)            SP FFFA -> FFFE
        "1f"                 # pop ds                  SP FFFE -> 0000 (wraps)
        "66 5a"              # pop edx                 SP 0000 -> 0004
        "f4")                # hlt
    m = machine(mode, body, 0xABCD0004)
    run(m)
    assert out_dword(m) == 0xABCDFFFA
    assert stack_word(m, 0xFFFE) == UDATA
    assert m.reg_read("edx") == 0x12345678
    assert m.reg_read("esp") == 0xABCD0004


@pytest.mark.parametrize("mode", MODES)
def test_pusha_popa_pushf_popf_wrap(mode):
    body = bytes.fromhex(
        "be 55 55"          # mov si, 0x5555
        "60"                # pusha            SP 0004 -> FFF4 (SP stored = 0004)
        "66 89 26 00 30"    # mov [0x3000], esp
        "be 00 00"          # mov si, 0
        "61"                # popa             SP FFF4 -> 0004
        "66 89 26 04 30"    # mov [0x3004], esp
        "36 a1 fa ff"       # mov ax, ss:[0xFFFA]   PUSHA's SP slot
        "a3 0c 30"          # mov [0x300c], ax
        "83 ec 04"          # sub sp, 4        SP 0000
        "9c"                # pushf            SP 0000 -> FFFE
        "66 9c"             # pushfd           SP FFFE -> FFFA
        "66 89 26 08 30"    # mov [0x3008], esp
        "66 9d"             # popfd            SP FFFA -> FFFE
        "9d"                # popf             SP FFFE -> 0000
        "f4")               # hlt
    m = machine(mode, body, 0xABCD0004)
    run(m)
    assert out_dword(m, 0) == 0xABCDFFF4
    assert out_dword(m, 3) & 0xFFFF == 0x0004            # PUSHA's SP slot, low word only
    assert m.reg_read("esi") & 0xFFFF == 0x5555
    assert out_dword(m, 1) == 0xABCD0004
    assert out_dword(m, 2) == 0xABCDFFFA
    assert m.reg_read("esp") == 0xABCD0000


@pytest.mark.parametrize("mode", MODES)
def test_call_ret_imm16_retf_wrap(mode):
    # 2000: call 0x2010 ; 2003: hlt ... 2010: mov [0x3000], esp ; ret 2
    body = bytes.fromhex(
        "6a 07"             # 2000 push 7               SP 0002 -> 0000
        "e8 0b 00"          # 2002 call 0x2010          SP 0000 -> FFFE
        "66 89 26 04 30"    # 2005 mov [0x3004], esp
        "0e"                # 200a push cs              SP 0002 -> 0000
        "68 30 20"          # 200b push 0x2030          SP 0000 -> FFFE
        "cb"                # 200e retf                 SP FFFE -> 0002
        "90"                # 200f
        "66 89 26 00 30"    # 2010 mov [0x3000], esp
        "36 a1 fe ff"       # 2015 mov ax, ss:[0xFFFE]  the return IP
        "a3 0c 30"          # 2019 mov [0x300c], ax
        "c2 02 00")         # 201c ret 2                SP FFFE -> 0002 (wraps)
    body = body.ljust(0x30, b"\x90") + bytes.fromhex(
        "66 89 26 08 30"    # 2030 mov [0x3008], esp
        "f4")               # hlt
    m = machine(mode, body, 0xABCD0002)
    run(m)
    assert out_dword(m, 0) == 0xABCDFFFE and out_dword(m, 3) & 0xFFFF == 0x2005
    assert out_dword(m, 1) == 0xABCD0002
    assert out_dword(m, 2) == 0xABCD0002


@pytest.mark.parametrize("mode", MODES)
def test_enter_leave_wrap(mode):
    body = bytes.fromhex(
        "66 bd 00 00 34 12"  # mov ebp, 0x12340000
        "c8 08 00 00"        # enter 8, 0     push bp: SP 0002 -> 0000; BP = 0; SP = FFF8
        "66 89 26 00 30"     # mov [0x3000], esp
        "66 89 2e 04 30"     # mov [0x3004], ebp
        "c8 04 00 02"        # enter 4, 2     push bp (FFF6), push [BP-2] = [FFFE], push frame
        "66 89 26 08 30"     # mov [0x3008], esp
        "c9"                 # leave          SP = BP + 2, BP = popped
        "c9"                 # leave          SP = 0000 + 2
        "f4")                # hlt
    m = machine(mode, body, 0xABCD0002)
    m.mem_write(STACK_BASE + 0xFFFE, b"\x99\x88")
    run(m)
    assert out_dword(m, 0) == 0xABCDFFF8
    assert out_dword(m, 1) == 0x12340000
    # second ENTER: FFF6 old BP (0000), FFF4 [BP-2 wrapped = FFFE], FFF2 frame (FFF6), SP -= 4
    assert stack_word(m, 0xFFF6) == 0 and stack_word(m, 0xFFF4) == 0x8899
    assert stack_word(m, 0xFFF2) == 0xFFF6
    assert out_dword(m, 2) == 0xABCDFFEE
    assert m.reg_read("esp") == 0xABCD0002 and m.reg_read("ebp") == 0x12340000


@pytest.mark.parametrize("mode", MODES)
def test_o32_pop_ss_steps_with_the_old_stack_size(mode):
    """66 17 from a 16-bit stack loading a 32-bit SS: SP wraps FFFC -> 0000 (SDM POP)."""
    body = bytes.fromhex(
        "66 68 28 00 00 00"  # push dword STK32      SP 0000 -> FFFC
        "66 17"              # pop ss (o32)          SS = STK32 (B = 1), SP FFFC -> 0000
        "66 89 26 00 30"     # mov [0x3000], esp     (in the MOV SS shadow: no interrupt)
        "66 bc fe ff 01 00"  # mov esp, 0x0001FFFE
        "6a 20"              # push STK16            ESP 0001FFFE -> 0001FFFC (32-bit stack)
        "17"                 # pop ss                SS = STK16, ESP += 2 by the 32-bit size
        "66 89 26 04 30"     # mov [0x3004], esp
        "f4")                # hlt
    m = machine(mode, body, 0xABCD0000)
    run(m)
    assert out_dword(m, 0) == 0xABCD0000
    assert out_dword(m, 1) == 0x0001FFFE


@pytest.mark.parametrize("mode", MODES)
def test_mov_ss_and_lss_then_push(mode):
    body = bytes.fromhex(
        "b8 28 00"           # mov ax, STK32
        "8e d0"              # mov ss, ax          32-bit stack from here
        "66 bc 00 00 01 00"  # mov esp, 0x00010000
        "50"                 # push ax             ESP 00010000 -> 0000FFFE (no wrap)
        "66 89 26 00 30"     # mov [0x3000], esp
        "66 bc 34 12 cd ab"  # mov esp, 0xABCD1234
        "0f b2 26 10 30"     # lss sp, [0x3010]    SS = STK16, SP = 0002, high word kept
        "50"                 # push ax             SP 0002 -> 0000
        "50"                 # push ax             SP 0000 -> FFFE
        "66 89 26 04 30"     # mov [0x3004], esp
        "66 0f b2 26 20 30"  # lss esp, [0x3020]   SS = STK16, ESP = 0x55550000
        "50"                 # push ax             SP 0000 -> FFFE
        "66 89 26 08 30"     # mov [0x3008], esp
        "f4")                # hlt
    m = machine(mode, body, 0xABCD0000)
    m.mem_write(0x3010, struct.pack("<HH", 0x0002, STK16))
    m.mem_write(0x3020, struct.pack("<IH", 0x55550000, STK16))
    run(m)
    assert out_dword(m, 0) == 0x0000FFFE
    assert out_dword(m, 1) == 0xABCDFFFE
    assert out_dword(m, 2) == 0x5555FFFE


# handler: record ESP, then IRET (16-bit gate) / IRETD (32-bit gate)
# and the words at SS:SP+6, +8, +12, +16 (the outer SP/SS slots of either frame) at 0x3010..
RECORD = bytes.fromhex(
    "66 89 26 00 30"        # mov [0x3000], esp
    "89 e5"                 # mov bp, sp
    "8b 46 06 a3 10 30"     # mov ax, [bp+6]  ; mov [0x3010], ax
    "8b 46 08 a3 14 30"     # mov ax, [bp+8]  ; mov [0x3014], ax
    "8b 46 0c a3 18 30"     # mov ax, [bp+12] ; mov [0x3018], ax
    "8b 46 10 a3 1c 30")    # mov ax, [bp+16] ; mov [0x301c], ax
REC_IRET16 = RECORD + b"\xcf"          # iret
REC_IRET32 = RECORD + b"\x66\xcf"      # iretd


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("typ, frame, handler", [(0x86, 6, REC_IRET16), (0x8E, 12, REC_IRET32)],
                         ids=["gate16", "gate32"])
def test_int_and_iret_same_ring_on_a_16bit_stack(mode, typ, frame, handler):
    body = bytes.fromhex(
        "cd 80"             # int 0x80    SP 0004 -> 0004 - frame (wraps)
        "66 89 26 04 30"    # mov [0x3004], esp
        "f4")               # hlt
    m = machine(mode, body, 0xABCD0004, {0x80: (typ, handler)})
    run(m)
    assert out_dword(m, 0) == 0xABCD0000 | ((4 - frame) & 0xFFFF)
    assert stack_word(m, (4 - frame) & 0xFFFF) == 0x2002          # the return IP
    assert out_dword(m, 1) == 0xABCD0004


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("typ, frame", [(0x86, 6), (0x8E, 12)], ids=["gate16", "gate32"])
def test_exception_through_a_gate_onto_a_16bit_stack(mode, typ, frame):
    """#UD (0F 0B) with SP = 0004: the frame wraps below 0; the handler records ESP, halts."""
    body = bytes.fromhex("0f 0b")        # ud2
    m = machine(mode, body, 0xABCD0004, {6: (typ, bytes.fromhex("66 89 26 00 30 f4"))})
    run(m)
    assert out_dword(m, 0) == 0xABCD0000 | ((4 - frame) & 0xFFFF)
    assert stack_word(m, (4 - frame) & 0xFFFF) == 0x2000          # the faulting IP


def to_ring3():
    """16-bit ring-0 code: IRET to UCODE16:2800 with SS:SP = USTK16:0002."""
    return bytes.fromhex(
        "6a 3b"             # push USTK16
        "6a 02"             # push 2
        "9c"                # pushf
        "6a 33"             # push UCODE16
        "68 00 28"          # push 0x2800
        "cf")               # iret           to ring 3, SS = USTK16 (16-bit)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("typ, handler, frame", [(0xE6, REC_IRET16, 10), (0xEE, REC_IRET32, 20)],
                         ids=["gate16", "gate32"])
def test_interrupt_from_ring3_onto_a_16bit_ring0_stack(mode, typ, handler, frame):
    """INT from ring 3 through the TSS onto SS0 = STK16: SP comes from ESP0, ESP's high word is
    left alone (as Bochs and QEMU); IRET back to the 16-bit user stack sets SP only."""
    user = bytes.fromhex(
        "66 bc 02 00 cd ab"  # mov esp, 0xABCD0002    (SS = USTK16)
        "cd 80"              # int 0x80
        "66 89 26 04 30"     # mov [0x3004], esp
        "cd 81")             # int 0x81 -> hlt
    m = machine(mode, to_ring3(), 0x00001000, {0x80: (typ, handler), 0x81: (0xE6, HLT)},
                user16=user, tss_esp0=0x5555FFF0)
    run(m)
    assert out_dword(m, 0) == 0xABCD0000 | (0xFFF0 - frame)
    sp, ss = (out_dword(m, 4), out_dword(m, 5)) if frame == 10 else (out_dword(m, 6), out_dword(m, 7))
    assert sp & 0xFFFF == 0x0002 and ss & 0xFFFF == USTK16       # the user SS:SP pushed
    # back in ring 3: SP = 0002 and the high word the ring-0 ESP had (IRET to a 16-bit SS)
    assert out_dword(m, 1) == 0xABCD0002


@pytest.mark.parametrize("mode", MODES)
def test_iretd_to_a_16bit_outer_stack_keeps_the_inner_high_word(mode):
    """The espfix leak: IRETD to a ring-3 16-bit SS loads SP only; ESP's high word is the
    ring-0 one (SDM Vol. 2 IRET, Bochs, QEMU)."""
    handler = bytes.fromhex(
        "66 81 cc 00 00 77 00"   # or esp, 0x00770000   ring-0 ESP high word changes
        "66 cf")                 # iretd
    user = bytes.fromhex(
        "66 bc 02 00 cd ab"  # mov esp, 0xABCD0002
        "cd 80"              # int 0x80
        "66 89 26 04 30"     # mov [0x3004], esp
        "cd 81")             # int 0x81 -> hlt
    m = machine(mode, to_ring3(), 0x00001000, {0x80: (0xEE, handler), 0x81: (0xE6, HLT)},
                user16=user)
    run(m)
    assert out_dword(m, 1) == 0xABFF0002


@pytest.mark.parametrize("mode", MODES)
def test_far_call_through_a_call_gate_to_a_16bit_stack(mode):
    """CALL FAR through a 16-bit call gate (1 parameter word) from ring 3 onto SS0 = STK16, and
    RETF 2 back to the 16-bit user stack (SDM Vol. 3 §5.8.5)."""
    gate_target = RECORD + bytes.fromhex(
        "8b 46 04 a3 20 30"  # mov ax, [bp+4] ; mov [0x3020], ax   the parameter
        "ca 02 00")          # retf 2
    user = bytes.fromhex(
        "66 bc 04 00 cd ab"  # mov esp, 0xABCD0004
        "68 42 00"           # push 0x42          the parameter, SP 0004 -> 0002
        "9a 00 00 4b 00"     # call far CGATE:0
        "66 89 26 04 30"     # mov [0x3004], esp
        "cd 81")             # int 0x81 -> hlt
    m = machine(mode, to_ring3(), 0x00001000, {0x81: (0xE6, HLT)}, user16=user,
                tss_esp0=0x5555FFF0)
    m.mem_write(0x2600, gate_target)
    run(m)
    # ring 0: SS, SP, the parameter, CS, IP: 5 words below FFF0; high word kept
    assert out_dword(m, 0) == 0xABCD0000 | (0xFFF0 - 10)
    assert out_dword(m, 8) & 0xFFFF == 0x42
    assert out_dword(m, 4) & 0xFFFF == 0x0002 and out_dword(m, 5) & 0xFFFF == USTK16
    assert out_dword(m, 1) == 0xABCD0004


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("esp, faults", [(0xABCD1002, False), (0xABCD1001, True)])
def test_expand_down_16bit_stack_limit(mode, esp, faults):
    """SS = expand-down, B = 0, limit 0FFF: offsets 1000-FFFF are valid; a push to 0FFF is #SS
    (SDM Vol. 3 §3.4.5.1). No IDT entry: the #SS ends in a triple fault naming it."""
    body = bytes.fromhex(
        "50"                # push ax
        "f4")               # hlt
    m = machine(mode, body, esp, ss=STKDN)
    r = m.run(count=1000)
    if faults:
        assert r.exit is Exit.SHUTDOWN and r.exception[0] == 12, (r.exit, r.reason)
        assert m.reg_read("esp") == esp
    else:
        assert r.exit is Exit.HLT, (r.exit, r.reason)
        assert m.reg_read("esp") == 0xABCD1000


@pytest.mark.parametrize("mode", MODES)
def test_push_dword_across_the_16bit_limit_is_ss(mode):
    body = bytes.fromhex(
        "66 50"             # push eax    SP 0002 -> FFFE: bytes FFFE-10001 beyond the limit
        "f4")               # hlt
    m = machine(mode, body, 0xABCD0002)
    r = m.run(count=1000)
    assert r.exit is Exit.SHUTDOWN and r.exception[0] == 12, (r.exit, r.reason)
    assert m.reg_read("esp") == 0xABCD0002


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("b_bit", [0, 1])
def test_jit_never_translates_a_block_with_a_16bit_ss(mode, b_bit):
    """The JIT translates flat 32-bit code only (jit_engine.pxi JIT_MODE_WANT has SS.B): flat
    32-bit code on a 4 GiB, base-0 SS with B = 0 (flat but 16-bit) stays in the interpreter and
    wraps SP; the same loop with B = 1 is translated (so this test can see the difference)."""
    m = vmcore.Machine(memory_mb=4, mode=mode, engine="jit")
    gdt = (bytes(8) + descriptor(0, 0xFFFFF, 0x9A, 0xC) + descriptor(0, 0xFFFFF, 0x92, 0xC)
           + descriptor(0, 0xFFFFF, 0x92, 0x8 | (b_bit << 2)))      # 18: 4 GiB stack, G = 1
    m.mem_write(GDT, gdt)
    m._engine.gdtr_set(GDT, len(gdt) - 1)
    code = bytes.fromhex(
        "66 b8 18 00"       # mov ax, 0x18
        "8e d0"             # mov ss, ax
        "bc 00 00 cd ab"    # mov esp, 0xABCD0000 (B = 0) / patched to 0x8000 (B = 1)
        "b8 78 56 34 12"    # mov eax, 0x12345678
        "b9 d0 07 00 00"    # mov ecx, 2000
        "50"                # L: push eax        SP 0000 -> FFFC (B = 0)
        "53"                # push ebx
        "5a"                # pop edx
        "5b"                # pop ebx            SP -> 0000
        "49"                # dec ecx
        "75 f9"             # jnz L
        "89 e6"             # mov esi, esp
        "f4")               # hlt
    esp0 = 0xABCD0000 if b_bit == 0 else 0x8000
    code = code[:7] + struct.pack("<I", esp0) + code[11:]
    m.mem_write(0x1000, code)
    m.reg_write("eip", 0x1000)
    r = m.run(count=100000)
    assert r.exit is Exit.HLT, (r.exit, r.reason)
    assert m.reg_read("esi") == esp0 and m.reg_read("ebx") == 0x12345678
    jit = m.stats.get("jit_instructions", 0)
    if b_bit == 0:
        assert int.from_bytes(m.mem_read(0xFFFC, 4), "little") == 0x12345678
        assert jit == 0
    else:
        assert jit > 1000


TO_V86 = bytes.fromhex(
    "66 6a 00"              # push dword 0           GS
    "66 6a 00"              # push dword 0           FS
    "66 6a 00"              # push dword 0           DS
    "66 6a 00"              # push dword 0           ES
    "66 68 00 20 00 00"     # push dword 0x2000      SS (base 20000h)
    "66 68 02 00 cd ab"     # push dword 0xABCD0002  ESP
    "66 68 02 30 02 00"     # push dword 0x00023002  EFLAGS: VM, IOPL 3
    "66 6a 00"              # push dword 0           CS
    "66 68 00 50 00 00"     # push dword 0x5000      EIP
    "66 cf")                # iretd                  to virtual-8086 mode
V86 = bytes.fromhex(
    "b8 11 11"              # mov ax, 0x1111
    "50"                    # push ax        SP 0002 -> 0000
    "50"                    # push ax        SP 0000 -> FFFE (wraps)
    "9c"                    # pushf          SP FFFE -> FFFC (IOPL 3)
    "66 89 26 40 30"        # mov [0x3040], esp
    "cd 80")                # int 0x80       to ring 0 through the gate
# ring-0 handler after a virtual-8086 interrupt: DS is null, load one first
V86_HANDLER = bytes.fromhex("b8 5b 00" "8e d8") + RECORD + HLT    # mov ax, UDATA ; mov ds, ax


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("typ, frame", [(0xE6, 18), (0xEE, 36)], ids=["gate16", "gate32"])
def test_v86_stack_wraps_and_interrupt_onto_a_16bit_ring0_stack(mode, typ, frame):
    """Virtual-8086 mode: SP wraps, ESP's high word stays (SDM Vol. 3 §20.1.1). INT n with
    IOPL 3 leaves for ring 0 on SS0 = STK16: a 16-bit gate pushes nine words (GS FS DS ES SS SP
    FLAGS CS IP), a 32-bit gate nine dwords (SDM Vol. 2 INT, INTERRUPT-FROM-VIRTUAL-8086-MODE;
    Bochs and QEMU push words through a 16-bit gate); SP comes from ESP0, the high word stays."""
    m = machine(mode, TO_V86, 0x00001000, {0x80: (typ, V86_HANDLER)})
    m.mem_write(0x5000, V86)
    run(m)
    assert out_dword(m, 16) == 0xABCDFFFC                              # the v86 ESP at 0x3040
    assert stack_word(m, 0) == 0x1111 and stack_word(m, 0xFFFE) == 0x1111
    assert out_dword(m, 0) == 0xABCD0000 | (0xFFF0 - frame)
    if frame == 18:
        sp, ss = out_dword(m, 4), out_dword(m, 5)
    else:
        sp, ss = out_dword(m, 6), out_dword(m, 7)
    assert sp & 0xFFFF == 0xFFFC and ss & 0xFFFF == 0x2000


@pytest.mark.parametrize("mode", MODES)
def test_real_mode_stack_wraps_and_keeps_the_high_word(mode):
    """Real mode: SS is a 16-bit stack (SDM Vol. 3 §20.1.1); PUSH, PUSHA/POPA, CALL/RET, INT/IRET
    through the IVT and ENTER/LEAVE wrap SP and leave ESP's high word."""
    code = bytes.fromhex(
        "b8 00 20"              # 7c00 mov ax, 0x2000
        "8e d0"                 # 7c03 mov ss, ax           base 20000h
        "66 bc 02 00 cd ab"     # 7c05 mov esp, 0xABCD0002
        "50"                    # 7c0b push ax              SP 0002 -> 0000
        "50"                    # 7c0c push ax              SP 0000 -> FFFE
        "66 89 26 00 30"        # 7c0d mov [0x3000], esp
        "60"                    # 7c12 pusha                SP FFFE -> FFEE
        "61"                    # 7c13 popa                 SP -> FFFE
        "58 58"                 # 7c14 pop ax ; pop ax      SP -> 0002
        "cd 80"                 # 7c16 int 0x80             FLAGS CS IP: SP 0002 -> FFFC
        "66 89 26 08 30"        # 7c18 mov [0x3008], esp
        "c8 04 00 00"           # 7c1d enter 4, 0           SP 0002 -> 0000 -> FFFC
        "66 89 26 0c 30"        # 7c21 mov [0x300c], esp
        "c9"                    # 7c26 leave                SP -> 0002
        "f4")                   # 7c27 hlt
    handler = bytes.fromhex("66 89 26 04 30" "cf")     # mov [0x3004], esp ; iret
    m = vmcore.Machine(memory_mb=4, mode=mode)
    m.reset()
    m.mem_write(0x7C00, code)
    m.mem_write(0x7D00, handler)
    m.mem_write(0x80 * 4, struct.pack("<HH", 0x7D00, 0))
    m.reg_write("cs", 0)
    m.reg_write("eip", 0x7C00)
    run(m)
    assert out_dword(m, 0) == 0xABCDFFFE
    assert out_dword(m, 1) == 0xABCDFFFC
    assert stack_word(m, 0xFFFC) == 0x7C18 and stack_word(m, 0xFFFE) == 0     # IP, CS
    assert out_dword(m, 2) == 0xABCD0002
    assert out_dword(m, 3) == 0xABCDFFFC
    assert m.reg_read("esp") == 0xABCD0002
