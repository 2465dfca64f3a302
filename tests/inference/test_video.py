"""Videos through the Segmenter (``atrous.inference.video``): every frame's labels equal
``Segmenter.predict`` on the frame decoded independently, the overlay video keeps the frame
count, rate and timestamps, ``every/start/end`` choose the right frames, damage keeps the
frames before it, and files without frames, without video or without PyAV say so."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from videos import decode, street_frames, truncate, write_audio, write_empty_video, write_video

import atrous.models as M
from atrous.data.palettes import draw_legend, voc_colormap
from atrous.inference import Segmenter
from atrous.inference.video import (
    VideoError,
    VideoReader,
    is_video,
    predict_frames,
    segment_video,
)

PALETTE = voc_colormap(256)
NAMES = ["road", "sky", "car", "tree"]


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    torch.manual_seed(3)
    model = M.build("deeplabv3_mobilenetv2", num_classes=4, norm="gn", width_mult=0.25)
    return Segmenter(model, batch_size=3)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """10 frames at 12 frames/s, MPEG-4 in MP4 (the header lists the frame count)."""
    return write_video(tmp_path_factory.mktemp("v") / "street.mp4", street_frames(10))


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "P"
        return np.asarray(im)


def _csv(path: Path) -> list[tuple[int, int, float]]:
    lines = path.read_text().splitlines()
    assert lines[0] == "frame,pts,time"
    return [(int(a), int(b), float(c)) for a, b, c in (ln.split(",") for ln in lines[1:])]


def test_every_frame_equals_segmenter_predict(tmp_path: Path, segmenter, clip) -> None:
    result = segment_video(segmenter, clip, tmp_path, PALETTE, class_names=NAMES)
    assert result.ok, result.problem
    assert result.frames == 10
    folder = tmp_path / "street"
    source = decode(clip)
    assert len(source) == 10
    for i, (_, _, image) in enumerate(source):
        np.testing.assert_array_equal(_png(folder / f"frame_{i:06d}.png"), segmenter.predict(image))
    index = _csv(folder / "frames.csv")
    assert [(i, pts) for i, pts, _ in index] == [(i, pts) for i, (pts, _, _) in enumerate(source)]
    np.testing.assert_allclose([t for *_, t in index], [t for _, t, _ in source], atol=1e-6)
    assert not list(folder.glob("*_probs.npy")) and not (folder / "street_labels.mkv").exists()

    overlay = folder / "street_overlay.mp4"
    assert result.outputs == [folder, overlay, folder / "frames.csv"]
    with av.open(str(overlay)) as c:
        s = c.streams.video[0]
        assert s.average_rate == 12 and s.frames == 10
        assert (s.codec_context.width, s.codec_context.height) == (64, 48)
        times = [float(f.time) for f in c.decode(s)]
    np.testing.assert_allclose(times, [t for _, t, _ in source], atol=1e-3)  # timestamps kept


def test_overlay_shows_the_legend_of_the_classes_present(tmp_path: Path, segmenter, clip) -> None:
    segment_video(segmenter, clip, tmp_path, PALETTE, class_names=NAMES, overlay_alpha=1.0)
    labels = _png(tmp_path / "street" / "frame_000000.png")
    _, _, drawn = decode(tmp_path / "street" / "street_overlay.mp4")[0]
    present = [int(k) for k in np.unique(labels)]
    # The legend's box (top-left) is drawn over the overlay, which is the colours elsewhere.
    legend = draw_legend(np.zeros((48, 64, 3), np.uint8), [(NAMES[k], PALETTE[k]) for k in present])
    box = legend.any(2)
    assert box.any() and not box.all()
    # Lossy H.264: compare the mean colour of the rows below the legend, and its box.
    rows = slice(box.any(1).nonzero()[0].max() + 2, None)
    expected = PALETTE[labels[rows]].astype(float)
    assert np.abs(drawn[rows].astype(float) - expected).mean() < 12
    assert np.abs(drawn[:4, :4].astype(float) - legend[:4, :4]).mean() < 40


@pytest.mark.parametrize(
    ("every", "start", "end", "frames"),
    [(3, 0.0, None, [0, 3, 6, 9]), (2, 0.2, 0.6, [3, 5, 7]), (1, 0.5, None, [6, 7, 8, 9])],
)
def test_every_start_end_choose_frames(
    tmp_path: Path, segmenter, clip, every, start, end, frames
) -> None:
    # Frame i is at i/12 s: 0.2 s falls between frames 2 and 3, 0.6 s between 7 and 8.
    result = segment_video(segmenter, clip, tmp_path, PALETTE, every=every, start=start, end=end)
    assert result.ok, result.problem
    folder = tmp_path / "street"
    assert sorted(p.name for p in folder.glob("frame_*.png")) == [
        f"frame_{i:06d}.png" for i in frames
    ]
    source = decode(clip)
    assert [(i, pts) for i, pts, _ in _csv(folder / "frames.csv")] == [
        (i, source[i][0]) for i in frames
    ]
    for i in frames:
        np.testing.assert_array_equal(
            _png(folder / f"frame_{i:06d}.png"), segmenter.predict(source[i][2])
        )
    with av.open(str(folder / "street_overlay.mp4")) as c:
        times = [float(f.time) for f in c.decode(video=0)]
    np.testing.assert_allclose(times, [source[i][1] for i in frames], atol=1e-3)
    with VideoReader(clip, every, start, end) as reader:
        assert reader.info.expected_frames(every, start, end) == len(frames)


def test_start_after_the_end_selects_nothing(tmp_path: Path, segmenter, clip) -> None:
    result = segment_video(segmenter, clip, tmp_path, PALETTE, start=5.0)
    assert result.problem == "no frame from 5 s (the video has 10 frames)"
    assert not (tmp_path / "street").exists()


@pytest.mark.parametrize(
    ("suffix", "options", "says"),
    [
        (".mkv", None, "truncated or damaged: only "),  # the frames end before the header's time
        (".mp4", {"movflags": "faststart"}, "corrupt data at frame "),  # a packet cut short
    ],
)
def test_truncated_video_keeps_the_frames_before_the_damage(
    tmp_path: Path, segmenter, suffix, options, says
) -> None:
    whole = write_video(
        tmp_path / f"whole{suffix}", street_frames(10), codec="ffv1", options=options
    )
    cut = truncate(whole, 0.6, tmp_path / f"cut{suffix}")
    result = segment_video(segmenter, cut, tmp_path / "out", PALETTE)
    kept = result.frames
    assert 0 < kept < 10
    assert result.problem.startswith(says)
    assert result.problem.endswith(
        f"; the {kept} frames before it are in {tmp_path / 'out' / 'cut'}"
    )
    assert "\n" not in result.problem
    folder = tmp_path / "out" / "cut"
    assert len(_csv(folder / "frames.csv")) == kept
    source = decode(whole)  # lossless: the cut file's frames are the whole file's
    for i in range(kept):
        np.testing.assert_array_equal(
            _png(folder / f"frame_{i:06d}.png"), segmenter.predict(source[i][2])
        )
    with av.open(str(folder / "cut_overlay.mp4")) as c:
        assert c.streams.video[0].frames == kept


def test_file_cut_before_its_index_does_not_open(tmp_path: Path, segmenter, clip) -> None:
    cut = truncate(clip, 0.5, tmp_path / "cut.mp4")  # the MP4 index is at the end: lost
    result = segment_video(segmenter, cut, tmp_path / "out", PALETTE)
    assert result.problem == "cannot open the video (Invalid data found when processing input)"
    assert result.frames == 0 and not (tmp_path / "out").exists()


def test_video_without_frames(tmp_path: Path, segmenter) -> None:
    empty = write_empty_video(tmp_path / "empty.avi")
    result = segment_video(segmenter, empty, tmp_path / "out", PALETTE)
    assert result.problem == "the video holds no frames"
    assert not (tmp_path / "out").exists()


def test_audio_only_file(tmp_path: Path, segmenter) -> None:
    song = write_audio(tmp_path / "song.m4a")
    assert is_video(song)  # not a video suffix: PyAV opened it and found a stream
    result = segment_video(segmenter, song, tmp_path / "out", PALETTE)
    assert result.problem == "holds no video stream (audio only)"
    with pytest.raises(VideoError, match=r"song\.m4a: holds no video stream \(audio only\)"):
        VideoReader(song)


def test_what_is_a_video(tmp_path: Path, clip) -> None:
    (tmp_path / "notes.txt").write_text("[00:01.00] not a video\n")
    (tmp_path / "clip.bin").write_bytes(clip.read_bytes())
    Image.fromarray(street_frames(1)[0]).save(tmp_path / "frame.png")
    assert is_video(clip) and is_video(tmp_path / "clip.bin")
    assert not is_video(tmp_path / "notes.txt") and not is_video(tmp_path / "frame.png")
    assert is_video(tmp_path / "missing.mkv")  # the suffix decides; opening it says what is wrong


def test_missing_pyav_is_one_line(tmp_path: Path, segmenter, clip, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    result = segment_video(segmenter, clip, tmp_path, PALETTE)
    assert result.problem == "reading videos needs PyAV: pip install 'atrous[video]'"
    assert is_video(clip) and not is_video(tmp_path / "clip.bin")


def test_label_video_and_probabilities(tmp_path: Path, segmenter, clip) -> None:
    result = segment_video(segmenter, clip, tmp_path, PALETTE, label_video=True, probs=True)
    assert result.ok, result.problem
    folder = tmp_path / "street"
    assert not list(folder.glob("frame_*.png"))
    source = decode(clip)
    with av.open(str(folder / "street_labels.mkv")) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "ffv1"
        decoded = [(f.format.name, float(f.time), f.to_ndarray()) for f in c.decode(s)]
    assert len(decoded) == 10
    for (fmt, t, labels), (_, src_t, image) in zip(decoded, source):
        assert fmt == "gray" and abs(t - src_t) < 1e-3
        np.testing.assert_array_equal(labels, segmenter.predict(image))
    for i in (0, 9):
        p = np.load(folder / f"frame_{i:06d}_probs.npy")
        assert p.dtype == np.float16 and p.shape == (4, 48, 64)
        expected = segmenter.predict_proba(source[i][2])
        np.testing.assert_allclose(p.astype(np.float32), expected, atol=1e-3)


def test_probability_hook_decides_the_labels(segmenter, clip) -> None:
    seen = []

    def hook(frame, probs: np.ndarray) -> np.ndarray:
        seen.append(frame.index)
        return np.roll(probs, 1, axis=0)  # class k's probability becomes class k+1's

    with VideoReader(clip) as reader:
        preds = list(predict_frames(segmenter, reader, hook=hook))
    assert seen == list(range(10))
    for pred, (_, _, image) in zip(preds, decode(clip)):
        np.testing.assert_array_equal(pred.labels, (segmenter.predict(image) + 1) % 4)
        assert pred.probs is not None and pred.probs.shape == (4, 48, 64)


def test_unwritable_output_is_the_videos_problem(tmp_path: Path, segmenter, clip) -> None:
    (tmp_path / "street").write_text("a file where the output folder goes")
    result = segment_video(segmenter, clip, tmp_path, PALETTE)
    assert result.problem.startswith(f"cannot write outputs to {tmp_path / 'street'} (")
    assert result.frames == 0


def test_overlay_falls_back_to_mpeg4_without_h264(tmp_path: Path, segmenter, clip, monkeypatch):
    monkeypatch.setattr(av, "codecs_available", set(av.codecs_available) - {"libx264"})
    result = segment_video(segmenter, clip, tmp_path, PALETTE, every=2)
    assert result.ok, result.problem
    with av.open(str(tmp_path / "street" / "street_overlay.mp4")) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "mpeg4" and s.frames == 5
        drawn = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
    source = decode(clip)
    # Outside the legend's box the overlay is the frame half-blended with its classes' colours.
    for k, image in enumerate(drawn):
        frame = source[2 * k][2]
        labels = segmenter.predict(frame)
        entries = [(f"class {c}", PALETTE[c]) for c in np.unique(labels)]
        box = draw_legend(np.zeros_like(frame), entries).any(2)
        outside = np.ones_like(box)
        outside[: box.any(1).nonzero()[0].max() + 1, : box.any(0).nonzero()[0].max() + 1] = False
        expected = 0.5 * frame.astype(float) + 0.5 * PALETTE[labels]
        assert outside.mean() > 0.3
        assert np.abs(image[outside].astype(float) - expected[outside]).mean() < 10


class _FailsOnSecondBatch(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("boom")
        return self.model(x)


def test_model_failure_keeps_the_frames_before_it(tmp_path: Path, segmenter, clip) -> None:
    failing = Segmenter(_FailsOnSecondBatch(segmenter.model), batch_size=3)
    result = segment_video(failing, clip, tmp_path, PALETTE)
    assert result.problem == "segmentation failed after 3 frames: RuntimeError: boom"
    assert result.frames == 3
    folder = tmp_path / "street"
    assert sorted(p.name for p in folder.glob("frame_*.png")) == [
        f"frame_{i:06d}.png" for i in range(3)
    ]
    with av.open(str(folder / "street_overlay.mp4")) as c:
        assert c.streams.video[0].frames == 3  # the overlay is finished, not left half-written


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_decode_and_encode_threads_yield_to_the_model(tmp_path: Path, segmenter, clip) -> None:
    """The writer (and reader) threads run at a higher nice value than the model's thread,
    and so do the codec threads they start: they take the CPU time the model leaves."""
    from atrous.inference import video

    main = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: list[int] = []
    real = video.VideoWriter.write

    def write(self, pred) -> None:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        real(self, pred)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(video.VideoWriter, "write", write)
        assert segment_video(segmenter, clip, tmp_path, PALETTE, every=5).ok
    assert seen == [min(19, main + video.WORKER_NICENESS)] * 2
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main
