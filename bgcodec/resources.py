"""What coding may take from the machine: memory (an image too large for it is refused from
its header, before anything is allocated) and the cores that other work leaves idle.

The memory figures are what ``benchmarks/memory.py`` measured per pixel of a 1024² tile
with the shipped ``small`` weights, rounded up (docs/BENCHMARKS.md); bigger configs need
more. They leave out the program itself (about 0.3 GiB with torch and the weights).
Standard library only.
"""

from __future__ import annotations

import os

from .config import TILE_SIZE
from .errors import BgcodecError

# The model's figures apply to the pixels coded at once (one tile, bgcodec.config.TILE_SIZE);
# the image's own bytes to all of them.
ENCODE_BYTES_PER_PIXEL = 384
DECODE_BYTES_PER_PIXEL = 288
EFFORT_BYTES_PER_PIXEL = 2048
"""Encoding with --effort > 0: SGA keeps the activations of the top-down path for backpropagation."""
IMAGE_BYTES_PER_PIXEL = 8
"""Reading or writing the image file itself (the decoded pixels and a copy)."""


def encoding_bytes_per_pixel(effort: int) -> int:
    """What encoding takes per pixel at this --effort."""
    return EFFORT_BYTES_PER_PIXEL if effort else ENCODE_BYTES_PER_PIXEL


def available_memory() -> int | None:
    """Bytes this process can allocate without swapping (Linux: MemAvailable), or None
    where the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_needed(width: int, height: int, bytes_per_pixel: int, tile_pixels: int | None = None) -> int:
    """Bytes that coding a width×height image takes, its tiles of ``tile_pixels`` (default:
    bgcodec.config.TILE_SIZE²) coded one at a time at ``bytes_per_pixel``."""
    pixels = width * height
    tile_pixels = TILE_SIZE**2 if tile_pixels is None else tile_pixels
    return min(pixels, tile_pixels) * bytes_per_pixel + pixels * IMAGE_BYTES_PER_PIXEL


def check_memory(width: int, height: int, bytes_per_pixel: int, name: str, what: str,
                 tile_pixels: int | None = None) -> None:
    """Raise BgcodecError naming ``name`` when ``what`` (e.g. "encoding") a width×height image
    needs more memory than is available (see memory_needed)."""
    available = available_memory()
    needed = memory_needed(width, height, bytes_per_pixel, tile_pixels)
    if available is not None and needed > available:
        raise BgcodecError(f"{name}: {what} {width}x{height} pixels needs about {needed / 2**30:.1f} GiB of "
                           f"memory; {available / 2**30:.1f} GiB are available")


def idle_cores() -> int:
    """The cores this process may use that the 1-minute load average says are idle (at least
    one): threads that wait on cores busy with other jobs slow each other down many times."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores
    return max(1, min(cores, int(cores - load + 0.5)))
