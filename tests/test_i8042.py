"""The 8042 keyboard controller (vmcore/devices/i8042.py): the controller's commands, the
keyboard's, the output buffer and its two IRQ lines, host keystrokes in scan code set 2 and
their translation to set 1; then a guest doing the port I/O Linux's i8042 probe does."""
import pytest

from vmcore import Exit, Machine
from vmcore.devices.i8042 import (CTR_AUX_DISABLE, CTR_AUX_INT, CTR_DEFAULT, CTR_KBD_DISABLE, CTR_KBD_INT,
                                  CTR_XLATE, KEYS, STATUS_AUX_OBF, STATUS_CMD, STATUS_OBF, STATUS_SYS,
                                  STATUS_TIMEOUT, KeyboardController, text_to_set2, translate)

DATA, CMD = 0, 4


class Ctl:
    def __init__(self):
        self.a20 = []
        self.resets = 0
        self.k = KeyboardController(self.a20.append, self.reset)
        self.edges = []
        self.k.irq.on_change = lambda level: self.edges.append(("kbd", level))
        self.k.aux_irq.on_change = lambda level: self.edges.append(("aux", level))

    def reset(self):
        self.resets += 1

    def cmd(self, value, data=None):
        self.k.write(CMD, 1, value)
        if data is not None:
            self.k.write(DATA, 1, data)

    def drain(self):
        out = []
        while self.k.read(CMD, 1) & STATUS_OBF:
            out.append(self.k.read(DATA, 1))
        return out


def test_status_after_power_on():
    c = Ctl()
    status = c.k.read(CMD, 1)
    assert status & STATUS_SYS and not status & STATUS_OBF
    assert c.k.ctr == CTR_DEFAULT and c.k.ctr & CTR_XLATE


def test_self_test_interface_tests_and_command_byte():
    c = Ctl()
    c.cmd(0xAA)
    assert c.k.read(CMD, 1) & (STATUS_OBF | STATUS_CMD) == STATUS_OBF | STATUS_CMD
    assert c.drain() == [0x55]
    c.cmd(0xAB)
    c.cmd(0xA9)
    assert c.drain() == [0x00, 0x00]
    c.cmd(0x20)
    assert c.drain() == [CTR_DEFAULT]
    assert c.k.read(DATA, 1) == CTR_DEFAULT           # an empty buffer reads its last byte again
    c.cmd(0x60, 0x47)
    c.cmd(0x20)
    assert c.drain() == [0x47]
    c.cmd(0xA7)
    c.cmd(0xAD)
    assert c.k.ctr & (CTR_AUX_DISABLE | CTR_KBD_DISABLE) == CTR_AUX_DISABLE | CTR_KBD_DISABLE
    c.cmd(0xA8)
    c.cmd(0xAE)
    assert not c.k.ctr & (CTR_AUX_DISABLE | CTR_KBD_DISABLE)


def test_output_port_a20_and_reset():
    c = Ctl()
    c.cmd(0xD0)
    assert c.drain() == [0x03]
    c.cmd(0xD1, 0x01)                 # A20 closed, CPU not in reset
    assert c.a20 == [False] and c.resets == 0
    c.cmd(0xDF)
    assert c.a20 == [False, True]
    c.cmd(0xFE)                       # pulse the reset line
    assert c.resets == 1
    c.cmd(0xFF)                       # pulse nothing
    assert c.resets == 1
    c.cmd(0xD1, 0x02)                 # output port bit 0 clear: reset
    assert c.resets == 2


def test_keyboard_reset_identify_and_parameters():
    c = Ctl()
    c.k.write(DATA, 1, 0xFF)
    assert c.drain() == [0xFA, 0xAA]
    c.k.write(DATA, 1, 0xF2)
    assert c.drain() == [0xFA, 0xAB, 0x41]        # translated: 0x83 reads as 0x41
    c.cmd(0x60, CTR_KBD_INT)                      # XLATE off
    c.k.write(DATA, 1, 0xF2)
    assert c.drain() == [0xFA, 0xAB, 0x83]
    c.k.write(DATA, 1, 0xED)
    c.k.write(DATA, 1, 0x07)
    assert c.drain() == [0xFA, 0xFA] and c.k.kbd_leds == 7
    c.k.write(DATA, 1, 0xF0)
    c.k.write(DATA, 1, 0x00)
    assert c.drain() == [0xFA, 0xFA, 0x02]
    c.k.write(DATA, 1, 0xEE)
    assert c.drain() == [0xEE]
    c.k.write(DATA, 1, 0x42)                      # not a keyboard command
    assert c.drain() == [0xFE]


def test_keys_from_the_host_translated_to_set_1():
    c = Ctl()
    c.k.type_text("a")
    assert c.drain() == [0x1E, 0x9E]              # set 2: 1C, F0 1C
    c.k.type_text("A\n")
    assert c.drain() == [0x2A, 0x1E, 0x9E, 0xAA, 0x1C, 0x9C]
    c.cmd(0x60, CTR_KBD_INT)                      # without translation the set 2 bytes pass
    c.k.type_text("a")
    assert c.drain() == [0x1C, 0xF0, 0x1C]
    assert translate(bytes([0xE0, 0xF0, 0x1C])) == bytes([0xE0, 0x9E])
    assert all(translate(bytes([s2])) == bytes([s1]) for s2, s1 in KEYS.values())
    with pytest.raises(ValueError):
        text_to_set2("\u00e9")


def test_keys_wait_while_the_keyboard_is_disabled_and_when_it_does_not_scan():
    c = Ctl()
    c.cmd(0xAD)
    c.k.type_text("q")
    assert c.drain() == []
    c.cmd(0xAE)
    assert c.drain() == [0x10, 0x90]
    c.k.write(DATA, 1, 0xF5)                      # stop scanning
    assert c.drain() == [0xFA]
    assert c.k.type_text("q") == 0 and c.drain() == []


def test_each_byte_is_a_new_irq_edge_on_its_own_line():
    c = Ctl()
    c.k.feed(bytes([0x1C, 0xF0, 0x1C]))
    assert c.edges == [("kbd", True)]
    c.k.read(DATA, 1)
    assert c.edges == [("kbd", True), ("kbd", False), ("kbd", True)]
    c.k.read(DATA, 1)
    assert c.edges[-1] == ("kbd", False)
    c.edges.clear()
    c.cmd(0x60, CTR_DEFAULT | CTR_AUX_INT)
    c.cmd(0xD3, 0x5A)                             # aux loopback
    assert c.k.read(CMD, 1) & STATUS_AUX_OBF and c.edges == [("aux", True)]
    assert c.k.read(DATA, 1) == 0x5A and c.edges[-1] == ("aux", False)
    c.cmd(0x60, CTR_DEFAULT & ~CTR_KBD_INT)       # keyboard IRQ masked in the command byte
    c.edges.clear()
    c.k.type_text("a")
    assert c.edges == [] and c.drain() == [0x1E, 0x9E]


def test_queues_are_bounded_when_the_guest_never_reads():
    c = Ctl()
    for _ in range(10_000):
        c.cmd(0xD2, 0x41)                 # "keyboard output buffer" writes, never read
    assert c.k.pending_bytes <= 1 + 16
    assert c.k.type_text("a" * 100) == 16
    assert c.k.pending_bytes <= 1 + 16 + 16


def test_aux_device_absent_times_out():
    c = Ctl()
    c.cmd(0xD4, 0xFF)
    status = c.k.read(CMD, 1)
    assert status & (STATUS_OBF | STATUS_AUX_OBF | STATUS_TIMEOUT) == STATUS_OBF | STATUS_AUX_OBF | STATUS_TIMEOUT
    assert c.k.read(DATA, 1) == 0xFE and not c.k.read(CMD, 1) & STATUS_TIMEOUT


def test_state_export_and_restore():
    c = Ctl()
    c.cmd(0x60, 0x47)
    c.k.type_text("ab")
    c.k.read(DATA, 1)
    state = c.k.export_state()
    d = Ctl()
    d.k.restore_state(state)
    assert d.k.ctr == 0x47 and d.drain() == c.drain() == [0x9E, 0x30, 0xB0]


# a guest doing Linux's probe: self-test, read the command byte, reset the keyboard, then
# read a key the host typed, through IRQ 1 (vector 0x21 with the PIC programmed at 0x20)
GUEST = bytes.fromhex(
    "b0 aa e6 64"          # mov al, 0xaa ; out 0x64, al        ; controller self-test
    "e4 64 a8 01 74 fa"    # w1: in al, 0x64 ; test al, 1 ; jz w1
    "e4 60 88 c3"          # in al, 0x60 ; mov bl, al           ; BL = 0x55
    "b0 20 e6 64"          # mov al, 0x20 ; out 0x64, al        ; read the command byte
    "e4 64 a8 01 74 fa"    # w2
    "e4 60 88 c7"          # in al, 0x60 ; mov bh, al
    "b0 ff e6 60"          # mov al, 0xff ; out 0x60, al        ; keyboard reset
    "e4 64 a8 01 74 fa"    # w3
    "e4 60 88 c1"          # in al, 0x60 ; mov cl, al           ; 0xfa
    "e4 64 a8 01 74 fa"    # w4
    "e4 60 88 c5"          # in al, 0x60 ; mov ch, al           ; 0xaa
    "f4"                   # hlt
)


@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_guest_probes_the_controller_and_resets_the_keyboard(mode):
    m = Machine(memory_mb=4, mode=mode)
    m.mem_write(0x10000, GUEST)
    m.reg_write("eip", 0x10000)
    m.reg_write("esp", 0x8000)
    r = m.run(count=100_000)
    assert r.exit is Exit.HLT
    assert m.reg_read("bl") == 0x55 and m.reg_read("bh") == CTR_DEFAULT
    assert (m.reg_read("cl"), m.reg_read("ch")) == (0xFA, 0xAA)


def test_keyboard_irq_reaches_the_guest_through_the_pic():
    # ICW1-4 for the master at vector 0x20, unmask IRQ 1 only; the handler reads the key into
    # a buffer at 0x9000 and sends EOI; the main loop is STI; HLT
    import struct
    code = bytes.fromhex(
        "b0 11 e6 20 b0 20 e6 21 b0 04 e6 21 b0 01 e6 21"   # ICW1..ICW4
        "b0 fd e6 21"                                       # OCW1: only IRQ 1
        "bf 00 90 00 00"                                    # mov edi, 0x9000
        "fb f4 eb fc"                                       # loop: sti ; hlt ; jmp loop
    )
    handler = bytes.fromhex("e4 60 aa b0 20 e6 20 cf")     # in al,0x60 ; stosb ; EOI ; iret
    m = Machine(memory_mb=4, mode="bare")
    m.mem_write(0x10000, code)
    m.mem_write(0x11000, handler)
    idt = bytearray(8 * 0x22)
    struct.pack_into("<HHBBH", idt, 8 * 0x21, 0x1000, 0x08, 0, 0x8E, 0x0001)   # 0x11000
    m.mem_write(0x12000, bytes(idt))
    m._engine.idtr_set(0x12000, len(idt) - 1)
    m.mem_write(0x13000, bytes.fromhex("0000000000000000 ffff0000009bcf00 ffff00000093cf00"))
    m._engine.gdtr_set(0x13000, 23)
    m.reg_write("eip", 0x10000)
    m.reg_write("esp", 0x8000)
    m.run(count=200)
    m.kbc.type_text("hi")
    r = m.run(count=20_000)
    assert r.exit is Exit.HLT      # nothing armed to wake it after the keys
    assert m.mem_read(0x9000, 6) == bytes([0x23, 0xA3, 0x17, 0x97, 0, 0])
