"""What a Segmenter run is asked for, as records that declare their own flags.

- :class:`InferenceSettings`: test-time scales, flip, tiles, batch, precision (the fast CPU
  path of :func:`~atrous.inference.optimize`) and its calibration images, device.
- :class:`CRFSettings`: which CRF refines the averaged probabilities: the dense CRF (v1 sec.
  4, v2 sec. 3.3) with :class:`~atrous.crf.CRFParams` from a file and flags, the learned
  CRF-as-RNN layer saved with the weights, or none.

:func:`atrous.inference.build_segmenter` turns them (and a model) into a ready Segmenter;
``atrous predict``, ``eval``, ``crf-search`` and ``serve`` generate their flags from them
(:class:`~atrous.inference.flags.FlagRecord`). Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from atrous.constants import AUTO_TILE_PIXELS
from atrous.inference.flags import FlagRecord, megapixels, parse_scales, positive_int, setting

if TYPE_CHECKING:
    import argparse

    from atrous.crf.densecrf import DenseCRF

__all__ = [
    "BACKENDS",
    "RUNTIME_PRECISIONS",
    "CRFChoice",
    "CRFHook",
    "CRFSettings",
    "InferenceSettings",
]

# What optimize() runs a model at (export's precisions, atrous.export, are another set).
RUNTIME_PRECISIONS = ("fp32", "bf16", "int8")
BACKENDS = ("eager", "onnxruntime")

# (image uint8 (H, W, 3), probabilities (C, H, W) float32) -> refined probabilities (C, H, W)
CRFHook = Callable[[Any, Any], Any]
# A Segmenter's CRF as build_segmenter takes it: a hook, "auto" (the weights' learned
# CRF-as-RNN layer, if they have one) or None (the network alone).
CRFChoice = CRFHook | Literal["auto"] | None


def _pixels(mp: float) -> int | None:
    """``--auto-tile`` megapixels as the ``auto_tile`` pixel budget (0: never tile)."""
    return int(mp * 1e6) if mp else None


@dataclass(frozen=True)
class InferenceSettings(FlagRecord):
    """How a model runs on images, for :func:`atrous.inference.build_segmenter`.

    ``scales`` None takes the scales the weights were validated at (else 1); ``device`` None
    runs where the model's parameters are (the commands' ``--device`` default, ``auto``, is
    CUDA when there is one); ``precision`` None runs the model as loaded. ``auto_tile``: the
    pixel budget above which an image is tiled (None never); ``tile_overlap`` None is a third
    of the tile. Each field with a flag declares it here, once.
    """

    scales: tuple[float, ...] | None = setting(
        None,
        "test-time scales, comma-separated; logits are averaged (v3 sec. 4.3 uses "
        "0.5,0.75,1,1.25,1.5,1.75, also spelled 'paper'; default: the scales the model was "
        "validated at when training saved them, else 1)",
        type=parse_scales,
    )
    flip: bool = setting(False, "also average the left-right flip", action="store_true")
    tile_size: int | None = setting(
        None,
        "sliding-window tile side in model pixels (bounds memory; default: whole image)",
        type=positive_int,
    )
    tile_overlap: int | None = None
    auto_tile: int | None = setting(
        None,
        "without --tile-size, images above this many megapixels (at the largest scale) are "
        "segmented in 513-pixel tiles, said once, so that a large photo never runs the "
        "machine out of memory; 0 never tiles (default %(default)g)",
        type=megapixels,
        metavar="MP",
        cli_default=AUTO_TILE_PIXELS / 1e6,
        to_value=_pixels,
    )
    batch_size: int = setting(4, "model inputs per pass", type=positive_int)
    precision: str | None = setting(
        None,
        "run the fast CPU path (atrous.inference.optimize): fp32 (BatchNorm folded, "
        "channels-last), bf16 (CPUs with AVX512-BF16/AMX), int8 (ONNX Runtime, calibrated on "
        "--calib); default: the model as loaded",
        choices=RUNTIME_PRECISIONS,
    )
    backend: str | None = setting(
        None,
        "with --precision: PyTorch (eager) or ONNX Runtime (int8 always; a .onnx file always "
        "runs in ONNX Runtime)",
        choices=BACKENDS,
    )
    calibration: str | None = setting(
        None,
        "images to calibrate --precision int8 on: a folder or a dataset root",
        name="--calib",
        metavar="DATA",
    )
    device: str | None = setting(
        None, "cpu, cuda, cuda:1... (default: cuda if any)", cli_default="auto"
    )

    def __post_init__(self) -> None:
        if self.scales is not None:
            object.__setattr__(self, "scales", tuple(self.scales))
        if self.precision == "int8" and self.calibration is None:
            raise ValueError("--precision int8 needs --calib DATA (images of your data)")

    def replace(self, **changes: Any) -> InferenceSettings:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class CRFSettings(FlagRecord):
    """Which CRF runs after the test-time augmentation (:meth:`choice`).

    ``dense`` or ``params_file``: the dense CRF, its parameters the defaults, then the file
    (e.g. ``best_crf.json`` of ``atrous crf-search``), then ``params`` (the ``--crf-NAME``
    flags, generated from :class:`~atrous.crf.CRFParams`). Otherwise the learned CRF-as-RNN
    layer saved with the weights, unless ``learned`` is False; else none.
    """

    dense: bool = setting(
        False, "refine probabilities with a dense CRF", name="--crf", action="store_true"
    )
    params_file: str | None = setting(
        None,
        "dense-CRF parameters from a file (e.g. best_crf.json of atrous crf-search); implies "
        "--crf; explicit --crf-* flags win",
        name="--crf-params",
        metavar="JSON",
    )
    learned: bool = setting(
        True,
        "ignore the learned CRF-as-RNN layer saved with the weights (network alone)",
        name="--no-crf-rnn",
        action="store_true",
        to_value=operator.not_,
    )
    params: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def add_arguments(cls, parser: Any) -> None:  # type: ignore[override]
        """``--crf``, one ``--crf-NAME`` per CRFParams field, ``--crf-params``,
        ``--no-crf-rnn``."""
        from atrous.crf.params import CRFParams

        super().add_arguments(parser, only=("dense",))
        defaults = CRFParams()
        for name in CRFParams.names():
            # default None (not given), so that --crf-params FILE < explicit flags
            parser.add_argument(
                f"--crf-{name.replace('_', '-')}",
                type=positive_int if name == "iterations" else float,
                default=None,
                help=f"{CRFParams.help(name)} ({getattr(defaults, name):g})",
            )
        super().add_arguments(parser, only=("params_file", "learned"))

    @classmethod
    def from_args(cls, args: argparse.Namespace, **values: Any) -> CRFSettings:
        from atrous.crf.params import CRFParams

        given = {n: getattr(args, f"crf_{n}", None) for n in CRFParams.names()}
        values.setdefault("params", {n: v for n, v in given.items() if v is not None})
        return super().from_args(args, **values)

    def dense_crf(self) -> DenseCRF | None:
        """The dense CRF asked for, or None; ValueError naming the flag or file at fault."""
        if not (self.dense or self.params_file):
            return None
        from atrous.crf import DenseCRF

        where = f"--crf-params {self.params_file}" if self.params_file else "--crf"
        try:
            return DenseCRF.from_params(self.params_file, where=where, **self.params)
        except (ValueError, TypeError) as e:
            raise ValueError(str(e) if self.params_file else f"--crf: {e}") from None

    def choice(self) -> CRFChoice:
        """The dense CRF, ``"auto"`` (a learned layer, where the weights have one) or None."""
        dense = self.dense_crf()
        if dense is not None:
            return dense
        return "auto" if self.learned else None
