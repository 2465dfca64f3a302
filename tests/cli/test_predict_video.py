"""Videos in ``atrous predict``: mixed with images in one call, found in folders, damage and
files without video reported in one line each (exit 1, ``--fail-fast``), a missing PyAV
said with the install command, and the video flags checked."""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from videos import decode, street_frames, truncate, write_audio, write_video

import atrous.models as M
import atrous.weights as W
from atrous.cli import main
from atrous.inference import Segmenter


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(5)
    model = M.build("deeplabv3_mobilenetv2", num_classes=3, norm="gn", width_mult=0.25)
    return W.save(model, tmp_path_factory.mktemp("w") / "m.safetensors", class_names=list("abc"))


def _predict(args: list[str], capsys) -> tuple[int, str, list[str]]:
    rc = main(["predict", *args, "--no-progress", "--device", "cpu"])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err.splitlines()


def test_images_and_videos_in_one_call(tmp_path: Path, weights: Path, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    frames = street_frames(6)
    Image.fromarray(frames[0]).save(src / "photo.png")
    write_video(src / "drive.mkv", frames, codec="ffv1")
    write_video(src / "sub.avi", frames[:3])
    (src / "notes.txt").write_text("neither")
    out = tmp_path / "out"
    rc, stdout, err = _predict([str(weights), str(src), "-o", str(out), "--every", "2"], capsys)
    assert rc == 0, err
    assert err == []
    assert "3 input(s): 3 segmented into" in stdout  # the folder scan skips notes.txt
    seg = Segmenter(W.load(weights))
    with Image.open(out / "photo.png") as im:
        np.testing.assert_array_equal(np.asarray(im), seg.predict(frames[0]))
    assert (out / "photo_overlay.jpg").is_file()
    for name, chosen in (("drive", [0, 2, 4]), ("sub", [0, 2])):
        folder = out / name
        source = decode(next(src.glob(f"{name}.*")))
        assert sorted(p.name for p in folder.glob("frame_*.png")) == [
            f"frame_{i:06d}.png" for i in chosen
        ]
        for i in chosen:
            with Image.open(folder / f"frame_{i:06d}.png") as im:
                np.testing.assert_array_equal(np.asarray(im), seg.predict(source[i][2]))
        with av.open(str(folder / f"{name}_overlay.mp4")) as c:
            assert c.streams.video[0].frames == len(chosen)
        assert (folder / "frames.csv").read_text().count("\n") == 1 + len(chosen)


def test_truncated_video_keeps_its_frames_and_exits_1(
    tmp_path: Path, weights: Path, capsys
) -> None:
    whole = write_video(tmp_path / "whole.mkv", street_frames(8), codec="ffv1")
    cut = truncate(whole, 0.6, tmp_path / "cut.mkv")
    song = write_audio(tmp_path / "song.m4a")
    out = tmp_path / "out"
    rc, stdout, err = _predict([str(weights), str(cut), str(song), "-o", str(out)], capsys)
    assert rc == 1
    assert len(err) == 2
    assert err[0].startswith(f"atrous predict: error: {cut}: truncated or damaged: only ")
    kept = len(list((out / "cut").glob("frame_*.png")))
    assert 0 < kept < 8 and err[0].endswith(f"the {kept} frames before it are in {out / 'cut'}")
    assert err[1] == f"atrous predict: error: {song}: holds no video stream (audio only)"
    assert "2 input(s): 0 segmented into" in stdout and ", 2 failed:" in stdout

    # --fail-fast stops at the damaged video: the song after it is not tried.
    rc, stdout, err = _predict(
        [str(weights), str(cut), str(song), "-o", str(tmp_path / "o2"), "--fail-fast"], capsys
    )
    assert rc == 1 and len(err) == 2 and str(cut) in err[0] and str(song) not in "".join(err)
    assert len(list((tmp_path / "o2" / "cut").glob("frame_*.png"))) == kept


def test_missing_pyav_says_how_to_install(tmp_path: Path, weights: Path, capsys, monkeypatch):
    clip = write_video(tmp_path / "clip.mp4", street_frames(2))
    Image.fromarray(street_frames(1)[0]).save(tmp_path / "photo.jpg")
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    args = [str(weights), str(clip), str(tmp_path / "photo.jpg"), "-o", str(tmp_path / "out")]
    rc, _, err = _predict(args, capsys)
    assert rc == 1
    assert err == [
        f"atrous predict: error: {clip}: reading videos needs PyAV: pip install 'atrous[video]'"
    ]
    assert (tmp_path / "out" / "photo.png").is_file()  # the image is still segmented


def test_bad_video_flags(tmp_path: Path, weights: Path, capsys) -> None:
    clip = write_video(tmp_path / "clip.mp4", street_frames(2))
    base = ["predict", str(weights), str(clip), "-o", str(tmp_path / "o")]
    assert main([*base, "--start", "2", "--end", "1"]) == 2  # the run cannot start
    assert capsys.readouterr().err.strip() == (
        "atrous predict: error: --end (1 s) must be after --start (2 s)"
    )
    for flag, value, says in (
        ("--every", "0", "expected a positive integer, got '0'"),
        ("--start", "-1", "expected seconds >= 0, got '-1'"),
        ("--end", "soon", "expected seconds, got 'soon'"),
    ):
        with pytest.raises(SystemExit) as e:
            main([*base, flag, value])
        assert e.value.code == 2
        assert f"argument {flag}: {says}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
