"""What one call of :meth:`Trainer.train <atrous.training.Trainer.train>` tracks between steps
in one process: the smoothed loss, the progress bar, the speed and data wait of the current
log interval (the ``metrics.jsonl`` training records), the time spent validating, and the
``time_limit`` budget that re-plans the run's length.

The bar counts iterations; under ``time_limit`` it counts the budget's seconds instead (the
iteration count is re-planned as the run goes, shown as ``it 120/873``), so its ETA is the
budget left. :class:`TrainingProgress` sees the trainer only through :class:`TrainingRun`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from torch.optim.lr_scheduler import LRScheduler

from atrous.losses import SegmentationLoss
from atrous.training.config import TrainConfig
from atrous.training.run_log import RunLog
from atrous.training.time_budget import RunClock, TimeBudget, validation_share

__all__ = ["TrainingProgress", "TrainingRun"]


class TrainingRun(Protocol):
    """The public side of a :class:`~atrous.training.Trainer` that the progress reads."""

    cfg: TrainConfig
    iteration: int
    total_iterations: int
    world: int
    log: RunLog
    clock: RunClock
    scheduler: LRScheduler
    criterion: SegmentationLoss

    def set_total_iterations(self, total: int) -> None: ...

    def estimate_val_seconds(self) -> float: ...

    def take_data_wait(self) -> float: ...

    def val_images(self) -> int: ...


class TrainingProgress:
    """Progress of one call of ``train`` over ``run``, which stops at ``stop_at`` when given
    (to simulate an interruption); ``bar``: show a tqdm bar (rank 0). The cost of one
    validation is estimated first (0 where this process validates nothing)."""

    def __init__(self, run: TrainingRun, stop_at: int | None, bar: bool) -> None:
        self.run = run
        self.stop_at = stop_at
        self.record: dict[str, Any] = {}  # the last one logged
        self.loss = 0.0
        self.smooth: float | None = None
        self.first = run.iteration
        self.t_log, self.it_log = time.perf_counter(), run.iteration
        self.t_val = 0.0  # seconds spent validating in this process
        cfg = run.cfg
        self.budget = TimeBudget(cfg.time_limit, cfg.val_every) if cfg.time_limit else None
        self.val_seconds = run.estimate_val_seconds()
        self.val_said = self.val_seconds <= 0  # nothing to say where nothing is validated
        self.bar = self._make_bar() if bar else None
        run.log.bar = self.bar

    def _make_bar(self) -> Any:
        from tqdm import tqdm

        run = self.run
        if self.budget is None:
            return tqdm(total=run.total_iterations, initial=run.iteration, desc="train", unit="it")
        total = self.budget.seconds
        return tqdm(
            total=total,
            initial=min(run.clock.seconds(), total),
            desc="train",
            unit="s",
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s "
            "[{elapsed}<{remaining}{postfix}]",
        )

    def end(self) -> int:
        """The iteration this call of ``train`` stops at."""
        total = self.run.total_iterations
        return min(total, self.stop_at or total)

    def _train_seconds(self) -> float:
        """Training seconds of this process so far, validation excluded."""
        return self.run.clock.segment() - self.t_val

    def after_step(self, loss: float) -> None:
        """Smooth the loss, re-plan the time budget, advance the bar."""
        run = self.run
        self.loss = loss
        self.smooth = loss if self.smooth is None else 0.9 * self.smooth + 0.1 * loss
        it = run.iteration
        if self.budget is not None and (it % run.cfg.log_every == 0 or it - self.first <= 5):
            train_seconds = self._train_seconds()
            total = self.budget.fit(train_seconds, it, run.clock.seconds(), self.val_seconds)
            if total is not None:
                run.set_total_iterations(total)
        if not self.val_said and it - self.first >= 5:
            self.say_validation()
        if self.bar is not None:
            self._advance_bar()

    def _advance_bar(self) -> None:
        run = self.run
        post = {"loss": f"{self.smooth:.4f}", "lr": f"{run.scheduler.get_last_lr()[0]:.2e}"}
        if self.budget is None:
            self.bar.update(1)
        else:
            post = {"it": f"{run.iteration}/{run.total_iterations}", **post}
            self.bar.update(min(run.clock.seconds(), self.budget.seconds) - self.bar.n)
        self.bar.set_postfix(post)

    def say_validation(self) -> None:
        """Log what validation will cost: its images, interval, the estimated seconds of one
        and its share of the run at the speed measured so far (once, before the first
        validation)."""
        run = self.run
        self.val_said = True
        done = run.iteration - self.first
        if done <= 0:
            return
        per_it = self._train_seconds() / done
        budget_left = None
        if self.budget is not None:
            budget_left = self.budget.seconds - run.clock.seconds()
        share = validation_share(
            self.val_seconds,
            per_it,
            run.iteration,
            run.total_iterations,
            run.cfg.val_every,
            budget_left,
        )
        s = self.val_seconds
        secs = f"{s:.0f}" if s >= 10 else f"{s:.2g}"
        run.log.text(
            f"validation: ~{run.val_images()} images every {run.cfg.val_every} iterations, "
            f"estimated ~{secs} s each ({100 * share:.0f}% of the run)"
        )

    def log_training(self) -> None:
        """A metrics.jsonl record: loss (and its parts), LR, images/s, data-wait share."""
        run = self.run
        now = time.perf_counter()
        dt = max(now - self.t_log, 1e-9)
        cfg = run.cfg
        ips = (run.iteration - self.it_log) * cfg.batch_size * cfg.grad_accum * run.world / dt
        wait = run.take_data_wait()
        self.t_log, self.it_log = now, run.iteration
        self.record = {
            "iteration": run.iteration,
            "loss": self.loss,
            "lr": run.scheduler.get_last_lr()[0],
            "images_per_s": ips,
            "data_wait_frac": wait / dt,
            "elapsed_s": round(run.clock.seconds(), 1),
            **{f"loss_{k}": v for k, v in run.criterion.parts.items()},
        }
        run.log.record(self.record)

    @contextmanager
    def validating(self) -> Iterator[None]:
        """Around a validation: its cost is said first (once), and its time is left out of
        the speed and of the training seconds the budget plans with."""
        if not self.val_said:
            self.say_validation()
        t0 = time.perf_counter()
        yield
        self.t_val += time.perf_counter() - t0
        self.t_log, self.it_log = time.perf_counter(), self.run.iteration
        self.run.take_data_wait()  # the next interval's data wait starts now

    def log_validation(self, metrics: dict[str, float]) -> None:
        """Log a validation's ``metrics`` (``seconds`` is taken out: the next estimate)."""
        run = self.run
        self.val_seconds = metrics.pop("seconds")
        self.record = {
            "iteration": run.iteration,
            "elapsed_s": round(run.clock.seconds(), 1),
            **{f"val_{k}": v for k, v in metrics.items()},
        }
        run.log.record(self.record)
        run.log.text(f"iteration {run.iteration}: val mIoU {metrics['miou']:.4f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.run.log.bar = None
