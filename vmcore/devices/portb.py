"""System control port B (0x61) of the PC/AT: the PC speaker's gate and data bits, counter 2
of the PIT, and status bits (IBM PC/AT technical reference, "I/O address map"; the same
bits on every PIIX/ICH southbridge as NMI status and control).

Bits 0-3 read back what was written; bits 4-7 are status and ignore writes:

- bit 0: GATE of PIT counter 2
- bit 1: speaker data enable (the speaker sounds OUT2 when bits 0 and 1 are set)
- bit 2: parity check enable (active low), bit 3: I/O channel check enable (active low)
- bit 4: refresh request toggle, flips every 15.085 us (counter 1's DRAM refresh on an AT;
  code times short delays with it), here from the clock
- bit 5: OUT of PIT counter 2
- bits 6, 7: I/O channel check and parity error: never (0)
"""
from __future__ import annotations

from vmcore.devices.bus import PortDevice
from vmcore.devices.pit8254 import Pit8254
from vmcore.errors import ConfigError

PORT_B = 0x61

PORTB_GATE2 = 0x01
PORTB_SPEAKER = 0x02
PORTB_PARITY_CHECK_DISABLE = 0x04
PORTB_IOCHK_DISABLE = 0x08
PORTB_REFRESH = 0x10
PORTB_OUT2 = 0x20
PORTB_IOCHK = 0x40
PORTB_PARITY_ERROR = 0x80
PORTB_WRITABLE = 0x0F

REFRESH_HZ = 66_291       # 1 / 15.085 us: bit 4 flips at this rate


class SystemControlPortB(PortDevice):
    def __init__(self, pit: Pit8254):
        super().__init__()
        self.pit = pit
        self.value = 0
        pit.set_gate2(False)

    @property
    def speaker_on(self) -> bool:
        return self.value & (PORTB_GATE2 | PORTB_SPEAKER) == PORTB_GATE2 | PORTB_SPEAKER

    def read(self, offset: int, size: int) -> int:
        self.pit.clock.io_access()
        refresh = PORTB_REFRESH if self.pit.clock.ticks(REFRESH_HZ) & 1 else 0
        return self.value | refresh | (PORTB_OUT2 if self.pit.out2() else 0)

    def write(self, offset: int, size: int, value: int) -> None:
        value &= PORTB_WRITABLE
        self.pit.clock.io_access()
        if (value ^ self.value) & PORTB_GATE2:
            self.pit.set_gate2(bool(value & PORTB_GATE2))
        self.value = value

    def export_state(self) -> dict:
        return {"value": self.value}

    def restore_state(self, state: dict) -> None:
        if "value" not in state:
            raise ConfigError("port B state is missing value")
        self.value = int(state["value"]) & PORTB_WRITABLE
