"""The dense CRF's use of process memory: freed memory kept in the heap between calls and a
trim after a build that grew the process. The mechanism is :mod:`atrous.memory` (layer 0);
this module names what the CRF uses, and keeps ``atrous.crf.heap`` importable."""

from __future__ import annotations

from atrous.memory import (
    heap_retention,
    retained_heap,
    rss_bytes,
    set_heap_retention,
    trim_heap,
    trim_if_grown,
    trim_supported,
)

__all__ = [
    "heap_retention",
    "retained_heap",
    "rss_bytes",
    "set_heap_retention",
    "trim_heap",
    "trim_if_grown",
    "trim_supported",
]
