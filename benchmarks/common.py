"""Helpers the benchmark scripts share (run as ``python benchmarks/<script>.py``, which puts
this folder on ``sys.path``)."""

from __future__ import annotations

import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any


def import_torchvision(where: str | None) -> Any:
    """torchvision's segmentation models with its compiled-op registrations skipped (they do
    not load on this torch build and the pure-Python models do not use them); None when it is
    not there. ``where``: a ``pip install --no-deps --target`` folder, or None."""
    import torch

    if where:
        sys.path.insert(0, where)
    real = torch.library.register_fake

    def register_fake(op: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(op, str) and op.startswith("torchvision::"):
            return lambda fn: fn
        return real(op, *args, **kwargs)

    torch.library.register_fake = register_fake
    try:
        import torchvision.models.segmentation as segmentation
    except Exception:
        return None
    finally:
        torch.library.register_fake = real
    return segmentation


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not ``ru_maxrss``: Linux carries that
    across ``exec``, so a child started from a large parent reports the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_model() -> str:
    """``lscpu``'s model name (the platform's processor string where lscpu is missing), which
    every benchmark figure names."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def timed_predict(args: list[str]) -> float:
    """Wall seconds of one in-process ``atrous predict ARGS`` call (its printed summary
    swallowed, ``--no-progress`` added); exits with the command line if it fails."""
    import contextlib
    import io
    import time

    from atrous.cli import main

    argv = ["predict", *args, "--no-progress"]
    with contextlib.redirect_stdout(io.StringIO()):
        t = time.perf_counter()
        rc = main(argv)
        seconds = time.perf_counter() - t
    if rc != 0:
        raise SystemExit(f"atrous {' '.join(argv)} exited {rc}")
    return seconds
