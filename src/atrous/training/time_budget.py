"""A run's wall-clock time (:class:`RunClock`, over all its resumed segments) and the plan that
fits a ``time_limit`` run to its budget (:class:`TimeBudget`).

A budget is wall time from the start of the run's set-up to its last written file. The plan
keeps training the bulk of it: validation gets at most ``time_limit_val_share`` of the time left
(validating less often, then on an evenly spaced subset of the validation images),
checkpoints at most :data:`CKPT_SHARE`, warm-up at most :data:`WARMUP_SHARE` of the planned
iterations, and the final validation, checkpoint and export (plus :data:`MARGIN_SHARE`) are
reserved at the end. It is
re-planned after every iteration from the measured speed (the last :data:`WINDOW`
iterations) and the measured cost of each validation and checkpoint, so a machine that slows
down mid-run still ends on time, with the poly schedule at zero."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

__all__ = ["BudgetPlan", "RunClock", "TimeBudget", "multiples", "validation_share"]

CKPT_SHARE = 0.03  # checkpoints' largest share of the time left
WARMUP_SHARE = 0.10  # warm-up's largest share of the planned iterations
MARGIN_SHARE = 0.01  # of the budget, kept for what was not measured (exit, last plot)
WINDOW = 10  # iterations the training speed is measured over


class RunClock:
    """Wall time of a run: ``before`` seconds from earlier processes (checkpointed, restored on
    resume), plus the running segment between :meth:`start` and :meth:`stop`."""

    def __init__(self, before: float = 0.0) -> None:
        self.before = float(before)
        self._start: float | None = None  # perf_counter() when this segment began

    def start(self, at: float | None = None) -> None:
        """Start a segment now, or at ``at`` (an earlier ``perf_counter()``: the set-up's)."""
        self._start = time.perf_counter() if at is None else at

    def stop(self) -> None:
        """End the running segment; its seconds join ``before``."""
        self.before, self._start = self.seconds(), None

    def seconds(self) -> float:
        """Wall time so far, over all resumed segments."""
        return self.before + self.segment()

    def segment(self) -> float:
        """Seconds of the running segment (0 when stopped)."""
        return 0.0 if self._start is None else time.perf_counter() - self._start


@dataclass(frozen=True)
class BudgetPlan:
    """What :meth:`TimeBudget.plan` decided for the rest of a run."""

    total: int  # planned iterations (the poly schedule's length)
    val_every: int  # validation interval; 0: only the final validation
    val_images: int  # images per validation (an evenly spaced subset when below the split's)
    ckpt_every: int  # checkpoint interval
    warmup: int  # warm-up iterations
    per_iteration: float  # measured training seconds per iteration
    val_seconds: float  # projected validation seconds left (the final one included)
    train_seconds: float  # projected training seconds left

    def schedule(self) -> tuple[int, int, int]:
        """The parts that change what the run does (said again in the log when they do)."""
        return self.val_every, self.val_images, self.ckpt_every


def multiples(lo: int, hi: int, every: int) -> int:
    """Multiples of ``every`` in [lo, hi): the intervals still to come round after iteration
    ``lo`` (whose own validation and checkpoint come after the plan) before the last, ``hi``."""
    if every <= 0 or hi <= lo:
        return 0
    return max(0, (hi - 1) // every - (lo - 1) // every)


class TimeBudget:
    """Fits a run to ``minutes`` of wall time.

    ``val_every``, ``ckpt_every`` and ``warmup`` are the configured values (the plan only
    lowers their cost); ``val_images``: images of one full validation (0: none), ``strips``
    the images it draws for TensorBoard besides (segmented again, at the same cost);
    ``val_share``: validation's largest share of the time left. Costs are measured as the run
    goes: :meth:`observe` (training speed), :meth:`validated` and :meth:`saved`. Validation
    and checkpoints share out what this process has (the budget less ``before`` seconds of
    earlier, resumed processes), so the share holds to the end of the run."""

    def __init__(
        self,
        minutes: float,
        val_every: int,
        ckpt_every: int,
        warmup: int,
        val_images: int,
        val_share: float = 0.10,
        before: float = 0.0,
        strips: int = 0,
    ) -> None:
        self.seconds = float(minutes) * 60.0
        # the budget this process has (``before``: seconds spent by earlier ones, resumed)
        self.available = max(self.seconds - float(before), 0.0)
        self.spent_val = self.spent_ckpt = 0.0  # by this process
        self.val_every, self.ckpt_every, self.warmup = int(val_every), int(ckpt_every), int(warmup)
        self.val_share = float(val_share)
        self.val_images = int(val_images)  # lowered once a plan subsamples, never raised
        self.strips = int(strips)  # images a validation draws for TensorBoard besides
        self.val_image_seconds = 0.0  # one validation image, estimated then measured
        self.ckpt_seconds = 0.0  # one checkpoint
        self.export_seconds = 0.0  # the final weights file (estimated as a checkpoint)
        self._hist: list[tuple[float, int]] = []  # (training seconds, iteration)
        self.last: BudgetPlan | None = None

    # ------------------------------------------------------------------ measurements
    def observe(self, train_seconds: float, iteration: int) -> None:
        """Training seconds (validation and checkpoints excluded) after ``iteration``."""
        self._hist.append((train_seconds, iteration))
        del self._hist[: -WINDOW - 1]

    def per_iteration(self) -> float | None:
        """Training seconds per iteration over the last :data:`WINDOW` iterations, or None
        while fewer than 5 have been timed."""
        if not self._hist:
            return None
        (t_a, it_a), (t_b, it_b) = self._hist[0], self._hist[-1]
        if it_b - it_a < 5:
            return None
        return max(t_b - t_a, 1e-9) / (it_b - it_a)

    def validated(self, seconds: float, images: int, estimate: bool = False) -> None:
        """A validation of ``images`` took (``estimate``: would take) ``seconds``."""
        if images > 0:
            self.val_image_seconds = seconds / images
        if not estimate:
            self.spent_val += seconds

    def saved(self, seconds: float) -> None:
        """A checkpoint took ``seconds``; the export is estimated to cost as much."""
        self.spent_ckpt += seconds
        self.ckpt_seconds = max(self.ckpt_seconds, seconds)
        self.export_seconds = max(self.export_seconds, seconds)

    # ------------------------------------------------------------------ the plan
    def plan(self, iteration: int, elapsed: float) -> BudgetPlan | None:
        """The plan after ``iteration`` at ``elapsed`` seconds of the budget, or None before
        the speed is known (5 timed iterations; a spent budget ends the run before)."""
        p = self.per_iteration()
        left = self.seconds - elapsed
        if p is None:  # too early to plan, unless the budget is already spent
            if left > 0 or not self._hist:
                return None
            p = self._hist[-1][0] / max(self._hist[-1][1], 1)
        v, c = self.val_image_seconds, self.ckpt_seconds
        n = self.val_images
        cost = self.validation_seconds
        val_every, ckpt_every = self.val_every, self.ckpt_every
        val_left = max(self.val_share * self.available - self.spent_val, 0.0)
        ckpt_left = max(CKPT_SHARE * self.available - self.spent_ckpt, 0.0)
        total = iteration + max(0, int(left / p))
        for _ in range(3):  # the validation count depends on the length, and back
            if n and v > 0:
                val_every, n = self._validation(iteration, total, val_left, n)
            if c > 0 and multiples(iteration, total, self.ckpt_every) * c > ckpt_left:
                fit = int(ckpt_left // c)  # intermediate checkpoints that fit
                ckpt_every = total + 1 if fit < 1 else math.ceil((total - iteration) / fit)
                ckpt_every = max(self.ckpt_every, ckpt_every)
            vals = (multiples(iteration, total, val_every) + 1) * cost(n) if n else 0.0
            ckpts = (multiples(iteration, total, ckpt_every) + 1) * c
            train = left - vals - ckpts - self.export_seconds - MARGIN_SHARE * self.seconds
            total = iteration + max(0, int(train / p))
        self.val_images = n
        warmup = self.warmup_for(total)
        vals = (multiples(iteration, total, val_every) + 1) * cost(n) if n else 0.0
        plan = BudgetPlan(total, val_every, n, ckpt_every, warmup, p, vals, (total - iteration) * p)
        self.last = plan
        return plan

    def validation_seconds(self, images: int) -> float:
        """One validation of ``images``: them, its TensorBoard strips, and a best.pt."""
        strips = min(self.strips, images)
        return (images + strips) * self.val_image_seconds + self.ckpt_seconds

    def _validation(self, iteration: int, total: int, budget: float, n: int) -> tuple[int, int]:
        """(interval, images) of the validations left, their cost within ``budget``: the
        configured interval when it fits, else fewer validations, else fewer images."""
        cost = self.validation_seconds(n)
        k_cfg = multiples(iteration, total, self.val_every) + 1
        prev = self.last.val_every if self.last is not None else self.val_every
        k_prev = multiples(iteration, total, prev) + 1
        if k_prev * cost <= budget and k_prev >= k_cfg:  # the plan so far holds
            return prev, n
        if k_cfg * cost <= budget:
            return self.val_every, n
        k = int(budget // cost)  # full validations that fit, the final one included
        if k >= 2:
            every = max(1, math.ceil((total - iteration) / k))
            while multiples(iteration, total, every) + 1 > k:
                every += 1
            return every, n
        while n > 1 and self.validation_seconds(n) > budget:
            n = max(1, min(n - 1, int(n * budget / self.validation_seconds(n))))
        return 0, n

    def warmup_for(self, total: int) -> int:
        """Warm-up iterations of a ``total``-iteration run: the configured ones, at most
        :data:`WARMUP_SHARE` of the run."""
        return min(self.warmup, max(1, int(WARMUP_SHARE * total)))

    def agree(self, plan: BudgetPlan, total: int) -> BudgetPlan:
        """``plan`` shortened to ``total`` (the shortest plan over the ranks)."""
        if total != plan.total:
            plan = replace(plan, total=total, warmup=self.warmup_for(total))
            self.last = plan
        return plan


def validation_share(
    val_seconds: float, per_iteration: float, iteration: int, total: int, val_every: int
) -> float:
    """The fraction of the rest of a run that validation takes: one validation every
    ``val_every`` iterations and one at the end (``total``), each ``val_seconds``, at
    ``per_iteration`` training seconds."""
    if val_seconds <= 0:
        return 0.0
    its = max(0, total - iteration)
    n_val = total // val_every - iteration // val_every + (1 if total % val_every else 0)
    val = max(n_val, 1) * val_seconds
    return val / (val + its * per_iteration)
