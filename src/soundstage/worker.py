"""Process set-up for a shard worker: one thread per library, and a heap that is kept.

Call :func:`setup` first thing in a worker process (``soundstage.cli`` does, at import), before
numpy is imported. This module imports nothing heavy.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: Thread-pool sizes of BLAS, OpenMP, numba and numexpr: one thread each, because shards already
#: run in parallel (more oversubscribes the cores, and some BLAS builds hang).
THREAD_VARS: tuple[str, ...] = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Largest allocation served from the heap (glibc's maximum for M_MMAP_THRESHOLD on 64-bit).
HEAP_ALLOCATION_MAX = 32 * 1024 * 1024
#: Free heap memory kept by the process instead of being handed back to the kernel.
HEAP_KEEP = 1024 * 1024 * 1024


def pin_threads() -> None:
    """Default every :data:`THREAD_VARS` variable to 1 (an explicit setting is kept)."""
    for var in THREAD_VARS:
        os.environ.setdefault(var, "1")


def keep_heap() -> bool:
    """Make glibc keep freed memory for the next clip instead of returning it to the kernel.

    A worker allocates and frees the same few arrays per clip (a decoded 30 s stereo clip is
    5 MB, its spectra a few MB more). By default glibc serves such sizes with ``mmap`` and gives
    them back on ``free``, so every clip faults its pages in afresh: ~2,500 page faults per 30 s
    clip, 5-10 % of its CPU time, more on a virtual machine whose host reclaims freed pages.
    Serving allocations up to :data:`HEAP_ALLOCATION_MAX` from the heap and trimming it only
    beyond :data:`HEAP_KEEP` keeps those pages: ~100 faults per clip. The memory a worker holds
    is its peak working set, as before; nothing else changes. Returns whether glibc accepted it
    (``False`` on other C libraries, where this does nothing).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_ALLOCATION_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, HEAP_KEEP))


def setup() -> None:
    """Everything a worker process needs before it imports numpy: :func:`pin_threads`, and
    :func:`keep_heap` unless ``SOUNDSTAGE_KEEP_HEAP=0``."""
    pin_threads()
    if os.environ.get("SOUNDSTAGE_KEEP_HEAP", "1") != "0":
        keep_heap()
