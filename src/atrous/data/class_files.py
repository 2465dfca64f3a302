"""The user's class-names and palette files, and the names under which a dataset root
holds them (read by the folder format)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# A folder dataset's class-names file, looked up in its root under these names in turn.
CLASS_FILES = ("classes.txt", "class_names.txt", "labels.txt")
# A folder dataset's palette file in its root.
PALETTE_FILE = "palette.txt"


def find_class_file(root: Path) -> Path | None:
    """The first of :data:`CLASS_FILES` in ``root``, or None."""
    return next((root / f for f in CLASS_FILES if (root / f).is_file()), None)


def read_class_file(path: str | Path) -> tuple[list[str], np.ndarray | None]:
    """Class names, one a line; a line may end in ``R G B`` to give the class colour."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: class-names file not found")
    names, colours = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) >= 4 and all(p.isdigit() for p in parts[-3:]):
            rgb = [int(p) for p in parts[-3:]]
            if max(rgb) > 255:
                raise ValueError(f"{path}:{n}: colour {rgb} outside 0..255")
            colours.append(rgb)
            names.append(" ".join(parts[:-3]))
        else:
            names.append(line)
    if colours and len(colours) != len(names):
        raise ValueError(f"{path}: give a colour on every line or on none")
    return names, (np.asarray(colours, np.uint8) if colours else None)


def read_palette_file(path: str | Path) -> np.ndarray:
    """A palette file: one ``R G B`` a line, in class order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: palette file not found")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        try:
            rgb = [int(p) for p in parts[:3]]
        except ValueError:
            rgb = []
        if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
            raise ValueError(f"{path}:{n}: expected 'R G B' in 0..255, got {line!r}")
        rows.append(rgb)
    return np.asarray(rows, np.uint8)
