"""A run's wall-clock time (:class:`RunClock`, over all its resumed segments) and fitting its
length to a budget (``time_limit`` minutes), so that the poly schedule decays to zero on time,
validations included."""

from __future__ import annotations

import time

__all__ = ["RunClock", "TimeBudget", "validation_share"]


class RunClock:
    """Training wall time of a run: ``before`` seconds from earlier processes (checkpointed,
    restored on resume), plus the running segment between :meth:`start` and :meth:`stop`."""

    def __init__(self, before: float = 0.0) -> None:
        self.before = float(before)
        self._start: float | None = None  # perf_counter() when this segment began

    def start(self) -> None:
        self._start = time.perf_counter()

    def stop(self) -> None:
        """End the running segment; its seconds join ``before``."""
        self.before, self._start = self.seconds(), None

    def seconds(self) -> float:
        """Training wall time so far, over all resumed segments."""
        return self.before + self.segment()

    def segment(self) -> float:
        """Seconds of the running segment (0 when stopped)."""
        return 0.0 if self._start is None else time.perf_counter() - self._start


class TimeBudget:
    """Plans the total iteration count from the measured speed.

    The speed is taken over the most recent ~10 measurements, so a slow start (warm-up,
    another job on the machine) does not shorten the whole run."""

    def __init__(self, minutes: float, val_every: int) -> None:
        self.seconds = float(minutes) * 60.0
        self.val_every = int(val_every)
        self._hist: list[tuple[float, int]] = []  # (training seconds, iteration)

    def fit(
        self, train_seconds: float, iteration: int, elapsed: float, val_seconds: float
    ) -> int | None:
        """The planned total iterations after ``iteration``, or None while fewer than 5
        iterations have been timed. ``train_seconds`` excludes validation time; ``elapsed`` is
        the run's wall time so far (all resumed segments); each remaining validation, and the
        final one, is expected to cost ``val_seconds``."""
        hist = self._hist
        hist.append((train_seconds, iteration))
        del hist[:-10]
        (t_a, it_a), (t_b, it_b) = hist[0], hist[-1]
        if it_b - it_a < 5:
            return None
        per_it = (t_b - t_a) / (it_b - it_a)
        left = self.seconds - elapsed
        n_val = 1 + (left / per_it) / self.val_every
        its = max(0.0, (left - n_val * val_seconds) / per_it)
        return max(iteration + 1, iteration + int(its))


def validation_share(
    val_seconds: float,
    per_iteration: float,
    iteration: int,
    total: int,
    val_every: int,
    budget_left: float | None = None,
) -> float:
    """The fraction of the rest of a run that validation takes: one validation every
    ``val_every`` iterations and one at the end (``total``), each ``val_seconds``, at
    ``per_iteration`` training seconds. With ``budget_left`` (seconds of a ``time_limit``)
    the run lasts that long: the iterations that fit, validations included, are counted."""
    if val_seconds <= 0:
        return 0.0
    if budget_left is not None:
        left = max(budget_left, 1e-9)
        its = max(0.0, (left - val_seconds) / (per_iteration + val_seconds / val_every))
        return min(1.0, (1 + its / val_every) * val_seconds / left)
    its = max(0, total - iteration)
    n_val = total // val_every - iteration // val_every + (1 if total % val_every else 0)
    val = max(n_val, 1) * val_seconds
    return val / (val + its * per_iteration)
