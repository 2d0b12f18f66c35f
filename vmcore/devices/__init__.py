"""Port-mapped and memory-mapped devices and the buses that route guest I/O to them."""
from vmcore.devices.a20 import SystemControlPortA
from vmcore.devices.bus import PortBus, PortDevice, PortMapping, PortWindow
from vmcore.devices.clock import Clock, HostClock, TimerSet, VirtualClock
from vmcore.devices.cmos import Cmos
from vmcore.devices.crtc import CrtController
from vmcore.devices.debugcon import DebugConsole
from vmcore.devices.debugexit import DebugExit
from vmcore.devices.disk import DiskImage
from vmcore.devices.fpu_ports import CoprocessorPorts
from vmcore.devices.i8042 import KeyboardController
from vmcore.devices.ide import AtaDrive, IdeController, PiixIdeFunction
from vmcore.devices.ioapic import IoApic
from vmcore.devices.irq import IrqLine
from vmcore.devices.lapic import LocalApic
from vmcore.devices.mmio import MmioBus, MmioDevice
from vmcore.devices.pci import PciConfig, PciHostBridge, Piix3IsaBridge
from vmcore.devices.pic8259 import Elcr, Pic8259, PicPair
from vmcore.devices.pit8254 import Pit8254
from vmcore.devices.portb import SystemControlPortB
from vmcore.devices.postcode import PostCode
from vmcore.devices.uart16550 import Uart16550

__all__ = ["PortBus", "PortDevice", "PortMapping", "PortWindow", "IrqLine", "DebugConsole", "DebugExit",
           "Uart16550", "KeyboardController", "SystemControlPortA", "Clock", "VirtualClock", "HostClock",
           "TimerSet", "Pic8259", "PicPair", "Elcr", "Pit8254", "SystemControlPortB", "PostCode", "Cmos",
           "CoprocessorPorts", "PciConfig", "PciHostBridge", "Piix3IsaBridge", "DiskImage", "AtaDrive",
           "IdeController", "PiixIdeFunction", "MmioBus", "MmioDevice", "LocalApic", "IoApic",
           "CrtController"]
