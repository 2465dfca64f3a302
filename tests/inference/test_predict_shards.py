"""Sharding ``atrous predict`` (issue 29): the shards are a deterministic partition, each
rank's place comes from torchrun's environment, outputs are written atomically, a resumed run
skips what is done and removes what a killed one left, and the ranks' reports meet in the
last rank to post."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.distributed import HashStore

from atrous.fileio import atomic_path, temp_target
from atrous.inference import io
from atrous.inference.io import output_names, output_paths, write_mask, write_overlay, write_probs
from atrous.inference.shards import (
    Meeting,
    RankReport,
    Shard,
    launcher_store,
    remove_stale_temps,
    skip_done,
)


def _files(n: int) -> tuple[list[Path], list[str]]:
    files = [Path(f"/data/{'ab'[i % 2]}/img{i:03d}.jpg") for i in range(n)]
    return files, output_names(files)


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("n", [0, 1, 7, 12])
def test_shards_partition_the_files_the_same_way_whatever_the_order(world: int, n: int) -> None:
    files, names = _files(n)
    parts = [Shard(r, world).take(files, names) for r in range(world)]
    taken = [f for part, _ in parts for f in part]
    assert sorted(taken) == sorted(files) and len(taken) == n  # each file exactly once
    sizes = [len(part) for part, _ in parts]
    assert max(sizes) - min(sizes) <= 1
    for part, part_names in parts:  # names travel with their files
        assert all(names[files.index(f)] == m for f, m in zip(part, part_names, strict=True))
    # Another rank listing the inputs in another order takes the same share.
    order = list(range(n))
    random.Random(world * 100 + n).shuffle(order)
    shuffled = [files[i] for i in order], [names[i] for i in order]
    again = [Shard(r, world).take(*shuffled) for r in range(world)]
    if world > 1:
        assert again == parts
    else:  # one process keeps the inputs' order
        assert again[0][0] == shuffled[0]


def test_shard_from_torchrun_environment() -> None:
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert Shard.from_env(env) == Shard(3, 4, 1, 2)
    assert Shard.from_env({}) == Shard() == Shard.from_env({"WORLD_SIZE": "1", "LOCAL_RANK": "5"})
    assert Shard.from_env({"RANK": "1", "WORLD_SIZE": "3"}) == Shard(1, 3, 1, 3)  # one machine
    with pytest.raises(ValueError, match=r"^RANK=2 must be in \[0, WORLD_SIZE=2\)$"):
        Shard.from_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="LOCAL_RANK=2 must be in"):
        Shard.from_env({**env, "LOCAL_RANK": "2"})
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not an integer"):
        Shard.from_env({"WORLD_SIZE": "two"})


def test_shard_device_and_threads(monkeypatch) -> None:
    two = Shard(3, 4, 1, 2)
    assert two.device("cuda") == "cuda:1" and two.device("cpu") == "cpu"
    assert two.device("cuda:0") == "cuda:0" and Shard().device("cuda") == "cuda"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert two.threads(None, {"OMP_NUM_THREADS": "1"}) == 4  # torchrun's own default
    assert two.threads(None, {}) == 4
    assert two.threads(None, {"OMP_NUM_THREADS": "3"}) is None  # the user's: torch reads it
    assert two.threads(6, {"OMP_NUM_THREADS": "3"}) == 6
    assert Shard().threads(None, {}) is None
    assert Shard(0, 16, 0, 16).threads(None, {}) == 1


def test_temp_target_names_an_atomic_writes_temporary(tmp_path: Path) -> None:
    for keep in (False, True):
        with atomic_path(tmp_path / "a.b.png", keep_suffix=keep) as tmp:
            assert temp_target(tmp) == tmp_path / "a.b.png"
    for other in (
        "a.png",
        "a.png.tmp",
        "a.png.abc.tmp",
        "a.png.ABCDEFGH.tmp",
        "a.jpg.abcdefgh.tmp.png",
    ):
        assert temp_target(tmp_path / other) is None, other


def test_outputs_are_written_atomically(tmp_path: Path, monkeypatch) -> None:
    labels = np.arange(12, dtype=np.int64).reshape(3, 4) % 3
    palette = np.zeros((256, 3), np.uint8)
    image = np.zeros((3, 4, 3), np.uint8)
    write_mask(labels, palette, tmp_path / "m.png")
    write_overlay(image, labels, palette, tmp_path / "m_overlay.jpg")
    write_probs(np.ones((2, 3, 4), np.float32), tmp_path / "m_probs.npy")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "m.png")), labels)
    assert np.load(tmp_path / "m_probs.npy").dtype == np.float16
    assert Image.open(tmp_path / "m_overlay.jpg").format == "JPEG"
    before = (tmp_path / "m.png").read_bytes()

    def half_then_die(self, fp, *args, **kwargs):  # a write cut short
        Path(fp).write_bytes(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", half_then_die)
    with pytest.raises(OSError, match="disk full"):
        write_mask(labels + 1, palette, tmp_path / "m.png")
    with pytest.raises(OSError):
        write_mask(labels, palette, tmp_path / "new.png")
    assert (tmp_path / "m.png").read_bytes() == before and not (tmp_path / "new.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png", "m_overlay.jpg", "m_probs.npy"]


def test_skip_done_and_stale_temporaries(tmp_path: Path) -> None:
    names = ["a/x", "a/y", "z"]
    files = [Path(f"/in/{n}.jpg") for n in names]
    for p in output_paths(tmp_path, "a/x", probs=True):  # all three: done
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"1")
    (tmp_path / "a" / "y.png").write_bytes(b"1")  # mask only: overlay missing
    todo, todo_names, skipped = skip_done(files, names, tmp_path, probs=True)
    assert (todo, todo_names, skipped) == (files[1:], names[1:], 1)
    assert skip_done(files, names, tmp_path, probs=False)[2] == 1
    (tmp_path / "a" / "y_probs.npy").write_bytes(b"1")
    (tmp_path / "a" / "y_overlay.jpg").write_bytes(b"1")
    assert skip_done(files, names, tmp_path, probs=True)[2] == 2

    # Temporaries a killed writer left: this shard's (a/x, z) go, another shard's stay.
    mine = [tmp_path / "a" / "x.png.k2j4a_1z.tmp", tmp_path / "z_probs.npy.abcdefgh.tmp"]
    theirs = [tmp_path / "a" / "y_overlay.jpg.abcdefgh.tmp", tmp_path / "a" / "x.jpg.abcdefgh.tmp"]
    for p in mine + theirs:
        p.write_bytes(b"half")
    assert remove_stale_temps(tmp_path, ["a/x", "z", "gone/w"], probs=True) == 2
    assert not any(p.exists() for p in mine) and all(p.exists() for p in theirs)
    assert (tmp_path / "a" / "x.png").exists()


def test_a_resumed_run_writes_only_the_missing_outputs(tmp_path: Path) -> None:
    import atrous.models as M
    from atrous.inference import Segmenter

    torch.manual_seed(0)
    seg = Segmenter(M.build("deeplabv3_mobilenetv2", num_classes=3, norm="gn", width_mult=0.5))
    files = []
    for i in range(2):
        files.append(tmp_path / "in" / f"{i}.png")
        files[-1].parent.mkdir(exist_ok=True)
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(files[-1])
    out = tmp_path / "out"
    palette = io.model_palette(seg.model)
    first = list(io.segment_files(seg, files, out, palette))
    assert [len(r.outputs) for r in first] == [2, 2]
    (out / "1_overlay.jpg").unlink()
    kept = {p: p.stat().st_ino for p in out.iterdir()}
    again = list(io.segment_files(seg, files, out, palette, overwrite=False))
    assert [r.outputs for r in again] == [[], [out / "1_overlay.jpg"]]
    assert all(p.stat().st_ino == ino for p, ino in kept.items())
    rewritten = list(io.segment_files(seg, files, out, palette))
    assert [len(r.outputs) for r in rewritten] == [2, 2]
    assert (out / "0.png").stat().st_ino != kept[out / "0.png"]  # replaced, not written into


class GoneStore(HashStore):
    """torchrun's store after its agent exited: every call fails."""

    def set(self, *args):
        raise RuntimeError("Connection reset by peer")


def test_reports_meet_in_the_last_rank_to_post(tmp_path: Path) -> None:
    store = HashStore()
    reports = [
        RankReport(0, 5, 1, [("in/bad.png", "unreadable image")]),
        RankReport(1, 6, 0, []),
        RankReport(2, 4, 2, [("in/x.png", "segmentation failed: boom")]),
    ]
    ranks = [Meeting(3, store, tmp_path, "0") for _ in range(3)]  # one client per rank
    assert len({m.folder for m in ranks}) == 1  # the run they agreed on
    assert ranks[2].post(reports[2]) == (None, None)
    assert ranks[0].post(reports[0]) == (None, None)
    assert ranks[1].post(reports[1]) == (reports, None)  # in rank order
    folder = ranks[0].folder
    assert sorted(p.name for p in folder.iterdir()) == ["rank-0.json", "rank-1.json", "rank-2.json"]
    stale = tmp_path / ".atrous-predict" / "killed-run"
    stale.mkdir()
    (stale / "rank-0.json").write_bytes(RankReport(0).to_json())
    ranks[0].tidy(keep=True)  # failures to keep: this run's reports stay, earlier runs' go
    assert [p.name for p in (tmp_path / ".atrous-predict").iterdir()] == [folder.name]
    ranks[0].tidy(keep=False)
    assert not (tmp_path / ".atrous-predict").exists()
    # A restarted job (torchrun --max-restarts) is another run, counted afresh.
    again = Meeting(2, store, tmp_path, "1")
    assert again.folder != folder and again.post(reports[1]) == (None, None)


def test_reports_meet_in_files_when_the_store_has_gone(tmp_path: Path) -> None:
    store = HashStore()
    early = [Meeting(3, store, tmp_path, "0") for _ in range(3)]
    assert early[0].post(RankReport(0, 5)) == (None, None)
    assert early[1].post(RankReport(1, 4, 0, [("b.png", "bad")])) == (None, None)
    late = early[2]
    late.store = GoneStore()  # rank 2 finishes after torchrun's first agent exited
    assert late.post(RankReport(2, 3)) == (
        [RankReport(0, 5), RankReport(1, 4, 0, [("b.png", "bad")]), RankReport(2, 3)],
        None,
    )
    # Another late rank seeing the files too leaves the summary to the first.
    assert late.post(RankReport(2, 3)) == (None, None)
    # A rank whose partners' files are missing cannot tell.
    lone = Meeting(3, HashStore(), tmp_path, "0")
    lone.store = GoneStore()
    reports, why = lone.post(RankReport(1, 2))
    assert reports is None and "holds no report of rank(s) [0, 2] yet" in why
    assert "torchrun's store has gone (RuntimeError)" in why


def test_meetings_open_only_under_torchrun(tmp_path: Path) -> None:
    assert Meeting.open(Shard(), tmp_path, {})[1] == "one process"
    assert Meeting.open(Shard(0, 2), tmp_path, {"MASTER_ADDR": "x"})[1] == "not started by torchrun"
    env = {"TORCHELASTIC_USE_AGENT_STORE": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    assert launcher_store({}) is None
    with pytest.raises(RuntimeError, match=r"(?i)connect|timed out|refused"):
        launcher_store(env, timeout=0.5)
    meeting, problem = Meeting.open(Shard(0, 2), tmp_path, env, timeout=0.5)
    assert problem.startswith("cannot reach torchrun's store (") and meeting.store is None
    assert meeting.post(RankReport(0)) == (None, "not started by torchrun")


def test_each_process_takes_its_local_rank_gpu(tmp_path: Path) -> None:
    from atrous.cli import CLIError
    from atrous.cli._predict_shards import Share, on_share
    from atrous.inference.settings import InferenceSettings

    share = Share(Shard(1, 2, 1, 2), Meeting(2, None, tmp_path, "0"), None)
    assert on_share(InferenceSettings(device="cpu"), share).device == "cpu"
    if torch.cuda.device_count() >= 2:
        assert on_share(InferenceSettings(device="cuda"), share).device == "cuda:1"
    else:  # no second GPU here: one line naming the device, before any work
        with pytest.raises(CLIError, match=r"^--device cuda:1: "):
            on_share(InferenceSettings(device="cuda"), share)
