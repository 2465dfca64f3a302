"""Grid search of the dense-CRF parameters on a validation subset (DeepLab v1 sec. 4.1).

DeepLab v1 fixes the smoothness kernel (w2 = 3, theta_gamma = 3) and cross-validates the
appearance kernel — its weight w1 (``bi_w``), spatial std theta_alpha (``bi_xy_std``) and
colour std theta_beta (``bi_rgb_std``) — on 100 validation images, starting from
w1 in [5, 10], theta_alpha in [50:10:100], theta_beta in [3:1:10] (:data:`DEEPLAB_V1_GRID`).

The network runs once per image (:func:`collect_samples` caches the probabilities, through
the evaluation's own loop :func:`~atrous.evaluation.iter_predictions`); then
:func:`grid_search` runs :func:`~atrous.crf.dense_crf` for every grid point and scores it by
mIoU over the whole subset (one confusion matrix, :func:`~atrous.evaluation.score`) and by mIoU
within boundary bands of a few pixels (the trimap of v1 sec. 5, where the CRF's effect shows).
The baseline ("before") is the network's argmax.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atrous.constants import IGNORE_INDEX
from atrous.crf import dense_crf
from atrous.evaluation.evaluate import iter_predictions, score
from atrous.inference.preprocess import to_uint8_hwc

__all__ = [
    "DEEPLAB_V1_FIXED",
    "DEEPLAB_V1_GRID",
    "GRID_KEYS",
    "CRFSample",
    "Sample",
    "SearchResult",
    "collect_samples",
    "grid_search",
    "parse_values",
]

GRID_KEYS = ("bi_w", "bi_xy_std", "bi_rgb_std")
# DeepLab v1 sec. 4.1: the initial (coarse) search ranges, and the fixed smoothness kernel.
DEEPLAB_V1_GRID: dict[str, list[float]] = {
    "bi_w": [5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
    "bi_xy_std": [50.0, 60.0, 70.0, 80.0, 90.0, 100.0],
    "bi_rgb_std": [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
}
DEEPLAB_V1_FIXED: dict[str, Any] = {"iterations": 10, "pos_w": 3.0, "pos_xy_std": 3.0}


def parse_values(text: str, name: str = "values") -> list[float]:
    """``"5,6,7"`` or MATLAB-style inclusive ranges ``"50:10:100"`` (start:step:stop), mixed
    with commas; ValueError names ``name`` for anything else."""
    out: list[float] = []
    try:
        for part in (p.strip() for p in str(text).split(",")):
            if not part:
                continue
            if ":" in part:
                fields = [float(x) for x in part.split(":")]
                if len(fields) != 3:
                    raise ValueError
                start, step, stop = fields
                if not step > 0 or stop < start:
                    raise ValueError
                n = math.floor((stop - start) / step + 1e-9) + 1
                out += [round(start + i * step, 10) for i in range(n)]
            else:
                out.append(float(part))
    except ValueError:
        raise ValueError(
            f"{name}: expected numbers or start:step:stop ranges separated by commas, got {text!r}"
        ) from None
    if not out or any(not math.isfinite(v) for v in out):
        raise ValueError(f"{name}: expected at least one finite number, got {text!r}")
    return list(dict.fromkeys(out))  # unique, in order


@dataclass
class CRFSample:
    """One validation image: RGB uint8 (H, W, 3), cached probabilities (C, H, W) (float16
    to halve memory), the network's label map (from the float32 probabilities) and labels."""

    image: np.ndarray
    probs: np.ndarray
    pred: np.ndarray
    label: np.ndarray

    def probs32(self) -> np.ndarray:
        p = self.probs.astype(np.float32)
        return p / p.sum(axis=0, keepdims=True)


Sample = CRFSample  # deprecated alias: the name before #26 (atrous.data's samples are dicts)


def collect_samples(
    segmenter: Any,
    dataset: Iterable[Any],
    limit: int | None = None,
    progress: bool = False,
    on_error: Callable[[str, str], Any] | None = None,
) -> list[CRFSample]:
    """Run ``segmenter`` (an :class:`~atrous.inference.Segmenter` without CRF) once over the
    first ``limit`` items of ``dataset`` and cache image, probabilities and labels.
    ``on_error(item, problem)``: bad items are reported through it and left out (see
    :func:`~atrous.evaluation.iter_predictions`); without it the first one raises."""
    samples = []
    items = iter_predictions(segmenter, dataset, limit, "proba", progress, on_error=on_error)
    for image, label, p in items:
        label = np.asarray(label)
        if p.shape[1:] != label.shape:
            raise ValueError(
                f"probabilities {p.shape[1:]} and label {label.shape} differ in size "
                "(the search is at full resolution)"
            )
        pred = p.argmax(0).astype(np.int64)
        samples.append(CRFSample(to_uint8_hwc(image), p.astype(np.float16), pred, label))
    return samples


@dataclass
class SearchResult:
    """Baseline, every grid point and the best one; ``to_dict`` is the JSON report."""

    baseline: dict[str, Any]
    points: list[dict[str, Any]]
    best_index: int
    select: str
    band_widths: list[float]
    fixed: dict[str, Any]
    grid: dict[str, list[float]]
    num_images: int
    seconds: float = 0.0
    refine: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> dict[str, Any]:
        return self.points[self.best_index]

    def best_params(self) -> dict[str, Any]:
        """Every :class:`~atrous.crf.DenseCRF` parameter of the best point."""
        return {"method": "dense_crf", **self.fixed, **self.best["params"]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": {
                "reference": "DeepLab v1 sec. 4.1: w1, theta_alpha, theta_beta searched on a "
                "validation subset with w2 and theta_gamma fixed",
                "miou": "one confusion matrix over all pixels of the subset, label 255 ignored",
                "band_miou": "mIoU of the pixels within w px of a label boundary (trimap, "
                "boundary mode 'label')",
                "select": self.select,
            },
            "num_images": self.num_images,
            "seconds": self.seconds,
            "grid": self.grid,
            "refine_rounds": self.refine,
            "fixed": self.fixed,
            "band_widths": self.band_widths,
            "baseline": self.baseline,
            "points": self.points,
            "best": {"index": self.best_index, **self.best},
            "best_params": self.best_params(),
            "improvement": {
                "miou": self.best["miou"] - self.baseline["miou"],
                "band_miou": {
                    k: _sub(v, self.baseline["band_miou"][k])
                    for k, v in self.best["band_miou"].items()
                },
            },
            **self.extra,
        }

    def table(self, top: int | None = 10) -> str:
        """Baseline, the ``top`` best grid points by the selection score, and the best."""
        bands = [f"band{_w(w)}" for w in self.band_widths]
        head = f"{'':>10} {'bi_w':>7} {'bi_xy':>7} {'bi_rgb':>7} {'mIoU':>8} " + " ".join(
            f"{b:>8}" for b in bands
        )
        lines = [head, "-" * len(head)]

        def row(tag: str, r: dict[str, Any]) -> str:
            p = r.get("params") or {}
            cells = [f"{p[k]:7.4g}" if k in p else f"{'-':>7}" for k in GRID_KEYS]
            vals = [_pct(r["miou"])] + [_pct(v) for v in r["band_miou"].values()]
            return f"{tag:>10} " + " ".join(cells) + " " + " ".join(vals)

        lines.append(row("no CRF", self.baseline))
        order = sorted(range(len(self.points)), key=lambda i: -self._score(self.points[i]))
        for rank, i in enumerate(order[: top if top is not None else len(order)], 1):
            lines.append(row(f"#{rank}", self.points[i]))
        lines.append(row("best", self.best))
        d = self.best["miou"] - self.baseline["miou"]
        lines.append(
            f"{len(self.points)} grid points on {self.num_images} images, fixed {self.fixed}; "
            f"best by {self.select}: mIoU {_pct(self.baseline['miou']).strip()} -> "
            f"{_pct(self.best['miou']).strip()} ({100 * d:+.2f})"
        )
        return "\n".join(lines)

    def _score(self, r: dict[str, Any]) -> float:
        return _score(r, self.select, self.band_widths)


def _w(w: float) -> str:
    return str(int(w)) if float(w).is_integer() else str(w)


def _pct(v: float | None) -> str:
    return f"{'n/a':>8}" if v is None or not math.isfinite(v) else f"{100 * v:8.2f}"


def _sub(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return a - b


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _score(r: dict[str, Any], select: str, widths: Sequence[float]) -> float:
    v = r["miou"] if select == "miou" else r["band_miou"][_w(widths[-1])]
    return -math.inf if v is None or not math.isfinite(v) else float(v)


def _measure(
    preds: Iterable[np.ndarray],
    labels: Sequence[np.ndarray],
    num_classes: int,
    band_widths: Sequence[float],
    ignore_index: int | None,
) -> dict[str, Any]:
    result = score(zip(preds, labels), num_classes, None, ignore_index, band_widths)
    m = result.metrics
    assert result.trimap is not None
    band = [bm.miou for bm in result.trimap.compute()]
    return {
        "miou": _num(m.miou),
        "pixel_accuracy": _num(m.pixel_accuracy),
        "band_miou": {_w(w): _num(v) for w, v in zip(result.trimap.widths, band)},
    }


def _refined(
    values: Mapping[str, list[float]], best: Mapping[str, float]
) -> dict[str, list[float]]:
    """The next coarse-to-fine grid: ``best`` and its two neighbours at half the spacing
    around it (a parameter searched at one value stays fixed; stds stay positive)."""
    out = {}
    for k in GRID_KEYS:
        vals, v = sorted(set(values[k])), best[k]
        if len(vals) < 2:
            out[k] = [v]
            continue
        i = vals.index(v)
        gaps = [abs(vals[j] - v) for j in (i - 1, i + 1) if 0 <= j < len(vals)]
        half = min(gaps) / 2
        cand = [round(v - half, 10), v, round(v + half, 10)]
        out[k] = [c for c in cand if k == "bi_w" or c > 0]
    return out


def _grid_values(grid: Mapping[str, Sequence[float]] | None) -> dict[str, list[float]]:
    """``grid`` checked and completed with :data:`DEEPLAB_V1_GRID` for the keys it omits."""
    grid = {k: list(v) for k, v in (grid or DEEPLAB_V1_GRID).items()}
    unknown = sorted(set(grid) - set(GRID_KEYS))
    if unknown:
        raise ValueError(f"grid: unknown parameter(s) {unknown}; searchable: {list(GRID_KEYS)}")
    full = {k: [float(v) for v in grid.get(k, DEEPLAB_V1_GRID[k])] for k in GRID_KEYS}
    for k, vals in full.items():
        if not vals:
            raise ValueError(f"grid: {k} has no values")
        if k != "bi_w" and min(vals) <= 0:
            raise ValueError(f"grid: {k} values must be positive, got {vals}")
    return full


def _fixed_params(fixed: Mapping[str, Any] | None) -> dict[str, Any]:
    """``fixed`` checked, over :data:`DEEPLAB_V1_FIXED`."""
    out = {**DEEPLAB_V1_FIXED, **(fixed or {})}
    unknown = sorted(set(out) - set(DEEPLAB_V1_FIXED))
    if unknown:
        raise ValueError(f"fixed: unknown parameter(s) {unknown}; known {list(DEEPLAB_V1_FIXED)}")
    return out


def _search_points(
    samples: Sequence[CRFSample],
    grid: dict[str, list[float]],
    fixed: Mapping[str, Any],
    refine: int,
    measure: Callable[[Iterable[np.ndarray]], dict[str, Any]],
    score: Callable[[dict[str, Any]], float],
    progress: bool,
) -> list[dict[str, Any]]:
    """Every grid point scored by ``measure``: round 0 is ``grid``; each of the ``refine``
    rounds is :func:`_refined` around the best point so far (by ``score``), without the
    points already scored."""
    points: list[dict[str, Any]] = []
    seen: set[tuple[float, ...]] = set()
    current = grid
    for rnd in range(refine + 1):
        if rnd:
            current = _refined(current, points[_best(points, score)]["params"])
        combos = [c for c in itertools.product(*(current[k] for k in GRID_KEYS)) if c not in seen]
        it: Iterable[tuple[float, ...]] = combos
        if progress:
            from tqdm import tqdm

            it = tqdm(combos, desc=f"CRF grid, round {rnd}", unit="point")
        for combo in it:
            seen.add(combo)
            params = dict(zip(GRID_KEYS, combo))
            preds = (dense_crf(s.image, s.probs32(), **fixed, **params).argmax(0) for s in samples)
            points.append({"params": params, "round": rnd, **measure(preds)})
    return points


def _best(points: Sequence[dict[str, Any]], score: Callable[[dict[str, Any]], float]) -> int:
    """The index of the best point by ``score`` (the first of equals)."""
    return int(np.argmax([score(p) for p in points]))


def grid_search(
    samples: Sequence[CRFSample],
    num_classes: int,
    grid: Mapping[str, Sequence[float]] | None = None,
    fixed: Mapping[str, Any] | None = None,
    band_widths: Sequence[float] = (4, 8),
    select: str = "miou",
    ignore_index: int | None = IGNORE_INDEX,
    progress: bool = False,
    refine: int = 0,
) -> SearchResult:
    """Score :func:`dense_crf` at every point of ``grid`` (lists for ``bi_w``, ``bi_xy_std``,
    ``bi_rgb_std``; default :data:`DEEPLAB_V1_GRID`) with the ``fixed`` parameters
    (``iterations``, ``pos_w``, ``pos_xy_std``; default :data:`DEEPLAB_V1_FIXED`).

    ``select`` picks the best point: ``"miou"`` (whole-image mIoU, as DeepLab v1) or
    ``"band"`` (mIoU in the widest band of ``band_widths``); ties go to the first point.

    ``refine`` > 0 adds coarse-to-fine rounds (v1 sec. 4.1): each round searches the best
    point so far and its neighbours at half the previous spacing, per parameter that had more
    than one value. Points evaluated once are not evaluated again.
    """
    if not samples:
        raise ValueError("grid_search needs at least one sample")
    if select not in ("miou", "band"):
        raise ValueError(f"select must be 'miou' or 'band', got {select!r}")
    full = _grid_values(grid)
    fixed = _fixed_params(fixed)
    widths = sorted(float(w) for w in band_widths)
    if not widths or widths[0] <= 0:
        raise ValueError(f"band_widths must be positive, got {list(band_widths)}")
    if not isinstance(refine, int) or refine < 0:
        raise ValueError(f"refine must be a non-negative integer, got {refine!r}")

    labels = [s.label for s in samples]

    def measure(preds: Iterable[np.ndarray]) -> dict[str, Any]:
        return _measure(preds, labels, num_classes, widths, ignore_index)

    def score(point: dict[str, Any]) -> float:
        return _score(point, select, widths)

    t0 = time.perf_counter()
    baseline = measure(s.pred for s in samples)
    points = _search_points(samples, full, fixed, refine, measure, score, progress)
    return SearchResult(
        baseline=baseline,
        points=points,
        best_index=_best(points, score),
        select=select,
        band_widths=widths,
        fixed=fixed,
        grid=full,  # the initial grid; refined points carry their "round"
        num_images=len(samples),
        seconds=time.perf_counter() - t0,
        refine=refine,
    )
