"""Choosing the transfer library and the lock of ``atrous.weights.download`` by measurement (#27).

A file of random bytes is served from 127.0.0.1 (``tests/http_server.py``: threaded, with
``Range``) and downloaded by each candidate, best of ``--repeat`` runs:

* atrous: ``urllib.request`` with 1 MiB reads into ``<file>.partial``, renamed when complete;
* torch.hub's ``download_url_to_file`` (urllib, 8 KiB reads, SHA-256 on the fly, temp file);
* pooch's ``retrieve`` (requests; not an atrous dependency: ``--pooch`` names a
  ``pip install --target`` folder).

Then the resume case: the server drops the first connection half-way. atrous resumes with
``Range`` (the bytes sent in all are counted); the others raise, and a second run starts from
zero. Then the lock: ``filelock.FileLock`` against a bare ``fcntl.flock``, acquire + release,
and the SHA-256 of the file (the check of a cached file with a published hash).

    PYTHONPATH=src python benchmarks/bench_download.py --mb 200 --pooch /tmp/pooch_pkgs
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from http_server import FileServer

from atrous.weights.cache import file_lock, sha256_file
from atrous.weights.download import Transfer, download


def timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def candidates(url: str, out: Path, pooch_dir: str | None) -> dict:
    import torch.hub

    def ours() -> None:
        out.unlink(missing_ok=True)
        download([url], out, transfer=Transfer(retries=1), progress=False)

    def torch_hub() -> None:
        out.unlink(missing_ok=True)
        torch.hub.download_url_to_file(url, str(out), progress=False)

    runs = {
        "atrous (urllib, 1 MiB reads, Range resume)": ours,
        "torch.hub.download_url_to_file": torch_hub,
    }
    if pooch_dir:
        sys.path.insert(0, pooch_dir)
        import pooch

        pooch.get_logger().setLevel("WARNING")

        def with_pooch() -> None:
            out.unlink(missing_ok=True)
            pooch.retrieve(url, known_hash=None, fname=out.name, path=out.parent, progressbar=False)

        runs[f"pooch {pooch.__version__} (requests)"] = with_pooch
    return runs


def resume_case(server: FileServer, name: str, size: int, out: Path) -> str:
    """Bytes the server sent for one complete atrous download when the first connection is
    dropped half-way (a cut answer sends size/2)."""
    server.cut[name] = (size // 2, 1)
    before = len(server.requests)
    out.unlink(missing_ok=True)
    download([server.url + name], out, transfer=Transfer(retries=2, backoff=0), progress=False)
    ranges = [r for _, r in server.requests[before:]]
    rest = int(ranges[-1].removeprefix("bytes=").rstrip("-")) if ranges[-1] else 0
    sent = size // 2 + (size - rest)
    return f"requests {ranges}: {sent / size:.2f}x the file's bytes sent in all"


def lock_costs(folder: Path, n: int = 2000) -> dict[str, float]:
    target = folder / "x.pth"

    def filelock_loop() -> None:
        lock = file_lock(target)
        for _ in range(n):
            with lock:
                pass

    def fcntl_loop() -> None:
        for _ in range(n):
            fd = os.open(str(target) + ".lock2", os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    return {
        "filelock.FileLock acquire+release (us)": timed(filelock_loop, 3) / n * 1e6,
        "fcntl.flock open+lock+unlock+close (us)": timed(fcntl_loop, 3) / n * 1e6,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mb", type=int, default=200)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--pooch", help="a folder where pooch is pip-installed (--target)")
    args = p.parse_args()
    data = os.urandom(args.mb << 20)
    name = "payload-0000.bin"
    with tempfile.TemporaryDirectory() as tmp, FileServer({name: data}, lifetime=900) as server:
        out = Path(tmp) / name
        print(f"{args.mb} MB from {server.url}, best of {args.repeat}:")
        for label, fn in candidates(server.url + name, out, args.pooch).items():
            s = timed(fn, args.repeat)
            assert out.stat().st_size == len(data)
            print(f"  {label:48} {s:6.2f} s  {args.mb / s:7.1f} MB/s")
        print(f"  resume after a drop at 50% (atrous): {resume_case(server, name, len(data), out)}")
        print("  resume (torch.hub, pooch): no Range support; a failed download restarts at 0")
        t = timed(lambda: sha256_file(out), args.repeat)
        print(f"  SHA-256 of the file: {t:.2f} s ({args.mb / t:.0f} MB/s)")
        for label, us in lock_costs(Path(tmp)).items():
            print(f"  {label:48} {us:6.1f}")


if __name__ == "__main__":
    main()
