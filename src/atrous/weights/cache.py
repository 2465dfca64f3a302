"""Where downloaded weights live, and what is recorded about them.

* The cache folder is ``$ATROUS_HOME/weights``, else ``$XDG_CACHE_HOME/atrous/weights``, else
  ``~/.cache/atrous/weights``. torchvision's own hub cache (``torch.hub.get_dir()/checkpoints``:
  ``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``) is read too,
  so a file torchvision already downloaded is used where it is, after the same checks.
* Beside each file atrous keeps ``<file>.sha256``: a JSON record of its SHA-256, size, where it
  came from and which checks it passed when it arrived. A file whose source publishes no hash
  (the TF zoo's) is checked on arrival by its own format (CRC32C of every tensor); from then
  on its SHA-256 must equal the record.
* ``<file>.lock`` serializes the processes that fetch or convert the same file
  (``filelock``: an ``fcntl`` lock on POSIX, which the OS releases when a process dies, so a
  crashed download never leaves a stale lock; torch already depends on it; 0.12 ms per
  acquire + release against 0.004-0.008 ms for a bare ``fcntl.flock``, nothing next to a
  download: ``benchmarks/results/download.md``).
* ``ATROUS_OFFLINE=1`` (or ``true``/``yes``) forbids network access; ``ATROUS_MIRROR=URL/``
  fetches every file as ``URL/<file name>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from filelock import FileLock

from atrous.fileio import atomic_write_text

RECORD_SUFFIX = ".sha256"
_CHUNK = 1 << 20


def cache_root() -> Path:
    """``$ATROUS_HOME``, else ``$XDG_CACHE_HOME/atrous``, else ``~/.cache/atrous``."""
    if os.environ.get("ATROUS_HOME"):
        return Path(os.environ["ATROUS_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "atrous"


def weights_dir() -> Path:
    """The folder of downloaded and converted weights (not created here)."""
    return cache_root() / "weights"


def torch_hub_dir() -> Path:
    """torchvision's download folder: ``torch.hub.get_dir()/checkpoints``."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def offline() -> bool:
    """Whether ``ATROUS_OFFLINE`` forbids downloads."""
    return os.environ.get("ATROUS_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def mirror() -> str | None:
    """``ATROUS_MIRROR`` with one trailing slash, or None."""
    url = os.environ.get("ATROUS_MIRROR", "").strip()
    return url.rstrip("/") + "/" if url else None


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def record_path(path: Path) -> Path:
    return path.with_name(path.name + RECORD_SUFFIX)


def read_record(path: Path) -> dict[str, Any] | None:
    """The record kept beside ``path``, or None (none, or unreadable)."""
    try:
        record = json.loads(record_path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("sha256"), str) else None


def write_record(path: Path, sha256: str, **info: Any) -> None:
    """Record ``path``'s SHA-256 and size (and ``info``: its URL, the checks it passed)."""
    record = {
        "file": path.name,
        "sha256": sha256,
        "size": path.stat().st_size,
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **info,
    }
    atomic_write_text(record_path(path), json.dumps(record, indent=1) + "\n")


def remove(path: Path) -> None:
    """Delete a cached file and its record (missing ones are fine)."""
    for p in (path, record_path(path)):
        p.unlink(missing_ok=True)


def file_lock(path: Path) -> FileLock:
    """The lock that serializes fetching or converting ``path`` across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock")
