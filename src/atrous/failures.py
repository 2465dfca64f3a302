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
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = [
    "EXIT_CANNOT_START",
    "EXIT_ITEMS_FAILED",
    "EXIT_OK",
    "FailFast",
    "Failure",
    "FailureLog",
    "list_failures",
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

    def summary(self, done: int, what: str = "item", done_as: str = "done") -> str:
        """``"10 items: 8 done, 2 failed: a.png (...), b.png (...)"`` (the failed ones listed,
        at most 20); ``done_as`` words the good ones (e.g. ``"evaluated"``)."""
        n = len(self.failures)
        head = f"atrous {self.command}: {done + n} {what}(s): {done} {done_as}, {n} failed"
        return f"{head}: {list_failures(self.failures)}" if n else head

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
