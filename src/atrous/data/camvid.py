"""CamVid (Brostow et al., 2008) in SegNet's release (Badrinarayanan et al.): 11 classes,
with splits that can keep or leave out whole video sequences."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atrous.data.base import Item, SegmentationDataset
from atrous.data.layout import need_dir, read_pair_list
from atrous.data.masks import identity_lut
from atrous.data.palettes import CAMVID_CLASSES, CAMVID_PALETTE
from atrous.data.registry import register_format
from atrous.imageio import IMAGE_EXTENSIONS

_SPLITS = ("train", "val", "test")


def camvid_sequence(name: str) -> str:
    """The video sequence of a CamVid frame, from its name (``0016E5_08019`` -> ``0016E5``;
    the sequences are 0001TP, 0006R0, 0016E5 and Seq05VD)."""
    return name.split("_", 1)[0]


def _parse_camvid_split(split: str) -> tuple[str, set[str], bool]:
    """``base[:SEQ,...]`` or ``base[:-SEQ,...]`` -> (base, sequences, exclude)."""
    base, sep, spec = split.partition(":")
    if not sep:
        return base, set(), False
    exclude = spec.startswith("-")
    seqs = {t.strip() for t in spec.lstrip("-").split(",") if t.strip()}
    if not seqs:
        raise ValueError(f"CamVid split {split!r}: no sequence after ':'")
    return base, seqs, exclude


@register_format("camvid", priority=10)
class CamVid(SegmentationDataset):
    """CamVid in SegNet's layout (``train/``, ``trainannot/``, ``train.txt``...): 11 classes,
    raw 11 (void) -> 255. Uses ``{split}.txt`` when present, else pairs files by stem.

    Sequence-aware splits, for validating on a street sequence the model never trained on
    (CamVid's val frames all come from 0016E5, which also supplies most training frames):
    ``"train:0006R0"`` keeps only that sequence's frames of ``train``, ``"train:-0006R0"``
    all others (several sequences: ``"train:-0006R0,0001TP"``).  A frame's sequence is its
    name up to the first ``_`` (:func:`camvid_sequence`).
    """

    def __init__(self, root: str | Path, split: str = "train", **kwargs: Any) -> None:
        root = Path(root)
        base, seqs, exclude = _parse_camvid_split(split)
        if base not in (*_SPLITS, "trainval"):
            raise ValueError(
                f"CamVid split must be train, val, test or trainval (optionally with "
                f":SEQUENCE or :-SEQUENCE), got {split!r}"
            )
        if base == "trainval" and not (root / "trainval.txt").is_file():
            items = self._items(root, "train") + self._items(root, "val")
        else:
            items = self._items(root, base)
        if seqs:
            items = _select_sequences(items, seqs, exclude, root, split, base)
        self.split = split
        kwargs.setdefault("class_names", CAMVID_CLASSES)
        kwargs.setdefault("palette", CAMVID_PALETTE)
        super().__init__(items, root=root, lut=identity_lut(11, void=(11,)), **kwargs)

    @classmethod
    def detect(cls, root: Path) -> bool:
        """A ``trainannot/``, ``valannot/`` or ``testannot/`` folder in the root."""
        return any((Path(root) / f"{s}annot").is_dir() for s in _SPLITS)

    @classmethod
    def splits(cls, root: Path) -> list[str]:
        """train, val and test, where their image folder or list file exists."""
        root = Path(root)
        return [s for s in _SPLITS if (root / s).is_dir() or (root / f"{s}.txt").is_file()]

    @staticmethod
    def _items(root: Path, split: str) -> list[Item]:
        if (root / f"{split}.txt").is_file():
            return read_pair_list(root / f"{split}.txt", root)
        img_dir = need_dir(root / split, f"CamVid {split!r} image")
        ann = root / f"{split}annot"
        return [
            Item(p, ann / f"{p.stem}.png", p.stem)
            for p in sorted(img_dir.iterdir())
            if p.suffix.lower() in IMAGE_EXTENSIONS
        ]


def _select_sequences(
    items: list[Item], seqs: set[str], exclude: bool, root: Path, split: str, base: str
) -> list[Item]:
    """The items of the sequences ``seqs`` (``exclude``: of all other sequences)."""
    have = sorted({camvid_sequence(it.name) for it in items})
    unknown = sorted(seqs - set(have))
    if unknown:
        raise ValueError(
            f"{root}: CamVid split {split!r}: no frames of sequence(s) "
            f"{', '.join(unknown)} in {base!r}; it has {', '.join(have)}"
        )
    items = [it for it in items if (camvid_sequence(it.name) in seqs) != exclude]
    if not items:
        raise ValueError(f"{root}: CamVid split {split!r} leaves no frames")
    return items
