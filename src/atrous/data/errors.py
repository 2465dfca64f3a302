"""The error of a sample that cannot be used: it names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class DatasetError(ValueError):
    """A sample that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")
