"""Pieces the commands share: translating the dataset, inference and dense-CRF flags into
calls of the package, loading weights, with user errors as one-line :class:`CLIError`. It
holds no policy: the flags are declared by :class:`~atrous.inference.InferenceSettings` and
:class:`~atrous.inference.CRFSettings`, and what they mean (default scales, which CRF runs,
the device, the fast path) is decided by :mod:`atrous.inference.pipeline`."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atrous.cli import CLIError
from atrous.inference.flags import positive_int
from atrous.inference.settings import CRFSettings, InferenceSettings

if TYPE_CHECKING:
    from atrous.failures import FailureLog
    from atrous.inference import CRFHook, Segmenter
    from atrous.models.deeplab import DeepLab

__all__ = [
    "add_dataset_args",
    "add_inference_args",
    "add_palette_check_arg",
    "build_segmenter",
    "crf_hook",
    "failure_log",
    "inference_settings",
    "load_model",
    "model_summary",
    "open_dataset",
    "positive_int",
    "resolve_device",
    "warnings_as_lines",
]


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


# The dense-CRF flags' group (CRFSettings' flags; their defaults are CRFParams').
CRF_GROUP = "dense CRF (DeepLab v1 §4, v2 §3.3; defaults: v2's VOC setting)"


def add_inference_args(p: argparse.ArgumentParser, auto_tile: bool = False) -> None:
    """The inference and dense-CRF flags of eval and predict (``auto_tile``: also
    ``--auto-tile MP``, on by default)."""
    skip = () if auto_tile else ("auto_tile",)
    InferenceSettings.add_arguments(p.add_argument_group("inference"), skip=skip)
    CRFSettings.add_arguments(p.add_argument_group(CRF_GROUP))


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
    """``--device`` as a torch device (:func:`atrous.inference.pipeline.resolve_device`)."""
    from atrous.inference.pipeline import resolve_device as resolve

    try:
        return resolve(name)
    except ValueError as e:
        raise CLIError(str(e)) from None


def load_model(path: str, **overrides: Any) -> DeepLab:
    """``atrous.weights.load`` with user errors turned into one-line CLI errors."""
    from atrous import weights

    try:
        return weights.load(path, **overrides)
    except (FileNotFoundError, ValueError, TypeError) as e:
        raise CLIError(str(e)) from None


def inference_settings(args: argparse.Namespace, **values: Any) -> InferenceSettings:
    """The :class:`~atrous.inference.InferenceSettings` of the flags (``values`` win), the
    device resolved now, so that a bad one is said before any work."""
    try:
        settings = InferenceSettings.from_args(args, **values)
    except ValueError as e:
        raise CLIError(str(e)) from None
    return settings.replace(device=str(resolve_device(settings.device)))


def crf_hook(args: argparse.Namespace) -> CRFHook | None:
    """The dense CRF the flags ask for (:meth:`~atrous.inference.CRFSettings.dense_crf`:
    the defaults, then ``--crf-params FILE``, then explicit ``--crf-*`` flags), or None."""
    try:
        return CRFSettings.from_args(args).dense_crf()
    except ValueError as e:
        raise CLIError(str(e)) from None


def build_segmenter(model: Any, args: argparse.Namespace, settings: InferenceSettings) -> Segmenter:
    """:func:`atrous.inference.build_segmenter` of ``model``, ``settings`` and the CRF the
    flags choose (:meth:`~atrous.inference.CRFSettings.choice`: the dense CRF, or the learned
    CRF-as-RNN layer unless ``--no-crf-rnn``)."""
    from atrous.inference import build_segmenter as build

    try:
        return build(model, settings, crf=CRFSettings.from_args(args).choice())
    except (ValueError, TypeError) as e:  # ExportError and CheckpointError too
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
