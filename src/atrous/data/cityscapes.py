"""Cityscapes (Cordts et al., CVPR 2016) fine annotations, read as the 19 evaluated classes
(DeepLab v3+ sec. 4.4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atrous.constants import IGNORE_INDEX
from atrous.data.base import Item, SegmentationDataset
from atrous.data.layout import need_dir
from atrous.data.masks import make_lut
from atrous.data.palettes import CITYSCAPES_CLASSES, CITYSCAPES_LABEL_IDS, CITYSCAPES_PALETTE
from atrous.data.registry import register_format


@register_format("cityscapes", priority=30)
class Cityscapes(SegmentationDataset):
    """Cityscapes fine annotations, 19 train ids (labelIds -> trainIds, the rest 255)."""

    def __init__(self, root: str | Path, split: str = "train", **kwargs: Any) -> None:
        root = Path(root)
        img_dir = need_dir(root / "leftImg8bit" / split, f"Cityscapes {split!r} image")
        gt_dir = root / "gtFine" / split
        items = []
        for img in sorted(img_dir.glob("*/*_leftImg8bit.png")):
            stem = img.name[: -len("_leftImg8bit.png")]
            mask = gt_dir / img.parent.name / f"{stem}_gtFine_labelIds.png"
            items.append(Item(img, mask, stem))
        # Valid labelIds are 0..33; license plate (-1) is stored as 255 in uint8 PNGs.
        mapping = {i: IGNORE_INDEX for i in range(34)}
        mapping.update({lid: t for t, lid in enumerate(CITYSCAPES_LABEL_IDS)})
        mapping[255] = IGNORE_INDEX
        self.split = split
        kwargs.setdefault("class_names", CITYSCAPES_CLASSES)
        kwargs.setdefault("palette", CITYSCAPES_PALETTE)
        super().__init__(items, root=root, lut=make_lut(mapping), **kwargs)

    @classmethod
    def detect(cls, root: Path) -> bool:
        """A ``leftImg8bit/`` folder in the root."""
        return (Path(root) / "leftImg8bit").is_dir()

    @classmethod
    def splits(cls, root: Path) -> list[str]:
        """The splits ``leftImg8bit/`` has a folder for."""
        return [s for s in ("train", "val", "test") if (Path(root) / "leftImg8bit" / s).is_dir()]
