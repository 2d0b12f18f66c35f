"""The colour text display's CRT controller at 0x3D4/0x3D5 and Input Status 1 at 0x3DA (IBM VGA
Technical Reference, "CRT Controller Registers"; the 6845 of the CGA at the same ports)."""
import pytest

import vmcore
from vmcore import Exit
from vmcore.devices.crtc import CURSOR_HIGH, CURSOR_LOW, MODE3_REGISTERS, CrtController


def test_index_selects_the_register_and_the_cursor_is_storage():
    crtc = CrtController()
    assert crtc.read(1, 1) == MODE3_REGISTERS[0]         # index 0 at reset: horizontal total
    crtc.write(0, 1, CURSOR_HIGH)
    crtc.write(1, 1, 0x07)
    crtc.write(0, 1, CURSOR_LOW)
    crtc.write(1, 1, 0xD0)
    assert crtc.cursor_offset == 0x07D0 == 25 * 80       # past the last line, as a kernel may put it
    crtc.write(0, 1, CURSOR_HIGH)
    assert crtc.read(0, 1) == CURSOR_HIGH and crtc.read(1, 1) == 0x07
    crtc.write(0, 1, 0x40)                               # no such register: reads all ones, writes vanish
    crtc.write(1, 1, 0x12)
    assert crtc.read(1, 1) == 0xFF


def test_input_status_toggles_retrace_so_a_wait_loop_ends():
    crtc = CrtController()
    seen = {crtc.read(6, 1) & 0x08 for _ in range(4)}
    assert seen == {0, 0x08}


def test_state_round_trips():
    a, b = CrtController(), CrtController()
    a.write(0, 1, CURSOR_LOW)
    a.write(1, 1, 0x42)
    b.restore_state(a.export_state())
    assert b.cursor_offset == a.cursor_offset and b.index == CURSOR_LOW


@pytest.mark.parametrize("mode", ["bare", "bt"])
def test_a_guest_moves_the_cursor_as_xv6s_console_does(mode):
    code = bytes.fromhex(
        "66 ba d4 03"        # mov dx, 0x3d4
        "b0 0e ee"           # mov al, 14 ; out dx, al
        "42"                 # inc dx
        "b0 01 ee"           # mov al, 0x01 ; out dx, al     cursor high
        "4a"                 # dec dx
        "66 b8 0f 2a"        # mov ax, 0x2a0f
        "66 ef"              # out dx, ax                    index 15, then 0x2a into 0x3d5
        "b0 0e ee"           # mov al, 14 ; out dx, al
        "42 ec"              # inc dx ; in al, dx
        "88 c3"              # mov bl, al
        "f4")                # hlt
    m = vmcore.Machine(memory_mb=4, mode=mode)
    m.mem_write(0x1000, code)
    m.reg_write("eip", 0x1000)
    m.reg_write("eflags", 0x2)
    r = m.run(count=100)
    assert r.exit is Exit.HLT, r.reason
    assert m.crtc.cursor_offset == 0x012A and m.reg_read("bl") == 0x01
