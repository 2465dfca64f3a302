"""``atrous eval WEIGHTS --data ROOT``: mIoU and the trimap curve by the papers' protocol."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from atrous.cli import CLIError
from atrous.cli._common import (
    add_inference_args,
    build_segmenter,
    load_model,
    model_summary,
    positive_int,
    resolve_device,
)

FORMATS = ("auto", "voc", "cityscapes", "ade20k", "camvid", "folder", "synthetic")


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
        "confusion.png and trimap.png.",
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
    add_inference_args(p)
    p.set_defaults(func=run)


def add_dataset_args(p: argparse.ArgumentParser) -> None:
    """The dataset options (``--data --format --split --classes --size``) that
    :func:`_dataset` reads; shared with ``atrous crf-search``."""
    p.add_argument("--data", dest="root", default=None, help="dataset folder (not for synthetic)")
    p.add_argument("--format", default="auto", choices=FORMATS, help="dataset layout")
    p.add_argument("--split", default="val", help="split to evaluate (default: val)")
    p.add_argument("--classes", default=None, help="class-names file (folder format)")
    p.add_argument(
        "--size", type=positive_int, default=128, help="image side of --format synthetic"
    )


def _dataset(args: argparse.Namespace, num_classes: int) -> tuple[Any, str, str | None]:
    from atrous.data import build_dataset, detect_format

    if args.format == "synthetic":
        # Synthetic data has no files: --limit sets its length (default 50 images).
        length = args.limit or 50
        try:
            ds = build_dataset("synthetic", split=args.split, length=length, size=args.size)
        except ValueError as e:
            raise CLIError(str(e)) from None
        return ds, "synthetic", None
    if args.root is None:
        raise CLIError(f"--data ROOT is required for --format {args.format}")
    root = Path(args.root)
    if not root.is_dir():
        raise CLIError(f"{root}: dataset folder not found")
    kwargs: dict[str, Any] = {}
    try:
        fmt = detect_format(root) if args.format == "auto" else args.format
        if fmt == "folder":
            # A classes file in the root (or --classes) wins; without one the folder's
            # masks are read as the model's class ids.
            kwargs = {"classes_file": args.classes, "num_classes": num_classes}
        elif args.classes:
            raise CLIError(f"--classes is for the folder format, not {fmt}")
        ds = build_dataset(fmt, root, args.split, **kwargs)
    except (ValueError, FileNotFoundError) as e:
        raise CLIError(str(e)) from None
    if len(ds) == 0:
        raise CLIError(f"{root}: split {args.split!r} of the {fmt} dataset has no images")
    return ds, fmt, str(root)


def run(args: argparse.Namespace) -> int:
    from atrous.data import DatasetError
    from atrous.evaluation import evaluate

    device = resolve_device(args.device)
    overrides = {"output_stride": args.output_stride} if args.output_stride else {}
    model = load_model(args.weights, **overrides)
    num_classes = int(model.config["num_classes"])
    ds, fmt, root = _dataset(args, num_classes)

    ds_names = list(ds.class_names)
    if len(ds_names) != num_classes:
        where = f"{fmt} dataset" + (f" at {root}" if root else "")
        raise CLIError(
            f"{args.weights} predicts {num_classes} classes but the {where} has "
            f"{len(ds_names)}: evaluate with weights trained on this dataset's classes"
        )
    model_names = model.metadata.get("class_names")
    generic = ds_names == [f"class_{i}" for i in range(num_classes)]
    class_names = list(model_names) if generic and model_names else ds_names
    if model_names and not generic and list(model_names) != ds_names:
        print(
            "atrous eval: note: the weights' class names differ from the dataset's; the "
            "table uses the dataset's",
            file=sys.stderr,
        )

    segmenter = build_segmenter(model, args, device)
    try:
        result = evaluate(
            segmenter,
            ds,
            num_classes,
            class_names=class_names,
            trimap_widths=args.trimap_widths,
            limit=args.limit,
            progress=not args.no_progress,
        )
    except DatasetError as e:
        raise CLIError(str(e)) from None
    if result.num_images == 0:
        raise CLIError("no image was evaluated")

    summary = model_summary(model)
    infer = segmenter.config()
    metadata = {
        "command": "atrous eval",
        **{k: summary[k] for k in ("arch", "num_classes", "output_stride", "atrous_rates")},
        "weights_file": str(Path(args.weights)),
        "weights_source": summary["source"],
        "output_stride_override": args.output_stride,
        "scales": infer["scales"],
        "flip": infer["flip"],
        "tile_size": infer["tile_size"],
        "tile_overlap": infer["tile_overlap"],
        "crf": infer["crf"],
        "inference": infer,
        "dataset": {
            "format": fmt,
            "root": root,
            "split": args.split,
            "num_images": result.num_images,
            "limit": args.limit,
        },
        "trimap_widths": list(args.trimap_widths) if args.trimap_widths else None,
    }
    title = (
        f"{summary['arch']} (OS {summary['output_stride']}, scales {infer['scales']}"
        f"{', flip' if infer['flip'] else ''}) on {fmt} {args.split}: "
        f"{result.num_images} images"
    )
    print(result.table(title))
    if args.out:
        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            result.to_json(out / "metrics.json", metadata)
            result.plot_confusion(out / "confusion.png")
            if result.trimap is not None:
                result.plot_trimap(out / "trimap.png", label=str(summary["arch"]))
        except OSError as e:
            raise CLIError(f"{out}: cannot write results ({e})") from None
        print(f"wrote {out / 'metrics.json'}")
    return 0
