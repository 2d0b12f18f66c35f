"""What RDTSC counts (Machine's ``tsc=``): guest instructions (the default: the nanobenchmarks'
measure), or the machine's clock, so that a kernel calibrating its TSC against the PIT sees
one rate (the time an I/O cycle or a HLT lets pass is in it)."""
import time

import pytest

from vmcore import Exit, Machine
from vmcore.errors import ConfigError

# rdtsc ; mov esi, eax ; in al, 0x71 (CMOS: an ISA I/O cycle, 1 us of virtual time) ; rdtsc ;
# sub eax, esi ; hlt
GUEST = bytes.fromhex("0f 31 89 c6 e4 71 0f 31 29 f0 f4")


def run(**kw):
    m = Machine(memory_mb=4, mode="bare", **kw)
    m.mem_write(0x10000, GUEST)
    m.reg_write("eip", 0x10000)
    assert m.run(count=100).exit is Exit.HLT
    return m.reg_read("eax")


def test_tsc_counts_instructions_by_default():
    assert run() == 3 and run(tsc="instructions") == 3


def test_tsc_follows_the_virtual_clock():
    io_units = Machine(memory_mb=4).clock.io_units          # 1 us at 119.3 M units per second
    assert run(tsc="clock") == 3 + io_units


def test_tsc_follows_the_host_clock_in_ns():
    m = Machine(memory_mb=4, mode="bare", tsc="clock", clock="host")
    code = bytes.fromhex("0f 31 89 c6 89 d7 f4")             # rdtsc ; mov esi, eax ; mov edi, edx ; hlt
    m.mem_write(0x10000, code)
    m.reg_write("eip", 0x10000)
    before = m.clock.now()
    assert m.run(count=100).exit is Exit.HLT
    after = m.clock.now()
    tsc = m.reg_read("edi") << 32 | m.reg_read("esi")
    assert before <= tsc <= after


def test_load_linux_switches_an_unset_tsc_to_the_clock(tmp_path):
    from bzimage_guest import bzimage
    p = tmp_path / "bzImage"
    p.write_bytes(bzimage())
    m = Machine(memory_mb=32)
    m.load_linux(p)
    assert m._tsc_follows_clock
    m = Machine(memory_mb=32, tsc="instructions")
    m.load_linux(p)
    assert not m._tsc_follows_clock
    with pytest.raises(ConfigError):
        Machine(memory_mb=4, tsc="cycles")
