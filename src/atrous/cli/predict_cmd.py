"""``atrous predict WEIGHTS INPUTS... -o OUT``: label maps, overlays and probabilities."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atrous.cli import CLIError
from atrous.cli._common import (
    add_inference_args,
    build_segmenter,
    failure_log,
    inference_settings,
    load_model,
    warnings_as_lines,
)
from atrous.cli._predict_shards import add_shard_args, finish, join_job, on_share, take_share
from atrous.constants import MAX_PIXELS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment images: palette PNG masks, overlays, probabilities",
        description="Segment image files, folders (searched recursively) and glob patterns. "
        "For each image writes OUT/<name>.png (a palette PNG whose pixel values are class "
        "ids, drawn with the weights' palette or the Pascal VOC colours), "
        "OUT/<name>_overlay.jpg, and with --probs OUT/<name>_probs.npy (float16 C x H x W). "
        "Output names mirror the inputs' paths below their common folder. A bad input "
        "(unreadable, too large, one the model fails on) is reported in one line and skipped, "
        "the others are segmented, a summary lists the failures, and the exit status is 1 "
        "(0: all segmented; 2: the run could not start, e.g. bad weights). Images above "
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
    add_shard_args(p)
    add_inference_args(p, auto_tile=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from atrous.inference.io import collect_inputs, model_palette, segment_files

    if not 0.0 <= args.overlay_alpha <= 1.0:
        raise CLIError(f"--overlay-alpha must be in [0, 1], got {args.overlay_alpha}")
    files, problems = collect_inputs(args.inputs)
    if not files:  # nothing to segment: the run cannot start (each input said why)
        for what, problem in problems[:-1]:
            print(f"atrous predict: error: {what}: {problem}", file=sys.stderr)
        what, problem = problems[-1] if problems else ("inputs", "no image given")
        raise CLIError(f"{what}: {problem}; no image to segment")
    share = join_job(args)
    settings = on_share(inference_settings(args), share)
    model = load_model(args.weights)
    segmenter = build_segmenter(model, args, settings)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"{out}: cannot create the output folder ({e})") from None
    files, names, skipped = take_share(share, files, out, args)

    log = failure_log("predict", args.fail_fast)
    for what, problem in problems if share.rank == 0 else ():  # said once, not by every rank
        log.add(what, problem)
    done = 0
    results = segment_files(
        segmenter,
        files,
        out,
        model_palette(model),
        overlay_alpha=args.overlay_alpha,
        probs=args.probs,
        max_pixels=int(args.max_pixels),
        names=names,
        overwrite=not args.skip_existing,
    )
    with warnings_as_lines(log, "note"):  # e.g. auto-tiling, said once
        for result in tqdm(
            results,
            total=len(files),
            desc="predict",
            unit="img",
            disable=args.no_progress or share.rank > 0,
        ):
            for w in result.warnings:
                log.report(f"atrous predict: warning: {w}")
            if result.ok:
                done += 1
            else:
                log.add(result.path, result.problem)
    return finish(share, log, done, skipped, out, args)
