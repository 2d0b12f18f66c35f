"""Data movement: MOV (all forms), effective addresses, MOVZX/MOVSX, LEA, XCHG, XADD, CMPXCHG,
CMPXCHG8B, BSWAP, CBW/CWDE/CWD/CDQ, PUSH/POP (register, immediate, r/m, segment registers),
PUSHA/POPA, PUSHF/POPF, ENTER/LEAVE, LAHF/SAHF, XLAT (SDM Vol. 2A/2B pages of the same names).

None of these affects a flag except XADD (as ADD), CMPXCHG (as CMP), CMPXCHG8B (ZF only),
SAHF and POPF; the others are checked to leave EFLAGS exactly as it was.
"""

import os
import struct
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # isa_harness, with or without tests/__init__.py

from isa_harness import (AF, ARITH, CF, CODE_GPA, DATA_GPA, DF, FIXED1, OF, PF, SF, STACK_TOP, ZF,
                         asm, assert_flags, assert_regs, disasm, le16, le32, prog, read16, read32,
                         run_code, run_fault, szp)

ALL_FLAGS = FIXED1 | ARITH | DF          # status flags all set, DF set: must survive untouched
INIT = dict(eax=0x11111111, ecx=0x22222222, edx=0x33333333, ebx=0x44444444,
            ebp=0x66666666, esi=0x77777777, edi=0x88888888)


def regs(**kw):
    r = dict(INIT)
    r.update(kw)
    r.setdefault("eflags", ALL_FLAGS)
    return r


def check_flags_kept(m, code):
    assert_flags(m, ALL_FLAGS, mask=0xFFFFFFFF, what="data movement must not touch EFLAGS: ", code=code)


# ---------------------------------------------------------------------------
# MOV register/register and register/memory
# ---------------------------------------------------------------------------

MOV_CASES = [
    # code,      registers/memory after (only what changed)
    ("88 d8", dict(eax=0x11111144)),                        # 88 d8                 mov al, bl
    ("88 fc", dict(eax=0x11114411)),                        # 88 fc                 mov ah, bh
    ("89 d8", dict(eax=0x44444444)),                        # 89 d8                 mov eax, ebx
    ("66 89 d8", dict(eax=0x11114444)),                     # 66 89 d8              mov ax, bx
    ("8a c3", dict(eax=0x11111144)),                        # 8a c3                 mov al, bl
    ("8b c3", dict(eax=0x44444444)),                        # 8b c3                 mov eax, ebx
    ("8a e7", dict(eax=0x11114411)),                        # 8a e7                 mov ah, bh
    ("8a dc", dict(ebx=0x44444411)),                        # 8a dc                 mov bl, ah
    ("89 e5", dict(ebp=STACK_TOP)),                         # 89 e5                 mov ebp, esp
    ("89 cc", dict(esp=0x22222222)),                        # 89 cc                 mov esp, ecx
]


@pytest.mark.parametrize("code_hex,changed", MOV_CASES, ids=[c for c, _ in MOV_CASES])
def test_mov_register_forms(code_hex, changed):
    code = asm(code_hex)
    m, _ = run_code(code, regs=regs())
    want = dict(INIT, esp=STACK_TOP)
    want.update(changed)
    assert_regs(m, code, **want)
    check_flags_kept(m, code)


MOV_MEM = DATA_GPA + 0x100
MEMVAL = bytes.fromhex("f0 e1 d2 c3 b4 a5 96 87")


@pytest.mark.parametrize("code_hex,want_regs,want_mem", [
    ("88 03", {}, "44 e1 d2 c3"),                           # 88 03                 mov byte ptr [ebx], al
    ("66 89 03", {}, "44 44 d2 c3"),                        # 66 89 03              mov word ptr [ebx], ax
    ("89 03", {}, "44 44 44 44"),                           # 89 03                 mov dword ptr [ebx], eax
    ("8a 03", dict(eax=0x444444F0), None),                  # 8a 03                 mov al, byte ptr [ebx]
    ("8a 23", dict(eax=0x4444F044), None),                  # 8a 23                 mov ah, byte ptr [ebx]
    ("66 8b 03", dict(eax=0x4444E1F0), None),               # 66 8b 03              mov ax, word ptr [ebx]
    ("8b 03", dict(eax=0xC3D2E1F0), None),                  # 8b 03                 mov eax, dword ptr [ebx]
    ("c6 03 5a", {}, "5a e1 d2 c3"),                        # c6 03 5a              mov byte ptr [ebx], 0x5a
    ("66 c7 03 5a a5", {}, "5a a5 d2 c3"),                  # 66 c7 03 5a a5        mov word ptr [ebx], 0xa55a
    ("c7 03 78 56 34 12", {}, "78 56 34 12"),               # c7 03 78 56 34 12     mov dword ptr [ebx], 0x12345678
    ("c6 c0 99", dict(eax=0x44444499), None),               # c6 c0 99              mov al, 0x99
    ("c7 c1 ef be ad de", dict(ecx=0xDEADBEEF), None),      # c7 c1 ef be ad de     mov ecx, 0xdeadbeef
    ("66 c7 c2 ef be", dict(edx=0x3333BEEF), None),         # 66 c7 c2 ef be        mov dx, 0xbeef
])
def test_mov_memory_and_immediate_forms(code_hex, want_regs, want_mem):
    code = asm(code_hex)
    r = regs(eax=0x44444444, ebx=MOV_MEM)
    m, _ = run_code(code, regs=r, mem={MOV_MEM: MEMVAL})
    want = {k: v for k, v in r.items() if k != "eflags"}
    want.update(want_regs)
    assert_regs(m, code, **want)
    expected_mem = (bytes.fromhex(want_mem) if want_mem else MEMVAL[:4]) + MEMVAL[4:]
    assert m.mem_read(MOV_MEM, 8) == expected_mem, f"memory {m.mem_read(MOV_MEM, 8).hex(' ')}\n{disasm(code)}"
    check_flags_kept(m, code)


MOV_IMM_R8 = ["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7"]    # b0+r ib   mov al/cl/dl/bl/ah/ch/dh/bh, imm8
MOV_IMM_R32 = ["b8", "b9", "ba", "bb", "bc", "bd", "be", "bf"]   # b8+r id   mov eax..edi, imm32
R32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
R8 = ("al", "cl", "dl", "bl", "ah", "ch", "dh", "bh")


@pytest.mark.parametrize("r", range(8))
def test_mov_imm_every_register(r):
    code = asm(MOV_IMM_R32[r] + " id", 0xA0B0C0D0 + r) + asm(MOV_IMM_R8[r] + " ib", 0x5A)
    m, _ = run_code(code, regs=regs())
    if r < 4:
        want32 = (0xA0B0C0D0 + r) & 0xFFFFFF00 | 0x5A           # mov r32 then its low byte
        assert_regs(m, code, **{R32[r]: want32})
    else:
        assert_regs(m, code, **{R32[r]: 0xA0B0C0D0 + r})         # ah..bh belong to eax..ebx
        assert m.reg_read(R8[r]) == 0x5A
        assert (m.reg_read(R32[r - 4]) >> 8) & 0xFF == 0x5A
    code = asm("66 " + MOV_IMM_R32[r] + " iw", 0xFACE)
    m, _ = run_code(code, regs=regs())
    assert_regs(m, code, **{R32[r]: (INIT.get(R32[r], STACK_TOP) & 0xFFFF0000) | 0xFACE})


@pytest.mark.parametrize("code_hex,want_regs,want_mem", [
    ("a0 00 41 00 00", dict(eax=0x444444F0), None),         # a0 00 41 00 00        mov al, byte ptr [0x4100]
    ("66 a1 00 41 00 00", dict(eax=0x4444E1F0), None),      # 66 a1 00 41 00 00     mov ax, word ptr [0x4100]
    ("a1 01 41 00 00", dict(eax=0xB4C3D2E1), None),         # a1 01 41 00 00        mov eax, dword ptr [0x4101]
    ("a2 00 41 00 00", {}, "44 e1 d2 c3"),                  # a2 00 41 00 00        mov byte ptr [0x4100], al
    ("66 a3 00 41 00 00", {}, "44 44 d2 c3"),               # 66 a3 00 41 00 00     mov word ptr [0x4100], ax
    ("a3 00 41 00 00", {}, "44 44 44 44"),                  # a3 00 41 00 00        mov dword ptr [0x4100], eax
    ("64 a1 00 41 00 00", dict(eax=0xC3D2E1F0), None),      # 64 a1 00 41 00 00     mov eax, dword ptr fs:[0x4100]
    ("67 a1 00 41", dict(eax=0xC3D2E1F0), None),            # 67 a1 00 41           mov eax, dword ptr [0x4100] ; 16-bit moffs
    ("67 a2 00 41", {}, "44 e1 d2 c3"),                     # 67 a2 00 41           mov byte ptr [0x4100], al
])
def test_mov_moffs(code_hex, want_regs, want_mem):
    assert MOV_MEM == 0x4100
    test_mov_memory_and_immediate_forms(code_hex, want_regs, want_mem)


# ---------------------------------------------------------------------------
# Effective addresses (ModRM, SIB, 16-bit forms) through MOV loads and LEA
# ---------------------------------------------------------------------------

EA_REGS = dict(eax=0x4000, ecx=0x10, edx=0x33333333, ebx=0x4100, ebp=0x4200, esi=0x20, edi=0x30)
#   code,                      effective address
EA_32 = [
    ("8b 00", 0x4000),                       # 8b 00                 mov eax, dword ptr [eax]
    ("8b 01", 0x10),                         # 8b 01                 mov eax, dword ptr [ecx]
    ("8b 05 00 43 00 00", 0x4300),           # 8b 05 00 43 00 00     mov eax, dword ptr [0x4300]
    ("8b 04 24", 0x7FF0),                    # 8b 04 24              mov eax, dword ptr [esp]
    ("8b 44 24 04", 0x7FF4),                 # 8b 44 24 04           mov eax, dword ptr [esp + 4]
    ("8b 45 10", 0x4210),                    # 8b 45 10              mov eax, dword ptr [ebp + 0x10]
    ("8b 45 f0", 0x41F0),                    # 8b 45 f0              mov eax, dword ptr [ebp - 0x10]
    ("8b 43 04", 0x4104),                    # 8b 43 04              mov eax, dword ptr [ebx + 4]
    ("8b 83 00 01 00 00", 0x4200),           # 8b 83 00 01 00 00     mov eax, dword ptr [ebx + 0x100]
    ("8b 83 00 ff ff ff", 0x4000),           # 8b 83 00 ff ff ff     mov eax, dword ptr [ebx - 0x100]
    ("8b 04 08", 0x4010),                    # 8b 04 08              mov eax, dword ptr [eax + ecx]
    ("8b 04 48", 0x4020),                    # 8b 04 48              mov eax, dword ptr [eax + ecx*2]
    ("8b 04 88", 0x4040),                    # 8b 04 88              mov eax, dword ptr [eax + ecx*4]
    ("8b 04 c8", 0x4080),                    # 8b 04 c8              mov eax, dword ptr [eax + ecx*8]
    ("8b 04 8d 00 40 00 00", 0x4040),        # 8b 04 8d 00 40 00 00  mov eax, dword ptr [ecx*4 + 0x4000]
    ("8b 44 b5 04", 0x4284),                 # 8b 44 b5 04           mov eax, dword ptr [ebp + esi*4 + 4]
    ("8b 84 fb 00 01 00 00", 0x4380),        # 8b 84 fb 00 01 00 00  mov eax, dword ptr [ebx + edi*8 + 0x100]
    ("8b 04 20", 0x4000),                    # 8b 04 20              mov eax, dword ptr [eax] ; SIB index 100 = none
    ("8b 04 e3", 0x4100),                    # 8b 04 e3              mov eax, dword ptr [ebx] ; none, scale ignored
    ("8b 04 2e", 0x4220),                    # 8b 04 2e              mov eax, dword ptr [esi + ebp]
    ("8b 44 2d 00", 0x8400),                 # 8b 44 2d 00           mov eax, dword ptr [ebp + ebp]
    ("8b 04 25 00 43 00 00", 0x4300),        # 8b 04 25 00 43 00 00  mov eax, dword ptr [0x4300] ; SIB, no base/index
    ("8b 45 00", 0x4200),                    # 8b 45 00              mov eax, dword ptr [ebp]
]
EA_16 = [   # 67: 16-bit addressing, the sum wraps at 64 KiB
    ("67 8b 00", 0x4120),                    # 67 8b 00              mov eax, dword ptr [bx + si]
    ("67 8b 01", 0x4130),                    # 67 8b 01              mov eax, dword ptr [bx + di]
    ("67 8b 02", 0x4220),                    # 67 8b 02              mov eax, dword ptr [bp + si]
    ("67 8b 03", 0x4230),                    # 67 8b 03              mov eax, dword ptr [bp + di]
    ("67 8b 04", 0x20),                      # 67 8b 04              mov eax, dword ptr [si]
    ("67 8b 05", 0x30),                      # 67 8b 05              mov eax, dword ptr [di]
    ("67 8b 06 00 43", 0x4300),              # 67 8b 06 00 43        mov eax, dword ptr [0x4300]
    ("67 8b 07", 0x4100),                    # 67 8b 07              mov eax, dword ptr [bx]
    ("67 8b 46 04", 0x4204),                 # 67 8b 46 04           mov eax, dword ptr [bp + 4]
    ("67 8b 47 fc", 0x40FC),                 # 67 8b 47 fc           mov eax, dword ptr [bx - 4]
    ("67 8b 80 00 01", 0x4220),              # 67 8b 80 00 01        mov eax, dword ptr [bx + si + 0x100]
    ("67 8b 87 00 c0", 0x0100),              # 67 8b 87 00 c0        mov eax, dword ptr [bx - 0x4000] ; 0x4100 + 0xc000 wraps
]


def _ea_memory():
    """Each dword of the area at its own address: a load from EA returns EA (memory starts at 0)."""
    return {a: le32(a) for a in range(0x0, 0x100, 4)} | {a: le32(a) for a in range(0x3F00, 0x4400, 4)} | \
        {a: le32(a) for a in range(0x7F00, 0x8000, 4)} | {a: le32(a) for a in range(0x8400, 0x8404, 4)}


@pytest.mark.parametrize("code_hex,ea", EA_32 + EA_16, ids=[c for c, _ in EA_32 + EA_16])
def test_effective_address_load(code_hex, ea):
    code = asm(code_hex)
    mem = _ea_memory()
    mem[ea] = le32(0x0BADF00D ^ ea)                      # the value to find at EA
    m, _ = run_code(code, regs=dict(EA_REGS, esp=0x7FF0), mem=mem)
    got = m.reg_read("eax")
    assert got == 0x0BADF00D ^ ea, (
        f"loaded {got:#x}: that is the dword at {got:#x} (expected EA {ea:#x})\n{disasm(code)}")


def _lea_of(mov_hex):
    """The LEA with the same ModRM/SIB/displacement as a `mov eax, [..]` (8b -> 8d)."""
    return mov_hex.replace("8b", "8d", 1)


@pytest.mark.parametrize("code_hex,ea", EA_32 + EA_16, ids=[c for c, _ in EA_32 + EA_16])
def test_lea(code_hex, ea):
    code = asm(_lea_of(code_hex))                        # 8d /r   lea eax, [same operand]
    m, _ = run_code(code, regs=dict(EA_REGS, esp=0x7FF0, eflags=ALL_FLAGS))
    assert_regs(m, code, eax=ea)
    check_flags_kept(m, code)


@pytest.mark.parametrize("code_hex,rg,want", [
    ("8d 04 c8", dict(eax=0xFFFFFFF0, ecx=0x4), 0x10),                 # 8d 04 c8              lea eax, [eax + ecx*8] ; wraps mod 2^32
    ("8d 84 88 00 00 00 80", dict(eax=0x80000000, ecx=1), 0x4),        # 8d 84 88 00 00 00 80  lea eax, [eax + ecx*4 - 0x80000000]
    ("66 8d 04 08", dict(eax=0x1234FFFF, ecx=0x00010002), 0x12340001), # 66 8d 04 08           lea ax, [eax + ecx] ; 16-bit destination
    ("67 8d 00", dict(eax=0x22220000, ebx=0xABCDFFFF, esi=0x12340002), 0x00000001),   # 67 8d 00    lea eax, [bx + si] ; zero-extended
    ("67 66 8d 00", dict(eax=0x22220000, ebx=0xFFFF, esi=0x2), 0x22220001),     # 67 66 8d 00    lea ax, [bx + si]
    ("8d 0c 8d 00 00 00 00", dict(ecx=0x40000001), 0x4),               # 8d 0c 8d 00 00 00 00  lea ecx, [ecx*4]
])
def test_lea_wraparound_and_sizes(code_hex, rg, want):
    code = asm(code_hex)
    m, _ = run_code(code, regs=dict(rg, eflags=ALL_FLAGS))
    dest = "ecx" if code_hex.startswith("8d 0c") else "eax"
    assert_regs(m, code, **{dest: want})
    check_flags_kept(m, code)


def test_lea_register_operand_is_undefined_opcode():
    run_fault(asm("8d c0"), 6)  # 8d c0                 (invalid) lea eax, eax: mod = 11 is #UD


# ---------------------------------------------------------------------------
# MOV Sreg, segment overrides
# ---------------------------------------------------------------------------

def test_mov_from_sreg_and_segment_override():
    """A new machine has flat selectors loaded but no GDT (GDTR limit 0, as a multiboot loader may
    leave it), so only reading segment registers and loading null selectors are tried here."""
    code = prog(
        "8c d8",                # 8c d8                 mov eax, ds
        "66 8c d2",             # 66 8c d2              mov dx, ss
        "26 8b 1d 00 41 00 00",     # 26 8b 1d 00 41 00 00  mov ebx, dword ptr es:[0x4100]
        "64 8b 0d 04 41 00 00",     # 64 8b 0d 04 41 00 00  mov ecx, dword ptr fs:[0x4104]
    )
    m, _ = run_code(code, regs=regs(), mem={MOV_MEM: MEMVAL})
    assert m.reg_read("ax") == m.reg_read("ds")
    assert_regs(m, code, edx=0x33330000 | m.reg_read("ss"), ebx=0xC3D2E1F0, ecx=0x8796A5B4)
    check_flags_kept(m, code)


def test_null_selector_loads_and_use():
    """Protected mode: a null selector may be loaded into DS ES FS GS (not SS); using the segment
    then raises #GP(0) (SDM Vol. 3 §3.4.2, MOV and POP "Protected Mode Exceptions")."""
    from isa_harness import new_machine
    code = prog(
        "31 c0",                # 31 c0                 xor eax, eax
        "8e c0",                # 8e c0                 mov es, eax
        "6a 00",                # 6a 00                 push 0
        "0f a1",                # 0f a1                 pop fs
        "8c c1",                # 8c c1                 mov ecx, es
        "8c e2",                # 8c e2                 mov edx, fs
    )
    m, _ = run_code(code, regs=dict(ecx=0x5555, edx=0x6666), machine=new_machine())
    assert m.reg_read("cx") == 0 and m.reg_read("dx") == 0
    assert_regs(m, code, esp=STACK_TOP)
    code = prog(
        "31 c0",                # 31 c0                 xor eax, eax
        "8e c0",                # 8e c0                 mov es, eax
        "aa",                   # aa                    stosb byte ptr es:[edi], al
    )
    run_fault(code, 13, fault_eip=CODE_GPA + 4, error_code=0, regs=dict(edi=DATA_GPA), machine=new_machine())
    code = prog(
        "6a 00",                # 6a 00                 push 0
        "17",                   # 17                    pop ss
    )
    run_fault(code, 13, fault_eip=CODE_GPA + 2, error_code=0, machine=new_machine())


# ---------------------------------------------------------------------------
# MOVZX / MOVSX
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("code_hex,src,want", [
    ("0f b6 c3", 0x12345680, 0x00000080),    # 0f b6 c3              movzx eax, bl
    ("0f b6 c3", 0x1234567F, 0x0000007F),    # 0f b6 c3              movzx eax, bl
    ("0f b7 c3", 0x12348000, 0x00008000),    # 0f b7 c3              movzx eax, bx
    ("0f be c3", 0x12345680, 0xFFFFFF80),    # 0f be c3              movsx eax, bl
    ("0f be c3", 0x1234567F, 0x0000007F),    # 0f be c3              movsx eax, bl
    ("0f bf c3", 0x12348000, 0xFFFF8000),    # 0f bf c3              movsx eax, bx
    ("0f bf c3", 0x12347FFF, 0x00007FFF),    # 0f bf c3              movsx eax, bx
    ("66 0f b6 c3", 0x123456FF, 0xEEEE00FF), # 66 0f b6 c3           movzx ax, bl
    ("66 0f be c3", 0x123456FF, 0xEEEEFFFF), # 66 0f be c3           movsx ax, bl
    ("0f b6 c7", 0x1234AB56, 0x000000AB),    # 0f b6 c7              movzx eax, bh
    ("0f be c7", 0x1234AB56, 0xFFFFFFAB),    # 0f be c7              movsx eax, bh
])
def test_movzx_movsx_register(code_hex, src, want):
    code = asm(code_hex)
    m, _ = run_code(code, regs=regs(eax=0xEEEEEEEE, ebx=src))
    assert_regs(m, code, eax=want, ebx=src)
    check_flags_kept(m, code)


@pytest.mark.parametrize("code_hex,want", [
    ("0f b6 03", 0x000000F0),                # 0f b6 03              movzx eax, byte ptr [ebx]
    ("0f b7 03", 0x0000E1F0),                # 0f b7 03              movzx eax, word ptr [ebx]
    ("0f be 03", 0xFFFFFFF0),                # 0f be 03              movsx eax, byte ptr [ebx]
    ("0f bf 03", 0xFFFFE1F0),                # 0f bf 03              movsx eax, word ptr [ebx]
    ("0f be 43 03", 0xFFFFFFC3),             # 0f be 43 03           movsx eax, byte ptr [ebx + 3]
    ("0f bf 43 06", 0xFFFF8796),             # 0f bf 43 06           movsx eax, word ptr [ebx + 6]
])
def test_movzx_movsx_memory(code_hex, want):
    code = asm(code_hex)
    m, _ = run_code(code, regs=regs(ebx=MOV_MEM), mem={MOV_MEM: MEMVAL})
    assert_regs(m, code, eax=want)


# ---------------------------------------------------------------------------
# XCHG, XADD, CMPXCHG, CMPXCHG8B, BSWAP
# ---------------------------------------------------------------------------

XCHG_EAX = ["90", "91", "92", "93", "94", "95", "96", "97"]     # 90+r   xchg eax, r32 (90 = nop)


@pytest.mark.parametrize("r", range(8))
def test_xchg_eax_short_forms(r):
    code = asm(XCHG_EAX[r])
    m, _ = run_code(code, regs=regs())
    want = dict(INIT, esp=STACK_TOP)
    a, b = want["eax"], want[R32[r]]
    want["eax"], want[R32[r]] = b, a
    assert_regs(m, code, **want)
    code = asm("66 " + XCHG_EAX[r])                              # 66 90+r   xchg ax, r16
    m, _ = run_code(code, regs=regs())
    want = dict(INIT, esp=STACK_TOP)
    a, b = want["eax"], want[R32[r]]
    want["eax"], want[R32[r]] = (a & 0xFFFF0000) | (b & 0xFFFF), (b & 0xFFFF0000) | (a & 0xFFFF)
    assert_regs(m, code, **want)
    check_flags_kept(m, code)


@pytest.mark.parametrize("code_hex,want_regs,want_mem", [
    ("86 d8", dict(eax=0x11111144, ebx=0x44444411), None),     # 86 d8                 xchg al, bl
    ("86 e3", dict(eax=0x11114411, ebx=0x44444411), None),     # 86 e3                 xchg bl, ah
    ("87 d8", dict(eax=0x44444444, ebx=0x11111111), None),     # 87 d8                 xchg eax, ebx
    ("66 87 ca", dict(ecx=0x22223333, edx=0x33332222), None),  # 66 87 ca              xchg dx, cx
    ("87 0e", dict(ecx=0xC3D2E1F0), "22 22 22 22"),            # 87 0e                 xchg dword ptr [esi], ecx
    ("86 0e", dict(ecx=0x222222F0), "22 e1 d2 c3"),            # 86 0e                 xchg byte ptr [esi], cl
    ("f0 87 0e", dict(ecx=0xC3D2E1F0), "22 22 22 22"),         # f0 87 0e              lock xchg dword ptr [esi], ecx
])
def test_xchg(code_hex, want_regs, want_mem):
    code = asm(code_hex)
    r = regs(esi=MOV_MEM)
    m, _ = run_code(code, regs=r, mem={MOV_MEM: MEMVAL})
    want = {k: v for k, v in r.items() if k != "eflags"}
    want.update(want_regs)
    assert_regs(m, code, **want)
    assert m.mem_read(MOV_MEM, 4) == (bytes.fromhex(want_mem) if want_mem else MEMVAL[:4])
    check_flags_kept(m, code)


def _add_flags(a, b, bits):
    mask = (1 << bits) - 1
    res = (a + b) & mask
    sa = a - (1 << bits) if a >> (bits - 1) else a
    sb = b - (1 << bits) if b >> (bits - 1) else b
    f = szp(res, bits)
    f |= CF if a + b > mask else 0
    f |= AF if (a & 0xF) + (b & 0xF) > 0xF else 0
    f |= OF if not -(1 << (bits - 1)) <= sa + sb < (1 << (bits - 1)) else 0
    return res, f


@pytest.mark.parametrize("a,b", [(1, 2), (0xFFFFFFFF, 1), (0x7FFFFFFF, 1), (0x80000000, 0x80000000), (0x0F, 0x01)])
def test_xadd_register(a, b):
    code = asm("0f c1 d8")      # 0f c1 d8              xadd eax, ebx
    m, _ = run_code(code, regs=dict(eax=a, ebx=b))
    res, f = _add_flags(a, b, 32)
    assert_regs(m, code, eax=res, ebx=a)
    assert_flags(m, f, code=code)


def test_xadd_forms():
    code = asm("0f c0 d8")      # 0f c0 d8              xadd al, bl
    m, _ = run_code(code, regs=dict(eax=0x111111FF, ebx=0x22222202))
    assert_regs(m, code, eax=0x11111101, ebx=0x222222FF)
    assert_flags(m, CF | AF, code=code)                     # 0xff + 2 = 0x101; 0x01 odd
    code = asm("66 0f c1 d8")   # 66 0f c1 d8           xadd ax, bx
    m, _ = run_code(code, regs=dict(eax=0x11117FFF, ebx=0x22220001))
    assert_regs(m, code, eax=0x11118000, ebx=0x22227FFF)
    assert_flags(m, OF | SF | AF | PF, code=code)
    code = asm("f0 0f c1 03")   # f0 0f c1 03           lock xadd dword ptr [ebx], eax
    m, _ = run_code(code, regs=dict(eax=5, ebx=MOV_MEM), mem={MOV_MEM: le32(0xFFFFFFFE)})
    assert read32(m, MOV_MEM) == 3
    assert_regs(m, code, eax=0xFFFFFFFE)
    assert_flags(m, CF | AF | PF, code=code)                # 0xfffffffe + 5 = 0x1_00000003; 0x03 even


def test_xadd_same_register_keeps_the_sum():
    """SDM XADD: TEMP <- SRC + DEST; SRC <- DEST; DEST <- TEMP: with one register for both, the
    last write (the sum) is what remains."""
    code = asm("0f c1 c0")      # 0f c1 c0              xadd eax, eax
    m, _ = run_code(code, regs=dict(eax=0x40000000))
    assert_regs(m, code, eax=0x80000000)
    assert_flags(m, OF | SF | PF, code=code)


def _cmp_flags(a, b, bits):
    mask = (1 << bits) - 1
    res = (a - b) & mask
    sa = a - (1 << bits) if a >> (bits - 1) else a
    sb = b - (1 << bits) if b >> (bits - 1) else b
    f = szp(res, bits)
    f |= CF if a < b else 0
    f |= AF if (a & 0xF) < (b & 0xF) else 0
    f |= OF if not -(1 << (bits - 1)) <= sa - sb < (1 << (bits - 1)) else 0
    return f


@pytest.mark.parametrize("acc,dest", [(5, 5), (5, 6), (0x80000000, 1), (0, 0xFFFFFFFF)])
def test_cmpxchg_register(acc, dest):
    code = asm("0f b1 d9")      # 0f b1 d9              cmpxchg ecx, ebx
    m, _ = run_code(code, regs=dict(eax=acc, ecx=dest, ebx=0xB0B0B0B0))
    f = _cmp_flags(acc, dest, 32)                          # flags of CMP EAX, dest
    if acc == dest:
        assert_regs(m, code, eax=acc, ecx=0xB0B0B0B0, ebx=0xB0B0B0B0)
        assert f & ZF
    else:
        assert_regs(m, code, eax=dest, ecx=dest, ebx=0xB0B0B0B0)
    assert_flags(m, f, code=code)


def test_cmpxchg_forms():
    code = asm("0f b0 d9")      # 0f b0 d9              cmpxchg cl, bl
    m, _ = run_code(code, regs=dict(eax=0xAAAAAA12, ecx=0xCCCCCC12, ebx=0xBBBBBB34))
    assert_regs(m, code, eax=0xAAAAAA12, ecx=0xCCCCCC34)
    assert_flags(m, ZF | PF, code=code)
    code = asm("66 0f b1 d9")   # 66 0f b1 d9           cmpxchg cx, bx
    m, _ = run_code(code, regs=dict(eax=0xAAAA0001, ecx=0xCCCC0002, ebx=0xBBBB0003))
    assert_regs(m, code, eax=0xAAAA0002, ecx=0xCCCC0002)
    assert_flags(m, CF | SF | AF | PF, code=code)          # 1 - 2 = 0xffff
    code = asm("f0 0f b1 0b")   # f0 0f b1 0b           lock cmpxchg dword ptr [ebx], ecx
    m, _ = run_code(code, regs=dict(eax=0x12345678, ecx=0x9ABCDEF0, ebx=MOV_MEM), mem={MOV_MEM: le32(0x12345678)})
    assert read32(m, MOV_MEM) == 0x9ABCDEF0
    assert_flags(m, ZF | PF, code=code)
    m, _ = run_code(code, regs=dict(eax=0x12345679, ecx=0x9ABCDEF0, ebx=MOV_MEM), mem={MOV_MEM: le32(0x12345678)})
    assert read32(m, MOV_MEM) == 0x12345678
    assert_regs(m, code, eax=0x12345678)
    code = asm("0f b1 c3")      # 0f b1 c3              cmpxchg ebx, eax
    m, _ = run_code(code, regs=dict(eax=0x77, ebx=0x99))
    assert_regs(m, code, eax=0x99, ebx=0x99)
    code = asm("0f b1 d8")      # 0f b1 d8              cmpxchg eax, ebx
    m, _ = run_code(code, regs=dict(eax=0x77, ebx=0x99))
    assert_regs(m, code, eax=0x99, ebx=0x99)               # EAX compared with itself: equal, EAX <- EBX
    assert_flags(m, ZF | PF, code=code)


@pytest.mark.parametrize("lock", [False, True])
@pytest.mark.parametrize("equal", [False, True])
def test_cmpxchg8b(lock, equal):
    code = asm("f0 0f c7 0f" if lock else "0f c7 0f")  # f0 0f c7 0f   lock cmpxchg8b qword ptr [edi]
    mem64 = 0x0123456789ABCDEF
    edx_eax = mem64 if equal else mem64 ^ (1 << 40)
    init = FIXED1 | CF | PF | AF | SF | OF | (0 if equal else ZF)   # ZF opposite of the outcome
    m, _ = run_code(code, regs=dict(edi=MOV_MEM, eax=edx_eax & 0xFFFFFFFF, edx=edx_eax >> 32,
                                    ebx=0x55667788, ecx=0x11223344, eflags=init),
                    mem={MOV_MEM: struct.pack("<Q", mem64)})
    got = struct.unpack("<Q", m.mem_read(MOV_MEM, 8))[0]
    if equal:
        assert got == 0x11223344_55667788
        assert_regs(m, code, eax=edx_eax & 0xFFFFFFFF, edx=edx_eax >> 32)
    else:
        assert got == mem64
        assert_regs(m, code, eax=mem64 & 0xFFFFFFFF, edx=mem64 >> 32)
    # ZF from the comparison; CF PF AF SF OF unaffected
    assert_flags(m, (init & ~ZF) | (ZF if equal else 0), mask=0xFFFFFFFF, code=code)


def test_cmpxchg8b_register_operand_is_undefined_opcode():
    run_fault(asm("0f c7 c8"), 6)   # 0f c7 c8          (invalid) cmpxchg8b eax: mod = 11 is #UD


BSWAP = ["0f c8", "0f c9", "0f ca", "0f cb", "0f cc", "0f cd", "0f ce", "0f cf"]   # 0f c8+r   bswap r32


@pytest.mark.parametrize("r", range(8))
def test_bswap(r):
    code = asm(BSWAP[r])
    rg = {name: 0x10203040 + i for i, name in enumerate(R32)}
    m, _ = run_code(code, regs=dict(rg, eflags=ALL_FLAGS))
    v = rg[R32[r]]
    rg[R32[r]] = int.from_bytes(v.to_bytes(4, "little"), "big")
    assert_regs(m, code, **rg)
    check_flags_kept(m, code)


# ---------------------------------------------------------------------------
# CBW CWDE CWD CDQ
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("code_hex,eax,edx,want_eax,want_edx", [
    ("66 98", 0x12345680, 0x55, 0x1234FF80, 0x55),                  # 66 98                 cbw
    ("66 98", 0x1234567F, 0x55, 0x1234007F, 0x55),                  # 66 98                 cbw
    ("98", 0x12348000, 0x55, 0xFFFF8000, 0x55),                     # 98                    cwde
    ("98", 0x12347FFF, 0x55, 0x00007FFF, 0x55),                     # 98                    cwde
    ("66 99", 0x12348000, 0xAAAAAAAA, 0x12348000, 0xAAAAFFFF),      # 66 99                 cwd
    ("66 99", 0x12347FFF, 0xAAAAAAAA, 0x12347FFF, 0xAAAA0000),      # 66 99                 cwd
    ("99", 0x80000000, 0x12345678, 0x80000000, 0xFFFFFFFF),         # 99                    cdq
    ("99", 0x7FFFFFFF, 0x12345678, 0x7FFFFFFF, 0x00000000),         # 99                    cdq
])
def test_sign_extensions(code_hex, eax, edx, want_eax, want_edx):
    code = asm(code_hex)
    m, _ = run_code(code, regs=dict(eax=eax, edx=edx, eflags=ALL_FLAGS))
    assert_regs(m, code, eax=want_eax, edx=want_edx)
    check_flags_kept(m, code)


# ---------------------------------------------------------------------------
# PUSH / POP
# ---------------------------------------------------------------------------

PUSH_R = ["50", "51", "52", "53", "54", "55", "56", "57"]       # 50+r   push r32
POP_R = ["58", "59", "5a", "5b", "5c", "5d", "5e", "5f"]        # 58+r   pop r32


@pytest.mark.parametrize("r", range(8))
def test_push_pop_every_register(r):
    rg = {name: 0x0A000000 + i for i, name in enumerate(R32) if name != "esp"}
    code = asm(PUSH_R[r])
    m, _ = run_code(code, regs=dict(rg, eflags=ALL_FLAGS))
    pushed = STACK_TOP if R32[r] == "esp" else rg[R32[r]]       # PUSH ESP pushes the value before the push
    assert_regs(m, code, esp=STACK_TOP - 4)
    assert read32(m, STACK_TOP - 4) == pushed
    check_flags_kept(m, code)
    if R32[r] == "esp":
        return
    code = asm(POP_R[r])
    m, _ = run_code(code, regs=dict(rg, esp=STACK_TOP - 4), mem={STACK_TOP - 4: le32(0xFEEDFACE)})
    assert_regs(m, code, esp=STACK_TOP, **{R32[r]: 0xFEEDFACE})


def test_push_sp_16_bit():
    code = asm("66 54")         # 66 54                 push sp
    m, _ = run_code(code, regs=dict(esp=0x7000))
    assert_regs(m, code, esp=0x6FFE)
    assert read16(m, 0x6FFE) == 0x7000, "PUSH SP pushes SP as it was before the push"


def test_pop_esp_takes_the_popped_value():
    code = asm("5c")            # 5c                    pop esp
    m, _ = run_code(code, regs=dict(esp=0x7000), mem={0x7000: le32(0x6000)})
    assert_regs(m, code, esp=0x6000)


def test_push_pop_16_bit():
    code = prog(
        "66 50",                # 66 50                 push ax
        "66 5b",                # 66 5b                 pop bx
        "66 53",                # 66 53                 push bx
    )
    m, _ = run_code(code, regs=dict(eax=0x1111ABCD, ebx=0x22222222))
    assert_regs(m, code, esp=STACK_TOP - 2, ebx=0x2222ABCD)
    assert read16(m, STACK_TOP - 2) == 0xABCD
    assert read16(m, STACK_TOP - 4) == 0, "a 16-bit push wrote 4 bytes"


@pytest.mark.parametrize("code_hex,size,value", [
    ("68 78 56 34 12", 4, 0x12345678),      # 68 78 56 34 12        push 0x12345678
    ("6a ff", 4, 0xFFFFFFFF),               # 6a ff                 push -1
    ("6a 7f", 4, 0x0000007F),               # 6a 7f                 push 0x7f
    ("6a 80", 4, 0xFFFFFF80),               # 6a 80                 push -0x80
    ("66 68 34 12", 2, 0x1234),             # 66 68 34 12           push 0x1234
    ("66 6a 80", 2, 0xFF80),                # 66 6a 80              push -0x80
])
def test_push_immediate(code_hex, size, value):
    code = asm(code_hex)
    m, _ = run_code(code, regs=dict(eflags=ALL_FLAGS))
    assert_regs(m, code, esp=STACK_TOP - size)
    got = read32(m, STACK_TOP - 4) if size == 4 else read16(m, STACK_TOP - 2)
    assert got == value
    check_flags_kept(m, code)


def test_push_pop_memory_operands():
    code = prog(
        "ff 33",                # ff 33                 push dword ptr [ebx]
        "ff 74 24 00",          # ff 74 24 00           push dword ptr [esp] ; address uses ESP before the push
        "8f 43 04",             # 8f 43 04              pop dword ptr [ebx + 4]
        "8f 44 24 fc",          # 8f 44 24 fc           pop dword ptr [esp - 4] ; address uses ESP after the pop
        "66 ff 73 02",          # 66 ff 73 02           push word ptr [ebx + 2]
        "66 8f 43 08",          # 66 8f 43 08           pop word ptr [ebx + 8]
    )
    m, _ = run_code(code, regs=dict(ebx=MOV_MEM), mem={MOV_MEM: MEMVAL + bytes(8)})
    assert_regs(m, code, esp=STACK_TOP)
    assert read32(m, MOV_MEM + 4) == 0xC3D2E1F0
    # the second pop moved ESP back to STACK_TOP, then stored at STACK_TOP - 4
    assert read32(m, STACK_TOP - 4) == 0xC3D2E1F0
    assert read16(m, MOV_MEM + 8) == 0xC3D2


def test_pop_into_esp_based_memory_uses_incremented_esp():
    """SDM POP: with ESP as a base register, the effective address is computed after ESP is incremented."""
    code = asm("8f 44 24 04")   # 8f 44 24 04           pop dword ptr [esp + 4]
    m, _ = run_code(code, regs=dict(esp=0x7000), mem={0x7000: le32(0xCAFEBABE), 0x7004: bytes(8)})
    assert_regs(m, code, esp=0x7004)
    assert read32(m, 0x7008) == 0xCAFEBABE
    assert read32(m, 0x7004) == 0


@pytest.mark.parametrize("push_hex,mov_hex", [
    ("06", "8c c0"),            # 06 / 8c c0            push es / mov eax, es
    ("0e", "8c c8"),            # 0e / 8c c8            push cs / mov eax, cs
    ("16", "8c d0"),            # 16 / 8c d0            push ss / mov eax, ss
    ("1e", "8c d8"),            # 1e / 8c d8            push ds / mov eax, ds
    ("0f a0", "8c e0"),         # 0f a0 / 8c e0         push fs / mov eax, fs
    ("0f a8", "8c e8"),         # 0f a8 / 8c e8         push gs / mov eax, gs
])
def test_push_segment_registers(push_hex, mov_hex):
    """A 32-bit push of a segment register moves ESP by 4; the low word is the selector
    (the upper word is left unmodified or zeroed, implementation-specific, so not checked)."""
    code = asm(mov_hex) + asm(push_hex) + asm("5b")     # 5b   pop ebx
    m, _ = run_code(code, regs=dict(eflags=ALL_FLAGS))
    sel = m.reg_read("ax")
    assert m.reg_read("bx") == sel, f"pushed {m.reg_read('bx'):#x}, selector {sel:#x}"
    assert_regs(m, code, esp=STACK_TOP)
    check_flags_kept(m, code)


def test_pusha_popa():
    rg = dict(eax=0xA0, ecx=0xC0, edx=0xD0, ebx=0xB0, ebp=0xBB, esi=0x51, edi=0xD1)
    code = asm("60")            # 60                    pushal
    m, _ = run_code(code, regs=dict(rg, eflags=ALL_FLAGS))
    assert_regs(m, code, esp=STACK_TOP - 32)
    stack = struct.unpack("<8I", m.mem_read(STACK_TOP - 32, 32))
    # lowest address first: EDI ESI EBP ESP(original) EBX EDX ECX EAX
    assert stack == (0xD1, 0x51, 0xBB, STACK_TOP, 0xB0, 0xD0, 0xC0, 0xA0)
    check_flags_kept(m, code)
    code = asm("61")            # 61                    popal
    img = struct.pack("<8I", 1, 2, 3, 0xDEAD, 5, 6, 7, 8)
    m, _ = run_code(code, regs=dict(esp=STACK_TOP - 32), mem={STACK_TOP - 32: img})
    assert_regs(m, code, edi=1, esi=2, ebp=3, esp=STACK_TOP, ebx=5, edx=6, ecx=7, eax=8)


def test_pusha_popa_16_bit():
    code = asm("66 60")         # 66 60                 pushaw
    m, _ = run_code(code, regs=dict(eax=0x1111000A, ecx=0xC, edx=0xD, ebx=0xB, ebp=0xBB, esi=0x51, edi=0xD1))
    assert_regs(m, code, esp=STACK_TOP - 16)
    assert struct.unpack("<8H", m.mem_read(STACK_TOP - 16, 16)) == (0xD1, 0x51, 0xBB, STACK_TOP & 0xFFFF, 0xB, 0xD, 0xC, 0xA)
    code = asm("66 61")         # 66 61                 popaw
    img = struct.pack("<8H", 1, 2, 3, 0xDEAD, 5, 6, 7, 8)
    m, _ = run_code(code, regs=dict(eax=0xAAAA0000, esp=STACK_TOP - 16), mem={STACK_TOP - 16: img})
    assert_regs(m, code, edi=1, esi=2, ebp=3, esp=STACK_TOP, ebx=5, edx=6, ecx=7, eax=0xAAAA0008)


def test_pushf_popf():
    code = asm("9c")            # 9c                    pushfd
    m, _ = run_code(code, regs=dict(eflags=FIXED1 | CF | ZF | OF | DF))
    assert read32(m, STACK_TOP - 4) == FIXED1 | CF | ZF | OF | DF
    code = asm("66 9c")         # 66 9c                 pushf
    m, _ = run_code(code, regs=dict(eflags=FIXED1 | SF | PF | AF))
    assert_regs(m, code, esp=STACK_TOP - 2)
    assert read16(m, STACK_TOP - 2) == FIXED1 | SF | PF | AF
    code = asm("9d")            # 9d                    popfd
    # reserved bits 3, 5 and 15 read as 0 and bit 1 as 1, whatever was popped
    m, _ = run_code(code, regs=dict(esp=STACK_TOP - 4), mem={STACK_TOP - 4: le32(ARITH | DF | 0x8028)})
    assert_regs(m, code, esp=STACK_TOP, eflags=FIXED1 | ARITH | DF)
    m, _ = run_code(code, regs=dict(esp=STACK_TOP - 4, eflags=FIXED1 | ARITH | DF), mem={STACK_TOP - 4: le32(0)})
    assert_regs(m, code, eflags=FIXED1)
    code = asm("66 9d")         # 66 9d                 popf
    m, _ = run_code(code, regs=dict(esp=STACK_TOP - 2), mem={STACK_TOP - 2: le16(CF | OF)})
    assert_regs(m, code, esp=STACK_TOP, eflags=FIXED1 | CF | OF)


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_enter_leave(level):
    code = asm("c8 iw ib", 0x10, level)     # c8 iw ib              enter imm16, imm8
    ebp0 = 0x7F00
    # a chain of saved frame pointers below the old EBP, as previous ENTERs would leave
    mem = {ebp0 - 4: le32(0xF1), ebp0 - 8: le32(0xF2), ebp0 - 12: le32(0xF3)}
    m, _ = run_code(code, regs=dict(ebp=ebp0, eflags=ALL_FLAGS), mem=mem)
    frame = STACK_TOP - 4                   # after push ebp
    want_esp = frame - 4 * level - 0x10     # level-1 copied pointers and FrameTemp for level > 0
    assert read32(m, STACK_TOP - 4) == ebp0
    if level:
        copied = [read32(m, frame - 4 * i) for i in range(1, level)]
        assert copied == [0xF1, 0xF2, 0xF3][: level - 1], f"copied frame pointers {copied}"
        assert read32(m, frame - 4 * level) == frame, "last push of ENTER is the new frame pointer"
    assert_regs(m, code, ebp=frame, esp=want_esp)
    check_flags_kept(m, code)
    code = asm("c9")            # c9                    leave
    m, _ = run_code(code, regs=dict(ebp=0x7FF0, esp=0x7000), mem={0x7FF0: le32(0x7FF8)})
    assert_regs(m, code, esp=0x7FF4, ebp=0x7FF8)


def test_enter_leave_pair_restores_the_frame():
    code = prog(
        "55",                   # 55                    push ebp
        "89 e5",                # 89 e5                 mov ebp, esp
        "c8 20 00 02",          # c8 20 00 02           enter 0x20, 2
        "c9",                   # c9                    leave
        "c9",                   # c9                    leave
    )
    m, _ = run_code(code, regs=dict(ebp=0x12345678))
    assert_regs(m, code, esp=STACK_TOP, ebp=0x12345678)


@pytest.mark.parametrize("flags_in", [FIXED1, FIXED1 | CF, FIXED1 | ZF | SF, FIXED1 | AF | PF, FIXED1 | ARITH])
def test_lahf(flags_in):
    code = asm("9f")            # 9f                    lahf
    m, _ = run_code(code, regs=dict(eax=0x12345678, eflags=flags_in | DF))
    # AH = SF:ZF:0:AF:0:PF:1:CF
    ah = (flags_in & (SF | ZF | AF | PF | CF)) | 0x02
    assert_regs(m, code, eax=0x12340078 | (ah << 8), eflags=flags_in | DF)


@pytest.mark.parametrize("ah", [0x00, 0xFF, 0xD5, 0x2A, 0x01, 0x40])
def test_sahf(ah):
    code = asm("9e")            # 9e                    sahf
    init = FIXED1 | DF | (OF if ah & 1 else 0)
    m, _ = run_code(code, regs=dict(eax=ah << 8, eflags=init))
    # SF ZF AF PF CF <- AH bits 7 6 4 2 0; OF and everything else unchanged; bits 1 3 5 ignored
    want = (init & ~(SF | ZF | AF | PF | CF)) | (ah & (SF | ZF | AF | PF | CF))
    assert_regs(m, code, eflags=want)


def test_xlat():
    table = bytes(range(255, -1, -1))
    code = asm("d7")            # d7                    xlatb
    m, _ = run_code(code, regs=dict(eax=0x12345680, ebx=0x4200, eflags=ALL_FLAGS), mem={0x4200: table})
    assert_regs(m, code, eax=0x1234567F, ebx=0x4200)     # AL = [EBX + 0x80] (AL is unsigned)
    check_flags_kept(m, code)
    code = asm("26 d7")         # 26 d7                 xlatb ; es: override
    m, _ = run_code(code, regs=dict(eax=0x000000FF, ebx=0x4200), mem={0x4200: table})
    assert_regs(m, code, eax=0x00000000)
    code = asm("67 d7")         # 67 d7                 xlatb ; 67: [BX + AL]
    m, _ = run_code(code, regs=dict(eax=0x00000001, ebx=0xABCD4200), mem={0x4200: table})
    assert_regs(m, code, eax=0x000000FE, ebx=0xABCD4200)


@pytest.mark.parametrize("code_hex", [
    "90",                       # 90                    nop
    "0f 1f 00",                 # 0f 1f 00              nop dword ptr [eax]
    "0f 1f 40 00",              # 0f 1f 40 00           nop dword ptr [eax]
    "0f 1f 44 00 00",           # 0f 1f 44 00 00        nop dword ptr [eax + eax]
    "66 0f 1f 44 00 00",        # 66 0f 1f 44 00 00     nop word ptr [eax + eax]
    "0f 1f 80 00 00 00 00",     # 0f 1f 80 00 00 00 00  nop dword ptr [eax]
    "66 90",                    # 66 90                 nop
])
def test_nops(code_hex):
    code = asm(code_hex)
    # EAX points far outside RAM: a multi-byte NOP never accesses its memory operand
    rg = dict(INIT, eax=0xFFFFF000, eflags=ALL_FLAGS)
    m, r = run_code(code, regs=rg)
    want = {k: v for k, v in rg.items() if k != "eflags"}
    assert_regs(m, code, esp=STACK_TOP, **want)
    check_flags_kept(m, code)
    assert r.instructions == 2
