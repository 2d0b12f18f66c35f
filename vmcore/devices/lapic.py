"""The local APIC of the one CPU, at gpa 0xFEE00000 (Intel SDM Vol. 3A ch. 10 "Advanced
Programmable Interrupt Controller (APIC)", xAPIC mode; Table 10-1 the register map).

It sits between the interrupt sources and the CPU's INTR input: the 8259A pair's INT arrives on
LINT0, which the firmware leaves in ExtINT mode (virtual wire, MultiProcessor Specification 1.4
§3.6.2.2; QEMU resets the BSP's LINT0 to 0x700 for this, and so does this model, as no BIOS runs
here), and the APIC's own fixed interrupts (the LVT timer, the I/O APIC's messages, IPIs to self)
wait in the IRR until their priority class is above the processor priority (§10.8.3.1). The
machine's INTA (``acknowledge``) takes the highest of those first, moving it from IRR to ISR, and
otherwise the PIC's vector through LINT0, as QEMU's cpu_get_pic_interrupt does. EOI clears the
highest ISR bit; a level-triggered vector (TMR set) also ends the I/O APIC's remote IRR (§10.8.5).

With IA32_APIC_BASE[11] clear (the engine's MSR 1Bh) the APIC is hardware-disabled: the PIC's INT
goes straight to INTR and the registers read as all ones (§10.4.3).

What is not modelled: other processors (INIT, STARTUP, SMI, NMI IPIs are ignored and counted;
a fixed or lowest-priority IPI reaches this CPU only if it is a destination), NMI and SMI
delivery on LINT0/LINT1, the thermal and performance-counter sources (their LVT entries are
registers only), relocation (a new base written to IA32_APIC_BASE is kept in the MSR, but the
registers stay at 0xFEE00000), the spurious-interrupt cycle (an INTA that finds nothing above the
processor priority delivers no vector: INTR is exact here, so it does not happen), the
TSC-deadline timer mode (CPUID.1:ECX[24] is clear, so bit 18 of the LVT timer is reserved and
reads as 0), x2APIC, and the P6's fixed ones in SVR bits 3:0 (the vector is all writable, as on
the Pentium 4 and QEMU).
"""
from __future__ import annotations

from typing import Callable

from vmcore.devices.mmio import MmioDevice

LAPIC_GPA = 0xFEE00000
LAPIC_SIZE = 0x1000

# the APIC bus clock the timer counts: 100 MHz (a Core-era front side bus; QEMU's is 1 GHz). Under
# the virtual clock (119.3 MIPS) a bus tick is about 1.19 guest instructions.
BUS_HZ = 100_000_000

# register offsets (SDM Vol. 3 Table 10-1)
ID, VERSION, TPR, APR, PPR, EOI, RRD, LDR, DFR, SVR = 0x20, 0x30, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0, 0xE0, 0xF0
ISR_BASE, TMR_BASE, IRR_BASE = 0x100, 0x180, 0x200     # 8 registers each, 0x10 apart
ESR, ICR_LOW, ICR_HIGH = 0x280, 0x300, 0x310
LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_LINT0, LVT_LINT1, LVT_ERROR = 0x320, 0x330, 0x340, 0x350, 0x360, 0x370
TIMER_INITIAL, TIMER_CURRENT, TIMER_DIVIDE = 0x380, 0x390, 0x3E0
LVT_OFFSETS = (LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_LINT0, LVT_LINT1, LVT_ERROR)

# the version register: version 14h (an integrated xAPIC), max LVT entry 5 (six entries), as
# QEMU's apic reports (apic_mem_read: s->version | ((APIC_LVT_NB - 1) << 16))
VERSION_VALUE = 0x00050014

SVR_ENABLE = 1 << 8                 # APIC software enable (§10.9, Figure 10-23)
LVT_VECTOR = 0xFF
LVT_DELIVERY_MODE = 0x700
LVT_DELIVERY_STATUS = 1 << 12       # send pending: always idle here (delivery is immediate)
LVT_REMOTE_IRR = 1 << 14
LVT_LEVEL = 1 << 15
LVT_MASK = 1 << 16
TIMER_PERIODIC = 1 << 17            # LVT timer mode bits 18:17: 00 one-shot, 01 periodic (§10.5.4.1)
DM_FIXED, DM_LOWEST, DM_SMI, DM_NMI, DM_INIT, DM_STARTUP, DM_EXTINT = 0, 1, 2, 4, 5, 6, 7
# the bits software can write in each LVT entry (Figure 10-8)
LVT_WRITABLE = {LVT_TIMER: LVT_VECTOR | LVT_MASK | TIMER_PERIODIC,
                LVT_THERMAL: LVT_VECTOR | LVT_DELIVERY_MODE | LVT_MASK,
                LVT_PERF: LVT_VECTOR | LVT_DELIVERY_MODE | LVT_MASK,
                LVT_LINT0: LVT_VECTOR | LVT_DELIVERY_MODE | (1 << 13) | LVT_LEVEL | LVT_MASK,
                LVT_LINT1: LVT_VECTOR | LVT_DELIVERY_MODE | (1 << 13) | LVT_LEVEL | LVT_MASK,
                LVT_ERROR: LVT_VECTOR | LVT_MASK}
LINT0_VIRTUAL_WIRE = DM_EXTINT << 8         # 0x700: ExtINT, edge, unmasked

# ESR bits (§10.5.3, Figure 10-9)
ESR_SEND_ILLEGAL_VECTOR = 1 << 5
ESR_RECEIVE_ILLEGAL_VECTOR = 1 << 6
ESR_ILLEGAL_REGISTER = 1 << 7

# ICR (§10.6.1, Figure 10-12)
ICR_DEST_LOGICAL = 1 << 11
ICR_LEVEL_ASSERT = 1 << 14
ICR_TRIGGER_LEVEL = 1 << 15
ICR_WRITABLE_LOW = 0x000CCFFF       # vector, delivery mode, dest mode, level, trigger, shorthand
SH_NONE, SH_SELF, SH_ALL, SH_OTHERS = 0, 1, 2, 3

_APIC_BASE_EN = 0x800               # IA32_APIC_BASE[11]


def _divisor(divide_config: int) -> int:
    """Divide configuration register bits 3, 1:0 -> the bus clock divisor (§10.5.4, Figure 10-10):
    000 = 2, 001 = 4, 010 = 8, 011 = 16, 100 = 32, 101 = 64, 110 = 128, 111 = 1."""
    code = (divide_config & 3) | ((divide_config >> 1) & 4)
    return 1 if code == 7 else 2 << code


def _highest(bits: int) -> int:
    return bits.bit_length() - 1        # -1 if none


class LocalApic(MmioDevice):
    """``clock`` runs the timer; ``apic_base()`` reads IA32_APIC_BASE; ``set_intr(level)`` drives
    the CPU's INTR; ``pic`` (an object with ``acknowledge()`` and ``intr``) is on LINT0 through
    ``pic_intr(level)``; ``on_eoi(vector)`` is called for the EOI of a level-triggered vector."""

    def __init__(self, clock, apic_base: Callable[[], int] = lambda: LAPIC_GPA | 0x900,
                 set_intr: Callable[[bool], None] | None = None, pic=None,
                 on_eoi: Callable[[int], None] | None = None,
                 publish: Callable[[int, int | None], None] | None = None):
        super().__init__()
        # publish(offset, value | None): registers that read the same until this device says
        # otherwise, answered by the engine without an exit (ID and version: xv6 reads the ID on
        # every spinlock operation); withdrawn when they change
        self.publish = publish
        self.clock = clock
        self.apic_base = apic_base
        self.set_intr = set_intr
        self.pic = pic
        self.on_eoi = on_eoi
        self.on_reprogram = lambda: None      # TimerSet.add replaces it
        self.ignored_ipis = 0                 # INIT, STARTUP, SMI, NMI: no other CPU, not modelled
        self.timer_fires = 0                  # timer expiries delivered to the IRR
        self._pic_level = False
        self._intr = False
        self.reset()

    def reset(self) -> None:
        """The power-up and RESET state (§10.4.7.1), with LINT0 in virtual wire mode."""
        self._withdraw()
        self.apic_id = 0
        self.tpr = 0
        self.ldr = 0
        self.dfr = 0xFFFFFFFF
        self.svr = 0xFF
        self.irr = self.isr = self.tmr = 0
        self.esr = 0                  # what ESR reads: latched by the last write to it
        self._errors = 0              # errors since then
        self.icr = 0                  # ICR high << 32 | low
        self.lvt = {off: LVT_MASK for off in LVT_OFFSETS}
        self.lvt[LVT_LINT0] = LINT0_VIRTUAL_WIRE
        self.timer_initial = 0
        self.divide_config = 0
        self._timer_start = 0         # bus tick at which the current count was (re)loaded
        self._timer_seen = 0          # expiries since then already accounted for
        self._update()
        self.on_reprogram()

    # ---- state the rest of the machine asks about --------------------------------------
    @property
    def hardware_enabled(self) -> bool:
        return bool(self.apic_base() & _APIC_BASE_EN)

    @property
    def software_enabled(self) -> bool:
        return bool(self.svr & SVR_ENABLE)

    @property
    def ppr(self) -> int:
        """Processor priority (§10.8.3.1): TPR, or the class of the highest vector in service."""
        isrv = max(_highest(self.isr), 0)
        return self.tpr & 0xFF if (self.tpr >> 4) >= (isrv >> 4) else isrv & 0xF0

    def _deliverable(self) -> int | None:
        """The highest IRR vector whose class is above the processor priority class."""
        if not self.software_enabled:
            return None
        irrv = _highest(self.irr)
        if irrv < 0 or (irrv >> 4) <= (self.ppr >> 4):
            return None
        return irrv

    def passes_pic(self) -> bool:
        """Does the PIC's INT reach INTR: hardware-disabled (no APIC in the way), or LINT0 unmasked
        in ExtINT mode."""
        if not self.hardware_enabled:
            return True
        lint0 = self.lvt[LVT_LINT0]
        return not (lint0 & LVT_MASK) and (lint0 & LVT_DELIVERY_MODE) == DM_EXTINT << 8

    def _update(self) -> None:
        """Recompute INTR."""
        level = self._pic_level and self.passes_pic()
        if self.hardware_enabled and self._deliverable() is not None:
            level = True
        if level != self._intr:
            self._intr = level
            if self.set_intr is not None:
                self.set_intr(level)

    # ---- inputs -------------------------------------------------------------------------
    def pic_intr(self, level: bool) -> None:
        """The 8259A master's INT output, wired to LINT0."""
        self._pic_level = bool(level)
        self._update()

    def accept(self, vector: int, level: bool = False, dest: int = 0, logical: bool = False,
               mode: int = DM_FIXED) -> bool:
        """An interrupt message (from the I/O APIC, or an IPI): True if this APIC took it (a
        destination, a fixed or lowest-priority delivery with a legal vector)."""
        if not self.hardware_enabled or not self._is_destination(dest, logical):
            return False
        if mode not in (DM_FIXED, DM_LOWEST):
            self.ignored_ipis += 1
            return False
        return self._set_irr(vector, level)

    def _set_irr(self, vector: int, level: bool) -> bool:
        if vector < 16:
            self._error(ESR_RECEIVE_ILLEGAL_VECTOR)     # vectors 0-15 are reserved (§10.5.2)
            return False
        bit = 1 << vector
        self.irr |= bit
        self.tmr = self.tmr | bit if level else self.tmr & ~bit
        self._update()
        return True

    def _is_destination(self, dest: int, logical: bool) -> bool:
        """§10.6.2: physical, the APIC ID or FFh (broadcast); logical, flat model (DFR 1111b) a
        bit of LDR[31:24] in the mask, cluster model (0000b) the cluster and one member bit."""
        dest &= 0xFF
        if not logical:
            return dest == 0xFF or dest == (self.apic_id >> 24) & 0xFF
        ldr = (self.ldr >> 24) & 0xFF
        if (self.dfr >> 28) == 0xF:
            return bool(dest & ldr)
        return dest == 0xFF or ((dest >> 4) == (ldr >> 4) and bool(dest & ldr & 0xF))

    def _error(self, bit: int) -> None:
        self._errors |= bit
        lvt = self.lvt[LVT_ERROR]
        if not (lvt & LVT_MASK) and (lvt & LVT_VECTOR) >= 16:
            self._set_irr(lvt & LVT_VECTOR, False)      # the error interrupt (§10.5.3)

    # ---- the CPU's side ------------------------------------------------------------------
    def acknowledge(self) -> int | None:
        """INTA: the highest deliverable fixed interrupt (IRR -> ISR), else the PIC's vector
        through LINT0, else None (nothing is pending any more)."""
        if self.hardware_enabled:
            self.poll()
            vector = self._deliverable()
            if vector is not None:
                self.irr &= ~(1 << vector)
                self.isr |= 1 << vector
                self._update()
                return vector
        if self._pic_level and self.passes_pic() and self.pic is not None:
            return self.pic.acknowledge()       # the PIC lowers INT through pic_intr()
        self._update()
        return None

    def eoi(self) -> None:
        """End of interrupt (§10.8.5): the highest vector in service is done."""
        vector = _highest(self.isr)
        if vector < 0:
            return
        self.isr &= ~(1 << vector)
        if self.tmr & (1 << vector):
            self.tmr &= ~(1 << vector)
            if self.on_eoi is not None:
                self.on_eoi(vector)             # the I/O APIC's remote IRR (level-triggered)
        self._update()

    # ---- the timer (§10.5.4) -------------------------------------------------------------
    def _bus_tick(self) -> int:
        return self.clock.ticks(BUS_HZ)

    @property
    def _period(self) -> int:
        """Bus ticks from the load of the initial count to its expiry."""
        return self.timer_initial * _divisor(self.divide_config)

    def _expiries(self, tick: int) -> int:
        """Expiries of the running count by bus tick ``tick``: one at most in one-shot mode."""
        if self.timer_initial == 0 or tick < self._timer_start:
            return 0
        n = (tick - self._timer_start) // self._period
        return n if self.lvt[LVT_TIMER] & TIMER_PERIODIC else min(n, 1)

    def current_count(self) -> int:
        if self.timer_initial == 0:
            return 0
        elapsed = (self._bus_tick() - self._timer_start) // _divisor(self.divide_config)
        if self.lvt[LVT_TIMER] & TIMER_PERIODIC:
            return self.timer_initial - elapsed % self.timer_initial
        return self.timer_initial - elapsed if elapsed < self.timer_initial else 0

    def next_event(self) -> int | None:
        """Clock time of the next timer expiry that raises a request (None: stopped, or masked)."""
        if self.timer_initial == 0 or (self.lvt[LVT_TIMER] & LVT_MASK) or not self.hardware_enabled:
            return None
        if not (self.lvt[LVT_TIMER] & TIMER_PERIODIC) and self._timer_seen >= 1:
            return None
        return self.clock.units_at(self._timer_start + (self._timer_seen + 1) * self._period, BUS_HZ)

    def poll(self) -> None:
        """Account for the expiries up to now: each sets the timer vector in the IRR unless the
        entry is masked (several between two polls are one request, as in the IRR itself)."""
        n = self._expiries(self._bus_tick())
        if n > self._timer_seen:
            self._timer_seen = n
            lvt = self.lvt[LVT_TIMER]
            if not (lvt & LVT_MASK) and self.hardware_enabled:
                self.timer_fires += 1
                self._set_irr(lvt & LVT_VECTOR, False)

    def timer_can_interrupt(self) -> bool:
        """Would the next expiry reach the CPU (a halted CPU waits only for those)?"""
        vector = self.lvt[LVT_TIMER] & LVT_VECTOR
        return self.software_enabled and (vector >> 4) > (self.ppr >> 4) and not (self.isr >> vector) & 1

    def _restart_timer(self, current: int | None = None) -> None:
        """The count runs from ``current`` (the initial count if None) from now on."""
        tick = self._bus_tick()
        if current is None or self.timer_initial == 0:
            self._timer_start = tick
        else:
            self._timer_start = tick - (self.timer_initial - current) * _divisor(self.divide_config)
        self._timer_seen = 0
        self.on_reprogram()

    # ---- registers ----------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if not self.hardware_enabled:
            return (1 << (8 * size)) - 1
        value = self._read32(offset & 0xFF0)
        return (value >> (8 * (offset & 3))) & ((1 << (8 * size)) - 1)

    def _withdraw(self) -> None:
        if getattr(self, "publish", None) is not None:
            self.publish(ID, None)
            self.publish(VERSION, None)

    def _read32(self, reg: int) -> int:
        if reg == ID:
            if self.publish is not None:
                self.publish(ID, self.apic_id)
            return self.apic_id
        if reg == VERSION:
            if self.publish is not None:
                self.publish(VERSION, VERSION_VALUE)
            return VERSION_VALUE
        if reg == TPR:
            return self.tpr
        if reg == APR:
            return 0                    # one CPU: never arbitrates (as QEMU's apic_get_arb_pri)
        if reg == PPR:
            return self.ppr
        if reg == LDR:
            return self.ldr
        if reg == DFR:
            return self.dfr
        if reg == SVR:
            return self.svr
        if ISR_BASE <= reg < ISR_BASE + 0x80:
            return (self.isr >> (2 * (reg - ISR_BASE))) & 0xFFFFFFFF
        if TMR_BASE <= reg < TMR_BASE + 0x80:
            return (self.tmr >> (2 * (reg - TMR_BASE))) & 0xFFFFFFFF
        if IRR_BASE <= reg < IRR_BASE + 0x80:
            self.poll()
            return (self.irr >> (2 * (reg - IRR_BASE))) & 0xFFFFFFFF
        if reg == ESR:
            return self.esr
        if reg == ICR_LOW:
            return self.icr & 0xFFFFFFFF & ~LVT_DELIVERY_STATUS    # delivery status: idle
        if reg == ICR_HIGH:
            return self.icr >> 32
        if reg in self.lvt:
            return self.lvt[reg]
        if reg == TIMER_INITIAL:
            return self.timer_initial
        if reg == TIMER_CURRENT:
            return self.current_count()
        if reg == TIMER_DIVIDE:
            return self.divide_config
        return 0                        # EOI (write-only), RRD, reserved: read as 0

    def write(self, offset: int, size: int, value: int) -> None:
        if not self.hardware_enabled:
            return
        reg = offset & 0xFF0
        if size != 4 or offset & 0xF:
            # the registers are 32-bit, 16-byte aligned (§10.4.1): a narrower store merges into it
            shift = 8 * (offset & 3)
            mask = ((1 << (8 * size)) - 1) << shift
            value = (self._read32(reg) & ~mask) | ((value << shift) & mask)
        self._write32(reg, value & 0xFFFFFFFF)

    def _write32(self, reg: int, value: int) -> None:
        if reg == ID:
            self.apic_id = value & 0xFF000000
            self._withdraw()
        elif reg == TPR:
            self.tpr = value & 0xFF
            self._update()
        elif reg == EOI:
            self.eoi()
        elif reg == LDR:
            self.ldr = value & 0xFF000000
        elif reg == DFR:
            self.dfr = (value & 0xF0000000) | 0x0FFFFFFF
        elif reg == SVR:
            was = self.software_enabled
            self.svr = value & 0x1FF
            if was and not self.software_enabled:
                # software disable (§10.4.7.2): every LVT entry masked
                for off in LVT_OFFSETS:
                    self.lvt[off] |= LVT_MASK
            self._update()
            self.on_reprogram()
        elif reg == ESR:
            self.esr, self._errors = self._errors, 0    # a write latches the errors since the last
        elif reg == ICR_LOW:
            self.icr = (self.icr & ~0xFFFFFFFF) | (value & ICR_WRITABLE_LOW)
            self._send_ipi()
        elif reg == ICR_HIGH:
            self.icr = (self.icr & 0xFFFFFFFF) | ((value & 0xFF000000) << 32)
        elif reg in self.lvt:
            self._write_lvt(reg, value)
        elif reg == TIMER_INITIAL:
            self.poll()
            self.timer_initial = value
            self._restart_timer()
        elif reg == TIMER_DIVIDE:
            self.poll()
            current = self.current_count()
            self.divide_config = value & 0xB
            self._restart_timer(current)
        elif reg in (VERSION, APR, PPR, RRD, TIMER_CURRENT) or ISR_BASE <= reg < IRR_BASE + 0x80:
            pass                        # read-only
        else:
            self._error(ESR_ILLEGAL_REGISTER)

    def _write_lvt(self, reg: int, value: int) -> None:
        current = None
        if reg == LVT_TIMER:
            self.poll()                 # expiries so far under the old mode and mask
            current = self.current_count()
        value &= LVT_WRITABLE[reg]
        if not self.software_enabled:
            value |= LVT_MASK           # software-disabled: the mask cannot be cleared (§10.4.7.2)
        old = self.lvt[reg]
        self.lvt[reg] = value | (old & LVT_REMOTE_IRR)
        if reg == LVT_TIMER:
            if (old ^ value) & TIMER_PERIODIC and current:
                self._restart_timer(current)    # a mode change: the count goes on from where it is
            self.on_reprogram()
        elif reg == LVT_LINT0:
            self._update()

    def _send_ipi(self) -> None:
        """An IPI from ICR (§10.6.1): to this CPU only (fixed, lowest priority); others ignored."""
        low = self.icr & 0xFFFFFFFF
        vector, mode = low & 0xFF, (low >> 8) & 7
        shorthand = (low >> 18) & 3
        if shorthand == SH_OTHERS:
            return                      # no other processor
        if mode not in (DM_FIXED, DM_LOWEST):
            self.ignored_ipis += 1
            return
        if vector < 16:
            self._error(ESR_SEND_ILLEGAL_VECTOR)
            return
        to_self = shorthand in (SH_SELF, SH_ALL) or self._is_destination(self.icr >> 56, bool(low & ICR_DEST_LOGICAL))
        if to_self:
            self._set_irr(vector, bool(low & ICR_TRIGGER_LEVEL) and shorthand == SH_NONE)

    # ---- snapshots ----------------------------------------------------------------------
    _STATE = ("apic_id", "tpr", "ldr", "dfr", "svr", "irr", "isr", "tmr", "esr", "_errors", "icr",
              "timer_initial", "divide_config", "_timer_start", "_timer_seen", "_pic_level")

    def export_state(self) -> dict:
        state = {name: getattr(self, name) for name in self._STATE}
        state["lvt"] = dict(self.lvt)
        return state

    def restore_state(self, state: dict) -> None:
        for name in self._STATE:
            setattr(self, name, state[name])
        self.lvt = dict(state["lvt"])
        self._withdraw()
        self._update()
        self.on_reprogram()
