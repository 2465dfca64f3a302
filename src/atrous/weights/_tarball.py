"""Tarballs read as the TF model zoo ships checkpoints, in one pass, into memory: nothing is
unpacked to disk. Only plain files and folders with relative names are accepted (links,
devices, absolute names and ``..`` are refused), within a cap on the unpacked size. gzip is
known by its magic bytes, whatever the suffix, and inflated at most a buffer ahead.
"""

from __future__ import annotations

import gzip
import tarfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path, PurePosixPath

from .errors import CheckpointError

MAX_MEMBERS = 10_000  # a checkpoint tarball has a handful


def read_members(
    path: Path, wanted: Callable[[str], bool], *, max_bytes: int
) -> dict[str, bytearray]:
    """The plain-file members of the tarball at ``path`` whose names are ``wanted``, by name.

    Every member is checked (:func:`check_member`), and the files' sizes must add up to at
    most ``max_bytes``. Raises :class:`CheckpointError` naming the tarball and the member.
    """
    out: dict[str, bytearray] = {}
    total = 0
    try:
        with _open_tar(path) as tar:
            for count, member in enumerate(tar, 1):
                check_member(path, member, count)
                total += member.size if member.isfile() else 0
                if total > max_bytes:
                    raise CheckpointError(
                        f"{path}: member {_shown(member.name)} takes the unpacked size past the limit "
                        f"of {max_bytes} bytes (max_tar_bytes)"
                    )
                if member.isfile() and wanted(member.name):
                    out[member.name] = _read_member(path, tar, member)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise CheckpointError(
            f"{path}: not a tarball, or a damaged or truncated one ({e})"
        ) from None
    return out


def _shown(name: str) -> str:
    """A member name for a one-line message: quoted where it holds a newline or the like."""
    return name if name.isprintable() else repr(name)


@contextmanager
def _open_tar(path: Path) -> Iterator[tarfile.TarFile]:
    """A tarball read as a stream, gzip (known by its magic bytes) decompressed on the way at
    most a buffer ahead: neither a gzip bomb nor a skipped member costs memory."""
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        with (
            gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else nullcontext(raw) as file,
            tarfile.open(fileobj=file, mode="r|", bufsize=1 << 20) as tar,
        ):
            yield tar


def check_member(path: Path, member: tarfile.TarInfo, count: int) -> None:
    """Refuse what a checkpoint tarball never holds: links, devices, unsafe names."""
    name = _shown(member.name)
    if count > MAX_MEMBERS:
        raise CheckpointError(f"{path}: more than {MAX_MEMBERS} members: not a checkpoint")
    if member.name.startswith("/") or ".." in PurePosixPath(member.name).parts:
        raise CheckpointError(f"{path}: member {name} has an unsafe path (absolute or '..')")
    if member.issym() or member.islnk():
        kind = "symbolic" if member.issym() else "hard"
        raise CheckpointError(
            f"{path}: member {name} is a {kind} link (to {member.linkname!r}): refused"
        )
    if not (member.isfile() or member.isdir()):
        raise CheckpointError(f"{path}: member {name} is a device or FIFO: refused")


def _read_member(path: Path, tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytearray:
    """A member's bytes, read in 1 MiB pieces (one big read copies it several times over)."""
    file = tar.extractfile(member)
    data = bytearray(member.size)
    view, pos = memoryview(data), 0
    while file is not None and pos < member.size:
        n = file.readinto(view[pos : pos + (1 << 20)])
        if not n:
            break
        pos += n
    if pos != member.size:
        raise CheckpointError(
            f"{path}: member {_shown(member.name)} is truncated ({pos} of {member.size} bytes)"
        )
    return data
