"""Keeping a long-running service's memory bounded.

A CPU PyTorch process that runs batches of changing shapes (1 to ``max_batch`` images of
whatever size arrives) fragments glibc's heap: freed activations stay mapped, and RSS climbs
for minutes (measured: 0.3 GB to 1.9 GB over 60 mixed batches of the CamVid MobileNetV2,
``benchmarks/bench_serve.py --soak``). Giving the memory back after every batch
(``malloc_trim``, or a fixed ``M_MMAP_THRESHOLD``) bounds it but costs about a quarter of the
throughput: the next batch faults its pages in again. :class:`MemoryGuard` trims only when
RSS passes a limit, so a service pays nothing until it nears the limit and stays near it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable

__all__ = ["MemoryGuard", "rss_bytes", "trim"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int | None:
    """This process's resident set size, or None where ``/proc`` is absent."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to call
        return None
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


_TRIM = _malloc_trim()


def trim() -> bool:
    """Return the heap's free pages to the OS (glibc ``malloc_trim(0)``); False where the C
    library has no such call."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


class MemoryGuard:
    """After a batch, :meth:`check` trims the heap when RSS is above ``limit_bytes``.

    Args:
        limit_bytes: the RSS above which to trim; None or 0 never trims.
        on_trim: called with (RSS before, RSS after) in bytes (metrics).
    """

    def __init__(
        self, limit_bytes: int | None, on_trim: Callable[[int, int], None] | None = None
    ) -> None:
        self.limit = int(limit_bytes or 0)
        self.on_trim = on_trim
        self.trims = 0

    @property
    def active(self) -> bool:
        return self.limit > 0 and _TRIM is not None

    def check(self) -> int | None:
        """Trim if RSS is above the limit; returns the RSS (after trimming) or None."""
        rss = rss_bytes()
        if rss is None or not self.active or rss <= self.limit:
            return rss
        trim()
        self.trims += 1
        after = rss_bytes() or rss
        if self.on_trim is not None:
            self.on_trim(rss, after)
        return after
