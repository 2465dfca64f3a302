"""Process memory (the bottom layer: nothing here imports atrous): the resident set size,
returning the heap's free pages to the system, and keeping freed memory in the heap between
calls. glibc only: elsewhere :func:`trim_heap` returns False and retention is off;
:func:`rss_bytes` needs ``/proc``.

- :func:`rss_bytes` reads this process's resident set size.
- :func:`trim_heap` (glibc ``malloc_trim(0)``) returns the heap's free pages, holes included,
  to the system; :func:`trim_if_grown` does it only after a step that grew the process. The
  dense CRF trims once after a lattice build that grew the process, and a server's memory
  guard (:mod:`atrous.serve.memory`) trims when RSS passes its limit.
- :func:`retained_heap` keeps freed CPU memory in the heap for the next call. A dense CRF on a
  1000x750 image allocates ~1 GB in a few hundred large tensors; glibc serves every block
  above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and unmaps it on free, so
  each block is page-faulted and zeroed by the kernel again on every call. PyTorch's CPU
  performance guide recommends jemalloc/tcmalloc for this; this does the part that matters
  without an ``LD_PRELOAD``: while :func:`retained_heap` is active, large blocks come from the
  heap (``M_MMAP_MAX = 0``) and the heap is never trimmed, so memory freed during the call is
  reused without new faults; on exit, mmap is allowed again and the heap keeps at most
  :func:`heap_retention` bytes of free memory (default 1 GiB) for the next call; the rest is
  returned to the system.

Process-wide effect after the first :func:`retained_heap`: up to that many bytes of freed
memory stay mapped, and glibc's dynamic mmap threshold is frozen at its current value.
``set_heap_retention(0)`` turns the mechanism off (memory is then trimmed as usual).
"""
# What it saves (page faults and system time per dense-CRF call, before and after): item d of
# benchmarks/results/crf.md's log of the CRF's speed-ups; the trim after a build: item 4.

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import threading
from collections.abc import Iterator

__all__ = [
    "heap_retention",
    "retained_heap",
    "rss_bytes",
    "set_heap_retention",
    "trim_heap",
    "trim_if_grown",
    "trim_supported",
]

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536  # glibc's default

_lock = threading.Lock()
_depth = 0
_retention = 1 << 30
_mallopt = None
_malloc_trim = None
if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
    with contextlib.suppress(OSError, AttributeError):
        _libc = ctypes.CDLL(None)
        _mallopt = _libc.mallopt
        _mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        _mallopt.restype = ctypes.c_int
        _malloc_trim = _libc.malloc_trim
        _malloc_trim.argtypes, _malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int | None:
    """This process's resident set size, or None where ``/proc`` is absent."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def trim_supported() -> bool:
    """Whether :func:`trim_heap` can trim (glibc)."""
    return _malloc_trim is not None


def trim_heap() -> bool:
    """Return the heap's free pages to the OS (glibc ``malloc_trim(0)``); False where the C
    library has no such call."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True


def trim_if_grown(rss_before: int | None, min_growth: int = 32 << 20) -> bool:
    """Trim the heap if RSS grew by at least ``min_growth`` bytes since ``rss_before``.

    For a call that has just freed a large build (the lattices' temporaries) and is about to
    allocate its largest buffers: memory freed in small pieces is fragmented, the new buffers
    do not fit its holes and would land above it, so the call's peak would be the build's
    garbage plus the buffers.  A call that grew the process returns the holes; a warm call
    built in retained memory (no growth) keeps it for reuse.
    """
    # (returning the holes costs ~10 ms: benchmarks/results/crf.md, item 4 of issue 14's log)
    if rss_before is None or _malloc_trim is None:
        return False
    now = rss_bytes()
    if now is None or now - rss_before < min_growth:
        return False
    return trim_heap()


def heap_retention() -> int:
    """Bytes of freed heap memory kept between calls (0: the mechanism is off)."""
    return _retention if _mallopt is not None else 0


def set_heap_retention(max_bytes: int) -> None:
    """Keep at most ``max_bytes`` of freed memory in the heap after a :func:`retained_heap`
    block, such as a dense-CRF call (0 turns the mechanism off).  Capped at 2 GiB - 1 (a C
    int)."""
    global _retention
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
    _retention = min(int(max_bytes), 2**31 - 1)


@contextlib.contextmanager
def retained_heap() -> Iterator[None]:
    """Serve large allocations from the heap and keep freed memory inside the block."""
    global _depth
    if _mallopt is None or _retention == 0:
        yield
        return
    with _lock:
        if _depth == 0:
            _mallopt(_M_MMAP_MAX, 0)
            _mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                _mallopt(_M_TRIM_THRESHOLD, _retention)
