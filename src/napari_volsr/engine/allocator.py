"""Keep resident memory bounded by live data over thousands of block-sized allocations.

glibc raises its mmap threshold each time a large block is freed, after which
block-sized buffers (network activations, tiles) come from the heap and freed ones
are kept by the process: over a long restore the resident size creeps up by a few
blocks' worth, and varies from run to run. Fixing the threshold sends large buffers
to mmap, so they go back to the system when freed. Measured in benchmarks/memory.py.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

_M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
THRESHOLD_BYTES = 1 << 20


@functools.cache
def bound_heap_growth() -> bool:
    """Fix glibc's mmap threshold at 1 MiB (once per process); False where not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, THRESHOLD_BYTES))
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
