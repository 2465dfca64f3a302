"""Pieces the commands share: parsing the dataset and inference options (scales, flip,
tiles, batch, device, dense CRF) into calls of the package, loading weights with one-line
errors. The policy itself (default scales, which CRF runs) is :meth:`Segmenter.from_model`'s;
this module only translates flags."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atrous.cli import CLIError

if TYPE_CHECKING:
    from atrous.failures import FailureLog
    from atrous.inference import CRFHook, Segmenter
    from atrous.models.deeplab import DeepLab

# DeepLab v3 sec. 4.3: the multi-scale inputs of the test-time augmentation.
PAPER_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


class FormatChoices(Sequence[str]):
    """``--format`` choices: ``auto``, :data:`atrous.data.DATASET_FORMATS` and ``extra``
    (e.g. ``synthetic``), looked up when argparse first needs them, so that building the
    parser does not import torch (pass ``metavar`` too: argparse would list them at once)."""

    def __init__(self, extra: tuple[str, ...] = ()) -> None:
        self.extra = extra

    def _names(self) -> tuple[str, ...]:
        from atrous.data.factory import DATASET_FORMATS

        return ("auto", *DATASET_FORMATS, *self.extra)

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())


def parse_scales(text: str) -> tuple[float, ...]:
    """``"1"``, ``"0.5,0.75,1,1.25,1.5,1.75"`` or ``"paper"`` (the v3 sec. 4.3 scales)."""
    if text.strip().lower() in ("paper", "ms"):
        return PAPER_SCALES
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--scales wants comma-separated positive numbers, got {text!r}"
        ) from None
    if not scales or any(not 0 < s < 100 for s in scales):
        raise argparse.ArgumentTypeError(f"--scales wants positive numbers, got {text!r}")
    return scales


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def megapixels(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of megapixels, got {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected megapixels >= 0, got {text!r}")
    return v


def add_inference_args(p: argparse.ArgumentParser, auto_tile: bool = False) -> None:
    """Options of the test-time inference both commands share (``auto_tile``: also
    ``--auto-tile MP``, on by default)."""
    g = p.add_argument_group("inference")
    g.add_argument(
        "--scales",
        type=parse_scales,
        default=None,
        help="test-time scales, comma-separated; logits are averaged (v3 sec. 4.3 uses "
        "0.5,0.75,1,1.25,1.5,1.75, also spelled 'paper'; default: the scales the model was "
        "validated at when training saved them, else 1)",
    )
    g.add_argument("--flip", action="store_true", help="also average the left-right flip")
    g.add_argument(
        "--tile-size",
        type=positive_int,
        default=None,
        help="sliding-window tile side in model pixels (bounds memory; default: whole image)",
    )
    if auto_tile:
        from atrous.constants import AUTO_TILE_PIXELS

        g.add_argument(
            "--auto-tile",
            type=megapixels,
            default=AUTO_TILE_PIXELS / 1e6,
            metavar="MP",
            help="without --tile-size, images above this many megapixels (at the largest "
            "scale) are segmented in 513-pixel tiles, said once, so that a large photo never "
            "runs the machine out of memory; 0 never tiles (default %(default)g)",
        )
    g.add_argument("--batch-size", type=positive_int, default=4, help="model inputs per pass")
    g.add_argument(
        "--precision",
        choices=("fp32", "bf16", "int8"),
        default=None,
        help="run the fast CPU path (atrous.inference.optimize): fp32 (BatchNorm folded, "
        "channels-last), bf16 (CPUs with AVX512-BF16/AMX), int8 (ONNX Runtime, calibrated on "
        "--calib); default: the model as loaded",
    )
    g.add_argument(
        "--backend",
        choices=("eager", "onnxruntime"),
        default=None,
        help="with --precision: PyTorch (eager) or ONNX Runtime (int8 always; a .onnx file "
        "always runs in ONNX Runtime)",
    )
    g.add_argument(
        "--calib",
        default=None,
        metavar="DATA",
        help="images to calibrate --precision int8 on: a folder or a dataset root",
    )
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda if any)")
    from atrous.crf.params import CRFParams

    defaults = CRFParams()
    c = p.add_argument_group("dense CRF (DeepLab v1 §4, v2 §3.3; defaults: v2's VOC setting)")
    c.add_argument("--crf", action="store_true", help="refine probabilities with a dense CRF")
    # Flags from CRFParams' fields; defaults None so that --crf-params FILE < explicit flags.
    for name in CRFParams.names():
        kind = positive_int if name == "iterations" else float
        c.add_argument(f"--crf-{name.replace('_', '-')}", type=kind, default=None,
                       help=f"{CRFParams.help(name)} ({getattr(defaults, name):g})")  # fmt: skip
    c.add_argument(
        "--crf-params",
        default=None,
        metavar="JSON",
        help="dense-CRF parameters from a file (e.g. best_crf.json of atrous crf-search); "
        "implies --crf; explicit --crf-* flags win",
    )
    c.add_argument(
        "--no-crf-rnn",
        action="store_true",
        help="ignore the learned CRF-as-RNN layer saved with the weights (network alone)",
    )


def add_dataset_args(p: argparse.ArgumentParser) -> None:
    """The dataset options (``--data --format --split --classes --size``) that
    :func:`open_dataset` reads (``atrous eval`` and ``crf-search``)."""
    p.add_argument("--data", dest="root", default=None, help="dataset folder (not for synthetic)")
    p.add_argument(
        "--format",
        default="auto",
        choices=FormatChoices(("synthetic",)),
        metavar="FORMAT",  # argparse would list the choices here at once, importing torch
        help="dataset layout: %(choices)s (default: auto)",
    )
    p.add_argument("--split", default="val", help="split to evaluate (default: val)")
    p.add_argument("--classes", default=None, help="class-names file (folder format)")
    p.add_argument(
        "--size", type=positive_int, default=128, help="image side of --format synthetic"
    )
    add_palette_check_arg(p)


def add_palette_check_arg(p: argparse.ArgumentParser) -> None:
    """``--palette-check off|warn|error`` (the datasets' ``palette_check``)."""
    p.add_argument(
        "--palette-check",
        default="error",
        choices=("off", "warn", "error"),  # atrous.data.PALETTE_CHECKS, without importing torch
        help="palette PNG masks drawn with another palette than the format's (e.g. an "
        "annotation tool's): error (default), warn once and read the indices, or off",
    )


def failure_log(command: str, fail_fast: bool) -> FailureLog:
    """The run's :class:`~atrous.failures.FailureLog`, reporting above the progress bar."""
    from tqdm import tqdm

    from atrous.failures import FailureLog

    return FailureLog(command, fail_fast, report=lambda line: tqdm.write(line, file=sys.stderr))


@contextmanager
def warnings_as_lines(log: FailureLog, kind: str = "warning") -> Iterator[None]:
    """Inside, each warning is one ``atrous COMMAND: KIND: message`` line through the log's
    report (no file:line, above the progress bar)."""
    with warnings.catch_warnings():
        warnings.showwarning = lambda m, *a, **k: log.report(f"atrous {log.command}: {kind}: {m}")
        yield


def open_dataset(args: argparse.Namespace, num_classes: int) -> tuple[Any, dict[str, Any]]:
    """The dataset ``--data/--format/--split/--classes/--size`` name (by
    :func:`atrous.data.open_dataset`; ``--limit`` is the synthetic length), and its
    description (format, root, split) for the results' metadata."""
    from atrous.data import FormatOptionError
    from atrous.data import open_dataset as open_data

    if args.format != "synthetic" and args.root is None:
        raise CLIError(f"--data ROOT is required for --format {args.format}")
    try:
        ds, fmt = open_data(
            args.format,
            args.root,
            args.split,
            num_classes=num_classes,
            classes_file=args.classes,
            palette_check=getattr(args, "palette_check", "error"),
            length=args.limit,
            size=args.size,
        )
    except FormatOptionError as e:
        raise CLIError(f"--classes is for the {e.owner} format, not {e.fmt}") from None
    except (ValueError, FileNotFoundError) as e:
        raise CLIError(str(e)) from None
    root = None if fmt == "synthetic" else str(Path(args.root))
    return ds, {"format": fmt, "root": root, "split": args.split}


def resolve_device(name: str | None) -> Any:
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise CLIError(f"--device: unknown device {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: CUDA is not available on this machine")
    return dev


def load_model(path: str, **overrides: Any) -> DeepLab:
    """``atrous.weights.load`` with user errors turned into one-line CLI errors."""
    from atrous import weights

    try:
        return weights.load(path, **overrides)
    except (FileNotFoundError, ValueError, TypeError) as e:
        raise CLIError(str(e)) from None


def crf_hook(args: argparse.Namespace) -> CRFHook | None:
    """The dense CRF to apply after the test-time augmentation, from the command line:
    the one place a CRF enters inference for eval and predict. Parameters: the defaults,
    then ``--crf-params FILE``, then explicit ``--crf-*`` flags
    (:meth:`atrous.crf.DenseCRF.from_params`)."""
    params_file = getattr(args, "crf_params", None)
    if not getattr(args, "crf", False) and not params_file:
        return None
    from atrous.crf import CRFParams, DenseCRF

    flags = {name: getattr(args, f"crf_{name}", None) for name in CRFParams.names()}
    try:
        where = f"--crf-params {params_file}" if params_file else "--crf"
        return DenseCRF.from_params(params_file, where=where, **flags)
    except (ValueError, TypeError) as e:
        raise CLIError(str(e) if params_file else f"--crf: {e}") from None


def _auto_tile(args: argparse.Namespace) -> int | None:
    mp = getattr(args, "auto_tile", None)
    return int(mp * 1e6) if mp else None


def build_segmenter(model: Any, args: argparse.Namespace, device: Any) -> Segmenter:
    """The Segmenter of eval/predict/crf-search, by :meth:`Segmenter.from_model`: a learned
    CRF-as-RNN layer runs once on the TTA-averaged probabilities unless ``--crf`` replaces it
    by the dense CRF or ``--no-crf-rnn`` drops it; ``--scales`` default to the weights'."""
    from atrous.inference import Segmenter

    hook = crf_hook(args)
    crf: Any = (
        hook if hook is not None else (None if getattr(args, "no_crf_rnn", False) else "auto")
    )
    precision = getattr(args, "precision", None)
    if precision is not None:
        model, crf = _optimized(model, crf, args)
    try:
        return Segmenter.from_model(
            model,
            scales=args.scales,
            flip=args.flip,
            crf=crf,
            tile_size=args.tile_size,
            auto_tile=_auto_tile(args),
            batch_size=args.batch_size,
            device=device,
        )
    except (ValueError, TypeError) as e:
        raise CLIError(str(e)) from None


def _optimized(model: Any, crf: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    """``--precision``/``--backend``/``--calib``: the model through
    :func:`atrous.inference.optimize`, its learned CRF (if any) kept as the CRF hook."""
    from atrous.crf.rnn_model import split_crf
    from atrous.export import ExportError
    from atrous.inference import optimize

    if args.precision == "int8" and not args.calib:
        raise CLIError("--precision int8 needs --calib DATA (images of your data)")
    net, learned = split_crf(model)
    if crf == "auto":
        crf = learned
    try:
        return optimize(net, args.precision, calibration=args.calib, backend=args.backend), crf
    except (ExportError, ValueError) as e:
        raise CLIError(str(e)) from None


def model_summary(model: Any) -> dict[str, Any]:
    cfg = model.config
    meta = model.metadata
    return {
        "arch": cfg.get("arch"),
        "num_classes": cfg.get("num_classes"),
        "output_stride": cfg.get("output_stride"),
        "atrous_rates": cfg.get("atrous_rates"),
        "source": meta.get("source"),
        "weights": str(Path(meta["weights"])) if meta.get("weights") else None,
        "class_names": meta.get("class_names"),
    }
