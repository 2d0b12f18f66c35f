"""A disk image file as a drive's medium: whole 512-byte sectors, addressed by LBA.

By default the file is opened read only and the guest's writes go to an in-memory overlay
(sector -> 512 bytes) that reads see and snapshots carry; the file never changes. With
``write_through=True`` the file is opened read-write and writes go to it. Every access is
range checked here too, so nothing a guest does reaches outside the image.
"""
from __future__ import annotations

import os
from pathlib import Path

from vmcore.errors import DiskImageError

SECTOR_SIZE = 512


class DiskImage:
    """``sectors`` whole sectors of ``path``; ``overlay`` holds the sectors written since it
    was opened (empty with ``write_through``)."""

    def __init__(self, path, write_through: bool = False):
        self.path = Path(path)
        self.write_through = bool(write_through)
        try:
            self._file = open(self.path, "r+b" if self.write_through else "rb", buffering=0)
        except OSError as e:
            how = "read-write" if self.write_through else "reading"
            raise DiskImageError(f"{self.path}: cannot open the disk image for {how}: "
                                 f"{e.strerror or e}") from None
        try:
            size = os.fstat(self._file.fileno()).st_size
            if size == 0:
                raise DiskImageError(f"{self.path}: the disk image is empty (a disk needs at least one "
                                     f"{SECTOR_SIZE}-byte sector)")
            if size % SECTOR_SIZE:
                raise DiskImageError(f"{self.path}: the disk image is {size} bytes, not a multiple of the "
                                     f"{SECTOR_SIZE}-byte sector ({size % SECTOR_SIZE} bytes over)")
            self._file.seek(0)
            self._file.read(1)                  # unreadable (EIO, a directory on some systems) shows here
        except DiskImageError:
            self._file.close()
            raise
        except OSError as e:
            self._file.close()
            raise DiskImageError(f"{self.path}: cannot read the disk image: {e.strerror or e}") from None
        self.sectors = size // SECTOR_SIZE
        self.overlay: dict[int, bytes] = {}

    def _check(self, lba: int, count: int) -> None:
        if lba < 0 or count < 0 or lba + count > self.sectors:
            raise DiskImageError(f"{self.path}: sectors {lba}..{lba + count - 1} are outside the image "
                                 f"(0..{self.sectors - 1})")

    def read(self, lba: int, count: int = 1) -> bytes:
        """``count`` sectors from ``lba`` on, the overlay's where it has them."""
        self._check(lba, count)
        self._file.seek(lba * SECTOR_SIZE)
        data = bytearray(self._file.read(count * SECTOR_SIZE))
        if len(data) < count * SECTOR_SIZE:       # the file shrank under us: the missing part reads as zeros
            data.extend(bytes(count * SECTOR_SIZE - len(data)))
        for k in range(count):
            sector = self.overlay.get(lba + k)
            if sector is not None:
                data[k * SECTOR_SIZE:(k + 1) * SECTOR_SIZE] = sector
        return bytes(data)

    def write(self, lba: int, data: bytes) -> None:
        """Whole sectors from ``lba`` on: into the file with ``write_through``, else the overlay."""
        if len(data) % SECTOR_SIZE:
            raise DiskImageError(f"{self.path}: a write of {len(data)} bytes is not whole sectors")
        count = len(data) // SECTOR_SIZE
        self._check(lba, count)
        if self.write_through:
            self._file.seek(lba * SECTOR_SIZE)
            self._file.write(bytes(data))
            return
        for k in range(count):
            self.overlay[lba + k] = bytes(data[k * SECTOR_SIZE:(k + 1) * SECTOR_SIZE])

    def flush(self) -> None:
        """Written sectors to stable storage (FLUSH CACHE); nothing to do for the overlay."""
        if self.write_through:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def export_state(self) -> dict:
        """The overlay (a write-through image's data is the file itself, not in the state)."""
        overlay = {str(lba): data.hex() for lba, data in sorted(self.overlay.items())}
        return {"sectors": self.sectors, "overlay": overlay}

    def restore_state(self, state: dict) -> None:
        if int(state["sectors"]) != self.sectors:
            raise DiskImageError(f"{self.path}: the state is of a {state['sectors']}-sector disk, "
                                 f"this image has {self.sectors}")
        overlay = {}
        for lba, text in state["overlay"].items():
            data = bytes.fromhex(text)
            lba = int(lba)
            if len(data) != SECTOR_SIZE or not 0 <= lba < self.sectors:
                raise DiskImageError(f"{self.path}: bad overlay sector {lba} in the state")
            overlay[lba] = data
        if overlay and self.write_through:
            raise DiskImageError(f"{self.path}: a write-through image has no overlay to restore")
        self.overlay = overlay

    def __repr__(self) -> str:
        return f"DiskImage({str(self.path)!r}, sectors={self.sectors}, write_through={self.write_through})"
