"""REP INS and REP OUTS as block transfers (Machine._do_io, Engine.io_ins_continue and
io_outs_continue): the elements of one instruction reach the device back to back without an exit
each, with the architectural result of element-by-element execution (SDM Vol. 2 INS, OUTS: the
port is read and the element stored at ES:(E)DI, or the element read at DS:(E)SI and written to
the port; (E)DI/(E)SI step by DF, (E)CX counts down; an access that faults leaves (E)CX and
(E)DI/(E)SI at that element, and the port is not touched for it)."""
import struct

import pytest

import vmcore
from vmcore import Exit
from vmcore.devices.bus import PortDevice

PORT = 0x300
GDT, IDT, HANDLER, CODE, DEST, SAVED = 0x500, 0x800, 0x2000, 0x1000, 0x3000, 0x5000


class Counter(PortDevice):
    """Reads return 1, 2, 3, ... (one byte each), counted; writes are kept."""

    def __init__(self):
        super().__init__()
        self.reads = 0
        self.written = bytearray()

    def read(self, offset, size):
        self.reads += 1
        return self.reads & 0xFF

    def write(self, offset, size, value):
        self.written.append(value)


def descriptor(base, limit, access, flags=0x4):
    return struct.pack("<HHBBBB", limit & 0xFFFF, base & 0xFFFF, (base >> 16) & 0xFF, access,
                       (flags << 4) | ((limit >> 16) & 0xF), base >> 24)


def machine(mode, code, es_limit=None):
    m = vmcore.Machine(memory_mb=4, mode=mode)
    gdt = (bytes(8) + descriptor(0, 0xFFFFF, 0x9A, 0xC) + descriptor(0, 0xFFFFF, 0x92, 0xC)
           + descriptor(0, es_limit or 0xFFFF, 0x92))                         # 0x18: a small data segment
    m.mem_write(GDT, gdt)
    m._engine.gdtr_set(GDT, len(gdt) - 1)
    gate = struct.pack("<HHBBH", HANDLER & 0xFFFF, 0x08, 0, 0x8E, HANDLER >> 16)
    m.mem_write(IDT + 13 * 8, gate)                                          # #GP
    m._engine.idtr_set(IDT, 256 * 8 - 1)
    m.mem_write(HANDLER, bytes.fromhex(
        "36 89 0d 00 50 00 00"   # mov ss:[0x5000], ecx    (SS: DS may be the small segment)
        "36 89 3d 04 50 00 00"   # mov ss:[0x5004], edi
        "fa f4"))                # cli ; hlt
    m.mem_write(CODE, code)
    m.reg_write("eip", CODE)
    m.reg_write("esp", 0x8000)
    m.reg_write("eflags", 0x2)
    counter = Counter()
    m.bus.attach(PORT, 1, counter, name="counter")
    return m, counter


def rep_insb(count, *, std=False, es=None):
    return bytes.fromhex(
        ("66 b8 18 00 8e c0" if es else "")     # mov ax, 0x18 ; mov es, ax
        + "66 ba 00 03"                          # mov dx, 0x300
        + "bf" + struct.pack("<I", DEST + (count - 1 if std else 0)).hex()   # mov edi, DEST
        + "b9" + struct.pack("<I", count).hex()  # mov ecx, count
        + ("fd" if std else "fc")                # std / cld
        + "f3 6c"                                # rep insb
        + "fa f4")                               # cli ; hlt


@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_a_rep_insb_is_one_exit_with_every_element_in_order(mode):
    m, counter = machine(mode, rep_insb(64))
    r = m.run(count=1000)
    assert r.exit is Exit.HLT, r.reason
    assert m.mem_read(DEST, 64) == bytes(range(1, 65)) and m.mem_read(DEST + 64, 1) == b"\0"
    assert (m.reg_read("ecx"), m.reg_read("edi"), counter.reads) == (0, DEST + 64, 64)
    assert m.stats["exits_io"] == 1
    assert r.instructions == 7                   # mov, mov, mov, cld, rep insb (one), cli, hlt


def test_with_df_set_the_elements_go_downwards():
    m, counter = machine("bare", rep_insb(16, std=True))
    assert m.run(count=1000).exit is Exit.HLT
    assert m.mem_read(DEST, 16) == bytes(range(16, 0, -1))
    assert (m.reg_read("ecx"), m.reg_read("edi"), counter.reads) == (0, DEST - 1, 16)


@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_a_store_past_the_es_limit_faults_at_that_element_and_reads_no_more(mode):
    m, counter = machine(mode, rep_insb(32, es=True), es_limit=DEST + 15)     # 16 bytes fit
    r = m.run(count=1000)
    assert r.exit is Exit.HLT, r.reason
    saved_ecx, saved_edi = struct.unpack("<II", m.mem_read(SAVED, 8))
    assert (saved_ecx, saved_edi) == (16, DEST + 16)
    assert m.mem_read(DEST, 17) == bytes(range(1, 17)) + b"\0"
    assert counter.reads == 16                   # h_INS checks ES before it reads the port


def test_a_port_hook_sees_every_element():
    m, counter = machine("bare", rep_insb(8))
    seen = []
    m.hook_add(vmcore.HOOK_IO_IN, lambda machine, port, size: seen.append(port) or 0x40 + len(seen), PORT, PORT)
    assert m.run(count=1000).exit is Exit.HLT
    assert seen == [PORT] * 8 and counter.reads == 0
    assert m.mem_read(DEST, 8) == bytes(range(0x41, 0x49))
    assert m.stats["exits_io"] == 8


def rep_outsb(count, *, std=False, ds=None, source=DEST):
    return bytes.fromhex(
        ("66 b8 18 00 8e d8" if ds else "")     # mov ax, 0x18 ; mov ds, ax
        + "66 ba 00 03"                          # mov dx, 0x300
        + "be" + struct.pack("<I", source + (count - 1 if std else 0)).hex()   # mov esi, source
        + "b9" + struct.pack("<I", count).hex()  # mov ecx, count
        + ("fd" if std else "fc")                # std / cld
        + "f3 6e"                                # rep outsb
        + "fa f4")                               # cli ; hlt


@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_a_rep_outsb_is_one_exit_with_every_element_in_order(mode):
    m, counter = machine(mode, rep_outsb(64))
    m.mem_write(DEST, bytes(range(100, 164)))
    r = m.run(count=1000)
    assert r.exit is Exit.HLT, r.reason
    assert bytes(counter.written) == bytes(range(100, 164))
    assert (m.reg_read("ecx"), m.reg_read("esi")) == (0, DEST + 64)
    assert m.stats["exits_io"] == 1
    assert r.instructions == 7


def test_a_rep_outsb_downwards_and_across_a_page():
    source = 0x3FF0                               # 32 bytes down from 0x400F: two pages
    m, counter = machine("bare", rep_outsb(32, std=True, source=source))
    m.mem_write(source, bytes(range(1, 33)))
    assert m.run(count=1000).exit is Exit.HLT
    assert bytes(counter.written) == bytes(range(32, 0, -1))
    assert (m.reg_read("ecx"), m.reg_read("esi")) == (0, source - 1)
    assert m.stats["exits_io"] == 2              # the next page's first element leaves the batch


@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_a_load_past_the_ds_limit_faults_at_that_element_and_writes_no_more(mode):
    m, counter = machine(mode, rep_outsb(32, ds=True), es_limit=DEST + 15)    # selector 0x18 as DS
    m.mem_write(DEST, bytes(range(1, 33)))
    r = m.run(count=1000)
    assert r.exit is Exit.HLT, r.reason
    saved_ecx = struct.unpack("<I", m.mem_read(SAVED, 4))[0]
    assert (saved_ecx, m.reg_read("esi")) == (16, DEST + 16)
    assert bytes(counter.written) == bytes(range(1, 17))


def test_an_out_hook_sees_every_outs_element():
    m, counter = machine("bare", rep_outsb(8))
    m.mem_write(DEST, bytes(range(1, 9)))
    seen = []
    m.hook_add(vmcore.HOOK_IO_OUT, lambda machine, port, size, value: seen.append(value), PORT, PORT)
    assert m.run(count=1000).exit is Exit.HLT
    assert seen == list(range(1, 9)) and bytes(counter.written) == bytes(range(1, 9))
    assert m.stats["exits_io"] == 8
