"""``atrous predict WEIGHTS INPUTS... -o OUT``: label maps, overlays and probabilities."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atrous.cli import CLIError
from atrous.cli._common import add_inference_args, build_segmenter, load_model, resolve_device


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment images: palette PNG masks, overlays, probabilities",
        description="Segment image files, folders (searched recursively) and glob patterns. "
        "For each image writes OUT/<name>.png (a palette PNG whose pixel values are class "
        "ids, drawn with the weights' palette or the Pascal VOC colours), "
        "OUT/<name>_overlay.jpg, and with --probs OUT/<name>_probs.npy (float16 C x H x W). "
        "Output names mirror the inputs' paths below their common folder. An input that "
        "cannot be read is reported and skipped; the exit status is then 1.",
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
    add_inference_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from atrous.inference.io import collect_inputs, model_palette, segment_files

    if not 0.0 <= args.overlay_alpha <= 1.0:
        raise CLIError(f"--overlay-alpha must be in [0, 1], got {args.overlay_alpha}")
    files, problems = collect_inputs(args.inputs)
    device = resolve_device(args.device)
    model = load_model(args.weights)
    segmenter = build_segmenter(model, args, device)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"{out}: cannot create the output folder ({e})") from None

    def report(what: str, problem: str) -> None:
        tqdm.write(f"atrous predict: error: {what}: {problem}", file=sys.stderr)

    for what, problem in problems:
        report(what, problem)
    done, failed = 0, len(problems)
    results = segment_files(
        segmenter, files, out, model_palette(model),
        overlay_alpha=args.overlay_alpha, probs=args.probs,
    )  # fmt: skip
    try:
        for result in tqdm(results, total=len(files), desc="predict", unit="img",
                           disable=args.no_progress):  # fmt: skip
            if result.ok:
                done += 1
            else:
                report(str(result.path), str(result.problem))
                failed += 1
    except ValueError as e:
        raise CLIError(str(e)) from None
    print(f"atrous predict: {done} image(s) segmented into {out}, {failed} input(s) failed")
    return 1 if failed else 0
