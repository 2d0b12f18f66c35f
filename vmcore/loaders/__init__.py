"""Guest image loaders: multiboot v1 (ELF32 or a.out kludge) and flat binaries."""
from vmcore.loaders.flat import load_flat
from vmcore.loaders.multiboot import LoadSegment, MultibootBoot, load_multiboot

__all__ = ["load_multiboot", "MultibootBoot", "LoadSegment", "load_flat"]
