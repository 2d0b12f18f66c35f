"""Memory-mapped I/O exits (vmcore/_core/memory.pxi "Memory-mapped I/O", vmcore/devices/mmio.py):
a guest access to an MMIO region leaves run() before its instruction retires, the device answers,
and the re-executed instruction takes the answer. Each guest runs under both engines and in the
three modes, with paging off and (bt, trap: shadow page tables) on."""
import struct

import pytest
from nasm_guests import assemble_text

import vmcore
from vmcore import Exit
from vmcore.devices.mmio import MmioDevice
from vmcore.errors import BusError

DEV_GPA = 0xE0000000          # two pages of a recording device, far above RAM
CODE, STACK, DATA, PD = 0x1000, 0x8000, 0x9000, 0x10000
ENGINES = ("interp", "jit")
MODES = ("bare", "bt", "trap")


class Recorder(MmioDevice):
    """Registers that read as 0xA0000000 | offset (a write stores a value read back later), and
    the list of every access in order."""

    def __init__(self):
        super().__init__()
        self.log = []
        self.regs = {}

    def read(self, offset, size):
        self.log.append(("r", offset, size))
        value = self.regs.get(offset, 0xA0000000 | offset)
        return value & ((1 << (8 * size)) - 1)

    def write(self, offset, size, value):
        self.log.append(("w", offset, size, value))
        self.regs[offset] = value


GDT_SETUP = """
bits 32
org 0x1000
start:
    lgdt [gdtr]
    jmp 0x08:.flat
.flat:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, 0x8000
"""

PAGING_ON = """
    ; page directory at 0x10000: 4 MiB pages, identity for 0..4 MiB and the device
    mov edi, 0x10000
    xor eax, eax
    mov ecx, 1024
    rep stosd
    mov dword [0x10000], 0x00000083                         ; 0: present, writable, 4 MiB
    mov dword [0x10000 + (0xE0000000 >> 22) * 4], 0xE0000083  ; the device's 4 MiB
    mov eax, cr4
    or eax, 0x10                                            ; CR4.PSE
    mov cr4, eax
    mov eax, 0x10000
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax
    jmp .paged
.paged:
"""

TAIL = """
    cli
    hlt
align 8
gdt: dq 0
    dq 0x00CF9A000000FFFF
    dq 0x00CF92000000FFFF
gdtr: dw 23
    dd gdt
"""

BODY = """
    mov esi, 0xE0000000
    mov eax, [esi]                  ; read: 0xA0000000
    mov [0x9000], eax
    mov ebx, 0x12345678
    mov [esi + 4], ebx              ; write
    mov ecx, 5
    add [esi + 8], ecx              ; read-modify-write: 0xA0000008 + 5
    movzx edx, word [esi + 0x10]    ; 16-bit read
    mov [0x9004], edx
    mov al, [esi + 0x21]            ; 8-bit read
    mov [0x9008], al
    mov edi, 0x9010                 ; MOVSD from the device to RAM, twice
    mov ecx, 2
    cld
    rep movsd
    mov edi, 0xE0000040             ; REP STOSD to the device, three dwords
    mov eax, 0x55AA55AA
    mov ecx, 3
    rep stosd
    push dword [0xE0000004]         ; push from the device (the value written above)
    pop dword [0x9018]
    mov eax, [0xE0000FFE]           ; crosses into the device's second page: four byte reads
    mov [0x901C], eax
    mov ecx, 1000                   ; a loop hot enough for the JIT: each read is an exit
    xor edx, edx
.loop:
    add edx, [0xE0000100]
    dec ecx
    jnz .loop
    mov [0x9020], edx
"""


def build(paging: bool) -> bytes:
    return assemble_text(GDT_SETUP + (PAGING_ON if paging else "") + BODY + TAIL,
                         "mmio-paging" if paging else "mmio-flat")


def boot(code: bytes, engine: str, mode: str) -> tuple:
    m = vmcore.Machine(memory_mb=4, engine=engine, mode=mode)
    dev = Recorder()
    m.mmio.attach(DEV_GPA, 0x2000, dev, name="recorder")
    if engine == "jit":
        m._engine.jit_paged_min_interval = 0    # paged code translated too (the JIT's paged views)
    m.mem_write(CODE, code)
    m.reg_write("eip", CODE)
    return m, dev


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("paging", [False, True])
def test_guest_accesses_reach_the_device_in_order(engine, mode, paging):
    m, dev = boot(build(paging), engine, mode)
    r = m.run(count=10 ** 6, timeout=20)
    assert r.exit is Exit.HLT, r.reason
    words = struct.unpack("<9I", m.mem_read(DATA, 36))
    assert words[0] == 0xA0000000
    assert words[1] == 0x0010                       # movzx of the 16-bit register at 0x10
    assert words[2] & 0xFF == 0x21                  # the byte at 0x21: the low byte of 0xA0000021
    assert words[4:6] == (0xA0000000, 0x12345678)   # MOVSD from offsets 0 and 4 (4 was written before)
    assert words[6] == 0x12345678                   # PUSH [mmio] got the value written before
    assert words[8] == 1000 * 0xA0000100 & 0xFFFFFFFF
    expect = [("r", 0, 4), ("w", 4, 4, 0x12345678), ("r", 8, 4), ("w", 8, 4, 0xA000000D), ("r", 0x10, 2),
              ("r", 0x21, 1), ("r", 0, 4), ("r", 4, 4),
              ("w", 0x40, 4, 0x55AA55AA), ("w", 0x44, 4, 0x55AA55AA), ("w", 0x48, 4, 0x55AA55AA),
              ("r", 4, 4), ("r", 0xFFE, 1), ("r", 0xFFF, 1), ("r", 0x1000, 1), ("r", 0x1001, 1)]
    assert dev.log[:len(expect)] == expect
    assert dev.log[len(expect):] == [("r", 0x100, 4)] * 1000
    # the page-crossing read, byte by byte: the low bytes of 0xA0000FFE, 0xA0000FFF, 0xA0001000, 0xA0001001
    assert words[7] == 0x0100FFFE
    assert m.stats["exits_mmio"] == len(dev.log)
    assert m.stats["mmio_open_bus"] == 0
    if engine == "jit":
        assert m.stats["jit_faults_unmapped"] > 0       # translated code left to the interpreter there


@pytest.mark.parametrize("engine", ENGINES)
def test_instruction_is_not_retired_until_the_device_answers(engine):
    """The exit comes before the instruction: EIP still names it, the destination is unchanged,
    and the instruction count has not moved past it."""
    code = assemble_text(GDT_SETUP + "    mov eax, 7\n    mov eax, [0xE0000010]\n    mov ebx, eax\n" + TAIL,
                         "mmio-before")
    m, dev = boot(code, engine, "bare")
    eng = m._engine
    code_at = eng.run(10 ** 5)
    assert code_at == 11 and eng.mmio_request() == (DEV_GPA + 0x10, 4, False, 0)
    assert m.reg_read("eax") == 7
    assert m.mem_read(m.reg_read("eip"), 5) == bytes.fromhex("a1 10 00 00 e0")   # mov eax, [moffs32]
    before = eng.icount
    eng.mmio_complete(0xCAFEF00D)
    assert eng.run(1) == 3                           # the budget of one instruction: it retires
    assert m.reg_read("eax") == 0xCAFEF00D and eng.icount == before + 1


@pytest.mark.parametrize("engine", ENGINES)
def test_resuming_without_an_answer_exits_again(engine):
    code = assemble_text(GDT_SETUP + "    mov eax, [0xE0000010]\n" + TAIL, "mmio-again")
    m, dev = boot(code, engine, "bare")
    eng = m._engine
    assert eng.run(10 ** 5) == 11
    eip = eng.eip
    assert eng.run(10 ** 5) == 11 and eng.eip == eip
    assert eng.stats()["mmio_reads"] == 1            # one access, asked for twice


def test_descriptor_table_in_mmio_reads_as_open_bus():
    """Implicit supervisor accesses (here the GDT read by a segment load) are not exits: MMIO
    reads as all ones there (a present, readable, conforming code descriptor with base FFFFFFFFh)
    and nothing reaches the device."""
    code = assemble_text(GDT_SETUP + """
    lgdt [gdtr2]
    mov ax, 0x10
    mov ds, ax
    hlt
gdtr2: dw 23
    dd 0xE0000000
""" + TAIL, "mmio-gdt")
    m, dev = boot(code, "interp", "bare")
    r = m.run(count=10 ** 5)
    assert r.exit is Exit.HLT
    assert m._engine.seg_get(3)[:2] == (0x10, 0xFFFFFFFF)
    assert dev.log == [] and m.stats["mmio_open_bus"] > 0


def test_mapping_checks():
    m = vmcore.Machine(memory_mb=4, engine="interp")
    with pytest.raises(BusError, match="overlaps guest RAM"):
        m.mmio.attach(0x200000, 0x1000, Recorder(), name="low")
    with pytest.raises(BusError, match="whole 4 KiB pages"):
        m.mmio.attach(0xE0000800, 0x1000, Recorder(), name="odd")
    m.mmio.attach(0xE0000000, 0x1000, Recorder(), name="a")
    with pytest.raises(BusError, match="overlaps the one at 0xe0000000"):
        m.mmio.attach(0xE0000000, 0x2000, Recorder(), name="b")
    for k in range(7):
        m.mmio.attach(0xE0010000 + k * 0x1000, 0x1000, Recorder(), name=f"r{k}")
    with pytest.raises(BusError, match="no room"):
        m.mmio.attach(0xE0100000, 0x1000, Recorder(), name="ninth")


MULTI = """
    mov esi, 0xE0000000             ; REPE CMPSD between two device ranges: two reads an element
    mov edi, 0xE0000100
    mov ecx, 3
    cld
    repe cmpsd
    pushfd
    pop dword [0x9000]
    mov [0x9004], ecx
    mov eax, 0x77
    xchg [0xE0000200], eax          ; a locked read-modify-write
    mov [0x9008], eax
    mov esp, 0xE0000400             ; PUSHAD onto the device: eight writes, more than one
    pushad                          ; instruction may make (MMIO_LOG = 4): the rest vanish
    mov esp, 0x8000
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_instructions_with_several_mmio_accesses(engine):
    m, dev = boot(assemble_text(GDT_SETUP + MULTI + TAIL, "mmio-multi"), engine, "bare")
    dev.regs.update({0: 1, 0x100: 1, 4: 2, 0x104: 2, 8: 3, 0x108: 9, 0x200: 0x55})
    r = m.run(count=10 ** 5)
    assert r.exit is Exit.HLT, r.reason
    eflags, ecx, xchg_old = struct.unpack("<3I", m.mem_read(DATA, 12))
    assert not eflags & 0x40 and ecx == 0           # the third pair differs: ZF = 0, ECX = 0
    assert xchg_old == 0x55 and dev.regs[0x200] == 0x77
    assert dev.log[:8] == [("r", 0, 4), ("r", 0x100, 4), ("r", 4, 4), ("r", 0x104, 4), ("r", 8, 4),
                           ("r", 0x108, 4), ("r", 0x200, 4), ("w", 0x200, 4, 0x77)]
    # PUSHAD stores EAX first, at ESP - 4
    assert [entry[:2] for entry in dev.log[8:]] == [("w", 0x3FC), ("w", 0x3F8), ("w", 0x3F4), ("w", 0x3F0)]
    assert m.stats["mmio_open_bus"] == 4
