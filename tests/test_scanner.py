"""The scanner (vmcore/monitor/scanner.py) on hand-written guest-kernel blocks and on the compiled workloads.

Blocks are raw bytes with their disassembly beside each line; the expected translation is a list of
(gla, length, action) and how the block ends.
"""
import struct

import capstone
import pytest

from vmcore import workloads
from vmcore.errors import ConfigError
from vmcore.monitor import CALLOUT, IDENT, TRAP, BlockEnd, Scanner
from vmcore.monitor.scanner import UNKNOWN_LENGTH

GLA = 0x00101000            # where the blocks are; identity-mapped: gpa = gla
NOPS = bytes(16 * [0x90])   # padding, so that capstone always has 15 bytes to decode from


def code(*hex_lines):
    return bytes.fromhex("".join(hex_lines))


def scan(block, gla=GLA, code_size=32, scanner=None, **kwargs):
    scanner = scanner or Scanner()
    return scanner.scan(block, gla, gla, code_size, **kwargs)


def actions(translation):
    return [(i.gla - translation.gla, i.length, i.action) for i in translation.insns]


def test_cli_sti_pushf_popf_become_callouts():
    t = scan(code(
        "9c",               # pushfd
        "fa",               # cli
        "89 c3",            # mov ebx, eax
        "9d",               # popfd
        "fb",               # sti
        "66 9c",            # pushf
        "66 9d",            # popf
        "c3",               # ret
    ))
    assert actions(t) == [(0, 1, CALLOUT("pushf")), (1, 1, CALLOUT("cli")), (2, 2, IDENT), (4, 1, CALLOUT("popf")),
                          (5, 1, CALLOUT("sti")), (6, 2, CALLOUT("pushf")), (8, 2, CALLOUT("popf")), (10, 1, IDENT)]
    assert t.end is BlockEnd.CONTROL_FLOW
    assert t.end_gla == GLA + 11
    assert t.successors == ()           # a return: known only at run time


def test_descriptor_table_register_reads_become_callouts():
    t = scan(code(
        "0f 01 00",         # sgdt [eax]
        "0f 01 08",         # sidt [eax]
        "0f 00 c0",         # sldt eax
        "0f 00 c8",         # str eax
        "0f 01 e0",         # smsw eax
        "0f 01 23",         # smsw word ptr [ebx]
        "e9 10 00 00 00",   # jmp +0x10
    ))
    assert actions(t) == [(0, 3, CALLOUT("read_gdtr")), (3, 3, CALLOUT("read_idtr")), (6, 3, CALLOUT("read_ldtr")),
                          (9, 3, CALLOUT("read_tr")), (12, 3, CALLOUT("read_msw")), (15, 3, CALLOUT("read_msw")),
                          (18, 5, IDENT)]
    assert t.successors == (GLA + 23 + 0x10,)


def test_segment_registers_by_operand():
    t = scan(code(
        "0e",               # push cs
        "50",               # push eax
        "16",               # push ss
        "1e",               # push ds
        "0f a0",            # push fs
        "1f",               # pop ds
        "58",               # pop eax
        "0f a9",            # pop gs
        "17",               # pop ss
        "66 8c d8",         # mov ax, ds
        "66 89 d8",         # mov ax, bx
        "66 8c c8",         # mov ax, cs
        "8c d0",            # mov eax, ss
        "8c 0b",            # mov word ptr [ebx], cs
        "8e d8",            # mov ds, eax
        "8e 13",            # mov ss, word ptr [ebx]
        "0f b2 23",         # lss esp, [ebx]
        "c5 03",            # lds eax, [ebx]
        "c3",               # ret
    ))
    assert [a for _, _, a in actions(t)] == [
        CALLOUT("read_cs"), IDENT, CALLOUT("read_ss"), IDENT, IDENT,
        CALLOUT("pop_sreg"), IDENT, CALLOUT("pop_sreg"), CALLOUT("pop_sreg"),
        IDENT, IDENT, CALLOUT("read_cs"), CALLOUT("read_ss"), CALLOUT("read_cs"),
        CALLOUT("mov_to_sreg"), CALLOUT("mov_to_sreg"), CALLOUT("load_far_pointer"), CALLOUT("load_far_pointer"),
        IDENT]


def test_control_registers_trap_and_end_the_block_general_registers_do_not():
    t = scan(code(
        "89 d8",            # mov eax, ebx
        "0f 20 d8",         # mov eax, cr3
        "89 d8",            # mov eax, ebx
    ) + NOPS)
    assert actions(t) == [(0, 2, IDENT), (2, 3, TRAP)]
    assert t.end is BlockEnd.TRAP
    assert t.successors == (GLA + 5,)   # where the monitor resumes after emulating it


@pytest.mark.parametrize("hex_bytes, disassembly, action", [
    ("0f 22 c0", "mov cr0, eax", TRAP),
    ("0f 22 e0", "mov cr4, eax", TRAP),
    ("0f 21 f8", "mov eax, dr7", TRAP),
    ("0f 23 c0", "mov dr0, eax", TRAP),
    ("e4 60", "in al, 0x60", TRAP),
    ("e6 e9", "out 0xe9, al", TRAP),
    ("ec", "in al, dx", TRAP),
    ("66 ef", "out dx, ax", TRAP),
    ("f3 6c", "rep insb byte ptr es:[edi], dx", TRAP),
    ("f3 6f", "rep outsd dx, dword ptr [esi]", TRAP),
    ("f4", "hlt", TRAP),
    ("0f 01 10", "lgdt [eax]", TRAP),
    ("0f 01 18", "lidt [eax]", TRAP),
    ("0f 00 d0", "lldt ax", TRAP),
    ("0f 00 d8", "ltr ax", TRAP),
    ("0f 01 f0", "lmsw ax", TRAP),
    ("0f 06", "clts", TRAP),
    ("0f 01 38", "invlpg byte ptr [eax]", TRAP),
    ("0f 09", "wbinvd", TRAP),
    ("0f 32", "rdmsr", TRAP),
    ("0f 30", "wrmsr", TRAP),
    ("0f 31", "rdtsc", TRAP),
    ("0f 35", "sysexit", TRAP),
    ("8e c8", "mov cs, eax", TRAP),             # #UD on the CPU, though capstone decodes it
    ("0f 0b", "ud2", TRAP),
    ("ea 78 56 34 12 08 00", "ljmp 8:0x12345678", CALLOUT("far_jmp")),
    ("9a 78 56 34 12 08 00", "lcall 8:0x12345678", CALLOUT("far_call")),
    ("ff 2d 00 20 10 00", "ljmp [0x102000]", CALLOUT("far_jmp")),
    ("ff 1d 00 20 10 00", "lcall [0x102000]", CALLOUT("far_call")),
    ("cb", "retf", CALLOUT("far_ret")),
    ("ca 08 00", "retf 8", CALLOUT("far_ret")),
    ("cf", "iretd", CALLOUT("iret")),
    ("cd 80", "int 0x80", CALLOUT("int")),
    ("cc", "int3", CALLOUT("int")),
    ("0f 34", "sysenter", CALLOUT("sysenter")),
    ("ff e0", "jmp eax", IDENT),
    ("ff 15 00 20 10 00", "call dword ptr [0x102000]", IDENT),
    ("c2 04 00", "ret 4", IDENT),
])
def test_block_ending_instructions(hex_bytes, disassembly, action):
    block = code(hex_bytes)
    t = scan(code("90") + block + NOPS)         # nop first: the instruction ends a block that has begun
    assert actions(t) == [(0, 1, IDENT), (1, len(block), action)], disassembly
    assert t.end is (BlockEnd.TRAP if action == TRAP else BlockEnd.CONTROL_FLOW)
    assert t.end_gla == GLA + 1 + len(block)
    # the monitor resumes after an emulated trap; these go elsewhere (#UD handler, SYSEXIT's EDX)
    falls_through = action == TRAP and disassembly not in ("sysexit", "mov cs, eax", "ud2")
    assert t.successors == ((t.end_gla,) if falls_through else ())


@pytest.mark.parametrize("hex_bytes, disassembly, action", [
    ("0f 02 c3", "lar eax, ebx", CALLOUT("lar")),
    ("0f 03 c3", "lsl eax, ebx", CALLOUT("lsl")),
    ("0f 00 e0", "verr ax", CALLOUT("verr")),
    ("0f 00 e8", "verw ax", CALLOUT("verw")),
    ("fa", "cli", CALLOUT("cli")),
    ("0f a2", "cpuid", IDENT),
    ("63 c3", "arpl bx, ax", IDENT),
    ("8d 04 24", "lea eax, [esp]", IDENT),
    ("f0 0f c1 03", "lock xadd dword ptr [ebx], eax", IDENT),
])
def test_instructions_that_do_not_end_a_block(hex_bytes, disassembly, action):
    block = code(hex_bytes)
    t = scan(block + code("c3"))                # ret
    assert actions(t) == [(0, len(block), action), (len(block), 1, IDENT)], disassembly
    assert t.end is BlockEnd.CONTROL_FLOW


def test_into_falls_through_when_there_is_no_overflow():
    t = scan(code("ce") + NOPS)                 # into
    assert actions(t) == [(0, 1, CALLOUT("into"))]
    assert t.successors == (GLA + 1,)


@pytest.mark.parametrize("hex_bytes, disassembly, successors", [
    ("74 10", "je +0x10", (GLA + 2 + 0x10, GLA + 2)),
    ("0f 85 00 01 00 00", "jne +0x100", (GLA + 6 + 0x100, GLA + 6)),
    ("eb fe", "jmp $", (GLA,)),
    ("e8 fb ff ff ff", "call -5", (GLA,)),
    ("e2 fe", "loop $", (GLA, GLA + 2)),
    ("e3 00", "jecxz +0", (GLA + 2, GLA + 2)),
    ("66 e9 00 00", "jmp +0 with a 16-bit operand size: EIP masked to 16 bits", ((GLA + 4) & 0xFFFF,)),
])
def test_static_successors(hex_bytes, disassembly, successors):
    t = scan(code(hex_bytes) + NOPS)
    assert t.end is BlockEnd.CONTROL_FLOW, disassembly
    assert t.successors == successors, disassembly


def test_16_bit_code():
    cs_base = 0xF0000
    eip = 0xFFE0
    t = scan(code(
        "9c",               # pushf
        "fa",               # cli
        "8e d8",            # mov ds, ax
        "66 9c",            # pushfd
        "0f 20 c0",         # mov eax, cr0
    ) + NOPS, gla=cs_base + eip, code_size=16, cs_base=cs_base)
    assert actions(t) == [(0, 1, CALLOUT("pushf")), (1, 1, CALLOUT("cli")), (2, 2, CALLOUT("mov_to_sreg")),
                          (4, 2, CALLOUT("pushf")), (6, 3, TRAP)]
    # a near jump in 16-bit code wraps in IP, inside the code segment
    t = scan(code("eb 20") + NOPS, gla=cs_base + 0xFFF0, code_size=16, cs_base=cs_base)   # jmp +0x20
    assert t.successors == (cs_base + 0x0012,)
    t = scan(code("cf") + NOPS, gla=cs_base + eip, code_size=16, cs_base=cs_base)       # iret
    assert actions(t) == [(0, 1, CALLOUT("iret"))]


def test_undecodable_bytes_trap_with_unknown_length():
    t = scan(code(
        "90",               # nop
        "0f 04",            # (no instruction)
    ) + NOPS)
    assert actions(t) == [(0, 1, IDENT), (1, UNKNOWN_LENGTH, TRAP)]
    assert t.end is BlockEnd.UNDECODABLE
    assert t.end_gla == GLA + 1
    assert t.successors == ()


def test_too_long_instruction_is_undecodable():
    t = scan(code(15 * "66 " + "90") + NOPS)            # 16 bytes: #GP on the CPU
    assert actions(t) == [(0, UNKNOWN_LENGTH, TRAP)]
    assert t.end is BlockEnd.UNDECODABLE


def test_truncated_code_traps_and_is_not_cached():
    scanner = Scanner()
    t = scan(code("90", "0f"), scanner=scanner)         # nop; half an instruction
    assert actions(t) == [(0, 1, IDENT), (1, UNKNOWN_LENGTH, TRAP)]
    assert t.end is BlockEnd.TRUNCATED
    scan(code("90", "0f"), scanner=scanner)
    assert scanner.stats["cache_hits"] == 0
    assert scanner.stats["translations_cached"] == 0


def test_max_instructions():
    t = scan(NOPS, scanner=Scanner(max_insns=4))
    assert actions(t) == [(k, 1, IDENT) for k in range(4)]
    assert t.end is BlockEnd.MAX_INSNS
    assert t.successors == (GLA + 4,)


def test_stops_at_the_end_of_the_page():
    gla = 0x00101FFC
    t = scan(NOPS, gla=gla)
    assert len(t.insns) == 4
    assert t.end is BlockEnd.PAGE_BOUNDARY
    assert t.end_gla == 0x00102000
    assert t.successors == (0x00102000,)
    assert t.gpa_pages == (0x101,)


def test_an_instruction_crossing_the_page_end_ends_the_block_and_reads_both_pages():
    gla = 0x00101FFE
    block = code(
        "90",               # nop
        "b8 78 56 34 12",   # mov eax, 0x12345678 (4 bytes of it on the next page)
    ) + NOPS
    scanner = Scanner()
    t = scanner.scan(block, gla, gla, 32, next_gpa_page=0x777)
    assert actions(t) == [(0, 1, IDENT), (1, 5, IDENT)]
    assert t.end is BlockEnd.PAGE_BOUNDARY
    assert t.gpa_pages == (0x101, 0x777)
    assert scanner.invalidate_page(0x777) == 1          # a write to the second page drops it too
    # without the next page (not mapped): the engine's fetch will fault there
    t = scanner.scan(block, gla, gla, 32)
    assert actions(t) == [(0, 1, IDENT), (1, UNKNOWN_LENGTH, TRAP)]
    assert t.end is BlockEnd.TRUNCATED
    assert t.gpa_pages == (0x101,)


def test_cache_hit_and_invalidation():
    scanner = Scanner()
    block = code("fa", "90", "fb", "c3")                 # cli; nop; sti; ret
    first = scanner.scan(block, GLA, 0x5000, 32)
    assert scanner.scan(block, GLA, 0x5000, 32) is first
    assert scanner.stats["cache_hits"] == 1
    assert scanner.stats["blocks_scanned"] == 1
    assert scanner.scan(block, GLA, 0x5000, 16) is not first        # another mode, another translation
    assert scanner.invalidate_page(0x6) == 0
    assert scanner.invalidate_page(0x5) == 2
    assert scanner.invalidate_page(0x5) == 0
    again = scanner.scan(block, GLA, 0x5000, 32)
    assert again is not first and again == first
    # the same physical code seen at another linear address is scanned for that address
    alias = scanner.scan(block, 0xC0000000, 0x5000, 32)
    assert alias.gla == 0xC0000000 and alias.insns[0].gla == 0xC0000000
    stats = scanner.stats
    assert (stats["blocks_scanned"], stats["cache_hits"], stats["cache_misses"]) == (4, 1, 4)
    assert stats["translations_invalidated"] == 2
    assert (stats["insns_scanned"], stats["insns_ident"], stats["insns_callout"], stats["insns_trap"]) == (16, 8, 8, 0)
    assert (stats["callout_cli"], stats["callout_sti"], stats["callout_popf"]) == (4, 4, 0)


def test_bad_arguments():
    with pytest.raises(ConfigError):
        Scanner().scan(NOPS, GLA, GLA, 64)
    with pytest.raises(ConfigError):
        Scanner().scan(NOPS, GLA, GLA + 1, 32)           # gla and gpa must share their page offset
    with pytest.raises(ConfigError):
        Scanner(max_insns=0)


def text_section(elf_path):
    """(sh_addr, bytes) of the .text section of an ELF32 file (System V gABI section header layout)."""
    data = elf_path.read_bytes()
    (e_shoff,) = struct.unpack_from("<I", data, 32)
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", data, 46)
    headers = [struct.unpack_from("<10I", data, e_shoff + k * e_shentsize) for k in range(e_shnum)]
    names_offset = headers[e_shstrndx][4]
    for sh_name, _type, _flags, sh_addr, sh_offset, sh_size, *_ in headers:
        start = names_offset + sh_name
        if data[start:data.index(b"\0", start)] == b".text":
            return sh_addr, data[sh_offset:sh_offset + sh_size]
    raise AssertionError(f"{elf_path}: no .text section")


@pytest.mark.parametrize("name", list(workloads.WORKLOADS))
def test_workload_code_has_only_its_port_writes_cli_and_hlt(name):
    """A linear sweep of the guest's .text, block after block: the only non-IDENT instructions are the debug-port
    OUTs (console 0xE9, exit 0xF4: `out 0xe9, al`, `out 0xf4, eax` and _start's `out dx, eax`) and the
    `cli; hlt` stops of _start and wl_exit."""
    text_gla, text = text_section(workloads.guest_elf(name))
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)
    scanner = Scanner()
    gla = text_gla
    sensitive = []
    while gla < text_gla + len(text):
        t = scanner.scan(text[gla - text_gla:], gla, gla, 32, next_gpa_page=(gla >> 12) + 1)
        assert t.end not in (BlockEnd.UNDECODABLE, BlockEnd.TRUNCATED), hex(gla)
        for insn in t.insns:
            if insn.action != IDENT:
                decoded = next(md.disasm(text[insn.gla - text_gla:][:insn.length], insn.gla))
                sensitive.append((f"{decoded.mnemonic} {decoded.op_str}".strip(), insn.action))
        gla = t.end_gla
    assert gla == text_gla + len(text)
    assert set(sensitive) == {("out dx, eax", TRAP), ("out 0xe9, al", TRAP), ("out 0xf4, eax", TRAP),
                              ("cli", CALLOUT("cli")), ("hlt", TRAP)}
    assert [s for s, _ in sensitive].count("hlt") == 2
    stats = scanner.stats
    assert stats["insns_callout"] == stats["callout_cli"] == 2
    assert stats["insns_trap"] == 5
    assert stats["insns_ident"] > 500
