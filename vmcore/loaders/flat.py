"""Raw (flat binary) images: the file's bytes copied as they are to one gpa."""
from __future__ import annotations

from vmcore.errors import LoaderError
from vmcore.loaders.image import check_ram, copy_to_ram, read_image


def load_flat(memory, path, gpa: int) -> tuple[int, int]:
    """Copies the file at ``path`` to guest RAM at ``gpa``; returns (gpa, size in bytes)."""
    ram_size = check_ram(memory)
    if not isinstance(gpa, int) or gpa < 0:
        raise LoaderError(f"{path}: load address {gpa!r} is not a non-negative gpa")
    name, data = read_image(path)
    end_gpa = gpa + len(data)
    if end_gpa > ram_size:
        raise LoaderError(f"{name}: {len(data)} bytes at gpa {gpa:#x}..{end_gpa:#x} do not fit in guest RAM "
                          f"(0..{ram_size:#x})")
    copy_to_ram(memory, gpa, data, 0, len(data), len(data))
    return gpa, len(data)
