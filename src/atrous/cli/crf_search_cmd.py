"""``atrous crf-search WEIGHTS --data ROOT``: DeepLab v1's cross-validation of the dense CRF.

The network runs once per image of a validation subset (``--limit``, default 100 as in v1
sec. 4.1); the dense CRF then runs for every (bi_w, bi_xy_std, bi_rgb_std) of the grid, and
each point is scored by mIoU and boundary-band (trimap) mIoU. Prints the baseline, the best
points and the best; ``--out`` writes ``crf_search.json`` (every point) and ``best_crf.json``,
which ``atrous eval/predict --crf-params`` read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from atrous.cli import CLIError
from atrous.cli._common import (
    add_dataset_args,
    failure_log,
    inference_settings,
    load_model,
    model_summary,
    open_dataset,
    positive_int,
)
from atrous.fileio import atomic_write_text
from atrous.inference.settings import InferenceSettings

# The network-inference flags crf-search takes, in its own words; its scales default to 1
# (the search runs the network once per image), not to the weights' own.
_INFERENCE_FLAGS = ("scales", "flip", "tile_size", "batch_size", "device")
_INFERENCE_HELP = {
    "scales": "test-time scales",
    "tile_size": "sliding-window tile",
    "device": "cpu, cuda... (the CRF runs on the CPU)",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "crf-search",
        help="grid-search the dense-CRF parameters on a validation subset (DeepLab v1 §4.1)",
        description="Cross-validate the dense CRF as DeepLab v1 sec. 4.1: w2 and theta_gamma "
        "fixed (--pos-w 3, --pos-xy-std 3), a grid over w1 (--bi-w), theta_alpha "
        "(--bi-xy-std) and theta_beta (--bi-rgb-std) on the first --limit images; network "
        "probabilities are computed once. Reports mIoU and boundary-band mIoU without CRF "
        "and for every grid point. Value lists: '5,6,7' or start:step:stop ranges '50:10:100'.",
    )
    p.add_argument("weights", help="checkpoint: atrous .safetensors, torchvision/VainF .pth")
    add_dataset_args(p)
    p.add_argument(
        "--limit", type=positive_int, default=100, help="validation images (default 100, as v1)"
    )
    g = p.add_argument_group("grid (defaults: DeepLab v1 sec. 4.1's initial ranges)")
    g.add_argument("--bi-w", default="5:1:10", help="appearance weight w1 values (5:1:10)")
    g.add_argument("--bi-xy-std", default="50:10:100", help="theta_alpha values (50:10:100)")
    g.add_argument("--bi-rgb-std", default="3:1:10", help="theta_beta values (3:1:10)")
    g.add_argument("--pos-w", type=float, default=3.0, help="fixed smoothness weight w2 (3)")
    g.add_argument("--pos-xy-std", type=float, default=3.0, help="fixed theta_gamma (3)")
    g.add_argument("--iterations", type=positive_int, default=10, help="mean-field iterations")
    g.add_argument(
        "--refine",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="coarse-to-fine rounds after the grid: best point +- half the spacing (default 0)",
    )
    s = p.add_argument_group("scoring")
    s.add_argument(
        "--band-widths",
        default="4,8",
        help="trimap band widths in pixels for the boundary mIoU (default 4,8)",
    )
    s.add_argument(
        "--select",
        choices=("miou", "band"),
        default="miou",
        help="best point by whole-image mIoU (default, as v1) or by the widest band's mIoU",
    )
    s.add_argument("--top", type=positive_int, default=10, help="grid points in the table")
    InferenceSettings.add_arguments(
        p.add_argument_group("network inference (probabilities are computed once)"),
        only=_INFERENCE_FLAGS,
        help=_INFERENCE_HELP,
        defaults={"scales": (1.0,)},
    )
    p.add_argument("--out", default=None, help="folder for crf_search.json and best_crf.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--fail-fast",
        action="store_true",
        help="stop at the first bad item (default: report it, leave it out, exit status 1)",
    )
    p.set_defaults(func=run)


def _values(text: str, flag: str, positive: bool) -> list[float]:
    from atrous.evaluation.crf_search import parse_values

    try:
        vals = parse_values(text, flag)
    except ValueError as e:
        raise CLIError(str(e)) from None
    if positive and min(vals) <= 0:
        raise CLIError(f"{flag}: values must be positive, got {text!r}")
    return vals


def run(args: argparse.Namespace) -> int:
    from atrous.evaluation.crf_search import grid_search

    grid, fixed, widths = _search_settings(args)
    model = load_model(args.weights)
    log = failure_log("crf-search", args.fail_fast)
    samples, segmenter, info = _network_samples(model, args, log)
    if len(log):
        print(log.summary(len(samples), "item", done_as="used"), file=sys.stderr)
    npoints = len(grid["bi_w"]) * len(grid["bi_xy_std"]) * len(grid["bi_rgb_std"])
    more = f" + {args.refine} refinement round(s)" if args.refine else ""
    print(f"searching {npoints} grid points{more} on {len(samples)} images")
    try:
        result = grid_search(
            samples,
            int(model.config["num_classes"]),
            grid,
            fixed,
            widths,
            args.select,
            progress=not args.no_progress,
            refine=args.refine,
        )
    except ValueError as e:
        raise CLIError(str(e)) from None
    summary = model_summary(model)
    result.extra["metadata"] = {
        "command": "atrous crf-search",
        "weights_file": str(Path(args.weights)),
        "arch": summary["arch"],
        "num_classes": summary["num_classes"],
        "dataset": {**info, "limit": args.limit},
        "inference": segmenter.config(),
    }
    print(result.table(args.top))
    best = result.best_params()
    flags = " ".join(f"--crf-{k.replace('_', '-')} {v:g}" for k, v in best.items() if k != "method")
    print(f"use it: atrous eval/predict ... --crf {flags}")
    result.extra["metadata"]["dataset"]["skipped"] = log.to_list()
    if args.out:
        _write(result.to_dict(), best, Path(args.out))
    return log.exit_status


def _search_settings(
    args: argparse.Namespace,
) -> tuple[dict[str, list[float]], dict[str, Any], list[float]]:
    """``(grid, fixed parameters, band widths)`` from the flags, checked before any work."""
    grid = {
        "bi_w": _values(args.bi_w, "--bi-w", positive=False),
        "bi_xy_std": _values(args.bi_xy_std, "--bi-xy-std", positive=True),
        "bi_rgb_std": _values(args.bi_rgb_std, "--bi-rgb-std", positive=True),
    }
    widths = _values(args.band_widths, "--band-widths", positive=True)
    if args.refine < 0:
        raise CLIError(f"--refine must be >= 0, got {args.refine}")
    if args.pos_xy_std <= 0:
        raise CLIError(f"--pos-xy-std must be positive, got {args.pos_xy_std}")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise CLIError(f"--out {args.out}: exists and is not a folder")
    fixed = {"iterations": args.iterations, "pos_w": args.pos_w, "pos_xy_std": args.pos_xy_std}
    return grid, fixed, widths


def _network_samples(
    model: Any, args: argparse.Namespace, log: Any
) -> tuple[list[Any], Any, dict[str, Any]]:
    """The network's probabilities on the validation subset, computed once (the search is
    over the dense CRF on them: a learned CRF-as-RNN is left out); the segmenter used and
    the dataset's description."""
    from atrous.data import DatasetError
    from atrous.evaluation import reconcile_class_names
    from atrous.evaluation.crf_search import collect_samples
    from atrous.inference import build_segmenter

    num_classes = int(model.config["num_classes"])
    ds, info = open_dataset(args, num_classes)
    settings = inference_settings(args)
    try:
        reconcile_class_names(None, ds.class_names, num_classes, f"{info['format']} dataset")
        # crf=None: the search is over the dense CRF on the network's own probabilities
        segmenter = build_segmenter(model, settings, crf=None)
        samples = collect_samples(
            segmenter, ds, args.limit, progress=not args.no_progress, on_error=log.add
        )
    except DatasetError as e:
        raise CLIError(str(e)) from None
    except (ValueError, TypeError) as e:
        raise CLIError(f"{args.weights}: {e}") from None
    if not samples:
        raise CLIError("the dataset gave no image")
    return samples, segmenter, info


def _write(report: dict[str, Any], best: dict[str, Any], out: Path) -> None:
    """``crf_search.json`` (every point) and ``best_crf.json`` (for ``--crf-params``)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "crf_search.json", json.dumps(report, indent=2) + "\n")
        atomic_write_text(out / "best_crf.json", json.dumps(best, indent=2) + "\n")
    except OSError as e:
        raise CLIError(f"{out}: cannot write results ({e})") from None
    print(f"wrote {out / 'crf_search.json'} and {out / 'best_crf.json'} (--crf-params)")
