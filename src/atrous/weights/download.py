"""HTTP(S) transfer of one file: atomic, resumable, with a progress bar, timeouts and retries.

The bytes go to ``<dest>.partial``; a try that fails (a timeout, a dropped connection, a 5xx)
keeps them, and the next try asks for the rest with ``Range: bytes=<have>-`` (a server that
answers 200 instead of 206 sends the whole file again, which is written from the start).
Once the file is complete, ``check`` runs on the ``.partial``; only a file that passes is
renamed to ``dest``, so a partial or failed download never looks complete. A file that fails
``check`` is deleted. Callers hold the file's lock (:func:`.cache.file_lock`).

Transfer library, chosen by measurement (``benchmarks/bench_download.py``: 200 MB from a
local server on this 2-core VM, best of 3, two runs; ``benchmarks/results/download.md``): the
standard library's ``urllib`` with 1 MiB reads, as written here, took 0.22 / 0.32 s, torch.hub's
``download_url_to_file`` 0.27 / 0.23 s (the same within this VM's noise) and pooch 1.9
(requests, 1 KiB chunks) 3.2 / 3.4 s; only this one resumes: after a drop at 50% it sent 1.00x
the file's bytes in all, where torch.hub and pooch raise and start again from byte 0.
"""

from __future__ import annotations

import errno
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .errors import CheckpointError

PARTIAL_SUFFIX = ".partial"
# Errors that mean the machine has no way to the server (not a server's answer).
_NO_ROUTE = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNREFUSED, errno.EADDRNOTAVAIL)


class DownloadError(CheckpointError):
    """A file could not be downloaded, or failed its checks (the message says which)."""


class NoNetwork(DownloadError):
    """No server could be reached at all (no network, DNS failure, refused)."""


@dataclass(frozen=True)
class Transfer:
    """How hard to try: seconds without data before a try fails, tries per URL, the first
    pause between tries (doubled after each), and the read size."""

    timeout: float = 30.0
    retries: int = 3
    backoff: float = 1.0
    chunk: int = 1 << 20

    @classmethod
    def from_env(cls) -> Transfer:
        """Defaults, or ``ATROUS_DOWNLOAD_TIMEOUT`` (s) / ``ATROUS_DOWNLOAD_RETRIES``."""
        env = os.environ
        return cls(
            timeout=float(env.get("ATROUS_DOWNLOAD_TIMEOUT") or cls.timeout),
            retries=max(1, int(env.get("ATROUS_DOWNLOAD_RETRIES") or cls.retries)),
            backoff=float(env.get("ATROUS_DOWNLOAD_BACKOFF") or cls.backoff),
        )


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + PARTIAL_SUFFIX)


def download(
    urls: Sequence[str],
    dest: Path,
    check: Callable[[Path], None] | None = None,
    transfer: Transfer | None = None,
    progress: bool | None = None,
) -> str:
    """Download the first of ``urls`` that answers to ``dest`` (see the module docstring);
    returns the URL used. Raises :class:`DownloadError` (:class:`NoNetwork` when no server
    could be reached) naming the URL and the reason."""
    transfer = transfer or Transfer.from_env()
    partial = partial_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures: list[DownloadError] = []
    for url in urls:
        try:
            _fetch(url, partial, transfer, progress)
        except DownloadError as e:
            failures.append(e)
            continue
        _check(partial, check)
        os.replace(partial, dest)
        return url
    if all(isinstance(f, NoNetwork) for f in failures):
        raise failures[0]
    raise next(f for f in failures if not isinstance(f, NoNetwork))


def _check(partial: Path, check: Callable[[Path], None] | None) -> None:
    if check is None:
        return
    try:
        check(partial)
    except CheckpointError as e:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{e}; the download was deleted") from None


def _fetch(url: str, partial: Path, transfer: Transfer, progress: bool | None) -> None:
    """Complete ``partial`` from ``url``, resuming across up to ``transfer.retries`` tries."""
    last: BaseException | None = None
    for attempt in range(transfer.retries):
        if attempt:
            time.sleep(min(transfer.backoff * 2 ** (attempt - 1), 8.0))
        try:
            _transfer_once(url, partial, transfer, progress)
            return
        except urllib.error.HTTPError as e:
            if e.code == 416:  # the partial is no prefix of this file: start again
                partial.unlink(missing_ok=True)
            elif e.code not in (408, 429) and e.code < 500:
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
            last = e
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            if _no_route(e):
                raise NoNetwork(f"{url}: cannot reach the server ({_reason(e)})") from None
            last = e
    raise DownloadError(_gave_up(url, partial, transfer, last)) from None


def _transfer_once(url: str, partial: Path, transfer: Transfer, progress: bool | None) -> None:
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"User-Agent": "atrous", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=transfer.timeout) as response:
        if have and (response.status != 206 or not _resumes_at(response, have)):
            have = 0  # the server sent the whole file
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        bar = tqdm(
            total=total,
            initial=have,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=partial.name[: -len(PARTIAL_SUFFIX)],
            leave=False,
            disable=None if progress is None else not progress,
        )
        with bar, open(partial, "ab" if have else "wb") as f:
            while chunk := response.read(transfer.chunk):
                f.write(chunk)
                bar.update(len(chunk))
    size = partial.stat().st_size
    if total is not None and size != total:
        raise ConnectionError(f"the connection ended at byte {size} of {total}")


def _resumes_at(response: http.client.HTTPResponse, have: int) -> bool:
    """Whether a 206 answer's ``Content-Range: bytes START-END/TOTAL`` starts at ``have``."""
    value = response.headers.get("Content-Range", "")
    start = value.removeprefix("bytes ").split("-", 1)[0]
    return start.isdigit() and int(start) == have


def _no_route(e: BaseException) -> bool:
    reason = getattr(e, "reason", e)
    if isinstance(reason, socket.gaierror):
        return True
    return isinstance(reason, OSError) and reason.errno in _NO_ROUTE


def _reason(e: BaseException | None) -> str:
    reason = getattr(e, "reason", e)
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timed out"
    return str(reason) or type(reason).__name__


def _gave_up(url: str, partial: Path, transfer: Transfer, last: BaseException | None) -> str:
    tries = f"{transfer.retries} tr{'ies' if transfer.retries > 1 else 'y'}"
    if isinstance(getattr(last, "reason", last), (TimeoutError, socket.timeout)):
        why = f"no data for {transfer.timeout:g} s ({tries})"
    else:
        why = f"{_reason(last)} ({tries})"
    kept = partial.stat().st_size if partial.exists() else 0
    resume = f"; {kept} bytes are kept in {partial.name}: run again to resume" if kept else ""
    return f"{url}: {why}{resume}"
