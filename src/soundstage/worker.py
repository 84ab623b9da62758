"""Process set-up for a shard worker: one thread per numeric library, and a heap that is kept.

Call :func:`setup` first thing in a worker process (``soundstage.cli`` does, at import), before
numpy is imported. This module imports nothing heavy.
"""

from __future__ import annotations

import ctypes
import os
import sys

#: Thread-pool sizes of BLAS, OpenMP, numba and numexpr: one thread each, because shards already
#: run in parallel (more oversubscribes the cores, and some BLAS builds hang).
THREAD_VARS: tuple[str, ...] = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def pin_threads() -> None:
    """Default every :data:`THREAD_VARS` variable to 1 (an explicit setting is kept)."""
    for var in THREAD_VARS:
        os.environ.setdefault(var, "1")


def keep_heap() -> bool:
    """Make glibc serve allocations up to 32 MiB from the heap and keep up to 1 GiB of freed heap
    (``mallopt``: ``M_MMAP_THRESHOLD``, ``M_TRIM_THRESHOLD``), so that the arrays of one clip
    reuse the memory of the last one. Returns whether glibc accepted (``False`` elsewhere)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        # The process's own symbols hold libc's (ctypes.util.find_library would run ldconfig).
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


def setup() -> None:
    """Everything a worker process needs before it imports numpy: :func:`pin_threads`, :func:`keep_heap`."""
    pin_threads()
    keep_heap()
