"""Registry entries as local files: fetched once, checked every time, usable offline.

* :func:`fetch` — the entry's file: from atrous's cache or torchvision's (each copy checked
  before use; a bad copy in atrous's cache is deleted and fetched again), else downloaded
  (:mod:`.download`: from ``ATROUS_MIRROR`` when set, checked before it is kept). Offline
  (``ATROUS_OFFLINE=1``, or no network) a missing file is one line naming the URL, the file
  and the ``atrous weights import`` command.
* :func:`check_file` — the checks of a new file: the published SHA-256 prefix (torchvision),
  or, where none is published (TF zoo), the CRC32C of the checkpoint's index and of every
  tensor, and for a DeepLab checkpoint the architecture and class count the entry names.
* :func:`verify` — the state of every cached copy of entries; :func:`import_file` — a file
  downloaded by hand, checked, placed in the cache.
* :func:`converted_path` / :func:`cached_conversion` — the atrous safetensors converted from
  an entry, kept beside its source with its own SHA-256 record (:mod:`.load` writes it).

Nothing from a cache is used unchecked: a file with a published hash is hashed on each use;
one without is compared with the SHA-256 recorded when it arrived (or, with no record, given
a new file's checks).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import Timeout

from atrous.models import get_spec

from . import cache
from .download import DownloadError, NoNetwork, download, partial_path
from .entry import HASH_IN_NAME, Entry
from .errors import CheckpointError
from .registry import ENTRIES, get_weights
from .tf_checkpoint import read_tf_checkpoint
from .tf_deeplab import detect_tf

CONVERTED_SUFFIX = ".atrous.safetensors"


class Unavailable(DownloadError):
    """An entry's file is not in the cache and cannot be downloaded (offline)."""


@dataclass(frozen=True)
class CopyState:
    """One cached copy of an entry's file, as :func:`verify` found it."""

    entry: Entry
    path: Path | None  # None: no copy anywhere
    ok: bool
    message: str


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold ``path``'s lock, saying so when another process has it."""
    lock = cache.file_lock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"atrous: waiting for another process fetching {path.name}", file=sys.stderr)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def fetch(name: str | Entry, progress: bool | None = None) -> Path:
    """The checked local file of a registry entry, downloaded once (see the module doc)."""
    entry = get_weights(name)
    dest = cache.weights_dir() / entry.file_name
    with locked(dest):
        found = _usable_copy(entry, dest)
        if found is not None:
            return found
        if cache.offline():
            raise Unavailable(missing_message(entry, "ATROUS_OFFLINE is set"))
        mirror = cache.mirror()
        urls = [mirror + entry.file_name] if mirror else list(entry.urls)
        checked: dict[str, str] = {}
        try:
            url = download(
                urls, dest, lambda p: checked.update(check_file(entry, p)), None, progress
            )
        except NoNetwork as e:
            raise Unavailable(missing_message(entry, f"no network ({e})")) from None
        cache.write_record(dest, checked["sha256"], url=url, checks=checked["checks"])
        return dest


def missing_message(entry: Entry, why: str) -> str:
    """One line: what is missing, why it cannot be fetched, and how to supply it by hand."""
    mirror = cache.mirror()
    url = mirror + entry.file_name if mirror else entry.urls[0]
    return (
        f"{entry.name}: {entry.file_name} is not in the cache ({cache.weights_dir()}) and {why}: "
        f"download {url} on a machine with network, then run "
        f"`atrous weights import {entry.file_name}`"
    )


def _usable_copy(entry: Entry, dest: Path) -> Path | None:
    """atrous's copy, else torchvision's, whichever passes its checks first; a bad copy in
    atrous's cache is deleted (said on stderr), a bad one in torchvision's is left alone."""
    for path, ours in ((dest, True), (cache.torch_hub_dir() / entry.file_name, False)):
        if not path.is_file():
            continue
        try:
            check_cached(entry, path, record=ours)
            return path
        except CheckpointError as e:
            action = "deleted; fetching it again" if ours else "not used"
            print(f"atrous: {e}: {action}", file=sys.stderr)
            if ours:
                cache.remove(path)
                cache.remove(converted_path(entry))
    return None


def check_file(entry: Entry, path: Path) -> dict[str, str]:
    """The checks of a new file of ``entry`` (module doc); returns its ``sha256`` and the
    ``checks`` passed. Raises :class:`CheckpointError` naming the file and the problem."""
    sha = cache.sha256_file(path)
    if entry.sha256_prefix:
        if not sha.startswith(entry.sha256_prefix):
            raise CheckpointError(
                f"{path.name}: SHA-256 {sha[:16]}... does not start with the published "
                f"{entry.sha256_prefix} of {entry.name} (a damaged or different file)"
            )
        return {"sha256": sha, "checks": f"SHA-256 prefix {entry.sha256_prefix}"}
    tensors = read_tf_checkpoint(path)  # CRC32C of the index and of every tensor
    checks = f"CRC32C of the index and of {len(tensors)} tensors"
    if entry.kind == "segmentation":
        found = detect_tf({k: v.shape for k, v in tensors.items()}, path.name)
        if (found.arch, found.num_classes) != (get_spec(entry.arch).name, entry.num_classes):
            raise CheckpointError(
                f"{path.name}: holds a {found.arch} with {found.num_classes} classes, not "
                f"{entry.name}'s {entry.arch} with {entry.num_classes}"
            )
        checks += f"; a {found.arch} with {found.num_classes} classes"
    return {"sha256": sha, "checks": checks}


def check_cached(entry: Entry, path: Path, record: bool = True) -> str:
    """Check a cached copy: the published hash prefix, else the recorded SHA-256, else (no
    record yet) a new file's checks, recorded when ``record``. Returns what was checked."""
    if entry.sha256_prefix:
        return check_file(entry, path)["checks"]
    saved = cache.read_record(path)
    if saved is None:
        checked = check_file(entry, path)
        if record:
            cache.write_record(path, checked["sha256"], checks=checked["checks"])
        return checked["checks"]
    sha = cache.sha256_file(path)
    if sha != saved["sha256"]:
        raise CheckpointError(
            f"{path}: SHA-256 {sha[:16]}... differs from the {saved['sha256'][:16]}... "
            "recorded when it was downloaded (the file changed or is damaged)"
        )
    return "SHA-256 as recorded at download"


def converted_path(entry: Entry) -> Path:
    """Where the atrous safetensors converted from ``entry`` is kept."""
    stem = HASH_IN_NAME.sub(".", entry.file_name).split(".", 1)[0]
    return cache.weights_dir() / f"{stem}{CONVERTED_SUFFIX}"


def cached_conversion(entry: Entry) -> Path | None:
    """The converted file if it matches its record; a mismatching one is deleted."""
    path = converted_path(entry)
    saved = cache.read_record(path) if path.is_file() else None
    if saved is None:
        return None
    if cache.sha256_file(path) == saved["sha256"]:
        return path
    print(f"atrous: {path} differs from its record: deleted, converting again", file=sys.stderr)
    cache.remove(path)
    return None


def verify(names: list[str] | None = None) -> list[CopyState]:
    """The state of every copy of the named entries (default: every entry with a copy)."""
    entries = [get_weights(n) for n in names] if names else list(ENTRIES)
    states = []
    for entry in entries:
        copies = [
            p
            for p in (
                cache.weights_dir() / entry.file_name,
                cache.torch_hub_dir() / entry.file_name,
            )
            if p.is_file()
        ]
        for path in copies:
            try:
                states.append(CopyState(entry, path, True, check_cached(entry, path, False)))
            except CheckpointError as e:
                states.append(CopyState(entry, path, False, str(e)))
        if not copies and names:
            states.append(CopyState(entry, None, False, "not in the cache (atrous weights fetch)"))
        states += _converted_state(entry)
    return states


def _converted_state(entry: Entry) -> list[CopyState]:
    """The converted file's state against its record (none when there is no such file)."""
    path = converted_path(entry)
    if not path.is_file():
        return []
    saved = cache.read_record(path)
    if saved is None:
        return [
            CopyState(entry, path, False, "converted file without a record (load converts again)")
        ]
    ok = cache.sha256_file(path) == saved["sha256"]
    message = (
        "converted file: SHA-256 as recorded" if ok else "converted file differs from its record"
    )
    return [CopyState(entry, path, ok, message)]


def identify(path: Path, name: str | None = None) -> Entry:
    """The entry a hand-downloaded file is: ``name``, else the entry with its file name,
    else the torchvision entry whose hash prefix its name carries."""
    if name:
        return get_weights(name)
    for entry in ENTRIES:
        if entry.file_name == path.name:
            return entry
    match = HASH_IN_NAME.search(path.name)
    for entry in ENTRIES:
        if match and entry.sha256_prefix and entry.sha256_prefix == match.group(1):
            return entry
    raise CheckpointError(
        f"{path.name}: no registry entry has this file name: give --name (atrous weights list)"
    )


def import_file(path: str | os.PathLike, name: str | None = None) -> tuple[Entry, Path, str]:
    """Check a file downloaded by hand as ``name``'s (or the entry its name says) and place
    it in the cache; returns (entry, cached path, checks passed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    entry = identify(path, name)
    checked = check_file(entry, path)
    dest = cache.weights_dir() / entry.file_name
    with locked(dest):
        if path.resolve() != dest.resolve():
            tmp = partial_path(dest)
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        cache.write_record(
            dest, checked["sha256"], imported_from=str(path.resolve()), checks=checked["checks"]
        )
        cache.remove(converted_path(entry))
    return entry, dest, checked["checks"]
