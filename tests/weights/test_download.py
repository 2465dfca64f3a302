"""Download and cache of registry files (:mod:`atrous.weights.hub`, ``.download``, ``.cache``)
against a local server on 127.0.0.1 (``tests/http_server.py``): no internet needed.

The files are stand-ins with the registry's file names (``tests/registry_files.py``): a
zoo-style tarball of the MobileNetV2 fixture for ``tf:mobilenetv2_coco_voc_trainaug`` (no
published hash: checked by its CRC32C, then by the SHA-256 recorded at download), and a
torchvision state dict under a renamed torchvision entry (checked by its hash prefix).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from http_server import FileServer
from registry_files import MNV2_VOC, damaged, isolate, tf_tarball, torchvision_pth, with_file

from atrous.weights import cache, get_weights, hub
from atrous.weights.download import DownloadError, partial_path

TV_MNV3 = "torchvision:deeplabv3_mobilenet_v3_large_coco"
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def tarball() -> tuple[str, bytes]:
    return get_weights(MNV2_VOC).file_name, tf_tarball()


def test_download_then_cache_hit(tmp_path: Path, monkeypatch, tarball) -> None:
    name, data = tarball
    with FileServer({name: data}) as server:
        home = isolate(monkeypatch, tmp_path, server.url)
        path = hub.fetch(MNV2_VOC, progress=False)
        assert path == home / "weights" / name and path.read_bytes() == data
        record = json.loads(Path(f"{path}.sha256").read_text())
        assert record["url"] == server.url + name and "CRC32C" in record["checks"]
        assert not partial_path(path).exists()
        assert hub.fetch(MNV2_VOC) == path  # checked against the record, not downloaded
        assert server.requests == [(name, None)]


def test_cache_folders_follow_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("ATROUS_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.weights_dir() == tmp_path / "xdg" / "atrous" / "weights"
    monkeypatch.setenv("ATROUS_HOME", str(tmp_path / "home"))
    assert cache.weights_dir() == tmp_path / "home" / "weights"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert cache.torch_hub_dir() == tmp_path / "th" / "hub" / "checkpoints"


def test_torchvision_cache_is_reused_after_its_check(tmp_path: Path, monkeypatch) -> None:
    data = torchvision_pth()
    entry = with_file(TV_MNV3, data, monkeypatch)
    with FileServer({}) as server:
        isolate(monkeypatch, tmp_path, server.url)
        theirs = cache.torch_hub_dir() / entry.file_name
        theirs.parent.mkdir(parents=True)
        theirs.write_bytes(data)
        assert hub.fetch(TV_MNV3) == theirs and server.requests == []
        theirs.write_bytes(damaged(data))  # a bad copy there is not used: downloaded instead
        with pytest.raises(DownloadError, match="HTTP 404"):
            hub.fetch(TV_MNV3)


def test_two_processes_fetch_one_file(tmp_path: Path, monkeypatch, tarball) -> None:
    """Two processes, started together once both have imported atrous, ask for one file that
    takes 2 s to download: one downloads, the other waits on the lock and finds it."""
    name, data = tarball
    go = tmp_path / "go"
    code = (
        "import pathlib, sys, time\n"
        "from atrous.weights import fetch\n"
        "print('ready', flush=True)\n"
        "while not pathlib.Path(sys.argv[1]).exists(): time.sleep(0.01)\n"
        f"print(fetch({MNV2_VOC!r}, progress=False))\n"
    )
    with FileServer({name: data}) as server:
        server.slow[name] = 2.0
        isolate(monkeypatch, tmp_path, server.url)
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, str(go)],
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
        go.touch()
        outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    paths = {out.strip() for out, _ in outs}
    assert len(paths) == 1 and Path(paths.pop()).read_bytes() == data
    assert server.full_gets(name) == 1  # one download; the other found it, checked
    assert any("waiting for another process" in err for _, err in outs)


def test_interrupted_transfer_resumes(tmp_path: Path, monkeypatch, tarball) -> None:
    name, data = tarball
    with FileServer({name: data}) as server:
        server.cut[name] = (len(data) // 3, 1)  # the first answer stops a third of the way
        isolate(monkeypatch, tmp_path, server.url)
        path = hub.fetch(MNV2_VOC, progress=False)
    assert path.read_bytes() == data
    assert server.requests == [(name, None), (name, f"bytes={len(data) // 3}-")]


def test_partial_left_by_an_earlier_run_resumes(tmp_path: Path, monkeypatch, tarball) -> None:
    name, data = tarball
    with FileServer({name: data}) as server:
        home = isolate(monkeypatch, tmp_path, server.url)
        partial = home / "weights" / f"{name}.partial"
        partial.parent.mkdir(parents=True)
        partial.write_bytes(data[:1000])
        assert hub.fetch(MNV2_VOC, progress=False).read_bytes() == data
    assert server.requests == [(name, "bytes=1000-")]


@pytest.mark.parametrize("kind", ["torchvision", "tf"])
def test_wrong_content_is_deleted_and_said(tmp_path: Path, monkeypatch, kind: str) -> None:
    if kind == "torchvision":
        entry = with_file(TV_MNV3, torchvision_pth(), monkeypatch)
        served, match = damaged(torchvision_pth()), "does not start with the published"
    else:
        entry = get_weights(MNV2_VOC)
        served, match = damaged(tf_tarball()), "damaged|truncated|crc32c"
    with FileServer({entry.file_name: served}) as server:
        home = isolate(monkeypatch, tmp_path, server.url)
        with pytest.raises(DownloadError, match=match) as err:
            hub.fetch(entry.name, progress=False)
    assert "the download was deleted" in str(err.value)
    left = [p.name for p in (home / "weights").glob(f"{entry.file_name}*")]
    assert left == [f"{entry.file_name}.lock"]  # the lock stays: deleting fcntl locks is racy


def test_404_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    with FileServer({}) as server:
        isolate(monkeypatch, tmp_path, server.url)
        with pytest.raises(DownloadError, match="HTTP 404") as err:
            hub.fetch(MNV2_VOC)
    assert server.url in str(err.value) and len(server.requests) == 1  # no retry on a 404


def test_a_stalled_server_times_out(tmp_path: Path, monkeypatch, tarball) -> None:
    name, data = tarball
    with FileServer({name: data}) as server:
        server.stall.add(name)
        isolate(monkeypatch, tmp_path, server.url)
        monkeypatch.setenv("ATROUS_DOWNLOAD_TIMEOUT", "1")
        t0 = time.monotonic()
        with pytest.raises(DownloadError, match=r"no data for 1 s \(2 tries\)"):
            hub.fetch(MNV2_VOC, progress=False)
        assert time.monotonic() - t0 < 10
    assert len(server.requests) == 2


def test_offline_without_the_file_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    entry = get_weights(MNV2_VOC)
    with FileServer({}) as server:
        isolate(monkeypatch, tmp_path)
        monkeypatch.setenv("ATROUS_OFFLINE", "1")
        with pytest.raises(hub.Unavailable) as err:
            hub.fetch(MNV2_VOC)
    message = str(err.value)
    assert "\n" not in message and "ATROUS_OFFLINE" in message
    assert entry.urls[0] in message and f"atrous weights import {entry.file_name}" in message
    assert server.requests == []


def test_no_network_is_the_same_one_line(tmp_path: Path, monkeypatch) -> None:
    isolate(monkeypatch, tmp_path, "http://127.0.0.1:9/")  # discard port: refused
    with pytest.raises(hub.Unavailable, match=r"no network .*atrous weights import"):
        hub.fetch(MNV2_VOC)


def test_offline_with_the_file_in_the_cache(tmp_path: Path, monkeypatch, tarball) -> None:
    from atrous import weights

    name, data = tarball
    with FileServer({name: data}) as server:
        isolate(monkeypatch, tmp_path, server.url)
        online = weights.load(MNV2_VOC)
        monkeypatch.setenv("ATROUS_OFFLINE", "1")
        offline = weights.load(MNV2_VOC)
        assert hub.fetch(MNV2_VOC).read_bytes() == data
    assert server.requests == [(name, None)]
    assert offline.config == online.config and offline.metadata["registry"] == MNV2_VOC


def test_a_changed_cached_file_is_deleted_and_fetched_again(
    tmp_path: Path, monkeypatch, tarball, capsys
) -> None:
    name, data = tarball
    with FileServer({name: data}) as server:
        isolate(monkeypatch, tmp_path, server.url)
        path = hub.fetch(MNV2_VOC)
        path.write_bytes(damaged(data))
        assert hub.fetch(MNV2_VOC, progress=False).read_bytes() == data
    assert "differs from the" in capsys.readouterr().err
    assert server.full_gets(name) == 2
