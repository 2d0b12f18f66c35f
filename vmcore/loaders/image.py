"""What every loader needs: the image file's bytes and a usable guest-RAM array."""
from __future__ import annotations

import os

import numpy as np

from vmcore.errors import ConfigError, LoaderError


def read_image(path) -> tuple[str, bytes]:
    """Returns (name, bytes) of the file at ``path``; a LoaderError naming it if it cannot be read."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise LoaderError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise LoaderError(f"{name}: is a directory, not an image file") from None
    except OSError as e:
        raise LoaderError(f"{name}: cannot read the file: {e.strerror or e}") from None
    if not data:
        raise LoaderError(f"{name}: empty file")
    return name, data


def check_ram(memory) -> int:
    """Guest RAM must be a 1-D C-contiguous uint8 array indexed by gpa; returns its size in bytes."""
    if not isinstance(memory, np.ndarray) or memory.dtype != np.uint8 or memory.ndim != 1:
        raise ConfigError("guest memory must be a 1-D numpy array of uint8 indexed by gpa")
    if not memory.flags.c_contiguous or not memory.flags.writeable:
        raise ConfigError("guest memory must be a writeable, C-contiguous numpy array")
    return int(memory.size)


def copy_to_ram(memory, gpa: int, data: bytes, file_offset: int, filesz: int, memsz: int) -> None:
    """Copies ``filesz`` bytes from ``data[file_offset:]`` to gpa and zeroes the rest up to ``memsz``.
    The caller has checked every bound."""
    memory[gpa:gpa + filesz] = np.frombuffer(data, dtype=np.uint8, count=filesz, offset=file_offset)
    memory[gpa + filesz:gpa + memsz] = 0
