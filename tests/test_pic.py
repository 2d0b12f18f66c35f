"""The 8259A pair driven through its registers, against the Intel 8259A datasheet (231468):
initialization, fully nested priority, EOI forms, rotation, automatic EOI, special mask and
special fully nested modes, poll command, IRR/ISR reads, edge and level triggering,
spurious IRQ 7/15 and the cascade on IRQ 2."""
import pytest

import vmcore
from vmcore.devices import IrqLine, PicPair
from vmcore.devices import pic8259 as p

MASTER_BASE, SLAVE_BASE = 0x20, 0x28


class Pair:
    """A PicPair with the CPU's INTR input recorded; bytes written as a guest would."""

    def __init__(self, icw4=p.ICW4_UPM, ltim=False):
        self.intr_log = []
        self.pic = PicPair(set_intr=self.intr_log.append)
        icw1 = p.ICW1_INIT | p.ICW1_IC4 | (p.ICW1_LTIM if ltim else 0)
        for chip, base, icw3 in ((self.pic.master, MASTER_BASE, 1 << 2), (self.pic.slave, SLAVE_BASE, 2)):
            chip.write(0, 1, icw1)
            chip.write(1, 1, base)        # ICW2
            chip.write(1, 1, icw3)        # ICW3: slave on IR2 / slave id 2
            chip.write(1, 1, icw4)        # ICW4

    @property
    def intr(self):
        return self.pic.intr

    def irq(self, n, level=True):
        self.pic.set_irq(n, level)

    def pulse(self, n):
        self.irq(n, True)
        self.irq(n, False)

    def ack(self):
        return self.pic.acknowledge()

    def eoi(self, chip="master", cmd=p.OCW2_NONSPECIFIC_EOI):
        getattr(self.pic, chip).write(0, 1, cmd)

    def isr(self, chip="master"):
        c = getattr(self.pic, chip)
        c.write(0, 1, p.OCW3_SELECT | p.OCW3_RR | p.OCW3_RIS)
        return c.read(0, 1)

    def irr(self, chip="master"):
        c = getattr(self.pic, chip)
        c.write(0, 1, p.OCW3_SELECT | p.OCW3_RR)
        return c.read(0, 1)

    def mask(self, value, chip="master"):
        getattr(self.pic, chip).write(1, 1, value)


def test_initialization_sequence_and_vectors():
    pair = Pair()
    assert pair.pic.master.init_step == 0 and pair.pic.slave.init_step == 0
    assert not pair.intr
    pair.irq(1)
    assert pair.intr and pair.intr_log == [True]
    assert pair.ack() == MASTER_BASE + 1
    assert not pair.intr
    assert pair.isr() == 0x02
    pair.eoi()
    assert pair.isr() == 0


def test_icw1_clears_the_mask_and_needs_a_new_edge():
    pair = Pair()
    pair.mask(0xFF)
    pair.irq(3)                           # held high, masked
    assert pair.irr() == 0x08 and not pair.intr
    pair.pic.master.write(0, 1, p.ICW1_INIT | p.ICW1_IC4)
    pair.pic.master.write(1, 1, 0x40)
    pair.pic.master.write(1, 1, 0x04)
    pair.pic.master.write(1, 1, p.ICW4_UPM)
    assert pair.pic.master.read(1, 1) == 0        # (b) IMR cleared
    assert pair.irr() == 0 and not pair.intr      # (a) edge sense reset: the high input is no request
    pair.irq(3, False)
    pair.irq(3)
    assert pair.ack() == 0x43                     # the new ICW2


def test_no_interrupt_while_initializing():
    pair = Pair()
    pair.pic.master.write(0, 1, p.ICW1_INIT | p.ICW1_IC4)
    pair.irq(0)
    assert not pair.intr
    pair.pic.master.write(1, 1, 0x20)
    pair.pic.master.write(1, 1, 0x04)
    assert not pair.intr                          # ICW4 still expected
    pair.pic.master.write(1, 1, p.ICW4_UPM)
    assert pair.intr


def test_single_mode_skips_icw3_and_no_icw4_zeroes_it():
    chip = p.Pic8259()
    chip.write(0, 1, p.ICW1_INIT | p.ICW1_SNGL)   # no ICW3, no ICW4
    chip.write(1, 1, 0x50)
    assert chip.init_step == 0 and chip.icw4 == 0
    chip.write(1, 1, 0xFE)                        # now OCW1
    assert chip.read(1, 1) == 0xFE
    assert chip.cascade_inputs == 0


def test_fully_nested_priority():
    pair = Pair()
    pair.irq(5)
    pair.irq(3)
    assert pair.irr() == 0x28
    assert pair.ack() == MASTER_BASE + 3          # lower number, higher priority
    assert pair.intr is False                     # IR5 is held off by IS3
    pair.irq(1)
    assert pair.intr                              # IR1 outranks IS3: nests
    assert pair.ack() == MASTER_BASE + 1
    assert pair.isr() == 0x0A
    pair.eoi()                                    # non-specific: the highest IS bit (1)
    assert pair.isr() == 0x08 and not pair.intr
    pair.eoi()
    assert pair.intr and pair.ack() == MASTER_BASE + 5


def test_mask_keeps_the_request_in_irr():
    pair = Pair()
    pair.mask(0x10)
    pair.irq(4)
    assert pair.irr() == 0x10 and not pair.intr
    assert pair.pic.master.read(1, 1) == 0x10     # IMR reads at A0 = 1
    pair.mask(0)
    assert pair.intr and pair.ack() == MASTER_BASE + 4


def test_specific_eoi():
    pair = Pair()
    pair.irq(2 + 4)                               # IR6
    pair.irq(7)
    assert pair.ack() == MASTER_BASE + 6
    pair.eoi(cmd=p.OCW2_SPECIFIC_EOI | 7)         # a level not in service: no effect
    assert pair.isr() == 0x40
    pair.eoi(cmd=p.OCW2_SPECIFIC_EOI | 6)
    assert pair.isr() == 0 and pair.ack() == MASTER_BASE + 7


def test_rotate_on_non_specific_eoi_gives_equal_priority():
    pair = Pair()
    for n in (0, 1, 3):
        pair.irq(n)
    order = []
    for _ in range(3):
        level = pair.ack() - MASTER_BASE
        order.append(level)
        pair.eoi(cmd=p.OCW2_ROTATE_NONSPECIFIC_EOI)   # the serviced level becomes the lowest
        pair.irq(level, False)
        pair.irq(level)                               # and asks again at once
    assert order == [0, 1, 3]
    assert pair.pic.master.lowest == 3
    assert pair.ack() == MASTER_BASE + 0              # after 3 the round goes back to 0


def test_set_priority_and_rotate_on_specific_eoi():
    pair = Pair()
    pair.eoi(cmd=p.OCW2_SET_PRIORITY | 4)         # IR4 lowest: IR5 highest
    pair.irq(2 + 1)                               # IR3
    pair.irq(6)
    assert pair.ack() == MASTER_BASE + 6
    pair.eoi(cmd=p.OCW2_ROTATE_SPECIFIC_EOI | 6)  # IR6 lowest now: IR7, IR0.. first
    assert pair.pic.master.lowest == 6
    pair.irq(7)
    assert pair.ack() == MASTER_BASE + 7
    pair.eoi()
    assert pair.ack() == MASTER_BASE + 3


def test_automatic_eoi_and_rotation_in_it():
    pair = Pair(icw4=p.ICW4_UPM | p.ICW4_AEOI)
    pair.irq(2 + 3)                               # IR5
    assert pair.ack() == MASTER_BASE + 5
    assert pair.isr() == 0                        # ended by the INTA sequence itself
    pair.irq(5, False)
    pair.eoi(cmd=p.OCW2_ROTATE_AEOI_SET)
    pair.irq(5)
    pair.irq(6)
    assert pair.ack() == MASTER_BASE + 5
    assert pair.pic.master.lowest == 5            # rotated: IR6 now outranks IR5
    pair.irq(5, False)
    pair.irq(5)
    assert pair.ack() == MASTER_BASE + 6
    pair.eoi(cmd=p.OCW2_ROTATE_AEOI_CLEAR)
    assert not pair.pic.master.rotate_in_aeoi


def test_spurious_irq7_when_the_request_goes_away_before_inta():
    pair = Pair()
    pair.irq(3)
    assert pair.intr                              # the CPU has seen INTR...
    pair.irq(3, False)                            # ...the request drops before INTA
    assert not pair.intr
    assert pair.ack() == MASTER_BASE + 7          # default IR7
    assert pair.isr() == 0                        # and no IS bit set: no EOI is due
    assert pair.pic.master.spurious == 1


def test_spurious_irq15_sets_only_the_masters_cascade_bit():
    pair = Pair()
    pair.pic.master.set_input(2, True)            # a glitch on the cascade line: the slave has nothing
    assert pair.ack() == SLAVE_BASE + 7
    assert pair.isr("master") == 0x04             # the master's IS2: the master needs its EOI
    assert pair.isr("slave") == 0
    assert pair.pic.slave.spurious == 1


def test_cascade_through_ir2():
    pair = Pair()
    pair.irq(10)
    assert pair.irr("slave") == 0x04 and pair.irr("master") == 0x04
    assert pair.intr
    assert pair.ack() == SLAVE_BASE + 2
    assert pair.isr("slave") == 0x04 and pair.isr("master") == 0x04
    pair.irq(9)                                   # higher on the slave, but IS2 holds off IR2
    assert not pair.intr
    pair.eoi("slave")
    pair.eoi("master")
    assert pair.intr and pair.ack() == SLAVE_BASE + 1
    pair.irq(0)
    assert pair.intr and pair.ack() == MASTER_BASE + 0    # IR0 outranks the in-service IR2


def test_slave_masked_on_master_ir2():
    pair = Pair()
    pair.mask(0x04)
    pair.irq(12)
    assert not pair.intr and pair.irr("master") == 0x04
    assert not pair.pic.can_interrupt(12) and pair.pic.can_interrupt(0)
    pair.mask(0)
    assert pair.pic.can_interrupt(12)
    assert pair.ack() == SLAVE_BASE + 4


def test_special_fully_nested_mode_takes_a_higher_slave_request():
    pair = Pair(icw4=p.ICW4_UPM | p.ICW4_SFNM)
    pair.irq(13)
    assert pair.ack() == SLAVE_BASE + 5
    pair.irq(9)                                   # higher priority on the slave while IS2 is set
    assert pair.intr
    assert pair.ack() == SLAVE_BASE + 1
    # without SFNM the same request waits (test_cascade_through_ir2)


def test_edge_trigger_needs_a_new_rising_edge():
    pair = Pair()
    pair.irq(1)
    assert pair.ack() == MASTER_BASE + 1
    pair.eoi()
    assert not pair.intr                          # still high: no new edge
    pair.irq(1, False)
    pair.irq(1)
    assert pair.intr


def test_level_trigger_through_elcr_and_ltim():
    pair = Pair()
    elcr = pair.pic.elcr
    elcr.write(0, 1, 0xFF)
    elcr.write(1, 1, 0xFF)
    assert (elcr.read(0, 1), elcr.read(1, 1)) == (p.ELCR_MASTER_MASK, p.ELCR_SLAVE_MASK)
    pair.irq(5)
    assert pair.ack() == MASTER_BASE + 5
    pair.eoi()
    assert pair.intr                              # level still high: requests again
    assert pair.ack() == MASTER_BASE + 5
    pair.irq(5, False)
    assert pair.irr() == 0
    pair.eoi()
    assert not pair.intr
    pair.irq(1)                                   # IRQ 1 cannot be level (PIIX): edge
    assert pair.ack() == MASTER_BASE + 1
    pair.eoi()
    assert not pair.intr
    ltim = Pair(ltim=True)
    ltim.irq(1)
    assert ltim.ack() == MASTER_BASE + 1
    ltim.eoi()
    assert ltim.intr


def test_poll_command():
    pair = Pair()
    pair.mask(0xFF)                               # polling does not need INT
    chip = pair.pic.master
    chip.write(0, 1, p.OCW3_SELECT | p.OCW3_POLL)
    assert chip.read(0, 1) == 0x00                # no request
    pair.mask(0)
    pair.irq(6)
    pair.irq(4)
    chip.write(0, 1, p.OCW3_SELECT | p.OCW3_POLL)
    assert chip.read(0, 1) == p.POLL_INT | 4      # acts as an INTA: IS4 set
    assert pair.isr() == 0x10
    assert chip.read(0, 1) == 0x10                # one read only; then status reads again (ISR selected)
    pair.eoi()
    chip.write(0, 1, p.OCW3_SELECT | p.OCW3_POLL)
    assert chip.read(0, 1) == p.POLL_INT | 6


def test_irr_isr_selection_is_remembered():
    pair = Pair()
    pair.irq(0)
    pair.irq(7)
    pair.ack()
    chip = pair.pic.master
    chip.write(0, 1, p.OCW3_SELECT | p.OCW3_RR | p.OCW3_RIS)
    assert [chip.read(0, 1) for _ in range(2)] == [0x01, 0x01]
    chip.write(0, 1, p.OCW3_SELECT)               # RR = 0: no change of selection
    assert chip.read(0, 1) == 0x01
    chip.write(0, 1, p.OCW3_SELECT | p.OCW3_RR)
    assert chip.read(0, 1) == 0x80


def test_special_mask_mode():
    pair = Pair()
    pair.irq(2 + 1)                               # IR3 in service
    assert pair.ack() == MASTER_BASE + 3
    pair.irq(6)
    assert not pair.intr                          # lower priority: held off
    pair.mask(0x08)                               # the routine masks its own level...
    pair.pic.master.write(0, 1, p.OCW3_SELECT | p.OCW3_ESMM | p.OCW3_SMM)
    assert pair.intr                              # ...and special mask lets IR6 through
    assert pair.ack() == MASTER_BASE + 6
    pair.eoi()                                    # non-specific: IS6 (IS3 is masked, not cleared)
    assert pair.isr() == 0x08
    pair.pic.master.write(0, 1, p.OCW3_SELECT | p.OCW3_ESMM)     # reset special mask
    pair.mask(0)
    pair.eoi()
    assert pair.isr() == 0


def test_device_irq_lines_are_connected_by_number():
    pair = Pair()
    line = IrqLine()
    pair.pic.connect(11, line)
    line.raise_()
    assert pair.ack() == SLAVE_BASE + 3
    with pytest.raises(vmcore.ConfigError, match="IRQ 11"):
        pair.pic.connect(11, IrqLine())
    with pytest.raises(vmcore.ConfigError, match="cascade"):
        pair.pic.connect(2, IrqLine())


def test_state_round_trip():
    pair = Pair()
    pair.mask(0x30)
    pair.irq(1)
    pair.ack()
    pair.irq(6)
    state = pair.pic.master.export_state()
    other = Pair()
    other.pic.master.restore_state(state)
    assert other.isr() == 0x02 and other.irr() == 0x40 and other.pic.master.read(1, 1) == 0x30
    with pytest.raises(vmcore.ConfigError, match="missing"):
        other.pic.master.restore_state({})


def test_machine_wires_the_pair_at_the_pc_ports():
    m = vmcore.Machine(memory_mb=2)
    assert m.interrupt_controller is m.pic
    for port, value in ((0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01),
                        (0xA0, 0x11), (0xA1, 0x38), (0xA1, 0x02), (0xA1, 0x01)):
        m.bus.write(port, 1, value)
    m.bus.write(0x21, 1, 0xEF)                    # only IRQ 4 (COM1)
    assert m.bus.read(0x21, 1) == 0xEF
    m.bus.write(0x3F9, 1, 0x02)                   # UART: THRE interrupt enable
    assert not m._intr                            # OUT2 still gates the UART's INTR
    m.bus.write(0x3FC, 1, 0x08)                   # MCR OUT2
    assert m._intr
    assert m.pic.acknowledge() == 0x34
    m.bus.write(0x4D1, 1, 0xFF)
    assert m.bus.read(0x4D1, 1) == p.ELCR_SLAVE_MASK


def test_power_on_chip_is_masked_and_silent_until_initialized():
    log = []
    pic = PicPair(set_intr=log.append)
    assert pic.master.read(1, 1) == 0xFF
    pic.master.write(1, 1, 0x00)                  # OCW1 before any ICW1: a mask, still no INT
    pic.set_irq(3, True)
    assert not pic.intr and log == [] and not pic.can_interrupt(3)
