"""PCI configuration mechanism #1 (vmcore/devices/pci.py): the address latch at 0xCF8, byte,
word and dword data accesses at 0xCFC-0xCFF, the 440FX host bridge at 00:00.0, all ones for
every absent function; then a guest that scans bus 0 as Linux's pci_check_type1 and
pci_sanity_check do (a Machine also has the PIIX3's ISA bridge: tests/test_pc_chipset.py)."""
import pytest

from vmcore import Exit, Machine
from vmcore.devices.pci import PciConfig

ENABLE = 0x80000000


def addr(bus=0, dev=0, fn=0, reg=0):
    return ENABLE | bus << 16 | dev << 11 | fn << 8 | reg


def cfg_read(p, a, size=4, k=0):
    p.write(0, 4, a)
    return p.read(4 + k, size)


def test_host_bridge_identity():
    p = PciConfig()
    assert cfg_read(p, addr()) == 0x12378086
    assert cfg_read(p, addr(reg=0x08)) == 0x06000002          # class 06 00 00, revision 02
    assert cfg_read(p, addr(reg=0x0C)) >> 16 & 0x7F == 0      # header type 0
    assert cfg_read(p, addr(reg=0x00), 2, 2) == 0x1237         # word at 0xCFE
    assert cfg_read(p, addr(reg=0x08), 1, 3) == 0x06           # byte at 0xCFF: base class


def test_absent_functions_read_all_ones_and_ignore_writes():
    p = PciConfig()
    for a in (addr(dev=1), addr(fn=1), addr(bus=1), addr(dev=31, fn=7)):
        assert cfg_read(p, a) == 0xFFFFFFFF
        assert cfg_read(p, a, 1, 1) == 0xFF
        p.write(4, 4, 0)
        assert cfg_read(p, a) == 0xFFFFFFFF
    assert cfg_read(p, addr() & ~ENABLE) == 0xFFFFFFFF       # enable bit clear: no configuration cycle


def test_address_latch():
    p = PciConfig()
    p.write(0, 4, 0xFFFFFFFF)
    assert p.read(0, 4) == 0x80FFFFFC                         # reserved bits and bits 1:0 read 0
    p.write(0, 1, 0x00)                                        # a byte access is not CONFIG_ADDRESS
    p.write(3, 1, 0x01)
    assert p.read(0, 4) == 0x80FFFFFC
    assert p.read(0, 1) == 0xFF and p.read(0, 2) == 0xFFFF


def test_read_only_header_and_writable_chipset_registers():
    p = PciConfig()
    p.write(0, 4, addr())
    p.write(4, 4, 0)                                           # vendor/device: read only
    assert p.read(4, 4) == 0x12378086
    p.write(0, 4, addr(reg=0x58))
    p.write(4, 4, 0x33221100)                                  # PAM and DRAM registers: storage
    assert p.read(4, 4) == 0x33221100
    p.write(6, 1, 0x99)
    assert p.read(4, 4) == 0x33991100
    state = p.export_state()
    q = PciConfig()
    q.restore_state(state)
    assert cfg_read(q, addr(reg=0x58)) == 0x33991100 and q.address == p.address


# scan bus 0: for each device 0..31 read the vendor/device dword; count the present ones in
# ECX and keep the first one's ID in EBX (pci_check_type1 writes 0x80000000 and reads it back)
GUEST = bytes.fromhex(
    "66 ba f8 0c"          # mov dx, 0xcf8
    "b8 00 00 00 80"       # mov eax, 0x80000000
    "ef"                   # out dx, eax
    "ed"                   # in eax, dx
    "89 c6"                # mov esi, eax           ; the latch read back
    "31 c9"                # xor ecx, ecx
    "31 db"                # xor ebx, ebx
    "31 ff"                # xor edi, edi           ; device number << 11
    "89 f8"                # next: mov eax, edi
    "0d 00 00 00 80"       # or eax, 0x80000000
    "66 ba f8 0c ef"       # mov dx, 0xcf8 ; out dx, eax
    "66 ba fc 0c ed"       # mov dx, 0xcfc ; in eax, dx
    "83 f8 ff"             # cmp eax, -1
    "74 07"                # je absent
    "41"                   # inc ecx
    "85 db 75 02 89 c3"    # test ebx, ebx ; jnz +2 ; mov ebx, eax
    "81 c7 00 08 00 00"    # absent: add edi, 0x800
    "81 ff 00 00 01 00"    # cmp edi, 32 << 11
    "75 d5"                # jne next
    "66 ba fe 0c 66 ed"    # mov dx, 0xcfe ; in ax, dx  ; word access: device ID of the last address
    "f4"                   # hlt
)


@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_guest_scans_bus_0_and_finds_the_host_and_isa_bridges(mode):
    m = Machine(memory_mb=4, mode=mode)
    m.mem_write(0x10000, GUEST)
    m.reg_write("eip", 0x10000)
    r = m.run(count=100_000)
    assert r.exit is Exit.HLT, r.reason
    assert m.reg_read("esi") == 0x80000000
    assert m.reg_read("ecx") == 2 and m.reg_read("ebx") == 0x12378086     # 00:00.0 and the PIIX3 at 00:01.0
    assert m.reg_read("ax") == 0xFFFF          # 00:1f.0 is absent
