"""Port-mapped devices and the bus that routes guest port I/O to them."""
from vmcore.devices.a20 import KeyboardController, SystemControlPortA
from vmcore.devices.bus import PortBus, PortDevice, PortMapping
from vmcore.devices.debugcon import DebugConsole
from vmcore.devices.debugexit import DebugExit
from vmcore.devices.irq import IrqLine
from vmcore.devices.uart16550 import Uart16550

__all__ = ["PortBus", "PortDevice", "PortMapping", "IrqLine", "DebugConsole", "DebugExit", "Uart16550",
           "KeyboardController", "SystemControlPortA"]
