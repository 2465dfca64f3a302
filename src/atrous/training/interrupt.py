"""Ctrl-C during training: the first one asks the loop to stop after the current iteration
(the trainer then saves ``last.pt`` to ``--resume`` from); a second one aborts at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["StopOnInterrupt"]


class StopOnInterrupt:
    """A SIGINT handler that sets :attr:`requested` (reported through ``log``) while
    installed; the request outlasts :meth:`remove`."""

    def __init__(self, log: Callable[[str], None] = print) -> None:
        self.requested = False
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
            raise KeyboardInterrupt
        self.requested = True
        self._log(
            "\ninterrupt: finishing this iteration and saving last.pt "
            "(press Ctrl-C again to abort without saving)"
        )
