"""Ctrl-C during training: the first one asks the loop to stop after the current iteration
(the trainer then saves ``last.pt`` to ``--resume`` from); a second one aborts at once.

A terminal sends Ctrl-C to the whole process group, DataLoader workers included: they
ignore it (:func:`ignore_sigint`, their ``worker_init_fn``), so that the iteration under
way gets its batches and the main process alone decides what happens."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["EXIT_INTERRUPTED", "StopOnInterrupt", "ignore_sigint"]

EXIT_INTERRUPTED = 130  # the shell's status for a process ended by SIGINT (128 + 2)


def ignore_sigint(worker_id: int = 0) -> None:
    """A DataLoader ``worker_init_fn``: the worker ignores Ctrl-C (the main process stops
    the workers when it is done with them)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StopOnInterrupt:
    """A SIGINT handler that sets :attr:`requested` (reported through ``log``) while
    installed; the request outlasts :meth:`remove`. A second SIGINT raises
    :class:`KeyboardInterrupt` (and sets :attr:`aborted`)."""

    def __init__(self, log: Callable[[str], None] = print) -> None:
        self.requested = False
        self.aborted = False
        self._log = log
        self._previous: Any = None

    def install(self) -> None:
        """Catch Ctrl-C (in the main thread only: Python sets signal handlers nowhere else)."""
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def remove(self) -> None:
        """Put the previous handler back."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        self._previous = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.requested:
            self.aborted = True
            raise KeyboardInterrupt
        self.requested = True
        self._log(
            "\ninterrupt: finishing this iteration and saving last.pt "
            "(press Ctrl-C again to abort without saving)"
        )
