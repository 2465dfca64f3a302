"""Checks that a dataset and a training setup agree on the classes (for the trainer).

Datasets map raw values through their lookup table and reject undefined ones, so a loaded
mask holds only ``0..ds.num_classes-1`` and the ignore index: a config ``num_classes``
*larger* than the dataset's is never seen in the masks (compare ``ds.num_classes``), a
*smaller* one is, and :func:`check_label_range` finds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atrous.constants import IGNORE_INDEX
from atrous.data.base import DatasetError


@dataclass
class LabelRange:
    """Labels ``>= num_classes`` (not the ignore index) in the first ``checked`` masks:
    ``counts[value]`` pixels, ``files`` the masks holding them; ``problems`` the items that
    did not load."""

    num_classes: int
    checked: int = 0
    counts: dict[int, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.counts

    def message(self) -> str:
        """One line saying what was found ("" when ok)."""
        if self.ok:
            return ""
        vals = sorted(self.counts)
        return (
            f"label values {vals} are >= num_classes={self.num_classes} in "
            f"{len(self.files)} of the first {self.checked} masks (e.g. {self.files[0]})"
        )


def check_label_range(ds: Any, num_classes: int, samples: int = 20) -> LabelRange:
    """Read the first ``samples`` masks of ``ds`` (untransformed) and record label values
    ``>= num_classes`` other than the ignore index. Items that fail to load are recorded
    in ``problems`` and passed over."""
    out = LabelRange(num_classes)
    items = getattr(ds, "items", None)
    for i in range(min(samples, len(ds))):
        try:
            sample = ds.load_item(items[i]) if items is not None else ds[i]
        except DatasetError as e:
            out.problems.append((e.path, e.problem))
            continue
        mask = np.asarray(sample["mask"]).ravel()
        out.checked += 1
        bad = mask[(mask >= num_classes) & (mask != IGNORE_INDEX)]
        if bad.size:
            vals, counts = np.unique(bad, return_counts=True)
            for v, c in zip(vals.tolist(), counts.tolist()):
                out.counts[int(v)] = out.counts.get(int(v), 0) + int(c)
            out.files.append(str(items[i].mask) if items is not None else str(sample["path"]))
    return out
