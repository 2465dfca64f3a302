"""The failure policy every atrous command follows, written once.

A run over many items (images to segment, dataset pairs to evaluate or check, training
samples) treats a bad item as the item's problem, not the run's:

1. the item's error is reported at once, one line: the item (a file), the problem and, where
   there is one, what to do;
2. the item is skipped and the run goes on;
3. at the end a summary lists what failed;
4. the exit status says how it went: :data:`EXIT_OK` (0) all items good,
   :data:`EXIT_ITEMS_FAILED` (1) some items failed, :data:`EXIT_CANNOT_START` (2) the run could
   not start (bad weights, missing folder, wrong option), reported as one line as well.

``--fail-fast`` restores stopping at the first bad item (:class:`FailFast`, exit 1). No
traceback reaches the user unless ``--debug`` is given.

Training follows the same policy for its samples (:class:`BadSamples`): ``on_error: skip``
reports each bad sample once and trains on; ``on_error: raise`` stops the run with a
:class:`TrainingError`.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

__all__ = [
    "EXIT_CANNOT_START",
    "EXIT_ITEMS_FAILED",
    "EXIT_OK",
    "BadSamples",
    "FailFast",
    "Failure",
    "FailureLog",
    "SkipRecord",
    "TrainingError",
    "list_failures",
    "non_finite_loss",
    "quiet_dataset_skips",
]

EXIT_OK = 0
EXIT_ITEMS_FAILED = 1
EXIT_CANNOT_START = 2


@dataclass(frozen=True)
class Failure:
    """One bad item: what it is (usually a path) and what is wrong with it."""

    item: str
    problem: str

    def __str__(self) -> str:
        return f"{self.item}: {self.problem}"


class FailFast(Exception):
    """Raised by :meth:`FailureLog.add` under ``fail_fast``: the run stops at this item."""

    def __init__(self, failure: Failure) -> None:
        self.failure = failure
        super().__init__(str(failure))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class FailureLog:
    """The bad items of one run, reported as they come (``report``, default stderr; pass
    e.g. ``tqdm.write`` to keep a progress bar intact)."""

    command: str
    fail_fast: bool = False
    report: Callable[[str], None] = _stderr
    failures: list[Failure] = field(default_factory=list)

    def add(self, item: object, problem: object) -> Failure:
        """Record and report one bad item (raises :class:`FailFast` under ``fail_fast``).
        An item already recorded is not reported twice."""
        failure = Failure(str(item), str(problem))
        if failure not in self.failures:
            self.failures.append(failure)
            self.report(f"atrous {self.command}: error: {failure}")
        if self.fail_fast:
            raise FailFast(failure)
        return failure

    def __len__(self) -> int:
        return len(self.failures)

    def __bool__(self) -> bool:  # an empty log is still a log
        return True

    @property
    def exit_status(self) -> int:
        return EXIT_ITEMS_FAILED if self.failures else EXIT_OK

    def summary(
        self,
        done: int,
        what: str = "item",
        done_as: str = "done",
        listed_in: str | None = None,
        limit: int = 3,
        skipped: int | None = None,
        skipped_as: str = "skipped",
    ) -> str:
        """``"atrous predict: 10 items: 8 done, 2 failed:"``, then the first ``limit`` failures,
        one a line, and ``"... and N more (see ...)"``: ``listed_in`` (a file that holds them
        all), else the errors reported above. ``done_as`` words the good ones; ``skipped``
        items (``"..., 3 skipped, ..."``, worded by ``skipped_as``) count when given."""
        n = len(self.failures)
        skips = f", {skipped} {skipped_as}" if skipped is not None else ""
        total = done + n + (skipped or 0)
        head = f"atrous {self.command}: {total} {what}(s): {done} {done_as}{skips}, {n} failed"
        if not n:
            return head
        lines = [f"{head}:", *(f"  {f}" for f in self.failures[:limit])]
        if n > limit:
            lines.append(f"  ... and {n - limit} more (see {listed_in or 'the errors above'})")
        return "\n".join(lines)

    def to_list(self) -> list[dict[str, str]]:
        """The failures as JSON-ready records (for results files)."""
        return [{"item": f.item, "problem": f.problem} for f in self.failures]


def list_failures(failures: Iterable[Failure | tuple[str, str]], limit: int = 20) -> str:
    """``"a.png: problem; b.png: problem; and 3 more"``: the first ``limit`` failures (or
    ``(item, problem)`` pairs) on one line."""
    items = [f if isinstance(f, Failure) else Failure(*f) for f in failures]
    listed = "; ".join(str(f) for f in items[:limit])
    more = f"; and {len(items) - limit} more" if len(items) > limit else ""
    return listed + more


class TrainingError(RuntimeError):
    """Training stopped for a reason the user must act on (message says what and where)."""


def non_finite_loss(
    value: float, iteration: int, lr: float, last_good: object | None
) -> TrainingError:
    """The error that stops training at a non-finite loss at ``iteration``, before anything
    is saved: it says what is intact (``last_good``, the last checkpoint) and what to try."""
    where = (
        f"the last good checkpoint {last_good} is intact"
        if last_good
        else "no checkpoint was written yet"
    )
    return TrainingError(
        f"loss is {value} at iteration {iteration} (lr {lr:.3g}); stopped without saving: "
        f"{where}. Lower lr, add warmup_iters, or check the data for bad labels."
    )


class SkipRecord(Protocol):
    """Where skipped items are kept (``atrous.data.SkipReport``): path -> problem."""

    skipped: dict[str, str]

    def add(self, path: str, problem: str) -> bool:
        """Record one item; False when it was already recorded."""
        ...

    def __len__(self) -> int: ...


@contextmanager
def quiet_dataset_skips() -> Iterator[None]:
    """Silence the datasets' own "skipping ..." warnings (DataLoader workers forked inside
    inherit the filter): the trainer reports each skipped sample itself, in one line."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="skipping ", category=UserWarning)
        yield


@dataclass
class BadSamples:
    """The bad training samples of a run, under ``on_error``: ``"skip"`` records each in
    ``record`` and reports it once (``atrous train: skipped PATH: PROBLEM``); ``"raise"``
    stops at the first with a :class:`TrainingError` naming the file."""

    on_error: str
    record: SkipRecord
    report: Callable[[str], None] = _stderr

    def met(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Bad samples met, as ``(path, problem)`` pairs (e.g. a batch's ``skipped``)."""
        for path, problem in pairs:
            if self.on_error == "raise":
                self.stop(path, problem)
            if self.record.add(path, problem):
                self.report(f"atrous train: skipped {path}: {problem}")

    def stop(self, path: str, problem: str) -> NoReturn:
        """Stop training at a bad sample (``on_error: raise``)."""
        raise TrainingError(
            f"{path}: {problem}; training stopped (on_error: raise): fix or remove the file, "
            "or set on_error: skip to train without it"
        )

    def summary(self, listed_in: str | None = None) -> str:
        """One line listing the skipped samples (at most 20), "" when none; ``listed_in``
        names the file that holds them all."""
        n = len(self.record)
        if not n:
            return ""
        where = f" (all in {listed_in})" if listed_in else ""
        listed = list_failures(self.record.skipped.items())
        return f"atrous train: {n} bad sample(s) skipped{where}: {listed}"
