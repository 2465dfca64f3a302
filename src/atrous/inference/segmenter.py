"""Inference around any DeepLab-style model: multi-scale + flip, tiles, batches, CRF hook.

The model is any ``nn.Module`` whose forward takes a normalised float (N, 3, H, W) batch and
returns ``{"out": logits (N, C, H, W)}`` (or the logits tensor itself). The model knows
nothing of scales, flips, tiles or the CRF: data flows one way, model to Segmenter.
:func:`build_segmenter` makes the Segmenter of a loaded model and its settings (the decisions
are :mod:`atrous.inference.pipeline`'s).

Test-time augmentation (DeepLab v3 sec. 4.3, "inference strategy"): the image is resized
by each scale (e.g. 0.5, 0.75, ..., 1.75), optionally also left-right flipped, every output
is resized back to the full image, and the **logits** are averaged, as the papers and their
reference code do (averaging logits rather than softmax probabilities). An optional dense
CRF (v1 sec. 4, v2 sec. 3.3) then refines the softmax of the averaged logits.

Tiling (sliding window) bounds memory for large images: each scaled image is cut into
``tile_size`` squares overlapping by ``tile_overlap`` pixels (in the model's input pixels),
and each tile writes only the part of the image it "owns": the half of every overlap on its
side. Each full-resolution pixel is therefore computed from exactly one tile per pass, away
from that tile's cut edges; when the model's receptive-field radius is at most
``tile_overlap / 2 - 1`` (no global pooling) the result equals whole-image inference. Tile
logits are resized straight into a float32 (C, H, W) accumulator at full resolution with
the same bilinear weights as resizing the whole logit map (align_corners=False), so
neither the scaled image's logits nor its activations are ever held whole.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from atrous.imageio import label_dtype
from atrous.inference.pipeline import prepare_model, segmenter_options
from atrous.inference.preprocess import Normalizer, to_uint8_hwc
from atrous.inference.settings import CRFChoice, CRFHook, InferenceSettings

__all__ = [
    "AUTO_TILE_SIZE",
    "CRFHook",
    "Segmenter",
    "build_segmenter",
    "label_map",
    "tile_starts",
]

# Tile side when a large image is tiled automatically (Segmenter ``auto_tile``): DeepLab's
# 513 crop, the size the models are trained and evaluated at.
AUTO_TILE_SIZE = 513

Output = Literal["labels", "proba", "logits"]
Errors = Literal["raise", "return"]


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``size``, consecutive tiles
    overlapping by at least ``overlap``; the last tile is flush with the end."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    n = math.ceil((size - tile) / stride) + 1
    return [min(i * stride, size - tile) for i in range(n)]


def _owned(starts: list[int], tile: int, size: int) -> list[tuple[int, int]]:
    """Partition [0, size) between tiles: each cut is at the middle of an overlap."""
    cuts = [0]
    for a, b in itertools.pairwise(starts):
        cuts.append((b + min(a + tile, size)) // 2)
    cuts.append(size)
    return list(itertools.pairwise(cuts))


@dataclass(frozen=True)
class _AxisMap:
    """Source indices and weights of a 1-D bilinear resize, align_corners=False, matching
    ``F.interpolate(..., mode="bilinear")`` given an output size (scale = in / out)."""

    i0: torch.Tensor
    i1: torch.Tensor
    lam: torch.Tensor

    @staticmethod
    def make(dst_size: int, src_size: int, device: torch.device) -> _AxisMap:
        scale = torch.tensor(src_size / dst_size, dtype=torch.float32)
        d = torch.arange(dst_size, dtype=torch.float32)
        s = ((d + 0.5) * scale - 0.5).clamp(min=0)
        i0 = s.floor().long().clamp(max=src_size - 1)
        i1 = torch.where(i0 < src_size - 1, i0 + 1, i0)
        lam = s - i0.float()
        return _AxisMap(i0.to(device), i1.to(device), lam.to(device))

    def gather(self, x: torch.Tensor, dim: int, start: int, stop: int, offset: int) -> torch.Tensor:
        """Output positions [start, stop) along ``dim`` of ``x``, whose index 0 is source
        position ``offset``."""
        n = x.shape[dim]
        i0 = (self.i0[start:stop] - offset).clamp(0, n - 1)
        i1 = (self.i1[start:stop] - offset).clamp(0, n - 1)
        shape = [1] * x.dim()
        shape[dim] = stop - start
        lam = self.lam[start:stop].view(shape)
        a = x.index_select(dim, i0)
        b = x.index_select(dim, i1)
        return a.add_(b.sub_(a).mul_(lam))


@dataclass
class _Job:
    """One model input: a tile (or the whole) of one image at one scale."""

    image: int
    scale: int
    y: tuple[int, int]  # tile rows in scaled coordinates
    x: tuple[int, int]
    oy: tuple[int, int]  # full-resolution rows/cols this tile writes
    ox: tuple[int, int]


@dataclass
class _Scaled:
    size: tuple[int, int]
    in_rows: _AxisMap | None  # scaled rows <- original rows (None at scale 1)
    in_cols: _AxisMap | None
    out_rows: _AxisMap | None  # original rows <- scaled rows
    out_cols: _AxisMap | None


def _checked_scales(scales: Sequence[float]) -> tuple[float, ...]:
    checked = tuple(float(s) for s in scales)
    if not checked or any(not (s > 0 and math.isfinite(s)) for s in checked):
        raise ValueError(f"scales must be a non-empty list of positive numbers, got {checked}")
    return checked


def _checked_tiles(
    tile_size: int | None, tile_overlap: int | None
) -> tuple[int | None, int | None]:
    """``(tile_size, tile_overlap)`` as ints (overlap default: a third of the tile), or
    ``(None, None)`` without tiles."""
    if tile_size is None:
        return None, None
    if int(tile_size) < 1:
        raise ValueError(f"tile_size must be a positive int or None, got {tile_size}")
    size = int(tile_size)
    overlap = size // 3 if tile_overlap is None else int(tile_overlap)
    if not 0 <= overlap < size:
        raise ValueError(f"tile_overlap must be in [0, tile_size={size}), got {overlap}")
    return size, overlap


def _check_counts(
    batch_size: int, num_classes: int | None, min_size: int | None, auto_tile: int | None
) -> None:
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_classes is not None and int(num_classes) < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if min_size is not None and int(min_size) < 1:
        raise ValueError(f"min_size must be a positive int or None, got {min_size}")
    if auto_tile is not None and int(auto_tile) < 1:
        raise ValueError(f"auto_tile must be a positive number of pixels or None, got {auto_tile}")


class Segmenter:
    """Wrap a segmentation model for inference on real images.

    Args:
        model: ``nn.Module``, (N, 3, H, W) normalised floats -> ``{"out": (N, C, H, W)}``.
        mean, std, input_scale, channel_order: preprocessing; None values take
            :meth:`Normalization.of <atrous.normalization.Normalization.of>` the model's
            ``metadata`` (the weights' mean/std, else ImageNet's; see
            :class:`~atrous.inference.preprocess.Normalizer`).
        num_classes: if given, the model's class count is checked against it.
        scales: test-time scales (v3 sec. 4.3 uses 0.5, 0.75, 1.0, 1.25, 1.5, 1.75).
        flip: also run on the left-right flipped image; logits are averaged.
        tile_size: side of the square model input; larger scaled images are tiled.
            ``None`` runs whole images (memory grows with the image).
        tile_overlap: overlap of neighbouring tiles in model-input pixels (default: a third
            of ``tile_size``, as common sliding-window evaluation does).
        batch_size: model inputs per forward pass (tiles, or whole images of equal size;
            a flip pair counts as two).
        device: where the model runs (default: where its parameters are).
        crf: optional ``(image_uint8_hwc, probs_chw) -> probs_chw`` applied after TTA.
        output_key: key of the logits in the model's output dict.
        min_size: model inputs smaller than this on a side are padded (bottom/right, with
            the mean pixel) up to it, and the logits cropped back: a 1x1 image does not
            reach a feature map too small to normalize (:meth:`from_model` sets output
            stride + 1).
        auto_tile: with ``tile_size`` None, images whose largest scaled size exceeds this
            many pixels are tiled in :data:`AUTO_TILE_SIZE` tiles (said once per
            Segmenter), so memory stays bounded whatever the photo; None never tiles.
        auto_tile_notice: False: auto-tiling is not said (a service that reports it in its
            own way: a warning filter would not be thread-safe).

    The model is put in eval mode; everything runs under ``torch.inference_mode``.
    """

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        num_classes: int | None = None,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        batch_size: int = 4,
        device: str | torch.device | None = None,
        crf: CRFHook | None = None,
        output_key: str = "out",
        input_scale: float = 1.0 / 255.0,
        channel_order: str = "RGB",
        min_size: int | None = None,
        auto_tile: int | None = None,
        auto_tile_notice: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.scales = _checked_scales(scales)
        self.tile_size, self.tile_overlap = _checked_tiles(tile_size, tile_overlap)
        _check_counts(batch_size, num_classes, min_size, auto_tile)
        if crf is not None and not callable(crf):
            raise TypeError(f"crf must be callable (image, probs) -> probs, got {type(crf)}")
        if device is None:
            p = next(iter(model.parameters()), None)
            device = p.device if p is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.normalize = Normalizer.of(
            getattr(model, "metadata", None),
            mean=mean,
            std=std,
            input_scale=input_scale,
            channel_order=channel_order,
        )
        self.num_classes = num_classes
        self.flip = bool(flip)
        self.batch_size = int(batch_size)
        self.crf = crf
        self.output_key = output_key
        self.min_size = None if min_size is None else int(min_size)
        self.auto_tile = None if auto_tile is None else int(auto_tile)
        self._said_auto_tile = not auto_tile_notice

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        *,
        scales: Sequence[float] | None = None,
        flip: bool = False,
        crf: CRFChoice = "auto",
        **kwargs: Any,
    ) -> Segmenter:
        """The Segmenter of a loaded model: :func:`build_segmenter` with these ``scales`` (None:
        the weights' own, else 1) and ``flip``; ``crf`` ``"auto"`` runs a learned CRF-as-RNN
        layer once on the TTA-averaged probabilities, a callable (e.g.
        :class:`atrous.crf.DenseCRF`) replaces it, None runs the network alone. Other keyword
        arguments (``tile_size``, ``batch_size``, ``device``, ``auto_tile``...) go to
        :class:`Segmenter`; ``num_classes`` and ``min_size`` default to the weights'."""
        settings = InferenceSettings(scales=scales, flip=flip)
        return cls(**segmenter_options(prepare_model(model), settings, crf, **kwargs))

    # --- public API ------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Settings to record with results (JSON metadata)."""
        crf = None if self.crf is None else getattr(self.crf, "config", None)
        crf_desc = crf() if callable(crf) else (None if self.crf is None else repr(self.crf))
        return {
            "scales": list(self.scales),
            "flip": self.flip,
            "tile_size": self.tile_size,
            "tile_overlap": self.tile_overlap,
            "auto_tile": self.auto_tile,
            "min_size": self.min_size,
            "batch_size": self.batch_size,
            "device": str(self.device),
            "tta_average": "logits",
            "crf": crf_desc,
            **self.normalize.config(),
        }

    def logits(self, image: Any) -> torch.Tensor:
        """TTA-averaged logits, float32 (C, H, W) on the CPU (before any CRF)."""
        return next(self.predict_many([image], output="logits"))

    def predict_proba(self, image: Any) -> np.ndarray:
        """Class probabilities float32 (C, H, W): softmax of averaged logits, then the CRF."""
        return next(self.predict_many([image], output="proba"))

    def predict(self, image: Any) -> np.ndarray:
        """Label map (H, W) at the image's resolution: uint8 when C <= 256, else uint16."""
        return next(self.predict_many([image], output="labels"))

    __call__ = predict

    def predict_many(
        self, images: Iterable[Any], output: Output = "labels", errors: Errors = "raise"
    ) -> Iterator[Any]:
        """Yield one result per image, in order. Images of equal size are batched together;
        an image that needs tiling is processed on its own (its tiles are batched), so at most
        ``batch_size`` full-resolution accumulators are held at once.

        ``errors="return"``: an image that cannot be segmented (bad array, a model or CRF
        error, out of memory) yields its exception instead of a result and the others go on;
        when a batch fails, its images are run again one by one, so one bad image never costs
        its batch-mates their results (the failure policy of :mod:`atrous.failures`)."""
        if output not in ("labels", "proba", "logits"):
            raise ValueError(f"output must be 'labels', 'proba' or 'logits', got {output!r}")
        if errors not in ("raise", "return"):
            raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")
        run = self._run_group if errors == "raise" else self._run_group_safe
        group: list[Any] = []
        for image in images:
            try:
                x = self.normalize(image, self.device)
            except Exception as e:
                if errors == "raise":
                    raise
                if group:
                    yield from run(group, output)
                    group = []
                yield e
                continue
            raw = image if self.crf is not None else None
            if self._needs_tiling(x.shape[-2:]):
                if group:
                    yield from run(group, output)
                    group = []
                yield from run([(x, raw)], output)
                continue
            group.append((x, raw))
            if len(group) >= self.batch_size:
                yield from run(group, output)
                group = []
        if group:
            yield from run(group, output)

    # --- internals -------------------------------------------------------------------------
    def _scaled_size(self, h: int, w: int, s: float) -> tuple[int, int]:
        return max(1, round(h * s)), max(1, round(w * s))

    def _tile_for(self, h: int, w: int) -> int | None:
        """The tile side for an image of (h, w): ``tile_size``, or :data:`AUTO_TILE_SIZE` when
        its largest scaled size is above the ``auto_tile`` pixel budget, else None."""
        if self.tile_size is not None or self.auto_tile is None:
            return self.tile_size
        sh, sw = self._scaled_size(h, w, max(self.scales))
        if sh * sw <= self.auto_tile or max(sh, sw) <= AUTO_TILE_SIZE:
            return None
        if not self._said_auto_tile:
            self._said_auto_tile = True
            warnings.warn(
                f"images above {self.auto_tile / 1e6:g} megapixels (at scale {max(self.scales):g}: "
                f"this one is {w}x{h}) are segmented in {AUTO_TILE_SIZE}-pixel tiles to bound "
                "memory; choose with tile_size (--tile-size), or raise the budget",
                stacklevel=4,
            )
        return AUTO_TILE_SIZE

    def _needs_tiling(self, hw: Sequence[int]) -> bool:
        h, w = int(hw[0]), int(hw[1])
        t = self._tile_for(h, w)
        return t is not None and any(max(self._scaled_size(h, w, s)) > t for s in self.scales)

    def _plan(self, index: int, h: int, w: int) -> tuple[list[_Scaled], list[_Job]]:
        dev = self.device
        scaled: list[_Scaled] = []
        jobs: list[_Job] = []
        t = self._tile_for(h, w)
        for k, s in enumerate(self.scales):
            sh, sw = self._scaled_size(h, w, s)
            same = (sh, sw) == (h, w)
            sc = _Scaled(
                size=(sh, sw),
                in_rows=None if same else _AxisMap.make(sh, h, dev),
                in_cols=None if same else _AxisMap.make(sw, w, dev),
                out_rows=None if same else _AxisMap.make(h, sh, dev),
                out_cols=None if same else _AxisMap.make(w, sw, dev),
            )
            scaled.append(sc)
            if t is None or (sh <= t and sw <= t):
                jobs.append(_Job(index, k, (0, sh), (0, sw), (0, h), (0, w)))
                continue
            overlap = self.tile_overlap if self.tile_overlap is not None else t // 3
            ys = tile_starts(sh, t, overlap)
            xs = tile_starts(sw, t, overlap)
            th, tw = min(t, sh), min(t, sw)
            oys = self._to_full(_owned(ys, th, sh), sc.out_rows, h)
            oxs = self._to_full(_owned(xs, tw, sw), sc.out_cols, w)
            for y0, oy in zip(ys, oys):
                for x0, ox in zip(xs, oxs):
                    if oy[0] < oy[1] and ox[0] < ox[1]:
                        jobs.append(_Job(index, k, (y0, y0 + th), (x0, x0 + tw), oy, ox))
        return scaled, jobs

    @staticmethod
    def _to_full(
        owned: list[tuple[int, int]], amap: _AxisMap | None, full: int
    ) -> list[tuple[int, int]]:
        """Full-resolution ranges whose (first) bilinear source index falls in each owned
        scaled range, so every output position is written by exactly one tile."""
        if amap is None:
            return owned
        i0 = amap.i0.cpu()
        out = []
        for a, b in owned:
            lo = int(torch.searchsorted(i0, a, side="left"))
            hi = int(torch.searchsorted(i0, b, side="left"))
            out.append((lo, hi))
        return out

    def _input(self, x: torch.Tensor, sc: _Scaled, job: _Job) -> torch.Tensor:
        """The job's tile of the scaled image, resized from the original on the fly."""
        (y0, y1), (x0, x1) = job.y, job.x
        if sc.in_rows is None or sc.in_cols is None:
            return x[:, y0:y1, x0:x1]
        # Only the source rows/cols this tile needs, then the exact bilinear weights.
        r_lo, r_hi = int(sc.in_rows.i0[y0]), int(sc.in_rows.i1[y1 - 1]) + 1
        c_lo, c_hi = int(sc.in_cols.i0[x0]), int(sc.in_cols.i1[x1 - 1]) + 1
        part = x[:, r_lo:r_hi, c_lo:c_hi]
        part = sc.in_rows.gather(part, 1, y0, y1, r_lo)
        return sc.in_cols.gather(part, 2, x0, x1, c_lo)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        h, w = batch.shape[-2:]
        m = self.min_size or 0
        if h < m or w < m:  # pad with 0, the mean pixel after normalization; crop back below
            batch = F.pad(batch, (0, max(0, m - w), 0, max(0, m - h)))
        out = self._model_logits(batch)
        return out[..., :h, :w] if out.shape[-2:] != (h, w) else out

    def _model_logits(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.model(batch)
        if isinstance(out, dict):
            if self.output_key not in out:
                raise ValueError(
                    f"model output has no {self.output_key!r} key (keys: {sorted(out)}); "
                    "set output_key"
                )
            out = out[self.output_key]
        if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[0] != batch.shape[0]:
            raise ValueError(
                "model must return logits of shape (N, C, H, W) or {'out': logits}; got "
                f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}"
            )
        if self.num_classes is not None and out.shape[1] != self.num_classes:
            raise ValueError(
                f"model returns {out.shape[1]} classes but num_classes={self.num_classes}"
            )
        if out.shape[-2:] != batch.shape[-2:]:
            # The contract is logits at input resolution; tolerate stride-s outputs.
            out = F.interpolate(out, size=batch.shape[-2:], mode="bilinear", align_corners=False)
        return out.float()

    def _run_group(self, group: list[tuple[torch.Tensor, Any]], output: Output) -> Iterator[Any]:
        with torch.inference_mode():
            plans = [
                self._plan(i, int(x.shape[1]), int(x.shape[2])) for i, (x, _) in enumerate(group)
            ]
            jobs_by_shape: dict[tuple[int, int], list[_Job]] = {}
            for _, jobs in plans:
                for j in jobs:
                    jobs_by_shape.setdefault((j.y[1] - j.y[0], j.x[1] - j.x[0]), []).append(j)
            acc: list[torch.Tensor | None] = [None] * len(group)
            per = 2 if self.flip else 1
            chunk = max(1, self.batch_size // per)
            for jobs in jobs_by_shape.values():
                for c0 in range(0, len(jobs), chunk):
                    part = jobs[c0 : c0 + chunk]
                    batch = torch.stack(
                        [
                            self._input(group[j.image][0], plans[j.image][0][j.scale], j)
                            for j in part
                        ]
                    )
                    if self.flip:
                        out = self._forward(torch.cat([batch, batch.flip(-1)]))
                        logits = out[: len(part)] + out[len(part) :].flip(-1)
                        del out
                    else:
                        logits = self._forward(batch)
                    del batch
                    for j, lg in zip(part, logits):
                        self._accumulate(acc, group, plans, j, lg)
                    del logits
            passes = len(self.scales) * per
            for i, (_, raw) in enumerate(group):
                buf = acc[i]
                assert buf is not None
                acc[i] = None
                yield self._finish(buf.div_(passes), raw, output)

    def _run_group_safe(self, group: list[tuple[torch.Tensor, Any]], output: Output) -> list[Any]:
        """:meth:`_run_group`, with a failing batch retried image by image; an image that
        fails alone gives its exception."""
        try:
            return list(self._run_group(group, output))
        except Exception as e:
            if len(group) == 1:
                return [e]
        out: list[Any] = []
        for item in group:
            try:
                out += list(self._run_group([item], output))
            except Exception as e:
                out.append(e)
        return out

    def _accumulate(
        self,
        acc: list[torch.Tensor | None],
        group: list[tuple[torch.Tensor, Any]],
        plans: list[tuple[list[_Scaled], list[_Job]]],
        job: _Job,
        logits: torch.Tensor,
    ) -> None:
        x = group[job.image][0]
        h, w = int(x.shape[1]), int(x.shape[2])
        buf = acc[job.image]
        if buf is None:
            buf = torch.zeros((logits.shape[0], h, w), dtype=torch.float32, device=self.device)
            acc[job.image] = buf
        elif buf.shape[0] != logits.shape[0]:
            raise ValueError(
                f"model returned {logits.shape[0]} classes for one input and {buf.shape[0]} "
                "for another"
            )
        sc = plans[job.image][0][job.scale]
        (oy0, oy1), (ox0, ox1) = job.oy, job.ox
        if sc.out_rows is None or sc.out_cols is None:
            part = logits[:, oy0 - job.y[0] : oy1 - job.y[0], ox0 - job.x[0] : ox1 - job.x[0]]
        else:
            part = sc.out_rows.gather(logits, 1, oy0, oy1, job.y[0])
            part = sc.out_cols.gather(part, 2, ox0, ox1, job.x[0])
        buf[:, oy0:oy1, ox0:ox1] += part

    def _finish(self, logits: torch.Tensor, raw: Any, output: Output) -> Any:
        if output == "logits":
            return logits.cpu()
        if self.crf is None and output == "labels":
            return label_map(logits.argmax(0), logits.shape[0])
        # In-place softmax over classes: the accumulator is the biggest buffer we hold.
        probs = logits.sub_(logits.amax(0, keepdim=True)).exp_()
        probs.div_(probs.sum(0, keepdim=True))
        p = probs.cpu().numpy()
        if self.crf is not None:
            refined = self.crf(to_uint8_hwc(raw), p)
            refined = (
                refined.detach().cpu().numpy()
                if isinstance(refined, torch.Tensor)
                else np.asarray(refined)
            )
            if refined.shape != p.shape:
                raise ValueError(
                    f"crf returned shape {refined.shape}, expected probabilities {p.shape}"
                )
            p = refined.astype(np.float32, copy=False)
        if output == "proba":
            return p
        return label_map(torch.from_numpy(p).argmax(0), p.shape[0])


def build_segmenter(
    model: Any,
    settings: InferenceSettings | None = None,
    crf: CRFChoice = "auto",
    **options: Any,
) -> Segmenter:
    """The Segmenter every atrous entry point runs (``predict``, ``eval``, ``crf-search``,
    ``serve``, the demo, training's validation).

    ``model``: a loaded model, a weights file, or a
    :class:`~atrous.inference.pipeline.PreparedModel`; it is made runnable at
    ``settings.precision`` (:func:`~atrous.inference.pipeline.prepare_model`) and run with the
    settings' scales, flip, tiles, batch and device. ``crf``: ``"auto"`` (the learned
    CRF-as-RNN layer saved with the weights, if any, kept on top of an optimized network), a
    hook such as a dense CRF (:meth:`CRFSettings.choice
    <atrous.inference.settings.CRFSettings.choice>`), or None. ``options``: other
    :class:`Segmenter` arguments, which win (see
    :func:`~atrous.inference.pipeline.segmenter_options`)."""
    settings = InferenceSettings() if settings is None else settings
    return Segmenter(**segmenter_options(prepare_model(model, settings), settings, crf, **options))


def label_map(idx: torch.Tensor, num_classes: int) -> np.ndarray:
    """Class ids (any integer tensor) as a numpy label map of :func:`atrous.imageio.label_dtype`
    (uint8 up to 256 classes, else uint16)."""
    dtype = label_dtype(num_classes)
    if dtype == np.uint8:
        return idx.to(torch.uint8).cpu().numpy()
    return idx.to(torch.int32).cpu().numpy().astype(dtype)
