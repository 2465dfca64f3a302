"""Keeping a long-running service's memory bounded.

A CPU PyTorch process that runs batches of changing shapes (1 to ``max_batch`` images of
whatever size arrives) fragments glibc's heap: freed activations stay mapped, and RSS climbs
for minutes (``benchmarks/bench_serve.py --soak`` measures it). Giving the memory back after
every batch (``malloc_trim``, or a fixed ``M_MMAP_THRESHOLD``) bounds it but costs
throughput: the next batch faults its pages in again. :class:`MemoryGuard` trims only when
RSS passes a limit, so a service pays nothing until it nears the limit and stays near it.
"""

from __future__ import annotations

from collections.abc import Callable

from atrous.memory import rss_bytes, trim_supported
from atrous.memory import trim_heap as trim

__all__ = ["MemoryGuard", "rss_bytes", "trim"]


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
        return self.limit > 0 and trim_supported()

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
