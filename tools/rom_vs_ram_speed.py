"""Issue 14: the same indirect-jump loop in a paged ROM page and in RAM, 1e8 instructions each, three rounds.

    python tools/rom_vs_ram_speed.py
"""
import sys, struct, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent / "tests"))
import vmcore, hostile_cases_engine as h
import numpy as np
def rom_run():
    m = vmcore.Machine(memory_mb=4, mode="bare"); h.setup_paged_rom_loop(m)
    m.run(count=1000)  # into the loop
    t = time.perf_counter(); r = m.run(count=10**8); return 10**8 / (time.perf_counter() - t) / 1e6, m.stats["blocks_decoded"]
def ram_run():
    m = vmcore.Machine(memory_mb=4, mode="bare")
    rom = h.rom_image()
    loop = bytearray(rom[0xC122:0xC135]); base = 0x10000
    struct.pack_into("<I", loop, 0xC127 - 0xC122, base + 0x180)
    m.mem_write(base + 0x122, bytes(loop))
    m.mem_write(base + 0x180, struct.pack("<III", base + 0x12B, base + 0x12E, base + 0x131))
    m.mem_write(0x80000, struct.pack("<I", 0x81000 | 3))
    m.mem_write(0x81000, (np.arange(1024, dtype=np.uint32) << 12 | 3).tobytes())
    m.reg_write("cr3", 0x80000); m.reg_write("cr0", m.reg_read("cr0") | 0x80000000)
    m.reg_write("eip", base + 0x122); m.run(count=1000)
    t = time.perf_counter(); r = m.run(count=10**8); return 10**8 / (time.perf_counter() - t) / 1e6, m.stats["blocks_decoded"]
for k in range(3):
    print("rom MIPS %.0f decoded %d" % rom_run(), " | ram MIPS %.0f decoded %d" % ram_run())
