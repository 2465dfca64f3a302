"""``atrous eval WEIGHTS --data ROOT``: mIoU and the trimap curve by the papers' protocol."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from atrous.cli import CLIError
from atrous.cli._common import (
    add_dataset_args,
    add_inference_args,
    build_segmenter,
    failure_log,
    inference_settings,
    load_model,
    open_dataset,
    positive_int,
    warnings_as_lines,
)


def parse_widths(text: str) -> tuple[int, ...] | None:
    """``"1-40"`` (inclusive range), ``"1,2,5,10,20,40"``, or ``"none"`` (no trimap)."""
    t = text.strip().lower()
    if t in ("none", "off", "0", ""):
        return None
    try:
        out: list[int] = []
        for part in t.split(","):
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                out += range(a, b + 1)
            else:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--trimap-widths wants a range A-B or comma-separated integers, got {text!r}"
        ) from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"--trimap-widths wants widths >= 1, got {text!r}")
    return tuple(sorted(set(out)))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate weights on a dataset (mIoU, per-class IoU, trimap)",
        description="Evaluate by the DeepLab papers' protocol: full-resolution predictions, "
        "one confusion matrix over the whole split, label 255 ignored; per-class IoU, mIoU, "
        "pixel/class accuracy, and the trimap boundary-band curve (v1 sec. 5, v2 sec. 4.1). "
        "With --out, writes metrics.json (every number and the run's settings), "
        "confusion.png and trimap.png. A pair that cannot be read or segmented is reported "
        "in one line and left out of the scores (counted in metrics.json's num_skipped); "
        "the exit status is then 1.",
    )
    p.add_argument("weights", help="checkpoint: atrous .safetensors, torchvision/VainF .pth")
    add_dataset_args(p)
    p.add_argument(
        "--output-stride",
        type=int,
        choices=(8, 16, 32),
        default=None,
        help="evaluate at another output stride than trained (atrous rates scale with it; "
        "v3 sec. 4: train at 16, evaluate at 8)",
    )
    p.add_argument(
        "--trimap-widths",
        type=parse_widths,
        default=tuple(range(1, 41)),
        help="trimap band widths in pixels: A-B or a list (default 1-40); 'none' skips it",
    )
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N images")
    p.add_argument("--out", default=None, help="folder for metrics.json and the plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--fail-fast",
        action="store_true",
        help="stop at the first bad item (default: report it, leave it out of the scores, go "
        "on, and exit with status 1)",
    )
    p.add_argument(
        "--protocol",
        choices=("atrous", "tf-zoo"),
        default="atrous",
        help="atrous: the papers' protocol as atrous runs it (logits averaged over --scales); "
        "tf-zoo: the TF model zoo's eval.py, to reproduce its numbers (each image padded to "
        "the eval crop with the mean pixel, TF's resizes, softmax averaged over --scales and "
        "--flip; atrous weights list prints each entry's command)",
    )
    p.add_argument(
        "--crop-size",
        type=_crop_size,
        default=None,
        metavar="H,W",
        help="with --protocol tf-zoo: the eval crop images are padded to (default: the zoo's "
        "for the dataset: VOC and ADE20K 513,513, Cityscapes 1025,2049)",
    )
    add_inference_args(p)
    p.set_defaults(func=run)


def _crop_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--crop-size wants H,W, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"--crop-size wants positive sizes, got {text!r}")
    return h, w


def run(args: argparse.Namespace) -> int:
    from atrous.data import DatasetError
    from atrous.evaluation import evaluate_model

    settings = inference_settings(args)
    overrides = {"output_stride": args.output_stride} if args.output_stride else {}
    model = load_model(args.weights, **overrides)
    ds, info = open_dataset(args, int(model.config["num_classes"]))
    if args.protocol == "tf-zoo":
        model, settings = _tf_zoo(model, settings, args, info["format"])
    segmenter = build_segmenter(model, args, settings)
    log = failure_log("eval", args.fail_fast)
    try:
        with warnings_as_lines(log):  # e.g. --palette-check warn
            result = evaluate_model(
                model,
                ds,
                segmenter=segmenter,
                dataset_info=info,
                on_error=log.add,
                trimap_widths=args.trimap_widths,
                limit=args.limit,
                progress=not args.no_progress,
            )
    except DatasetError as e:  # names its file
        raise CLIError(str(e)) from None
    except ValueError as e:  # e.g. the weights' class count does not fit the dataset
        raise CLIError(f"{args.weights}: {e}") from None
    for note in result.notes:
        print(f"atrous eval: note: {note}", file=sys.stderr)
    if result.num_images == 0:
        raise CLIError(f"no image was evaluated ({len(log)} item(s) failed)")
    meta = result.metadata
    meta.update(
        command="atrous eval",
        weights_file=str(Path(args.weights)),
        output_stride_override=args.output_stride,
        protocol=args.protocol,
    )
    if args.protocol == "tf-zoo":
        meta.update(scales=list(model.scales), flip=model.flip, crop_size=list(model.crop_size))
    title = (
        f"{meta['arch']} (OS {meta['output_stride']}, scales {meta['scales']}"
        f"{', flip' if meta['flip'] else ''}) on {info['format']} {args.split}: "
        f"{result.num_images} images" + (f", {len(log)} skipped" if len(log) else "")
    )
    print(result.table(title))
    if args.out:
        _write(result, Path(args.out))
    if len(log):  # the scores leave the failed items out: say which, and exit 1
        listed = str(Path(args.out) / "metrics.json") if args.out else None
        print(
            log.summary(result.num_images, "item", done_as="evaluated", listed_in=listed),
            file=sys.stderr,
        )
    return log.exit_status


def _tf_zoo(model: Any, settings: Any, args: argparse.Namespace, fmt: str) -> tuple[Any, Any]:
    """The model wrapped in the zoo's protocol, and settings that run it once per image."""
    import dataclasses

    from atrous.inference.tf_protocol import zoo_protocol

    try:
        wrapped = zoo_protocol(model, settings.scales, settings.flip, args.crop_size, fmt)
    except (TypeError, ValueError) as e:
        raise CLIError(f"--protocol tf-zoo: {e}") from None
    once = dataclasses.replace(settings, scales=(1.0,), flip=False, tile_size=None, auto_tile=None)
    return wrapped, once


def _write(result: Any, out: Path) -> None:
    """metrics.json, confusion.png and (when computed) trimap.png under ``out``."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        result.to_json(out / "metrics.json")
        result.plot_confusion(out / "confusion.png")
        if result.trimap is not None:
            result.plot_trimap(out / "trimap.png", label=str(result.metadata["arch"]))
    except OSError as e:
        raise CLIError(f"{out}: cannot write results ({e})") from None
    print(f"wrote {out / 'metrics.json'}")
