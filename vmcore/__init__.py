"""vmcore: an IA-32 virtual machine monitor that Python programs import.

    import vmcore
    m = vmcore.Machine(memory_mb=64, mode="bare")
    m.load_multiboot("guest.elf", cmdline="size=1000")
    r = m.run(count=10**9, timeout=30)
    print(r.exit, r.exit_code, r.instructions, r.console, m.stats)
"""
from vmcore.errors import BusError, ConfigError, DiskImageError, GuestMemoryError, LoaderError, VmError, WorkloadError
from vmcore.machine import HOOK_IO_IN, HOOK_IO_OUT, Exit, Machine, RunResult

__all__ = [
    "Machine", "RunResult", "Exit", "HOOK_IO_IN", "HOOK_IO_OUT",
    "VmError", "LoaderError", "GuestMemoryError", "BusError", "ConfigError", "WorkloadError", "DiskImageError",
]
__version__ = "0.1.0"
