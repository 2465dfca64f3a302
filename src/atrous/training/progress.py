"""What one call of :meth:`Trainer.train <atrous.training.Trainer.train>` tracks between steps
in one process: the smoothed loss, the progress bar, the speed and data wait of the current
log interval (the ``metrics.jsonl`` training records), where the time went (set-up,
training, validation, checkpoints), and the ``time_limit`` budget
(:class:`~atrous.training.time_budget.TimeBudget`) that re-plans the run after every step.

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
from atrous.training.time_budget import (
    BudgetPlan,
    RunClock,
    TimeBudget,
    multiples,
    validation_share,
)

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

    def apply_plan(self, plan: BudgetPlan) -> BudgetPlan: ...

    def estimate_val_seconds(self) -> float: ...

    def take_data_wait(self) -> float: ...

    def val_images(self, full: bool = False) -> int: ...

    def val_cost_images(self) -> int: ...


class TrainingProgress:
    """Progress of one call of ``train`` over ``run``, which stops at ``stop_at`` when given
    (to simulate an interruption); ``bar``: show a tqdm bar (rank 0). The cost of one
    validation is estimated first (0 where this process validates nothing)."""

    def __init__(
        self, run: TrainingRun, stop_at: int | None, bar: bool, setup_seconds: float = 0.0
    ) -> None:
        self.run = run
        self.stop_at = stop_at
        self.record: dict[str, Any] = {}  # the last one logged
        self.loss = 0.0
        self.smooth: float | None = None
        self.first = run.iteration
        self.t_log, self.it_log = time.perf_counter(), run.iteration
        # where this process's time went, seconds (training: the rest of the segment)
        self.times = {"setup": setup_seconds, "validation": 0.0, "checkpoint": 0.0}
        self.final_split: dict[str, float] = {}
        cfg = run.cfg
        t0 = time.perf_counter()
        self.val_seconds = run.estimate_val_seconds()
        self.times["validation"] += time.perf_counter() - t0
        self.budget: TimeBudget | None = None
        if cfg.time_limit:
            self.budget = TimeBudget(
                cfg.time_limit,
                cfg.val_every,
                cfg.ckpt_every,
                cfg.warmup_iters,
                run.val_images(),
                cfg.time_limit_val_share,
                before=run.clock.before,
                strips=run.val_cost_images() - run.val_images(),
            )
            if run.val_images():
                self.budget.validated(self.val_seconds, run.val_cost_images(), estimate=True)
            self.budget.spent_val += self.times["validation"]  # the estimate's own cost
            self.budget.observe(self._train_seconds(), run.iteration)  # the speed's origin
        self.val_said = self.val_seconds <= 0  # nothing to say where nothing is validated
        self.plan_said: tuple[int, int, int] | None = None
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
        """Training seconds of this process so far: set-up, validation and checkpoints
        excluded."""
        return self.run.clock.segment() - sum(self.times.values())

    def time_split(self) -> dict[str, float]:
        """Seconds of this process's segment: set-up, training, validation, checkpoint."""
        split = {"setup": self.times["setup"], "training": self._train_seconds()}
        split.update(validation=self.times["validation"], checkpoint=self.times["checkpoint"])
        return {k: round(v, 2) for k, v in split.items()}

    def after_step(self, loss: float) -> None:
        """Smooth the loss, re-plan the time budget, advance the bar."""
        run = self.run
        self.loss = loss
        self.smooth = loss if self.smooth is None else 0.9 * self.smooth + 0.1 * loss
        it = run.iteration
        if self.budget is not None:
            self._replan(it)
        elif not self.val_said and it - self.first >= 5:
            self.say_validation()
        if self.bar is not None:
            self._advance_bar()

    def _replan(self, it: int) -> None:
        """Re-plan the budgeted run; say the plan the first time and when its schedule
        (validation interval and images, checkpoint interval) changes."""
        run, budget = self.run, self.budget
        assert budget is not None
        budget.observe(self._train_seconds(), it)
        plan = budget.plan(it, run.clock.seconds())
        if plan is None:
            return
        plan = run.apply_plan(plan)
        if plan.schedule() != self.plan_said:
            first = self.plan_said is None
            self.plan_said = plan.schedule()
            run.log.text(self._plan_line(plan, first))

    def _plan_line(self, plan: BudgetPlan, first: bool) -> str:
        """What the fitter decided, in one line."""
        run, cfg = self.run, self.run.cfg
        budget = self.budget
        assert budget is not None
        head = f"time budget {cfg.time_limit:g} min"
        if first:
            head += f" (set-up took {self.times['setup']:.0f} s)"
        else:
            head += f" re-planned at iteration {run.iteration}"
        parts = [f"{head}: {plan.total} iterations at {plan.per_iteration:.2g} s each"]
        n_all = run.val_images(full=True)
        if n_all:
            images = f"{plan.val_images} images"
            if plan.val_images < n_all:
                images = f"{plan.val_images} of {n_all} images (evenly spaced)"
            more = multiples(run.iteration, plan.total, plan.val_every)
            when = f"every {plan.val_every} iterations" if more else "at the end only"
            share = 100 * plan.val_seconds / budget.seconds
            parts.append(f"validation on {images} {when}, ~{share:.0f}% of the budget")
            if first and (plan.val_images < n_all or plan.val_every != cfg.val_every):
                parts.append(
                    f"validation is capped at time_limit_val_share={cfg.time_limit_val_share:g} "
                    "of the budget (raise it, or time_limit, to validate more)"
                )
        if plan.ckpt_every != cfg.ckpt_every:
            parts.append(f"checkpoints every {plan.ckpt_every} iterations")
        if first and plan.warmup < cfg.warmup_iters:
            parts.append(f"warm-up {plan.warmup} iterations (10% of the run)")
        return "; ".join(parts)

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
        if done <= 0 or self.budget is not None:  # a budgeted run says its plan instead
            return
        per_it = self._train_seconds() / done
        share = validation_share(
            self.val_seconds, per_it, run.iteration, run.total_iterations, run.cfg.val_every
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
            "total_iterations": run.total_iterations,
            **{f"loss_{k}": v for k, v in run.criterion.parts.items()},
        }
        run.log.record(self.record)

    @contextmanager
    def validating(self, images: int) -> Iterator[None]:
        """Around a validation of ``images``: its cost is said first (once), and its time is
        left out of the speed and of the training seconds the budget plans with."""
        if not self.val_said:
            self.say_validation()
        t0, saving = time.perf_counter(), self.times["checkpoint"]
        yield
        # a best.pt written meanwhile counts as a checkpoint
        seconds = time.perf_counter() - t0 - (self.times["checkpoint"] - saving)
        self.times["validation"] += seconds
        if self.budget is not None and images:
            self.budget.validated(seconds, images)
        self._resume_timing()

    @contextmanager
    def checkpointing(self) -> Iterator[None]:
        """Around a checkpoint: its time is left out of the training seconds."""
        t0 = time.perf_counter()
        yield
        seconds = time.perf_counter() - t0
        self.times["checkpoint"] += seconds
        if self.budget is not None:
            self.budget.saved(seconds)
        self._resume_timing()

    def _resume_timing(self) -> None:
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
        """End of this call of ``train`` (before the clock stops): the time split is kept."""
        self.final_split = self.time_split()
        if self.bar is not None:
            self.bar.close()
        self.run.log.bar = None
