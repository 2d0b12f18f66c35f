"""Hostile guests: guests written to break the monitor (issue 15), run by tests/test_hostile.py.

Each case is a guest that attacks one defect. The suite runs every case in every mode it names, each
in its own child process, with ``run(timeout=2)``, and asserts that run() returns within a few
seconds, with the exit the case expects, that the case's own checks hold, and that host canaries
(arrays allocated around the machine) are untouched.

Cases live in modules named ``hostile_cases_*.py`` beside this file, each with a ``CASES`` list.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Callable, Optional

import vmcore

ALL_MODES = ("bare", "bt", "trap")


@dataclasses.dataclass(frozen=True)
class HostileCase:
    name: str
    # prepares a fresh Machine(memory_mb=..., mode=...): code, registers, ROM
    setup: Callable[[vmcore.Machine], None]
    # the acceptable r.exit values, by Exit.value ("timeout", "shutdown", "hlt", ...)
    exits: frozenset[str]
    modes: tuple[str, ...] = ALL_MODES
    memory_mb: int = 4
    # extra assertions on the machine after the run, in the child (raise AssertionError)
    check: Optional[Callable[[vmcore.Machine, vmcore.RunResult], None]] = None
    timeout: float = 2.0
    # run() must have returned within this many seconds
    max_seconds: float = 5.0


def load_rom_image(m: vmcore.Machine, image: bytes) -> None:
    """Machine.load_bios from bytes (it takes a path): the ROM is mapped and the CPU reset."""
    fd, path = tempfile.mkstemp(suffix=".rom")
    with os.fdopen(fd, "wb") as f:
        f.write(image)
    try:
        m.load_bios(path)
    finally:
        os.unlink(path)
