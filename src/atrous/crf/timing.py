"""Stage times of a dense-CRF call, for benchmarks: ``dense_crf(..., profile=StageTimes())``."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

__all__ = ["StageTimes"]


class StageTimes:
    """The clock reading at the end of each stage of a call that records into it.

    :func:`~atrous.crf.dense_crf` stamps ``start`` (parameters checked), ``checked`` (inputs
    checked), ``unary``, ``positional`` / ``bilateral`` (each kernel built, if used), ``built``
    (the mean-field operators), and ``end`` (iterations done, output converted).

    Args:
        clock: seconds as a float; ``time.perf_counter`` (wall) by default,
            ``time.process_time`` for the CPU time of the process.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.stamps: dict[str, float] = {}

    def stamp(self, stage: str) -> None:
        """Record that ``stage`` ended now."""
        self.stamps[stage] = self.clock()

    def seconds(self, first: str, last: str) -> float:
        """Time from the end of stage ``first`` to the end of stage ``last``."""
        return self.stamps[last] - self.stamps[first]

    def durations(self) -> dict[str, float]:
        """Seconds each stage took (from the previous stamp), by stage, in call order."""
        pairs = itertools.pairwise(self.stamps.items())
        return {stage: end - start for (_, start), (stage, end) in pairs}
