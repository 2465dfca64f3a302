"""``torchrun -m atrous predict`` (issue 29): two processes write what one writes and print
one summary over both; a process killed mid-run (``kill -9``) stops the job without a hang,
leaves only whole outputs, and ``--skip-existing`` then finishes the job without writing any
output twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import atrous.models as M
import atrous.weights as W
from atrous.cli import main
from atrous.fileio import temp_target
from atrous.inference.io import collect_inputs, output_names, output_paths
from atrous.inference.shards import REPORTS_FOLDER, RankReport, Shard

# Both runs single-threaded, one image a batch: the same arithmetic, so the same bytes.
SAME_MATH = ["--no-progress", "--device", "cpu", "--threads", "1", "--batch-size", "1"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    model = M.build("deeplabv3_mobilenetv2", num_classes=4, norm="gn", width_mult=0.5)
    return W.save(model, tmp_path_factory.mktemp("w") / "m.safetensors")


def _images(folder: Path, n: int, big: dict[int, tuple[int, int]] | None = None) -> Path:
    """``n`` random images ``s<k>/im<i>.png`` in three subfolders (``big``: sizes by index)."""
    for i in range(n):
        size = (big or {}).get(i, (40, 50))
        path = folder / f"s{i % 3}" / f"im{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(i).integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
    return folder


def _one_process(weights: Path, inputs: Path, out: Path) -> int:
    """The reference: ``atrous predict`` in this process (its threads put back after)."""
    threads = torch.get_num_threads()
    try:
        return main(["predict", str(weights), str(inputs), "-o", str(out), *SAME_MATH])
    finally:
        torch.set_num_threads(threads)


def _torchrun(weights: Path, inputs: Path, out: Path, *flags: str) -> list[str]:
    cmd = ["-m", "atrous", "predict", str(weights), str(inputs), "-o", str(out), *SAME_MATH]
    return [*TORCHRUN, *cmd, *flags]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_two_processes_write_what_one_writes_and_one_summary(tmp_path: Path, weights) -> None:
    inputs = _images(tmp_path / "in", 12)
    bad = [inputs / f"s{i % 3}" / f"bad{i}.png" for i in range(4)]
    for path in bad:
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    files, _ = collect_inputs([inputs])
    shares = [set(Shard(r, 2).take(files, output_names(files))[0]) for r in (0, 1)]
    assert all(shares[r] & set(bad) for r in (0, 1))  # both ranks meet bad files
    assert _one_process(weights, inputs, tmp_path / "one") == 1

    two = tmp_path / "two"
    res = subprocess.run(
        _torchrun(weights, inputs, two), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 1, res.stderr[-3000:]  # bad files: torchrun's failure status
    expected = _files(tmp_path / "one")
    written = {k: v for k, v in _files(two).items() if not k.startswith(REPORTS_FOLDER)}
    assert len(expected) == 24 and written == expected
    # One summary over both ranks; the reports it points to hold the failures it leaves out.
    lines = res.stdout.splitlines()
    assert [ln for ln in lines if ln.startswith("atrous predict:")] == [
        f"atrous predict: 16 input(s): 12 segmented into {two} by 2 processes, 4 failed:"
    ]
    assert len(lines) == 5 and all(": unreadable image" in ln for ln in lines[1:4])
    (run,) = (two / REPORTS_FOLDER).iterdir()
    assert lines[4] == f"  ... and 1 more (see {run}/rank-*.json)"
    reports = [RankReport.from_json(p.read_bytes()) for p in sorted(run.glob("rank-*.json"))]
    assert sorted(item for r in reports for item, _ in r.failures) == sorted(map(str, bad))
    assert [r.done for r in reports] == [6, 6]
    for path in bad:  # each reported once, by the rank that met it
        assert res.stderr.count(f"error: {path}: unreadable image") == 1
    for r in reports:
        n = len(r.failures)
        finished = (
            f"atrous predict: rank {r.rank} of 2 finished: 6 segmented, 0 skipped, {n} failed"
        )
        assert finished in res.stderr


def _worker(torchrun: subprocess.Popen, rank: int, timeout: float = 120) -> int:
    """The pid of torchrun's worker of ``rank`` (a child whose environment says RANK)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == torchrun.pid and f"RANK={rank}".encode() in environ:
                return int(pid)
        assert torchrun.poll() is None, "torchrun ended before its workers started"
        time.sleep(0.05)
    raise AssertionError(f"no worker of rank {rank} within {timeout} s")


def test_a_killed_run_resumed_with_skip_existing(tmp_path: Path, weights) -> None:
    inputs = _images(tmp_path / "in", 24)
    files, _ = collect_inputs([inputs])
    rank1 = [Path(n) for n in Shard(1, 2).take(files, output_names(files))[1]]
    # Rank 1's 4th file is large, so that it is still at work on it when it is killed.
    slow = inputs / rank1[3].with_suffix(".png")
    big = np.random.default_rng(99).integers(0, 256, (800, 1000, 3), dtype=np.uint8)
    Image.fromarray(big).save(slow)
    ref = tmp_path / "ref"
    assert _one_process(weights, inputs, ref) == 0

    out = tmp_path / "out"
    log = (tmp_path / "stdout").open("w+"), (tmp_path / "stderr").open("w+")
    job = subprocess.Popen(
        _torchrun(weights, inputs, out), env=_env(), stdout=log[0], stderr=log[1]
    )
    try:
        victim = _worker(job, 1)
        deadline = time.monotonic() + 120
        while not output_paths(out, rank1[2].as_posix())[1].exists():  # its first 3 done
            assert time.monotonic() < deadline and job.poll() is None, Path(log[1].name).read_text()
            time.sleep(0.005)
        os.kill(victim, signal.SIGKILL)
        rc = job.wait(timeout=60)  # torchrun stops the other process: no hang
    finally:
        if job.poll() is None:
            job.kill()
    assert rc != 0
    assert "Signal 9" in Path(log[1].name).read_text()

    # Whatever exists is whole and right (atomic writes); rank 1's share is unfinished.
    reference = _files(ref)
    after_kill = _files(out)
    assert not output_paths(out, rank1[3].as_posix())[0].exists()
    for name, data in after_kill.items():  # and maybe the finished rank's report
        if temp_target(out / name) is None and not name.startswith(REPORTS_FOLDER):
            assert data == reference[name], name
    # A write cut short by the kill leaves its temporary; plant one to be sure.
    mask = output_paths(out, rank1[3].as_posix())[0]
    stale = mask.with_name(mask.name + ".abcdefgh.tmp")
    stale.write_bytes(b"\x89PNG half")
    done = [p for p in out.glob("s*/*") if temp_target(p) is None]
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in done}
    whole = {n for n in output_names(files) if all(p.exists() for p in output_paths(out, n))}
    assert 3 <= len(whole) < 24

    res = subprocess.run(
        _torchrun(weights, inputs, out, "--skip-existing"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"{len(whole)} skipped (outputs already there), 0 failed" in res.stdout
    assert f"{24 - len(whole)} segmented into {out} by 2 processes" in res.stdout
    # Every output once and right; no temporary left, nor the killed run's reports.
    assert _files(out) == reference
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in done} == stamps  # none rewritten
