"""Control transfer: Jcc (short and near, all 16 conditions), JMP, CALL, RET, RET imm16, LOOP,
LOOPE, LOOPNE, JECXZ/JCXZ, indirect JMP/CALL through registers and memory (SDM Vol. 2A/2B:
Jcc, JMP, CALL, RET, LOOP/LOOPcc). None of them changes a flag; LOOP* decrement ECX (CX with
a 67 prefix) without touching flags.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # isa_harness, with or without tests/__init__.py

from isa_harness import (ARITH, CF, CODE_GPA, DATA_GPA, DF, FIXED1, OF, PF, SF, STACK_TOP, ZF,
                         Failures, asm, assert_regs, disasm, le32, prog, read32, run_code, vmcore)


def condition(cc, fl):
    """The SDM's condition table (Vol. 2 Appendix B), independent of the engine's."""
    cf, pf, zf, sf, of = (bool(fl & b) for b in (CF, PF, ZF, SF, OF))
    base = [of, cf, zf, cf or zf, sf, pf, sf != of, zf or sf != of][cc >> 1]
    return base if cc % 2 == 0 else not base


def flag_combos():
    out = []
    for i in range(32):
        f = FIXED1
        for k, b in enumerate((CF, PF, ZF, SF, OF)):
            if i >> k & 1:
                f |= b
        out.append(f)
    return out


MOV_EAX_1 = "b8 01 00 00 00"    # b8 01 00 00 00        mov eax, 1

JCC_SHORT = [   # skip the 5-byte mov eax, 1 that follows when taken
    "70 05",                                # 70 05                 jo $+7
    "71 05",                                # 71 05                 jno $+7
    "72 05",                                # 72 05                 jb $+7
    "73 05",                                # 73 05                 jae $+7
    "74 05",                                # 74 05                 je $+7
    "75 05",                                # 75 05                 jne $+7
    "76 05",                                # 76 05                 jbe $+7
    "77 05",                                # 77 05                 ja $+7
    "78 05",                                # 78 05                 js $+7
    "79 05",                                # 79 05                 jns $+7
    "7a 05",                                # 7a 05                 jp $+7
    "7b 05",                                # 7b 05                 jnp $+7
    "7c 05",                                # 7c 05                 jl $+7
    "7d 05",                                # 7d 05                 jge $+7
    "7e 05",                                # 7e 05                 jle $+7
    "7f 05",                                # 7f 05                 jg $+7
]
JCC_NEAR = [
    "0f 80 05 00 00 00",                    # 0f 80 05 00 00 00     jo $+11
    "0f 81 05 00 00 00",                    # 0f 81 05 00 00 00     jno $+11
    "0f 82 05 00 00 00",                    # 0f 82 05 00 00 00     jb $+11
    "0f 83 05 00 00 00",                    # 0f 83 05 00 00 00     jae $+11
    "0f 84 05 00 00 00",                    # 0f 84 05 00 00 00     je $+11
    "0f 85 05 00 00 00",                    # 0f 85 05 00 00 00     jne $+11
    "0f 86 05 00 00 00",                    # 0f 86 05 00 00 00     jbe $+11
    "0f 87 05 00 00 00",                    # 0f 87 05 00 00 00     ja $+11
    "0f 88 05 00 00 00",                    # 0f 88 05 00 00 00     js $+11
    "0f 89 05 00 00 00",                    # 0f 89 05 00 00 00     jns $+11
    "0f 8a 05 00 00 00",                    # 0f 8a 05 00 00 00     jp $+11
    "0f 8b 05 00 00 00",                    # 0f 8b 05 00 00 00     jnp $+11
    "0f 8c 05 00 00 00",                    # 0f 8c 05 00 00 00     jl $+11
    "0f 8d 05 00 00 00",                    # 0f 8d 05 00 00 00     jge $+11
    "0f 8e 05 00 00 00",                    # 0f 8e 05 00 00 00     jle $+11
    "0f 8f 05 00 00 00",                    # 0f 8f 05 00 00 00     jg $+11
]


@pytest.mark.parametrize("form", ["short", "near"])
@pytest.mark.parametrize("cc", range(16))
def test_jcc_all_conditions(cc, form):
    jcc = JCC_SHORT[cc] if form == "short" else JCC_NEAR[cc]
    code = prog(jcc, MOV_EAX_1)     # jcc over the mov; both paths end at the HLT after it
    fails = Failures()
    for fl in flag_combos():
        with fails.case(f"{jcc} flags={fl:#x}"):
            m, r = run_code(code, regs=dict(eax=0, eflags=fl))
            taken = condition(cc, fl)
            assert_regs(m, code, eax=0 if taken else 1, eflags=fl)
            assert r.instructions == (2 if taken else 3)
    fails.check()


def test_jcc_backward_loop():
    code = prog(
        "b9 05 00 00 00",       # b9 05 00 00 00        mov ecx, 5
        "40",                   # 40                    inc eax
        "01 c3",                # 01 c3                 add ebx, eax
        "49",                   # 49                    dec ecx
        "75 fa",                # 75 fa                 jne $-4
        "0f 85 00 00 00 00",    # 0f 85 00 00 00 00     jne $+6 ; not taken, falls through either way
    )
    m, r = run_code(code)
    assert_regs(m, code, eax=5, ebx=15, ecx=0)
    assert r.instructions == 1 + 5 * 4 + 1 + 1


def test_jmp_forms():
    code = prog(
        "eb 05",                # eb 05                 jmp $+7
        MOV_EAX_1,              # b8 01 00 00 00        mov eax, 1 ; skipped
        "e9 0c 00 00 00",       # e9 0c 00 00 00        jmp $+17
        "b9 02 00 00 00",       # b9 02 00 00 00        mov ecx, 2 ; reached by the jmp back
        "eb 0a",                # eb 0a                 jmp $+12
        "b9 01 00 00 00",       # b9 01 00 00 00        mov ecx, 1 ; skipped
        "e9 ef ff ff ff",       # e9 ef ff ff ff        jmp $-12 ; back to the mov ecx, 2
    )
    m, _ = run_code(code)
    assert_regs(m, code, eax=0, ecx=2)


def test_jmp_far_forward_across_pages():
    code = asm("e9 id", 0x3000 - 5)         # e9 id                 jmp $+0x3000
    m = vmcore.Machine(memory_mb=16, mode="bare")
    m.mem_write(CODE_GPA + 0x3000, bytes.fromhex("b8 2a 00 00 00 f4"))  # b8 2a 00 00 00 f4  mov eax, 0x2a; hlt
    m, r = run_code(code, machine=m, expect=None)
    assert r.exit == vmcore.Exit.HLT
    assert_regs(m, code, eax=0x2A, eip=CODE_GPA + 0x3000 + 6)


def test_call_ret():
    code = prog(
        "e8 06 00 00 00",       # e8 06 00 00 00        call $+11
        "b9 11 00 00 00",       # b9 11 00 00 00        mov ecx, 0x11 ; after the return
        "f4",                   # f4                    hlt
        "8b 1c 24",             # 8b 1c 24              mov ebx, dword ptr [esp] ; the return address
        "b8 22 00 00 00",       # b8 22 00 00 00        mov eax, 0x22
        "c3",                   # c3                    ret
    )
    m, r = run_code(code, expect=None)
    assert r.exit == vmcore.Exit.HLT
    assert_regs(m, code, eax=0x22, ebx=CODE_GPA + 5, ecx=0x11, esp=STACK_TOP, eip=CODE_GPA + 11)


def test_ret_imm16_releases_arguments():
    code = prog(
        "6a 01",                # 6a 01                 push 1
        "6a 02",                # 6a 02                 push 2
        "e8 01 00 00 00",       # e8 01 00 00 00        call $+6
        "f4",                   # f4                    hlt
        "8b 44 24 04",          # 8b 44 24 04           mov eax, dword ptr [esp + 4]
        "03 44 24 08",          # 03 44 24 08           add eax, dword ptr [esp + 8]
        "c2 08 00",             # c2 08 00              ret 8
    )
    m, r = run_code(code, expect=None)
    assert r.exit == vmcore.Exit.HLT
    assert_regs(m, code, eax=3, esp=STACK_TOP, eip=CODE_GPA + 10)


def test_call_pushes_next_eip_and_flags_untouched():
    code = asm("e8 00 00 00 00")    # e8 00 00 00 00        call $+5
    m, _ = run_code(code, regs=dict(eflags=FIXED1 | ARITH | DF))
    assert_regs(m, code, esp=STACK_TOP - 4, eflags=FIXED1 | ARITH | DF)
    assert read32(m, STACK_TOP - 4) == CODE_GPA + 5


def test_indirect_jmp_and_call():
    target = CODE_GPA + 0x20
    table = DATA_GPA + 0x40
    code = prog(
        "ff e0",                # ff e0                 jmp eax
    )
    body = bytearray(code + b"\xf4" * (0x20 - len(code)))
    body += bytes.fromhex("b9 07 00 00 00")                  # b9 07 00 00 00  mov ecx, 7 ; @ +0x20
    body += bytes.fromhex("ff 24 9d") + le32(table - 4)      # ff 24 9d 3c 40 00 00  jmp dword ptr [ebx*4 + 0x403c]
    body += b"\xf4" * (0x40 - len(body))
    body += bytes.fromhex("ff d6")                           # ff d6  call esi ; @ +0x40
    body += bytes.fromhex("ff 15") + le32(table + 4)         # ff 15 44 40 00 00  call dword ptr [0x4044] ; @ +0x42
    body += bytes.fromhex("f4")                              # f4  hlt ; @ +0x48
    body += b"\xf4" * (0x60 - len(body))
    # at +0x60 and +0x62: the two subroutines
    body += bytes.fromhex("42 c3")                           # 42 c3  inc edx; ret
    body += bytes.fromhex("83 c2 10 c3")                     # 83 c2 10 c3  add edx, 0x10; ret
    m = vmcore.Machine(memory_mb=16, mode="bare")
    m.mem_write(table, le32(CODE_GPA + 0x40) + le32(CODE_GPA + 0x62))
    m, r = run_code(bytes(body), machine=m, regs=dict(eax=target, ebx=1, esi=CODE_GPA + 0x60), expect=None)
    assert r.exit == vmcore.Exit.HLT, disasm(bytes(body))
    assert_regs(m, bytes(body), ecx=7, edx=0x11, esp=STACK_TOP, eip=CODE_GPA + 0x49)
    assert r.instructions == 1 + 2 + 1 + 2 + 1 + 2 + 1


def test_call_through_memory_at_esp():
    """CALL [ESP] reads its target before pushing the return address."""
    code = asm("68 id", CODE_GPA + 0x10) + asm("ff 14 24")  # 68 id   push target
    # ff 14 24              call dword ptr [esp]
    code += b"\xf4" * (0x10 - len(code))
    code += bytes.fromhex("b8 05 00 00 00")                   # b8 05 00 00 00  mov eax, 5 ; @ +0x10
    m, r = run_code(code, expect=None)
    assert r.exit == vmcore.Exit.HLT
    assert_regs(m, code, eax=5, esp=STACK_TOP - 8, eip=CODE_GPA + 0x16)
    assert read32(m, STACK_TOP - 8) == CODE_GPA + 8


@pytest.mark.parametrize("ecx,zf,form,taken", [
    # LOOP: ECX -= 1, jump while ECX != 0
    (2, 0, "loop", True), (1, 0, "loop", False), (0, 0, "loop", True),   # 0 - 1 = 0xffffffff: taken
    # LOOPE: jump while ECX != 0 and ZF = 1
    (2, ZF, "loope", True), (2, 0, "loope", False), (1, ZF, "loope", False),
    # LOOPNE: jump while ECX != 0 and ZF = 0
    (2, 0, "loopne", True), (2, ZF, "loopne", False), (1, 0, "loopne", False),
])
def test_loop_single_step(ecx, zf, form, taken):
    op = {"loop": "e2 05", "loope": "e1 05", "loopne": "e0 05"}[form]
    # e2 05 / e1 05 / e0 05   loop / loope / loopne $+7, over a mov eax, 1
    code = prog(op, MOV_EAX_1)
    fl = FIXED1 | zf | CF | SF
    m, _ = run_code(code, regs=dict(ecx=ecx, eflags=fl))
    assert_regs(m, code, ecx=(ecx - 1) & 0xFFFFFFFF, eax=0 if taken else 1, eflags=fl)


def test_loop_counts_down():
    code = prog(
        "b9 0a 00 00 00",       # b9 0a 00 00 00        mov ecx, 0xa
        "01 c8",                # 01 c8                 add eax, ecx
        "e2 fc",                # e2 fc                 loop $-2
    )
    m, r = run_code(code)
    assert_regs(m, code, eax=55, ecx=0)
    assert r.instructions == 1 + 10 * 2 + 1


def test_loop_with_address_size_prefix_uses_cx():
    code = prog(
        "b9 02 00 01 00",       # b9 02 00 01 00        mov ecx, 0x10002
        "40",                   # 40                    inc eax
        "67 e2 fc",             # 67 e2 fc              loop $-1 ; 67: counts CX
    )
    m, _ = run_code(code)
    assert_regs(m, code, eax=2, ecx=0x10000)


@pytest.mark.parametrize("ecx,taken", [(0, True), (1, False), (0x10000, False), (0xFFFFFFFF, False)])
def test_jecxz(ecx, taken):
    code = prog("e3 05", MOV_EAX_1)     # e3 05                 jecxz $+7
    m, _ = run_code(code, regs=dict(ecx=ecx, eflags=FIXED1 | ARITH))
    assert_regs(m, code, eax=0 if taken else 1, ecx=ecx, eflags=FIXED1 | ARITH)


@pytest.mark.parametrize("ecx,taken", [(0, True), (0x10000, True), (1, False)])
def test_jcxz(ecx, taken):
    code = prog("67 e3 05", MOV_EAX_1)  # 67 e3 05              jcxz $+8
    m, _ = run_code(code, regs=dict(ecx=ecx))
    assert_regs(m, code, eax=0 if taken else 1, ecx=ecx)


def test_block_ends_and_chains():
    """Fall-through into code that is the target of an earlier jump, and a jump into the middle
    of an already-decoded sequence: both must execute the instructions actually at EIP."""
    code = prog(
        "eb 01",                # eb 01                 jmp $+3
        "40",                   # 40                    inc eax ; skipped the first time
        "43",                   # 43                    inc ebx
        "83 fb 03",             # 83 fb 03              cmp ebx, 3
        "75 f9",                # 75 f9                 jne $-5 ; back to the inc eax
    )
    m, _ = run_code(code)
    assert_regs(m, code, eax=2, ebx=3)
