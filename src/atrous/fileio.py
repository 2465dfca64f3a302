"""Atomic file writes, the one helper behind every checkpoint, weights file, JSON result and
report that atrous writes: a temporary file in the destination folder, flushed to disk, then
``os.replace``; a crash mid-write leaves the previous file intact and no partial file."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "temp_target",
]

# atomic_path's temporary names: mkstemp(prefix=NAME + ".", suffix=".tmp" [+ NAME's suffix]),
# whose random part is 8 of [a-z0-9_].
_TEMP_NAME = re.compile(r"^(?P<name>.+)\.[a-z0-9_]{8}\.tmp(?P<suffix>\.[^.]+)?$")


@contextmanager
def atomic_path(path: str | os.PathLike, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an error the file
    written there is fsynced and renamed over ``path``, otherwise it is removed.
    ``keep_suffix``: the temporary name ends in ``path``'s suffix (for writers and readers
    that go by it).

    >>> with atomic_path("model.safetensors") as tmp:  # doctest: +SKIP
    ...     save_file(tensors, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".tmp" + (path.suffix if keep_suffix else "")
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp makes the file 0600; give it the mode a plain open() would (0666 & ~umask).
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def temp_target(path: str | os.PathLike) -> Path | None:
    """The file that ``path``, a temporary of :func:`atomic_path`, was to replace
    (``x.png.k2j4a_1z.tmp`` -> ``x.png``), or None for any other name. A process killed
    mid-write (``kill -9``: no ``finally`` runs) leaves its temporary; this names its owner."""
    path = Path(path)
    m = _TEMP_NAME.match(path.name)
    if m is None or (m["suffix"] and not m["name"].endswith(m["suffix"])):
        return None
    return path.with_name(m["name"])


def _umask() -> int:
    """The process's umask (read by setting it, so set it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(
    path: str | os.PathLike, data: Any, *, indent: int | None = 2, **dumps_options: Any
) -> Path:
    """Write ``data`` as JSON (``json.dumps(data, indent=indent, **dumps_options)``, UTF-8,
    one final newline) to ``path`` atomically; returns ``path``. Nothing is written when
    ``data`` cannot be encoded."""
    text = json.dumps(data, indent=indent, **dumps_options)
    return atomic_write_text(path, text + "\n")
