"""Finding a dataset's files on disk: a required folder, a split list (one name a line),
and an ``image mask`` pair list whose paths are relative to the dataset root."""

from __future__ import annotations

from pathlib import Path

from atrous.data.base import Item


def need_dir(path: Path, what: str) -> Path:
    """``path``, which must be a folder (``what`` names it in the error)."""
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: {what} folder not found")
    return path


def read_list(path: Path) -> list[str]:
    """The non-empty lines of a list file, stripped."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split list not found")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def resolve_listed(root: Path, entry: str) -> Path:
    """A list-file path: relative to ``root``, or absolute; SegNet's own lists hold absolute
    ``/SegNet/CamVid/train/x.png`` paths, so fall back to the last two components."""
    p = Path(entry)
    if not p.is_absolute():
        return root / p
    if p.exists():
        return p
    return root / p.parent.name / p.name


def read_pair_list(path: Path, root: Path) -> list[Item]:
    """Lines ``image mask`` (or just ``image``) -> items; paths relative to ``root``."""
    items = []
    for n, line in enumerate(read_list(path), 1):
        parts = line.split()
        if len(parts) not in (1, 2):
            raise ValueError(f"{path}:{n}: expected 'image mask', got {line!r}")
        img = resolve_listed(root, parts[0])
        mask = resolve_listed(root, parts[1]) if len(parts) == 2 else None
        items.append(Item(img, mask, img.stem))
    return items
