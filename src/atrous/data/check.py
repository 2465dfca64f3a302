"""Dataset health check: class frequencies and label problems (``atrous data check``).

The checker reads datasets through their public loading API and never the reverse, so
:mod:`atrous.data.base` does not import this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from atrous.constants import IGNORE_INDEX
from atrous.data.base import DatasetError, SegmentationDataset

# Above this share of ignored pixels a split is reported as mostly unlabelled (a warning).
MOSTLY_IGNORED = 0.5


@dataclass
class DatasetReport:
    """What a full pass over a dataset found.

    ``pixels[c]`` / ``images[c]``: pixels of class ``c`` and images containing it, over the
    items that loaded; ``ignored_pixels``: pixels at the ignore index; ``problems``: (file,
    problem) for each item that failed validation; ``warnings``: findings that do not
    stop use, e.g. a split whose pixels are mostly (> 50%) the ignore index.
    """

    class_names: tuple[str, ...]
    num_items: int = 0
    loaded: int = 0
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    images: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ignored_pixels: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ignored_share(self) -> float:
        """Share of all loaded pixels that are the ignore index (0 when none loaded)."""
        total = int(self.pixels.sum()) + self.ignored_pixels
        return self.ignored_pixels / total if total else 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def table(self) -> str:
        """Per-class pixels, share of labelled pixels and images, as a text table."""
        total = max(int(self.pixels.sum()), 1)
        w = max([len("class"), *(len(n) for n in self.class_names)])
        lines = [
            f"{'id':>3}  {'class':<{w}}  {'pixels':>12}  {'share':>7}  {'images':>7}",
            f"{'-' * 3}  {'-' * w}  {'-' * 12}  {'-' * 7}  {'-' * 7}",
        ]
        for i, name in enumerate(self.class_names):
            share = 100.0 * self.pixels[i] / total
            lines.append(
                f"{i:>3}  {name:<{w}}  {int(self.pixels[i]):>12,}  {share:>6.2f}%  "
                f"{int(self.images[i]):>7}"
            )
        lines.append(
            f"{IGNORE_INDEX:>3}  {'(ignore)':<{w}}  {self.ignored_pixels:>12,}  "
            f"{100.0 * self.ignored_share:>6.2f}% of all pixels"
        )
        return "\n".join(lines)

    def summary(self) -> str:
        head = f"{self.loaded}/{self.num_items} items loaded, {len(self.problems)} problem(s)"
        absent = [n for i, n in enumerate(self.class_names) if self.images[i] == 0]
        lines = [head]
        if absent and self.loaded:
            lines.append(f"classes never seen: {', '.join(absent)}")
        lines += [f"problem: {p}: {why}" for p, why in self.problems]
        lines += [f"WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


def scan_dataset(
    ds: SegmentationDataset, *, drop_bad: bool = False, progress: bool = False
) -> DatasetReport:
    """Load every item of ``ds`` once (without transforms), counting classes and problems.

    With ``drop_bad`` the items that failed are removed from ``ds.items`` and recorded in
    ``ds.skip_report`` (checking once up front instead of skipping at every epoch).
    """
    report = _count(ds, progress)
    if drop_bad and report.problems:
        _drop(ds, report.problems)
    return report


def _count(ds: SegmentationDataset, progress: bool) -> DatasetReport:
    """Class pixels and images over the items that load; a problem for each that does not."""
    n = ds.num_classes
    rep = DatasetReport(
        class_names=ds.class_names,
        num_items=len(ds.items),
        pixels=np.zeros(n, np.int64),
        images=np.zeros(n, np.int64),
    )
    items = ds.items
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="checking", unit="img")
    for item in items:
        try:
            sample = ds.load_item(item)
        except DatasetError as e:
            rep.problems.append((e.path, e.problem))
            continue
        counts = np.bincount(sample["mask"].ravel(), minlength=256)
        rep.pixels += counts[:n]
        rep.images += counts[:n] > 0
        rep.ignored_pixels += int(counts[IGNORE_INDEX])
        rep.loaded += 1
    if rep.ignored_share > MOSTLY_IGNORED:
        rep.warnings.append(
            f"{100.0 * rep.ignored_share:.1f}% of the pixels of {rep.loaded} mask(s) are the "
            f"ignore index {IGNORE_INDEX}: the loss and the metrics skip them; if the masks are "
            "binary drawn 0/255, map 255 to class 1 (folder format: --map 255:1, "
            "value_map={255: 1})"
        )
    return rep


def _drop(ds: SegmentationDataset, problems: list[tuple[str, str]]) -> None:
    """Remove the items whose image or mask is one of ``problems``' files, recording them."""
    bad = {path for path, _ in problems}
    ds.items = [it for it in ds.items if str(it.image) not in bad and str(it.mask) not in bad]
    ds.skip_report.update(problems)
