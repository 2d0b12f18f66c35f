"""The PC's 8042 keyboard controller ("i8042") with a PS/2 keyboard behind it and an
auxiliary (mouse) port with nothing plugged in.

Offsets: 0 is the data port (0x60), 4 the status register (read) and command register
(write) at 0x64; port B (0x61) sits between them, so the machine maps offset 4 through a
PortWindow. Behaviour follows the IBM PS/2 Technical Reference "Keyboard/Auxiliary Device
Controller" and what Linux's drivers/input/serio/i8042.c and drivers/input/keyboard/atkbd.c
expect of it:

- the controller's output buffer holds one byte at a time; more bytes queue behind it and
  move in as the guest reads port 0x60. A byte from the keyboard (or a controller reply)
  raises the keyboard IRQ while command byte bit 0 is set, a byte from the aux port the aux
  IRQ while bit 1 is set; each new byte is a fresh edge (the 8259 is edge-triggered);
- commands: 0x20/0x60 read/write the command byte, 0xAA self-test (0x55), 0xAB/0xA9
  keyboard/aux interface tests (0x00), 0xAD/0xAE and 0xA7/0xA8 disable/enable the ports,
  0xD0/0xD1 read/write the output port (A20 gate, CPU reset line), 0xD2/0xD3 write the
  keyboard/aux output buffer (loopback), 0xD4 a byte to the aux device (none: a time-out,
  0xFE), 0xDD/0xDF A20 off/on, 0xF0-0xFF pulse output port lines (bit 0 clear: reset the CPU);
- the keyboard answers ACK (0xFA) to its commands, 0xFF reset with ACK and BAT OK (0xAA),
  0xF2 identify with ACK 0xAB 0x83 (0x41 while the controller translates), 0xED/0xF3/0xF0
  take a parameter, 0xEE echo, unknown commands 0xFE (resend);
- host keystrokes are scan code set 2 (what the keyboard sends); with command byte bit 6
  (XLATE, as firmware leaves it and Linux expects) the controller turns them into set 1
  (``translate``). ``type_text`` feeds ASCII text as key presses and releases.
"""
from __future__ import annotations

from collections import deque
from typing import Callable

from vmcore.devices.bus import PortDevice
from vmcore.devices.irq import IrqLine

DATA = 0            # port 0x60
STATUS = COMMAND = 4   # port 0x64

# status register
STATUS_OBF = 0x01         # output buffer full: a byte waits at 0x60
STATUS_IBF = 0x02         # input buffer full (never: writes are taken at once)
STATUS_SYS = 0x04         # system flag (command byte bit 2): self-test passed
STATUS_CMD = 0x08         # the last write was to 0x64 (a command), not 0x60
STATUS_INH = 0x10         # 1: keyboard not inhibited (the key lock is open)
STATUS_AUX_OBF = 0x20     # the byte in the output buffer came from the aux port
STATUS_TIMEOUT = 0x40     # the device did not answer (aux: nothing plugged in)
STATUS_PARITY = 0x80

# command byte (controller RAM byte 0)
CTR_KBD_INT = 0x01        # IRQ on keyboard data
CTR_AUX_INT = 0x02        # IRQ on aux data
CTR_SYS = 0x04            # system flag, mirrored in the status register
CTR_KBD_DISABLE = 0x10    # keyboard clock held low: its bytes wait in the keyboard
CTR_AUX_DISABLE = 0x20
CTR_XLATE = 0x40          # translate scan code set 2 to set 1
CTR_DEFAULT = CTR_KBD_INT | CTR_SYS | CTR_XLATE

# controller commands
CMD_READ_CTR = 0x20
CMD_WRITE_CTR = 0x60
CMD_AUX_DISABLE = 0xA7
CMD_AUX_ENABLE = 0xA8
CMD_AUX_TEST = 0xA9
CMD_SELF_TEST = 0xAA
CMD_KBD_TEST = 0xAB
CMD_KBD_DISABLE = 0xAD
CMD_KBD_ENABLE = 0xAE
CMD_READ_INPUT = 0xC0
CMD_READ_OUTPUT = 0xD0
CMD_WRITE_OUTPUT = 0xD1
CMD_WRITE_KBD_OBUF = 0xD2
CMD_WRITE_AUX_OBUF = 0xD3
CMD_WRITE_AUX = 0xD4
CMD_A20_OFF = 0xDD        # common extension
CMD_A20_ON = 0xDF
CMD_PULSE_FIRST = 0xF0    # 0xF0-0xFF: pulse output port bits 0-3 low where the command's bit is 0
CMD_PULSE_RESET = 0xFE

SELF_TEST_OK = 0x55
INTERFACE_OK = 0x00
INPUT_PORT = 0x80         # input port: bit 7 = 1, keyboard not inhibited

# output port
OUT_RESET = 0x01          # 0 holds the CPU in reset
OUT_A20 = 0x02
OUT_AUX_OBF = 0x20        # mirrors of the buffer state (bits 4 and 5)
OUT_KBD_OBF = 0x10

# the keyboard's commands and replies (IBM PS/2 keyboard)
KBD_SET_LEDS = 0xED
KBD_ECHO = 0xEE
KBD_SCAN_SET = 0xF0
KBD_IDENTIFY = 0xF2
KBD_TYPEMATIC = 0xF3
KBD_ENABLE = 0xF4
KBD_DISABLE = 0xF5        # stop scanning, defaults
KBD_DEFAULTS = 0xF6
KBD_RESEND = 0xFE
KBD_RESET = 0xFF
KBD_ACK = 0xFA
KBD_BAT_OK = 0xAA
KBD_ID = (0xAB, 0x83)
KBD_ID_TRANSLATED = (0xAB, 0x41)
KBD_REPLY_RESEND = 0xFE
KBD_BREAK = 0xF0          # set 2: the prefix of a key release
KBD_EXTENDED = 0xE0
AUX_NO_DEVICE = 0xFE      # what the controller reports when the aux device times out
# bytes waiting behind the output buffer: the keyboard's own buffer holds 16 (IBM PS/2
# keyboard), the controller's replies queue as deep; more are dropped, so that a guest that
# never reads port 0x60 cannot grow the host's memory
QUEUE_LIMIT = 16

# key name -> (set 2 make code, set 1 make code); the set 1 break code is make | 0x80
KEYS = {
    "esc": (0x76, 0x01), "1": (0x16, 0x02), "2": (0x1E, 0x03), "3": (0x26, 0x04), "4": (0x25, 0x05),
    "5": (0x2E, 0x06), "6": (0x36, 0x07), "7": (0x3D, 0x08), "8": (0x3E, 0x09), "9": (0x46, 0x0A),
    "0": (0x45, 0x0B), "-": (0x4E, 0x0C), "=": (0x55, 0x0D), "backspace": (0x66, 0x0E), "tab": (0x0D, 0x0F),
    "q": (0x15, 0x10), "w": (0x1D, 0x11), "e": (0x24, 0x12), "r": (0x2D, 0x13), "t": (0x2C, 0x14),
    "y": (0x35, 0x15), "u": (0x3C, 0x16), "i": (0x43, 0x17), "o": (0x44, 0x18), "p": (0x4D, 0x19),
    "[": (0x54, 0x1A), "]": (0x5B, 0x1B), "enter": (0x5A, 0x1C), "ctrl": (0x14, 0x1D), "a": (0x1C, 0x1E),
    "s": (0x1B, 0x1F), "d": (0x23, 0x20), "f": (0x2B, 0x21), "g": (0x34, 0x22), "h": (0x33, 0x23),
    "j": (0x3B, 0x24), "k": (0x42, 0x25), "l": (0x4B, 0x26), ";": (0x4C, 0x27), "'": (0x52, 0x28),
    "`": (0x0E, 0x29), "shift": (0x12, 0x2A), "\\": (0x5D, 0x2B), "z": (0x1A, 0x2C), "x": (0x22, 0x2D),
    "c": (0x21, 0x2E), "v": (0x2A, 0x2F), "b": (0x32, 0x30), "n": (0x31, 0x31), "m": (0x3A, 0x32),
    ",": (0x41, 0x33), ".": (0x49, 0x34), "/": (0x4A, 0x35), "rshift": (0x59, 0x36), "alt": (0x11, 0x38),
    "space": (0x29, 0x39), "capslock": (0x58, 0x3A),
    "f1": (0x05, 0x3B), "f2": (0x06, 0x3C), "f3": (0x04, 0x3D), "f4": (0x0C, 0x3E), "f5": (0x03, 0x3F),
    "f6": (0x0B, 0x40), "f7": (0x83, 0x41), "f8": (0x0A, 0x42), "f9": (0x01, 0x43), "f10": (0x09, 0x44),
}
SET2_TO_SET1 = {s2: s1 for s2, s1 in KEYS.values()}
_SHIFTED = dict(zip('!@#$%^&*()_+{}|:"~<>?', "1234567890-=[]\\;'`,./"))
_NAMED = {" ": "space", "\n": "enter", "\r": "enter", "\t": "tab", "\b": "backspace", "\x1b": "esc"}


def translate(set2: bytes) -> bytes:
    """What the 8042 passes on with XLATE set: set 2 make codes become set 1, a 0xF0 prefix
    becomes bit 7 of the next code, 0xE0 passes; codes outside the table pass unchanged."""
    out = bytearray()
    brk = False
    for b in set2:
        if b == KBD_BREAK:
            brk = True
            continue
        code = SET2_TO_SET1.get(b, b) if b != KBD_EXTENDED else b
        out.append(code | 0x80 if brk and b != KBD_EXTENDED else code)
        if b != KBD_EXTENDED:
            brk = False
    return bytes(out)


def text_to_set2(text: str) -> bytes:
    """ASCII text as the keyboard sends it: make and break codes, shift around shifted characters."""
    out = bytearray()
    shift = KEYS["shift"][0]
    for ch in text:
        shifted = ch.isupper() or ch in _SHIFTED
        name = _NAMED.get(ch) or _SHIFTED.get(ch) or ch.lower()
        if name not in KEYS:
            raise ValueError(f"no key for character {ch!r}")
        code = KEYS[name][0]
        if shifted:
            out += bytes([shift])
        out += bytes([code, KBD_BREAK, code])
        if shifted:
            out += bytes([KBD_BREAK, shift])
    return bytes(out)


class KeyboardController(PortDevice):
    """The 8042 at 0x60 (offset 0) and 0x64 (offset 4). ``set_a20(bool)`` and ``reset()`` come
    from the machine; ``irq`` is the keyboard's line (IRQ 1 on a PC), ``aux_irq`` the aux port's
    (IRQ 12)."""

    def __init__(self, set_a20: Callable[[bool], None], reset: Callable[[], None]):
        super().__init__()
        self.aux_irq = IrqLine()
        self._set_a20 = set_a20
        self._reset = reset
        self.output_port = OUT_RESET | OUT_A20    # the machine starts with A20 open
        self.ctr = CTR_DEFAULT
        self.pending_command: int | None = None   # a controller command waiting for its data byte
        self.output: deque = deque()              # (byte, from_aux) behind the output buffer
        self.obf: tuple | None = None             # (byte, from_aux) in the output buffer
        self.timeout = False
        self.last_was_command = False
        self.last_data = 0                        # what port 0x60 reads with the buffer empty
        # the keyboard
        self.kbd_queue: deque = deque()           # bytes the keyboard has not sent yet
        self.kbd_pending: int | None = None       # a keyboard command waiting for its parameter
        self.kbd_scanning = True
        self.kbd_leds = 0
        self.kbd_scan_set = 2

    # ---- guest side ---------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if offset == STATUS:
            status = STATUS_INH | (STATUS_SYS if self.ctr & CTR_SYS else 0)
            status |= STATUS_CMD if self.last_was_command else 0
            status |= STATUS_TIMEOUT if self.timeout else 0
            if self.obf is not None:
                status |= STATUS_OBF | (STATUS_AUX_OBF if self.obf[1] else 0)
            return status
        if offset == DATA:
            if self.obf is None:
                return self.last_data         # the buffer still holds the byte last read
            value = self.last_data = self.obf[0]
            self.obf = None
            self.timeout = False
            self._update()
            return value
        return 0xFF

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset == COMMAND:
            self.last_was_command = True
            self.pending_command = None
            self._command(value)
        elif offset == DATA:
            self.last_was_command = False
            pending, self.pending_command = self.pending_command, None
            if pending is None:
                self._keyboard_command(value)
            elif pending == CMD_WRITE_CTR:
                self.ctr = value
                self._update()
            elif pending == CMD_WRITE_OUTPUT:
                self._write_output(value)
            elif pending == CMD_WRITE_KBD_OBUF:
                self._reply(value)
            elif pending == CMD_WRITE_AUX_OBUF:
                self._reply(value, aux=True)
            elif pending == CMD_WRITE_AUX:
                self.timeout = True           # no aux device answers
                self._reply(AUX_NO_DEVICE, aux=True)

    def _command(self, cmd: int) -> None:
        if cmd == CMD_READ_CTR:
            self._reply(self.ctr)
        elif 0x21 <= cmd <= 0x3F:             # read controller RAM: nothing kept there
            self._reply(0)
        elif cmd in (CMD_WRITE_CTR, CMD_WRITE_OUTPUT, CMD_WRITE_KBD_OBUF, CMD_WRITE_AUX_OBUF, CMD_WRITE_AUX):
            self.pending_command = cmd
        elif cmd == CMD_AUX_DISABLE:
            self.ctr |= CTR_AUX_DISABLE
        elif cmd == CMD_AUX_ENABLE:
            self.ctr &= ~CTR_AUX_DISABLE
        elif cmd in (CMD_AUX_TEST, CMD_KBD_TEST):
            self._reply(INTERFACE_OK)
        elif cmd == CMD_SELF_TEST:
            self._reply(SELF_TEST_OK)
        elif cmd == CMD_KBD_DISABLE:
            self.ctr |= CTR_KBD_DISABLE
        elif cmd == CMD_KBD_ENABLE:
            self.ctr &= ~CTR_KBD_DISABLE
            self._update()
        elif cmd == CMD_READ_INPUT:
            self._reply(INPUT_PORT)
        elif cmd == CMD_READ_OUTPUT:
            out = self.output_port & ~(OUT_KBD_OBF | OUT_AUX_OBF)
            if self.obf is not None:
                out |= OUT_AUX_OBF if self.obf[1] else OUT_KBD_OBF
            self._reply(out)
        elif cmd == CMD_A20_ON:
            self._write_output(self.output_port | OUT_A20)
        elif cmd == CMD_A20_OFF:
            self._write_output(self.output_port & ~OUT_A20)
        elif cmd >= CMD_PULSE_FIRST and not cmd & OUT_RESET:
            self._reset()                     # 0xFE and any pulse of bit 0: the CPU reset line
        # other commands (0x61-0x7F controller RAM writes, vendor ones) are ignored

    def _write_output(self, value: int) -> None:
        if (value ^ self.output_port) & OUT_A20:
            self._set_a20(bool(value & OUT_A20))
        self.output_port = value
        if not value & OUT_RESET:
            self._reset()

    # ---- the keyboard -------------------------------------------------------------------
    def _keyboard_command(self, value: int) -> None:
        """A byte written to port 0x60: a command (or a parameter) for the keyboard."""
        pending, self.kbd_pending = self.kbd_pending, None
        if pending is not None:
            if pending == KBD_SET_LEDS:
                self.kbd_leds = value & 7
            elif pending == KBD_SCAN_SET and value == 0:
                self._kbd_send(bytes([KBD_ACK, self.kbd_scan_set]))
                return
            elif pending == KBD_SCAN_SET and value in (1, 2, 3):
                self.kbd_scan_set = value
            self._kbd_send(bytes([KBD_ACK]))
            return
        if value in (KBD_SET_LEDS, KBD_TYPEMATIC, KBD_SCAN_SET):
            self.kbd_pending = value
            self._kbd_send(bytes([KBD_ACK]))
        elif value == KBD_RESET:
            self.kbd_queue.clear()
            self.kbd_scanning, self.kbd_leds, self.kbd_scan_set = True, 0, 2
            self._kbd_send(bytes([KBD_ACK, KBD_BAT_OK]))
        elif value == KBD_IDENTIFY:
            ident = KBD_ID_TRANSLATED if self.ctr & CTR_XLATE else KBD_ID
            self._kbd_send(bytes([KBD_ACK, *ident]))
        elif value == KBD_ECHO:
            self._kbd_send(bytes([KBD_ECHO]))
        elif value == KBD_ENABLE:
            self.kbd_scanning = True
            self._kbd_send(bytes([KBD_ACK]))
        elif value in (KBD_DISABLE, KBD_DEFAULTS):
            self.kbd_scanning = value == KBD_DEFAULTS
            self.kbd_leds = 0
            self._kbd_send(bytes([KBD_ACK]))
        elif 0xF7 <= value <= 0xFD:           # set-3 key type commands: accepted
            self._kbd_send(bytes([KBD_ACK]))
        else:
            self._kbd_send(bytes([KBD_REPLY_RESEND]))

    def _kbd_send(self, data: bytes) -> int:
        room = max(0, QUEUE_LIMIT - len(self.kbd_queue))
        self.kbd_queue.extend(data[:room])
        self._update()
        return min(room, len(data))

    # ---- host side ----------------------------------------------------------------------
    def feed(self, set2: bytes) -> int:
        """Key events from the host as scan code set 2 bytes (translated to set 1 while XLATE is
        set). Dropped while the keyboard does not scan, and beyond its 16-byte buffer; returns
        the bytes queued."""
        if not self.kbd_scanning:
            return 0
        data = translate(set2) if self.ctr & CTR_XLATE else bytes(set2)
        return self._kbd_send(data)

    def type_text(self, text: str) -> int:
        return self.feed(text_to_set2(text))

    # ---- the output buffer and the IRQ lines --------------------------------------------
    def _reply(self, value: int, aux: bool = False) -> None:
        if len(self.output) < QUEUE_LIMIT:
            self.output.append((value & 0xFF, aux))
        self._update()

    def _update(self) -> None:
        """Move the next byte into an empty output buffer, and drive the IRQ lines: each byte that
        enters the buffer is a new edge."""
        if self.obf is None:
            if self.output:
                self.obf = self.output.popleft()
            elif self.kbd_queue and not self.ctr & CTR_KBD_DISABLE:
                self.obf = (self.kbd_queue.popleft(), False)
            if self.obf is not None:
                self.irq.lower()
                self.aux_irq.lower()
        full = self.obf is not None
        self.irq.set_level(full and not self.obf[1] and bool(self.ctr & CTR_KBD_INT))
        self.aux_irq.set_level(full and self.obf[1] and bool(self.ctr & CTR_AUX_INT))

    @property
    def pending_bytes(self) -> int:
        return (self.obf is not None) + len(self.output) + len(self.kbd_queue)

    # ---- snapshots ----------------------------------------------------------------------
    def export_state(self) -> dict:
        return {"output_port": self.output_port, "ctr": self.ctr, "pending_command": self.pending_command,
                "output": list(self.output), "obf": self.obf, "timeout": self.timeout,
                "last_was_command": self.last_was_command, "last_data": self.last_data, "kbd_queue": list(self.kbd_queue),
                "kbd_pending": self.kbd_pending, "kbd_scanning": self.kbd_scanning, "kbd_leds": self.kbd_leds,
                "kbd_scan_set": self.kbd_scan_set}

    def restore_state(self, state: dict) -> None:
        self.output_port = int(state["output_port"])
        self.ctr = int(state["ctr"])
        self.pending_command = state["pending_command"]
        self.output = deque(tuple(x) for x in state["output"])
        self.obf = None if state["obf"] is None else tuple(state["obf"])
        self.timeout = bool(state["timeout"])
        self.last_was_command = bool(state["last_was_command"])
        self.last_data = int(state.get("last_data", 0))
        self.kbd_queue = deque(state["kbd_queue"])
        self.kbd_pending = state["kbd_pending"]
        self.kbd_scanning = bool(state["kbd_scanning"])
        self.kbd_leds = int(state["kbd_leds"])
        self.kbd_scan_set = int(state["kbd_scan_set"])
        self._update()
