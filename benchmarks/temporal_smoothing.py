"""Label flicker, mIoU and speed of ``atrous predict --smooth`` on real consecutive street frames.

Usage::

    PYTHONPATH=src python benchmarks/temporal_smoothing.py --weights W.safetensors
        [--data ../shared/data/camvid] [--split val] [--sequence 0016E5] [--frames 0]
        [--settings off,ema:0.7,...] [--cli off,ema:0.5,...] [--out benchmarks/results/temporal_smoothing.md]

**Reads ../shared**: the frames of one CamVid sequence listed in ``{split}.txt`` (CamVid's val
split is 101 frames of 0016E5, every 2nd frame of the 30 frames/s drive, all labelled), in
frame order, encoded here into one H.264 video (PyAV, crf 18) at the frames' own rate (30 /
their spacing). The weights should be a model that never trained on that sequence (see
docs/video.md for the run used).

1. One pass of the model over the decoded video (:func:`predict_frames`, default inference
   settings) records every frame's class probabilities.
2. Each ``--settings`` smoother (``off``: none) runs over those probabilities in order, as it
   would inside ``predict`` (it is a deterministic function of them): its labels are scored,
   and its own time per frame measured.
3. Each ``--cli`` setting is also one whole ``atrous predict VIDEO --smooth S`` call in this
   process (label PNGs and overlay video written): its wall time gives frames/s, and its PNGs
   are checked against step 2's labels.

Scores, over the labelled frames (consecutive in the video):

- **flicker**: of the pixels where the ground truth keeps its label between two consecutive
  frames (both labelled, not void), the share whose predicted label changes; pooled over all
  pairs;
- **mIoU**: the 11 classes' IoU over all the frames (void ignored).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from common import cpu_model, timed_predict
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CAMVID = ROOT.parent / "shared" / "data" / "camvid"
NUM_CLASSES, VOID = 11, 11  # SegNet's CamVid: ids 0..10, 11 = void
SOURCE_RATE = 30  # CamVid's drives are 30 frames/s
DEFAULT_SETTINGS = (
    "off,ema:0.8,ema:0.6,ema:0.5,ema:0.4,ema:0.3,ema:0.2,ema:0.1,"
    "gated:0.5,gated:0.3,gated:0.2,gated:0.1,gated:0.05,"
    "gated:0.2@0.1,gated:0.2@0.3,gated:0.2@0.5,"
    "flow:0.5,flow:0.3,flow:0.2,flow:0.1"
)


def sequence_pairs(root: Path, split: str, sequence: str) -> tuple[list[tuple[Path, Path]], int]:
    """The (image, label) files of ``sequence`` in ``split``.txt in frame order, and the
    spacing of their frame numbers (which must be constant: consecutive video frames)."""
    pairs = []
    for line in (root / f"{split}.txt").read_text().split("\n"):
        if line.strip() and Path(line.split()[0]).name.startswith(f"{sequence}_"):
            image, label = line.split()[:2]
            pairs.append((root / image.lstrip("/"), root / label.lstrip("/")))

    def number(p: Path) -> int:
        return int(re.sub(r"\D", "", p.stem.split("_", 1)[1]))

    pairs.sort(key=lambda p: number(p[0]))
    steps = {number(b[0]) - number(a[0]) for a, b in pairwise(pairs)}
    if len(pairs) < 2 or len(steps) != 1:
        sys.exit(f"{sequence} in {split}.txt: need evenly spaced frames, got steps {steps}")
    return pairs, steps.pop()


def write_video(images: list[np.ndarray], path: Path, rate: int) -> str:
    """Encode ``images`` as H.264 (crf 18; MPEG-4 part 2 without libx264); the codec."""
    import av

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate, options={"crf": "18"} if codec == "libx264" else {})
        s.height, s.width = images[0].shape[:2]
        s.pix_fmt = "yuv420p"
        for im in images:
            for p in s.encode(av.VideoFrame.from_ndarray(im, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return codec


def flicker(labels: list[np.ndarray], truth: list[np.ndarray]) -> float:
    """Share of the pixels whose ground truth keeps its (non-void) label between consecutive
    frames where the predicted label changes, pooled over the pairs."""
    changed = stable = 0
    for t in range(1, len(labels)):
        keep = (truth[t] == truth[t - 1]) & (truth[t] != VOID)
        stable += int(keep.sum())
        changed += int((keep & (labels[t] != labels[t - 1])).sum())
    return changed / max(stable, 1)


def miou(labels: list[np.ndarray], truth: list[np.ndarray]) -> float:
    """Mean IoU of the 11 classes over all frames (void ignored)."""
    from atrous.constants import IGNORE_INDEX
    from atrous.evaluation.confusion import ConfusionMatrix, metrics_from_matrix

    cm = ConfusionMatrix(NUM_CLASSES, ignore_index=IGNORE_INDEX)
    for pred, gt in zip(labels, truth):
        cm.update(pred.astype(np.int64), np.where(gt == VOID, IGNORE_INDEX, gt).astype(np.int64))
    return metrics_from_matrix(cm.mat).miou


def smooth(setting: str, frames: list, probs: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    """The labels of ``setting`` over the recorded probabilities, and its ms per frame."""
    from atrous.inference.temporal import SMOOTHING_METHODS, parse_smoothing

    text, _, tau = setting.partition("@")  # METHOD:ALPHA@TAU: a gated method's tau
    spec = parse_smoothing(text)
    smoother = spec.new() if spec is not None else None
    if tau and spec is not None:
        smoother = SMOOTHING_METHODS[spec.method](spec.alpha, tau=float(tau))
    labels, spent = [], 0.0
    for frame, p in zip(frames, probs):
        t = time.perf_counter()
        q = smoother(frame, p) if smoother is not None else p
        spent += time.perf_counter() - t
        labels.append(q.argmax(0).astype(np.uint8))
    if smoother is not None and smoother.resets != [frames[0].index]:
        print(f"note: {setting} restarted at frames {smoother.resets}")
    return labels, 1000 * spent / len(frames)


def predict_cli(weights: Path, video: Path, out: Path, setting: str) -> float:
    """Wall seconds of one ``atrous predict VIDEO --smooth SETTING`` call."""
    return timed_predict([str(weights), str(video), "-o", str(out), "--smooth", setting])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", required=True, help="a CamVid model (11 classes)")
    ap.add_argument("--data", default=str(CAMVID))
    ap.add_argument("--split", default="val")
    ap.add_argument("--sequence", default="0016E5")
    ap.add_argument("--frames", type=int, default=0, help="the first N frames (0: all)")
    ap.add_argument(
        "--settings",
        default=DEFAULT_SETTINGS,
        help="smoothers scored: --smooth values, comma-separated; METHOD:ALPHA@TAU sets a "
        "gated method's tau (default 0.2)",
    )
    ap.add_argument("--cli", default="off,ema:0.5,gated:0.2,flow:0.3", help="also run end to end")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/temporal_smoothing.md"))
    args = ap.parse_args()

    import av

    from atrous.inference import build_segmenter
    from atrous.inference.video import VideoReader, predict_frames
    from atrous.weights import load

    pairs, step = sequence_pairs(Path(args.data), args.split, args.sequence)
    pairs = pairs[: args.frames or None]
    rate = SOURCE_RATE // step
    images = [np.asarray(Image.open(i).convert("RGB")) for i, _ in pairs]
    truth = [np.asarray(Image.open(lb)) for _, lb in pairs]
    load_before = os.getloadavg()[0]
    settings = args.settings.split(",")
    cli = args.cli.split(",") if args.cli else []
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / f"{args.sequence}.mp4"
        codec = write_video(images, video, rate)
        segmenter = build_segmenter(load(args.weights))
        frames, probs = [], []

        def record(frame, p: np.ndarray) -> np.ndarray:
            frames.append(frame)
            probs.append(p.copy())
            return p

        t = time.perf_counter()
        with VideoReader(video) as reader:
            for _ in predict_frames(segmenter, reader, hook=record):
                pass
        model_fps = len(frames) / (time.perf_counter() - t)
        print(f"model pass: {len(frames)} frames, {model_fps:.2f} frames/s")
        if len(frames) != len(truth):
            sys.exit(f"decoded {len(frames)} frames of {len(truth)}")

        rows: dict[str, dict[str, float]] = {}
        labels_of: dict[str, list[np.ndarray]] = {}
        for s in dict.fromkeys(settings + cli):
            labels, ms = smooth(s, frames, probs)
            labels_of[s] = labels
            rows[s] = {"flicker": flicker(labels, truth), "miou": miou(labels, truth), "ms": ms}
            print(f"{s}: flicker {100 * rows[s]['flicker']:.2f}%, mIoU {100 * rows[s]['miou']:.2f}")
        probs.clear()  # memory for the predict calls
        for s in cli:
            out = Path(tmp) / f"out_{s.replace(':', '_')}"
            seconds = predict_cli(Path(args.weights), video, out, s)
            rows[s]["fps"] = len(frames) / seconds
            written = [np.asarray(Image.open(p)) for p in sorted((out / video.stem).glob("*.png"))]
            same = np.mean([np.mean(a == b) for a, b in zip(written, labels_of[s])])
            rows[s]["same"] = float(same) if len(written) == len(frames) else float("nan")
            print(f"{s}: atrous predict {rows[s]['fps']:.2f} frames/s, {100 * same:.3f}% as scored")
    load_after = os.getloadavg()[0]

    off = rows.get("off")
    lines = []
    for s in dict.fromkeys(settings + cli):
        r = rows[s]
        rel = f"{r['flicker'] / off['flicker']:.2f}x" if off else ""
        dm = f"{100 * (r['miou'] - off['miou']):+.2f}" if off else ""
        fps = f"{r['fps']:.2f}" if "fps" in r else ""
        lines.append(
            f"| `{s}` | {100 * r['flicker']:.2f} | {rel} | {100 * r['miou']:.2f} | {dm} "
            f"| {r['ms']:.1f} | {fps} |"
        )
    same = [rows[s]["same"] for s in cli]
    n = len(frames)
    text = "\n".join(
        [
            "# Temporal smoothing: label flicker and mIoU on consecutive CamVid frames",
            "",
            f"`PYTHONPATH=src python benchmarks/temporal_smoothing.py --weights {args.weights} "
            f"--split {args.split} --sequence {args.sequence}"
            + (f" --frames {args.frames}" if args.frames else "")
            + "`",
            "",
            f"- CPU: {cpu_model()} ({torch.get_num_threads()} torch threads); torch "
            f"{torch.__version__}, PyAV {av.__version__}, Python {platform.python_version()}",
            f"- frames: CamVid {args.split} sequence {args.sequence}, {n} labelled frames "
            f"{step} source frames apart, encoded as one {codec} video at {rate} frames/s "
            f"({pairs[0][0].stem} to {pairs[-1][0].stem})",
            f"- model: `{args.weights}` (default inference settings); the model pass alone: "
            f"{model_fps:.2f} frames/s",
            "- flicker: of the pixels whose ground truth keeps its label between consecutive "
            "frames (both labelled, not void), the share whose predicted label changes; "
            "mIoU: 11 classes over all the frames",
            "- smoother ms/frame: the hook's own time; frames/s: one whole `atrous predict "
            "VIDEO --smooth S` call (decode, model, label PNGs, overlay video), rows with a "
            f"value only; its labels equal the scored ones on {100 * min(same):.3f}% of pixels"
            if same
            else "- smoother ms/frame: the hook's own time",
            f"- the machine's 1-minute load average: {load_before:.1f} before, {load_after:.1f} "
            "after (other work shares its cores)",
            "",
            "| `--smooth` | flicker % | vs off | mIoU % | Δ mIoU | smoother ms/frame "
            "| `atrous predict` frames/s |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *lines,
            "",
        ]
    )
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
