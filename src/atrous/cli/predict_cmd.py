"""``atrous predict WEIGHTS INPUTS... -o OUT``: label maps, overlays and probabilities, for
images and videos."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atrous.cli import CLIError
from atrous.cli._common import (
    add_inference_args,
    build_segmenter,
    failure_log,
    inference_settings,
    load_model,
    positive_int,
    warnings_as_lines,
)
from atrous.cli._predict_shards import add_shard_args, finish, join_job, on_share, take_share
from atrous.constants import MAX_PIXELS

if TYPE_CHECKING:
    from atrous.failures import FailureLog


def seconds(text: str) -> float:
    """A time in seconds, >= 0 (``--start``, ``--end``)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 <= v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return v


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment images and videos: palette PNG masks, overlays, probabilities",
        description="Segment image and video files, folders (searched recursively) and glob "
        "patterns. For each image writes OUT/<name>.png (a palette PNG whose pixel values are "
        "class ids, drawn with the weights' palette or the Pascal VOC colours), "
        "OUT/<name>_overlay.jpg, and with --probs OUT/<name>_probs.npy (float16 C x H x W). "
        "A video (.mp4 .mkv .webm .mov .avi ..., or any file PyAV opens; needs "
        "pip install 'atrous[video]') gets a folder OUT/<name>/ with frame_000123.png per "
        "frame (or one lossless <name>_labels.mkv with --label-video), <name>_overlay.mp4 "
        "with a legend, at the source timestamps, frames.csv (frame number, pts, seconds) "
        "and with --probs frame_000123_probs.npy; --every, --start and --end choose frames. "
        "Output names mirror the inputs' paths below their common folder. A bad input "
        "(unreadable, too large, one the model fails on) is reported in one line and skipped, "
        "the others are segmented, a summary lists the failures, and the exit status is 1 "
        "(0: all segmented; 2: the run could not start, e.g. bad weights); a damaged or "
        "truncated video keeps the frames before the damage and counts as failed. Images above "
        "--auto-tile megapixels are segmented in 513-pixel tiles, so memory stays bounded. "
        "Under torchrun (torchrun --nproc-per-node K -m atrous predict ...) the processes "
        "share the files; --skip-existing resumes a killed run (docs/large_inputs.md).",
    )
    p.add_argument("weights", help="checkpoint: atrous .safetensors, torchvision/VainF .pth")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, folder or glob")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--probs", action="store_true", help="also write class probabilities (.npy)")
    p.add_argument(
        "--overlay-alpha",
        type=float,
        default=0.5,
        help="weight of the class colours in the overlay, 0..1 (default 0.5)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--fail-fast", action="store_true", help="stop at the first bad input (exit status 1)"
    )
    p.add_argument(
        "--max-pixels",
        type=float,
        default=MAX_PIXELS,
        help="refuse images with more pixels than this, read from the header before decoding "
        f"(decompression bombs; default {MAX_PIXELS:.0e})",
    )
    video = p.add_argument_group("video")
    video.add_argument(
        "--every",
        type=positive_int,
        default=1,
        metavar="N",
        help="segment every N-th frame from the first one chosen (default 1: all)",
    )
    video.add_argument(
        "--start",
        type=seconds,
        default=0.0,
        metavar="SECONDS",
        help="first frame: the first at or after this time from the video's start (default 0)",
    )
    video.add_argument(
        "--end",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="stop before this time from the video's start (default: the end)",
    )
    video.add_argument(
        "--label-video",
        action="store_true",
        help="one lossless label video (FFV1 .mkv, gray pixels = class ids) instead of a PNG "
        "per frame",
    )
    video.add_argument(
        "--smooth",
        default="off",
        metavar="METHOD[:ALPHA]",
        help="carry each pixel's class probabilities from frame to frame so labels flicker "
        "less: ema (a moving average), gated (the average, except where the image changed), "
        "flow (the average moved along the optical flow, gated by what the flow misses); "
        "ALPHA in (0, 1] is the new frame's weight (1: no smoothing; default: ema 0.5, "
        "gated 0.2, flow 0.3); starts again at a scene cut or size change; the written "
        "labels and --probs are the smoothed ones (default off; docs/video.md)",
    )
    add_shard_args(p)
    add_inference_args(p, auto_tile=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from atrous.imageio import IMAGE_EXTENSIONS
    from atrous.inference.io import collect_inputs, model_palette, segment_files
    from atrous.inference.temporal import parse_smoothing
    from atrous.inference.video import VIDEO_EXTENSIONS, is_video

    if not 0.0 <= args.overlay_alpha <= 1.0:
        raise CLIError(f"--overlay-alpha must be in [0, 1], got {args.overlay_alpha}")
    if args.end is not None and args.end <= args.start:
        raise CLIError(f"--end ({args.end:g} s) must be after --start ({args.start:g} s)")
    try:
        args.smooth = parse_smoothing(args.smooth)
    except ValueError as e:
        raise CLIError(f"--smooth: {e}") from None
    files, problems = collect_inputs(
        args.inputs, (*IMAGE_EXTENSIONS, *VIDEO_EXTENSIONS), "image or video"
    )
    if not files:  # nothing to segment: the run cannot start (each input said why)
        for what, problem in problems[:-1]:
            print(f"atrous predict: error: {what}: {problem}", file=sys.stderr)
        what, problem = problems[-1] if problems else ("inputs", "no image given")
        raise CLIError(f"{what}: {problem}; no image or video to segment")
    share = join_job(args)
    args.no_progress = args.no_progress or share.rank > 0  # one bar: rank 0's
    settings = on_share(inference_settings(args), share)
    model = load_model(args.weights)
    segmenter = build_segmenter(model, args, settings)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"{out}: cannot create the output folder ({e})") from None
    files, share_names, skipped = take_share(share, files, out, args)

    log = failure_log("predict", args.fail_fast)
    for what, problem in problems if share.rank == 0 else ():  # said once, not by every rank
        log.add(what, problem)
    names = dict(zip(files, share_names))  # named over every process's files
    is_clip = {f: is_video(f) for f in files}
    videos = [f for f in files if is_clip[f]]
    images = [f for f in files if not is_clip[f]]
    palette = model_palette(model)
    done = 0
    with warnings_as_lines(log, "note"):  # e.g. auto-tiling, said once
        if images:
            results = segment_files(
                segmenter,
                images,
                out,
                palette,
                overlay_alpha=args.overlay_alpha,
                probs=args.probs,
                names=[names[f] for f in images],
                max_pixels=int(args.max_pixels),
                overwrite=not args.skip_existing,
            )
            for result in tqdm(
                results, total=len(images), desc="predict", unit="img", disable=args.no_progress
            ):
                for w in result.warnings:
                    log.report(f"atrous predict: warning: {w}")
                if result.ok:
                    done += 1
                else:
                    log.add(result.path, result.problem)
        for video in videos:
            done += _segment_video(args, segmenter, model, palette, video, names[video], out, log)
    return finish(share, log, done, skipped, out, args)


def _segment_video(
    args: argparse.Namespace,
    segmenter: Any,
    model: Any,
    palette: Any,
    path: Path,
    name: str,
    out: Path,
    log: FailureLog,
) -> int:
    """Segment one video (:func:`atrous.inference.video.segment_video`) with a progress bar;
    1 if it went well, else its problem is in ``log`` and 0."""
    from functools import partial

    from tqdm import tqdm

    from atrous.inference.video import segment_video

    result = segment_video(
        segmenter,
        path,
        out,
        palette,
        name=name,
        class_names=(getattr(model, "metadata", None) or {}).get("class_names"),
        overlay_alpha=args.overlay_alpha,
        probs=args.probs,
        label_video=args.label_video,
        every=args.every,
        start=args.start,
        end=args.end,
        probs_hook=args.smooth.new() if args.smooth is not None else None,
        progress=partial(tqdm, disable=args.no_progress, file=sys.stderr),
    )
    if result.ok:
        return 1
    log.add(result.path, result.problem)
    return 0
