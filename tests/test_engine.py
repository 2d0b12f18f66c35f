"""Engine contract: exits, budgets, the block cache, self-modifying code, open bus."""
import struct

import pytest

import vmcore
from vmcore import Exit

CODE = 0x1000


def machine(code: bytes, **regs) -> vmcore.Machine:
    m = vmcore.Machine(memory_mb=4)
    m.mem_write(CODE, code)
    m.reg_write("eip", CODE)
    m.reg_write("esp", 0x8000)
    for name, value in regs.items():
        m.reg_write(name, value)
    return m


# b9 10 27 00 00   mov ecx, 10000
# 01 c8            add eax, ecx        <- loop
# 49               dec ecx
# 75 fb            jne loop
# f4               hlt
COUNT_LOOP = bytes.fromhex("b910270000 01c8 49 75fb f4")


def test_loop_result_and_instruction_count():
    m = machine(COUNT_LOOP)
    r = m.run()
    assert r.exit is Exit.HLT
    assert m.reg_read("eax") == sum(range(1, 10001))
    assert r.instructions == 1 + 3 * 10000 + 1
    assert m.reg_read("eip") == CODE + len(COUNT_LOOP)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 100, 29999, 30001])
def test_budget_is_exact(count):
    """count ends the run after exactly that many instructions, inside a block too."""
    m = machine(COUNT_LOOP)
    r = m.run(count=count)
    assert r.exit is Exit.BUDGET
    assert r.instructions == count
    # continuing from there reaches the same end state as one uninterrupted run
    r2 = m.run()
    assert r2.exit is Exit.HLT
    assert r.instructions + r2.instructions == 30002
    assert m.reg_read("eax") == sum(range(1, 10001))


def test_single_steps_equal_block_run():
    m1 = machine(COUNT_LOOP, ecx=0)
    m1.run()
    m2 = machine(COUNT_LOOP, ecx=0)
    steps = 0
    while m2.run(count=1).exit is Exit.BUDGET:
        steps += 1
    assert steps + 1 == 30002
    for reg in ("eax", "ecx", "eip", "eflags"):
        assert m1.reg_read(reg) == m2.reg_read(reg), reg


def test_until_stops_before_address_mid_block():
    m = machine(COUNT_LOOP)
    m.run(count=10)      # the loop block is cached now
    r = m.run(until=CODE + 7)    # the `dec ecx` inside the loop block
    assert r.exit is Exit.UNTIL
    assert m.reg_read("eip") == CODE + 7


def test_timeout_ends_a_guest_that_never_halts():
    m = machine(bytes.fromhex("ebfe"))      # eb fe   jmp $
    r = m.run(timeout=0.2)
    assert r.exit is Exit.TIMEOUT
    assert r.instructions > 1000


def test_budget_ends_a_guest_that_never_halts():
    m = machine(bytes.fromhex("ebfe"))
    r = m.run(count=123457)
    assert r.exit is Exit.BUDGET
    assert r.instructions == 123457


def test_self_modifying_code_in_the_running_block():
    # c6 05 0c 10 00 00 42   mov byte [0x100c], 0x42  ; patches the imm8 of the next instruction
    # 90                     nop
    # 90 90 90               nop nop nop
    # b0 00                  mov al, 0               ; at 0x100b: becomes mov al, 0x42
    # f4                     hlt
    code = bytes.fromhex("c6050c10000042 90 909090 b000 f4")
    assert code[0xB:0xD] == b"\xb0\x00"
    m = machine(code)
    r = m.run()
    assert r.exit is Exit.HLT
    assert m.reg_read("al") == 0x42
    assert m.stats["smc_invalidations"] >= 1


def test_self_modifying_code_in_a_cached_block():
    # a loop runs a block twice; between the runs the guest rewrites it
    # 00: b0 01          mov al, 1        <- target block (patched to mov al, 2)
    # 02: fe c3          inc bl
    # 04: 80 fb 02       cmp bl, 2
    # 07: 74 09          je 0x12
    # 09: c6 05 01 10 00 00 02   mov byte [0x1001], 2
    # 10: eb ee          jmp 0x00
    # 12: f4             hlt
    code = bytes.fromhex("b001 fec3 80fb02 7409 c60501100000 02 ebee f4")
    m = machine(code)
    assert m.run().exit is Exit.HLT
    assert m.reg_read("al") == 2


def test_host_write_invalidates_decoded_code():
    m = machine(bytes.fromhex("b001f4"))      # mov al, 1 ; hlt
    m.run()
    assert m.reg_read("al") == 1
    m.mem_write(CODE, bytes.fromhex("b007f4"))
    m.reg_write("eip", CODE)
    m.run()
    assert m.reg_read("al") == 7


def test_unmapped_memory_reads_all_ones_and_drops_writes():
    # a1 00 00 00 80   mov eax, [0x80000000]
    # c7 05 00 00 00 80 11 11 11 11   mov dword [0x80000000], 0x11111111
    # f4
    m = machine(bytes.fromhex("a100000080 c70500000080 11111111 f4"))
    r = m.run()
    assert r.exit is Exit.HLT
    assert m.reg_read("eax") == 0xFFFFFFFF
    assert m.stats["unmapped_reads"] == 1
    assert m.stats["unmapped_writes"] == 1


def test_page_crossing_access():
    m = machine(bytes.fromhex("8b05fe2f0000 f4"))   # mov eax, [0x2ffe]
    m.mem_write(0x2FFC, bytes(range(1, 9)))
    m.run()
    assert m.reg_read("eax") == struct.unpack("<I", bytes(range(3, 7)))[0]


def test_jump_into_unmapped_memory_is_a_clean_shutdown():
    # b8 00 00 00 90   mov eax, 0x90000000 ; ff e0   jmp eax
    m = machine(bytes.fromhex("b800000090 ffe0"))
    r = m.run(count=1000)
    assert r.exit is Exit.SHUTDOWN
    assert r.exception[0] == 6           # all-ones bytes (ff ff) decode as an invalid FF /7
    assert r.exception[2] == 0x90000000
    assert "outside guest RAM" in r.reason


def test_undefined_opcode_is_ud_then_triple_fault_without_idt():
    m = machine(bytes.fromhex("90 0f0b"))     # nop ; ud2
    r = m.run()
    assert r.exit is Exit.SHUTDOWN
    assert r.exception == (6, None, CODE + 1)
    assert "#UD" in r.reason and "triple fault" in r.reason


def test_exception_delivered_through_idt():
    """With an IDT, #DE reaches the guest's handler with EFLAGS, CS, EIP pushed (SDM Vol. 3 §6.12.1)."""
    idt = 0x3000
    handler = 0x2000
    gate = struct.pack("<HHBBH", handler & 0xFFFF, 0x08, 0, 0x8E, handler >> 16)   # 32-bit interrupt gate
    # 31 c9   xor ecx, ecx ; f7 f1   div ecx ; f4
    m = machine(bytes.fromhex("31c9 f7f1 f4"))
    gdt = bytes(8) + struct.pack("<HHBBBB", 0xFFFF, 0, 0, 0x9A, 0xCF, 0)    # 0x08: flat ring-0 code
    m.mem_write(0x500, gdt)
    m._engine.gdtr_set(0x500, len(gdt) - 1)
    m.mem_write(idt, gate)
    m.mem_write(handler, bytes.fromhex("f4"))           # the handler halts
    m._engine.idtr_set(idt, 8 * 32 - 1)
    r = m.run()
    assert r.exit is Exit.HLT
    assert m.reg_read("eip") == handler + 1
    esp = m.reg_read("esp")
    eip, cs, eflags = struct.unpack("<III", m.mem_read(esp, 12))
    assert (eip, cs) == (CODE + 2, 0x08)           # a fault: the faulting instruction's address
    assert esp == 0x8000 - 12


def test_unimplemented_instruction_is_a_named_exit():
    # 0f 00 c0   sldt eax... is implemented; a 16-bit TSS is not: jmp to one
    gdt = bytes(8) + struct.pack("<HHBBBB", 0x2B, 0x2000, 0, 0x81, 0, 0)   # 0x08: 16-bit TSS
    m = machine(bytes.fromhex("ea 00 00 00 00 08 00"))     # jmp 0x08:0
    m.mem_write(0x500, gdt)
    m._engine.gdtr_set(0x500, len(gdt) - 1)
    r = m.run()
    assert r.exit is Exit.UNIMPLEMENTED
    assert "jmp" in r.reason
    assert m.reg_read("eip") == CODE          # stopped before it, nothing executed


def test_io_hooks_and_port_bus():
    seen = []
    # b0 41 e6 80   mov al, 0x41 ; out 0x80, al
    # e4 60         in al, 0x60
    # 66 ba f8 03   mov dx, 0x3f8... (then in al, dx from an unclaimed port)
    # ec            in al, dx
    m = machine(bytes.fromhex("b041e680 e460 88c3 66ba0001 ec f4"))
    m.hook_add(vmcore.HOOK_IO_OUT, lambda m, port, size, value: seen.append((port, size, value)), begin=0x80, end=0x80)
    m.hook_add(vmcore.HOOK_IO_IN, lambda m, port, size: 0x5A, begin=0x60, end=0x60)
    r = m.run()
    assert r.exit is Exit.HLT
    assert seen == [(0x80, 1, 0x41)]
    assert m.reg_read("bl") == 0x5A
    assert m.reg_read("al") == 0xFF            # port 0x100 is unclaimed: all ones
    assert m.stats["exits_io"] == 3


def test_hook_exception_is_reraised_and_machine_survives():
    def bad(m, port, size, value):
        raise RuntimeError("hook failed")
    m = machine(bytes.fromhex("e680 f4"))
    m.hook_add(vmcore.HOOK_IO_OUT, bad)
    with pytest.raises(RuntimeError, match="hook failed"):
        m.run()
    assert m.reg_read("eip") == CODE + 2


def test_debug_exit_and_console():
    # b0 48 e6 e9  mov al,'H'; out 0xe9, al ; b0 69 e6 e9 ; b8 05 00 00 00 ; e7 f4  out 0xf4, eax
    m = machine(bytes.fromhex("b048e6e9 b069e6e9 b805000000 e7f4 f4"))
    r = m.run()
    assert r.exit is Exit.DEBUG_EXIT
    assert r.exit_code == (5 << 1) | 1
    assert r.console == "Hi"


def test_bad_configuration():
    with pytest.raises(vmcore.ConfigError):
        vmcore.Machine(memory_mb=0)
    with pytest.raises(vmcore.ConfigError):
        vmcore.Machine(mode="vmx")
    with pytest.raises(vmcore.GuestMemoryError):
        vmcore.Machine(memory_mb=2).mem_read(2 << 20, 1)
    with pytest.raises(vmcore.ConfigError):
        vmcore.Machine(memory_mb=2).reg_read("rax")


def livelock_machine():
    """Every vector's gate points at a ud2: #UD, deliver, #UD at the handler... no
    instruction ever retires, as on hardware, but the run must still end."""
    m = machine(bytes.fromhex("0f0b"))                       # ud2
    gdt = bytes(8) + struct.pack("<HHBBBB", 0xFFFF, 0, 0, 0x9A, 0xCF, 0)
    m.mem_write(0x500, gdt)
    m._engine.gdtr_set(0x500, len(gdt) - 1)
    gate = struct.pack("<HHBBH", CODE, 0x08, 0, 0x8E, 0)       # every vector -> the ud2
    m.mem_write(0x3000, gate * 32)
    m._engine.idtr_set(0x3000, 32 * 8 - 1)
    # a 16-bit stack at 1 MiB: SP wraps inside it, so the frames never reach the tables
    m._engine.seg_set(2, 0x10, 0x100000, 0xFFFF, 0x0093)
    return m


def test_exception_livelock_ends_by_count():
    r = livelock_machine().run(count=10_000)
    assert r.exit is Exit.BUDGET
    assert r.instructions == 0


def test_exception_livelock_ends_by_timeout():
    r = livelock_machine().run(timeout=0.3)
    assert r.exit is Exit.TIMEOUT


def test_a_dropped_machine_is_freed_at_once():
    """No reference cycles between the machine and its devices: guest RAM is released when
    the last reference goes, without waiting for the cycle collector."""
    import gc
    import weakref
    gc.disable()
    try:
        m = vmcore.Machine(memory_mb=16)
        m.mem_write(CODE, bytes.fromhex("b0 41 e6 e9 f4"))   # mov al, 'A' ; out 0xe9, al ; hlt
        m.reg_write("eip", CODE)
        m.run()
        ref = weakref.ref(m)
        del m
        assert ref() is None
    finally:
        gc.enable()
