"""The monitor: the table of sensitive instructions and the scanner of guest-kernel code (the `bt` mode's
groundwork; the exit loop, virtual CPU and shadow paging come with the mode itself)."""
from vmcore.monitor.scanner import BlockEnd, ScannedInsn, Scanner, Translation
from vmcore.monitor.sensitive import CALLOUT, CALLOUTS, IDENT, TRAP, Action, ActionKind, InsnClass

__all__ = ["Scanner", "Translation", "ScannedInsn", "BlockEnd",
           "Action", "ActionKind", "IDENT", "TRAP", "CALLOUT", "CALLOUTS", "InsnClass"]
