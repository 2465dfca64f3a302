"""The service's memory guard: RSS read from /proc, the heap trimmed past the limit only."""

from __future__ import annotations

import sys

import pytest

from atrous.serve.memory import MemoryGuard, rss_bytes, trim

linux_glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not trim(), reason="needs Linux with glibc"
)


@linux_glibc
def test_trim_gives_fragmented_heap_memory_back() -> None:
    # 128 MB of heap chunks (64 KB: below glibc's mmap threshold), freed under a pinned top
    # chunk: glibc keeps the pages mapped until trimmed
    chunks = [bytearray(64 * 1024) for _ in range(2048)]
    pin = bytearray(64 * 1024)
    full = rss_bytes()
    del chunks
    kept = rss_bytes()
    assert trim()
    after = rss_bytes()
    assert full is not None and kept is not None and after is not None
    assert kept > full - 32 * 2**20  # freed, yet still resident
    assert after < kept - 64 * 2**20  # handed back
    del pin


@linux_glibc
def test_the_guard_trims_only_above_its_limit() -> None:
    seen = []
    never = MemoryGuard(0, on_trim=lambda a, b: seen.append((a, b)))
    assert not never.active and never.check() > 0 and never.trims == 0
    high = MemoryGuard(2**50, on_trim=lambda a, b: seen.append((a, b)))
    high.check()
    assert high.trims == 0 and seen == []
    low = MemoryGuard(1, on_trim=lambda a, b: seen.append((a, b)))
    low.check()
    assert low.trims == 1 and len(seen) == 1 and seen[0][0] > 0
