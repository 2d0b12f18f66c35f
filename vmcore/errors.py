"""vmcore's exceptions: one base, ``VmError``, and one subclass per layer.

Each error says what went wrong and where (file, address, port). A guest's own
faults are never Python exceptions: they are guest events (see ``Exit``).
"""


class VmError(Exception):
    """Base of every error vmcore raises. ``code`` is a short stable identifier."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class LoaderError(VmError):
    """A guest image could not be loaded (malformed ELF, no multiboot header, does not fit in RAM...)."""

    code = "loader"


class GuestMemoryError(VmError):
    """A host-side request named guest memory that does not exist (e.g. mem_read beyond RAM)."""

    code = "memory"


class BusError(VmError):
    """Port bus misuse: overlapping device ranges, bad access size."""

    code = "bus"


class ConfigError(VmError):
    """The machine was asked for something it cannot be (bad mode, memory size, register name...)."""

    code = "config"


class WorkloadError(VmError):
    """A workload could not be built or run natively."""

    code = "workload"


class DiskImageError(VmError):
    """A disk image cannot back a drive (missing, unreadable, empty, not whole sectors), or a
    sector outside it was asked for."""

    code = "disk"
