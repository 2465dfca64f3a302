"""``atrous data check ROOT``: class frequencies and label problems of a dataset folder."""

from __future__ import annotations

import argparse
from typing import Any

from atrous.cli import CLIError
from atrous.cli._common import FormatChoices, add_palette_check_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="inspect and validate datasets")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = actions.add_parser(
        "check",
        help="class frequencies and label problems of a dataset folder (exit 1 on problems)",
        description="Load every image and mask once: report pixels and images per class and "
        "every file that fails validation (size mismatch, values outside the classes, "
        "unreadable file, wrong palette). Exit status 1 when problems were found; "
        "warnings (e.g. most pixels ignored) keep exit status 0.",
    )
    c.add_argument("root", help="dataset folder")
    c.add_argument(
        "--format",
        default="auto",
        choices=FormatChoices(),
        metavar="FORMAT",  # argparse would list the choices here at once, importing torch
        help="dataset layout: %(choices)s (default: auto, detect from the folder)",
    )
    c.add_argument("--split", action="append", help="split(s) to check (default: all found)")
    c.add_argument("--classes", help="class-names file (folder format)")
    c.add_argument("--num-classes", type=int, help="number of classes (folder format, no names)")
    c.add_argument("--palette", help="palette file, one 'R G B' a line (folder format)")
    c.add_argument(
        "--map",
        action="append",
        metavar="RAW:ID",
        help="folder format: rename a raw mask value first, e.g. 255:1 for 0/255 binary masks",
    )
    add_palette_check_arg(c)
    c.add_argument("--sbd-root", help="SBD folder for VOC's train_aug split")
    c.add_argument("--limit", type=int, help="check only the first N items of each split")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from atrous.data import available_splits, build_dataset, detect_format, scan_dataset

    root = Path(args.root)
    if not root.is_dir():
        raise CLIError(f"{root}: dataset folder not found")
    try:
        fmt = detect_format(root) if args.format == "auto" else args.format
        splits = args.split or available_splits(fmt, root)
    except (ValueError, FileNotFoundError) as e:
        raise CLIError(str(e)) from e
    if not splits:
        raise CLIError(f"{root}: no splits found for format {fmt}; pass --split")
    kwargs = _dataset_kwargs(args, fmt)
    n_problems = n_warnings = 0
    for split in splits:
        try:
            ds = build_dataset(fmt, root, split, **kwargs)
        except (ValueError, FileNotFoundError) as e:
            raise CLIError(str(e)) from e
        if args.limit is not None:
            ds.items = ds.items[: args.limit]
        print(f"== {fmt} {split or '(all)'}: {root} ({len(ds)} items, {ds.num_classes} classes)")
        report = scan_dataset(ds, progress=not args.no_progress)
        print(report.table())
        print(report.summary())
        n_problems += len(report.problems)
        n_warnings += len(report.warnings)
    if n_warnings:
        print(f"{n_warnings} warning(s) (exit status 0: warnings are not problems)")
    return 1 if n_problems else 0


def _dataset_kwargs(args: argparse.Namespace, fmt: str) -> dict[str, Any]:
    """The dataset options the flags give for ``fmt``; flags of other formats are ignored."""
    kwargs: dict[str, Any] = {"palette_check": args.palette_check}
    if fmt == "folder":
        kwargs.update(classes_file=args.classes, num_classes=args.num_classes)
        if args.palette:
            kwargs["palette"] = args.palette
        if args.map:
            kwargs["value_map"] = _value_map(args.map)
    if fmt == "voc" and args.sbd_root:
        kwargs["sbd_root"] = args.sbd_root
    return kwargs


def _value_map(pairs: list[str]) -> dict[int, int]:
    """``--map RAW:ID`` flags -> ``{raw: id}``."""
    try:
        return {int(a): int(b) for a, b in (m.split(":", 1) for m in pairs)}
    except ValueError as e:
        raise CLIError(f"--map wants RAW:ID integer pairs, got {pairs}") from e
