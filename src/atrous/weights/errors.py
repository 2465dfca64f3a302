"""The one error type of :mod:`atrous.weights`."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model (names the file)."""
