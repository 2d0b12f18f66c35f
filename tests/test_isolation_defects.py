"""Issue 15: the defects a hostile guest or caller found, one focused test each. The guests themselves
are in tests/hostile_cases_*.py (the hostile-guest suite runs them in every mode); here are the checks
that need the engine directly, or a reference outside the guest.
"""
from __future__ import annotations

import numpy as np
import pytest

import vmcore
from vmcore._core._core import Engine

import hostile_cases_engine as engine_cases
import hostile_cases_monitor as monitor_cases


# ---- item 8: the internal Engine refuses what would reach past its arrays ------------------------

@pytest.mark.parametrize("size", [4096 + 1, 65536 + 0x800, (1 << 20) - 1])
def test_engine_refuses_ram_that_is_not_whole_pages(size):
    with pytest.raises(ValueError, match="whole number of 4 KiB pages"):
        Engine(np.zeros(size, dtype=np.uint8))


def test_engine_accepts_whole_pages():
    Engine(np.zeros(1 << 16, dtype=np.uint8))


@pytest.mark.parametrize("action", [0, -1, 3 + 32, 255, 1000])
def test_xlat_install_refuses_an_unknown_action(action):
    m = vmcore.Machine(memory_mb=2, mode="bt")
    with pytest.raises((ValueError, OverflowError)):
        m._engine.xlat_install(0x1000, action, 1)


def test_xlat_install_takes_every_known_action():
    m = vmcore.Machine(memory_mb=2, mode="bt")
    for action in range(1, 3 + 32):
        assert m._engine.xlat_install(0x1000, action, 1)


# ---- item 3: the scanner reads code through the fetch path ---------------------------------------

def test_code_bytes_reads_the_rom_where_the_fetch_does(tmp_path):
    rom = tmp_path / "bios.rom"
    image = bytes(range(256)) * 256                     # 64 KiB
    rom.write_bytes(image)
    m = vmcore.Machine(memory_mb=4, mode="bt")
    m.load_bios(rom)
    m.mem_write(0x0F0000 - 0x1000, b"\x11" * 16)        # RAM below the ROM's low window, behind PAM
    engine = m._engine
    assert engine.code_bytes(0xFFFF0000, 16) == image[:16]          # the ROM at the top of 4 GiB
    assert engine.code_bytes(0x0F0010, 16) == image[0x10:0x20]      # its low window, over zeroed RAM
    assert engine.code_bytes(0x0EF000, 4) == b"\xff" * 4            # PAM6 = 0: the PCI side, nobody there
    m.host_bridge.write(0x5F, 1, 0x11)                                 # PAM6: 0xE8000-0xEFFFF read from DRAM
    assert engine.code_bytes(0x0EF000, 4) == b"\x11" * 4            # RAM
    assert engine.code_bytes(0x500000, 4) == b"\xff" * 4            # nothing there: all ones


# ---- item 5: INS whose store faults into a triple fault, against OUTS -------------------------------

@pytest.mark.parametrize("mode", ["bare", "bt", "trap"])
def test_ins_triple_fault_ends_the_run_like_outs(mode):
    m = vmcore.Machine(memory_mb=4, mode=mode)
    monitor_cases.setup_ins_triple_fault(m)
    r = m.run(count=10_000, timeout=10)
    assert r.exit is vmcore.Exit.SHUTDOWN, r.reason
    assert r.exception[0] == 14 and r.exception[2] == monitor_cases.CODE + 14 + 9, r.exception


# ---- item 1: bounded hash chains ---------------------------------------------------------------

def test_one_ip_under_many_cs_bases_spreads_over_the_hash():
    m = vmcore.Machine(memory_mb=4, mode="bare")
    engine_cases.setup_cs_bases_at_ip0(m)
    r = m.run(count=61184 * 3)
    assert r.exit is vmcore.Exit.BUDGET
    s = m.stats
    assert s["blocks_decoded"] == 61184, s["blocks_decoded"]      # each once: the later passes hit
    assert s["chain_evictions"] == 0


# ---- issue 14: code in a paged ROM page hits the block cache -------------------------------------

def test_a_loop_in_paged_rom_runs_1e8_instructions_from_a_handful_of_blocks():
    """The loop (an indirect JMP with three targets: one of them always goes through a lookup) in a ROM
    page with paging on. Before the fix every lookup there missed and decoded a new block."""
    m = vmcore.Machine(memory_mb=4, mode="bare")
    engine_cases.setup_paged_rom_loop(m)
    r = m.run(count=10**8, timeout=120)
    assert r.exit is vmcore.Exit.BUDGET and r.instructions == 10**8, r.reason
    s = m.stats
    assert s["blocks_decoded"] < 100, s["blocks_decoded"]
    assert s["block_lookups"] > 10**6          # the third target really is looked up each pass
    assert s["chain_evictions"] == 0
