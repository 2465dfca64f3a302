"""ADE20K SceneParsing (Zhou et al., CVPR 2017; the ``ADEChallengeData2016`` release):
150 classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atrous.constants import IGNORE_INDEX
from atrous.data.base import Item, SegmentationDataset
from atrous.data.layout import need_dir
from atrous.data.masks import make_lut
from atrous.data.palettes import ADE20K_CLASSES, ADE20K_PALETTE
from atrous.data.registry import register_format

# Split name -> the release's folder name (its own names are accepted too).
_ADE_SPLITS = {
    "train": "training",
    "val": "validation",
    "training": "training",
    "validation": "validation",
}


def _ade_root(root: Path) -> Path:
    """The root itself, or its ``ADEChallengeData2016/`` when the root has no ``images/``."""
    if not (root / "images").is_dir() and (root / "ADEChallengeData2016").is_dir():
        return root / "ADEChallengeData2016"
    return root


@register_format("ade20k", priority=20)
class ADE20K(SegmentationDataset):
    """ADE20K SceneParsing (``ADEChallengeData2016``): 150 classes, raw 0 ("other") -> 255,
    raw 1..150 -> 0..149."""

    def __init__(self, root: str | Path, split: str = "train", **kwargs: Any) -> None:
        root = _ade_root(Path(root))
        if split not in _ADE_SPLITS:
            raise ValueError(f"ADE20K split must be train or val, got {split!r}")
        sub = _ADE_SPLITS[split]
        img_dir = need_dir(root / "images" / sub, f"ADE20K {split!r} image")
        items = [
            Item(p, root / "annotations" / sub / f"{p.stem}.png", p.stem)
            for p in sorted(img_dir.glob("*.jpg"))
        ]
        mapping = {0: IGNORE_INDEX, **{i: i - 1 for i in range(1, 151)}}
        self.split = split
        kwargs.setdefault("class_names", ADE20K_CLASSES)
        kwargs.setdefault("palette", ADE20K_PALETTE)
        super().__init__(items, root=root, lut=make_lut(mapping), **kwargs)

    @classmethod
    def detect(cls, root: Path) -> bool:
        """``images/training/`` or ``images/validation/`` in the root or in its
        ``ADEChallengeData2016/``."""
        root = Path(root)
        return any(
            (cand / "images" / "training").is_dir() or (cand / "images" / "validation").is_dir()
            for cand in (root, root / "ADEChallengeData2016")
        )

    @classmethod
    def splits(cls, root: Path) -> list[str]:
        """train and val, where their image folder exists."""
        images = _ade_root(Path(root)) / "images"
        return [s for s in ("train", "val") if (images / _ADE_SPLITS[s]).is_dir()]
