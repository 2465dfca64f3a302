"""Frames per second of ``atrous predict`` on a video against the same frames as image files.

Usage::

    PYTHONPATH=src python benchmarks/video_predict.py [--frames 10] [--size 384x288]
        [--runs 5] [--model deeplabv3plus_mobilenetv2] [--out benchmarks/results/video_predict.md]

**Reads ../shared**: the frames are consecutive street frames of CamVid's 0016E5 sequence in
``../shared/data/camvid/train`` (beside the project), resized to ``--size``. They are encoded
once as an H.264 MP4 (PyAV, crf 18, 10 frames/s); the image files are that video's decoded
frames saved as JPEG (quality 95), so both paths segment the same pixels up to JPEG loss.
The weights are deterministic random ones (speed does not depend on their values), saved with
class names so the overlay video draws its legend.

Both paths are one whole ``atrous predict`` call in this process (weights loaded, segmenter
built, every output written: label PNGs, the overlay video or JPEGs), with the same settings
(the defaults: scale 1, batch 4, float32, torch's threads), alternating video and images
``--runs`` times after one warm-up call each; frames/s is frames / wall time, and the table
gives the median, the best and the worst run (on a shared machine the best run is the one
least disturbed by other work; the load average is recorded). Writes the markdown table to
``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import cpu_model, timed_predict
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CAMVID = ROOT.parent / "shared" / "data" / "camvid" / "train"


def street_frames(n: int, size: tuple[int, int]) -> list[np.ndarray]:
    """The first ``n`` frames of CamVid's 0016E5 sequence, resized to ``size`` (w, h)."""
    paths = sorted(CAMVID.glob("0016E5_*.jpg"))[:n]
    if len(paths) < n:
        sys.exit(f"need {n} frames of 0016E5 in {CAMVID} (../shared beside the project)")
    return [np.asarray(Image.open(p).convert("RGB").resize(size, Image.BILINEAR)) for p in paths]


def write_inputs(frames: list[np.ndarray], folder: Path) -> tuple[Path, Path, str]:
    """The video, a folder of the same frames as JPEGs, and the video's codec."""
    import av

    video = folder / "street.mp4"
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(video), "w") as c:
        s = c.add_stream(codec, rate=10, options={"crf": "18"} if codec == "libx264" else {})
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    images = folder / "frames"
    images.mkdir()
    with av.open(str(video)) as c:
        for i, f in enumerate(c.decode(video=0)):
            f.to_image().save(images / f"frame_{i:06d}.jpg", quality=95)
    return video, images, codec


def predict(weights: Path, inputs: Path, out: Path) -> float:
    """Wall seconds of one ``atrous predict`` call (its printed summary swallowed)."""
    return timed_predict([str(weights), str(inputs), "-o", str(out)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--size", default="384x288", help="frame size WxH (default 384x288)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--model", default="deeplabv3plus_mobilenetv2")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "video_predict.md"))
    args = ap.parse_args()

    import av

    import atrous.models as M
    import atrous.weights as W
    from atrous.class_tables import CAMVID_CLASSES

    w, h = (int(v) for v in args.size.split("x"))
    load_before = os.getloadavg()[0]
    frames = street_frames(args.frames, (w, h))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        video, images, codec = write_inputs(frames, folder)
        torch.manual_seed(0)
        model = M.build(args.model, num_classes=len(CAMVID_CLASSES))
        weights = W.save(model, folder / "m.safetensors", class_names=list(CAMVID_CLASSES))
        times: dict[str, list[float]] = {"video": [], "images": []}
        for run in range(args.runs + 1):  # run 0 warms both paths up and is not counted
            for kind, inputs in (("video", video), ("images", images)):
                seconds = predict(weights, inputs, folder / f"out_{kind}_{run}")
                if run:
                    times[kind].append(seconds)
            if run:
                print(f"run {run}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))

    n = args.frames
    load_after = os.getloadavg()[0]
    fps = {k: [n / s for s in v] for k, v in times.items()}
    rows = [
        f"| {label} | {statistics.median(fps[k]):.2f} | {max(fps[k]):.2f} | {min(fps[k]):.2f} "
        f"| {statistics.median(times[k]):.2f} |"
        for k, label in (
            ("video", f"video: one {codec} MP4 → label PNGs, overlay MP4, frames.csv"),
            ("images", "images: the same frames as JPEGs → label PNGs, overlay JPEGs"),
        )
    ]
    ratio = statistics.median(fps["video"]) / statistics.median(fps["images"])
    best = max(fps["video"]) / max(fps["images"])
    text = "\n".join(
        [
            "# `atrous predict`: a video against the same frames as images",
            "",
            f"`PYTHONPATH=src python benchmarks/video_predict.py --frames {n} --size {args.size} "
            f"--runs {args.runs} --model {args.model}`",
            "",
            f"- CPU: {cpu_model()} ({torch.get_num_threads()} torch threads); torch "
            f"{torch.__version__}, PyAV {av.__version__}, Python {platform.python_version()}",
            f"- frames: {n} consecutive CamVid street frames (0016E5, read from ../shared/data/"
            f"camvid), resized to {w}x{h}; model {args.model} ({len(CAMVID_CLASSES)} classes, "
            "random weights), default settings (scale 1, batch 4, float32)",
            f"- each path is one whole `atrous predict` call in one process, the two alternating, "
            f"{args.runs} runs after a warm-up; frames/s = {n} / wall time",
            f"- the machine's 1-minute load average: {load_before:.1f} before, {load_after:.1f} "
            "after (other work shares its cores)",
            "",
            "| input | frames/s (median) | best | worst | seconds per call (median) |",
            "| --- | --- | --- | --- | --- |",
            *rows,
            "",
            f"The video path runs at {ratio:.2f}x the image path's frames/s (median), "
            f"{best:.2f}x in the best runs.",
            "",
        ]
    )
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
