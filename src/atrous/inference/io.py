"""Files in, files out, for segmenting images: what ``atrous predict`` does, as functions that
the Python API (and a server) can call too.

- :func:`collect_inputs`: image files from paths, folders (recursive) and glob patterns.
- :func:`output_names`: output names that mirror the inputs' paths, without collisions.
- :func:`read_image`: the package's one image reader (:mod:`atrous.imageio`: EXIF applied).
- :func:`write_mask`, :func:`write_overlay`, :func:`write_probs`: the three outputs, each
  written atomically (:mod:`atrous.fileio`): a killed run leaves whole files or none;
  :func:`output_paths` names them.
- :func:`segment_files`: all of it over a list of files, one :class:`FileResult` each; a file
  that cannot be read or written is reported in its result and the run goes on.
"""

from __future__ import annotations

import glob
import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from atrous.data.palettes import overlay, palette_for
from atrous.fileio import atomic_path
from atrous.imageio import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    ImageReadError,
    label_dtype,
    read_image,
)
from atrous.inference.segmenter import Errors, Segmenter, label_map

__all__ = [
    "FileResult",
    "collect_inputs",
    "describe_error",
    "model_palette",
    "output_names",
    "output_paths",
    "read_image",
    "segment_files",
    "write_mask",
    "write_overlay",
    "write_probs",
]

_GLOB_CHARS = set("*?[")


# --------------------------------------------------------------------------- inputs
def collect_inputs(
    inputs: Sequence[str | os.PathLike],
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    what: str = "image",
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files to segment, in order and without duplicates, and ``(input, problem)`` for the
    inputs that gave none. Folders are searched recursively for ``extensions`` (default
    :data:`IMAGE_EXTENSIONS`; ``what`` names them in the problem of a folder without any);
    files named explicitly are tried whatever their extension, so that a mistake is reported
    rather than skipped silently."""
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            files.append(r)

    suffixes = {e.lower() for e in extensions}

    def add_dir(d: Path, where: str) -> None:
        found = sorted(q for q in d.rglob("*") if q.suffix.lower() in suffixes and q.is_file())
        if not found:
            problems.append((where, f"folder holds no {what} files"))
        for q in found:
            add(q)

    for item in inputs:
        text, path = str(item), Path(item)
        if path.is_file():
            add(path)
        elif path.is_dir():
            add_dir(path, text)
        elif _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                problems.append((text, "no file matches this pattern"))
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    add_dir(mp, m)
                elif mp.is_file():
                    add(mp)
        else:
            problems.append((text, "no such file or folder"))
    return files, problems


def output_names(files: Sequence[Path]) -> list[str]:
    """Output names (no extension) mirroring each file's path below the inputs' common
    folder, so equal stems in different folders do not overwrite each other; equal stems
    in one folder (``a.jpg``, ``a.png``) keep their extension in the name."""
    if not files:
        return []
    try:
        base: Path | None = Path(os.path.commonpath([str(f.parent) for f in files]))
    except ValueError:  # different drives
        base = None
    names = []
    for f in files:
        rel = f.relative_to(base) if base is not None else Path(f.name)
        names.append(rel.with_suffix("").as_posix())
    counts = Counter(names)
    return [
        f"{n}_{f.suffix.lstrip('.').lower()}" if counts[n] > 1 else n for n, f in zip(names, files)
    ]


# --------------------------------------------------------------------------- outputs
def model_palette(model: Any) -> np.ndarray:
    """256 colours for the model's classes: the ``palette`` saved with its weights (see
    :func:`atrous.weights.save`) first, the Pascal VOC colour map for the rest."""
    return palette_for(256, (getattr(model, "metadata", None) or {}).get("palette"))


def output_paths(out_dir: str | os.PathLike, name: str, probs: bool = False) -> list[Path]:
    """What :func:`segment_files` writes for the input named ``name``
    (:func:`output_names`): ``<name>.png``, ``<name>_overlay.jpg`` and with ``probs``
    ``<name>_probs.npy``, in that order."""
    target = Path(out_dir) / name
    suffixes = [".png", "_overlay.jpg"] + (["_probs.npy"] if probs else [])
    return [target.with_name(target.name + s) for s in suffixes]


def write_mask(labels: np.ndarray, palette: np.ndarray, path: str | os.PathLike) -> Path:
    """A 'P'-mode PNG whose pixel values are the class ids, drawn with ``palette`` (16-bit
    grey when an id exceeds 255)."""
    path = Path(path)
    if label_dtype(int(labels.max(initial=0)) + 1) == np.uint8:
        im = Image.fromarray(labels.astype(np.uint8))
        im.putpalette(np.asarray(palette, np.uint8)[:256].reshape(-1).tolist())  # L -> P
    else:
        im = Image.fromarray(labels.astype(np.uint16))
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
    return path


def write_overlay(
    image: np.ndarray,
    labels: np.ndarray,
    palette: np.ndarray,
    path: str | os.PathLike,
    alpha: float = 0.5,
) -> Path:
    """The class colours blended over the image (:func:`atrous.data.overlay`), as JPEG."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(overlay(image, labels, palette, alpha)).save(tmp, format="JPEG", quality=90)
    return path


def write_probs(probs: np.ndarray, path: str | os.PathLike) -> Path:
    """Class probabilities (C, H, W) as a float16 ``.npy``."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file: np.save would add .npy
        np.save(f, probs.astype(np.float16))
    return path


# --------------------------------------------------------------------------- a batch of files
@dataclass
class FileResult:
    """What became of one input file: its outputs, or the problem that stopped it."""

    path: Path
    name: str
    outputs: list[Path] = field(default_factory=list)
    problem: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None


def labels_and_probs(
    segmenter: Segmenter, images: Iterable[Any], probs: bool, errors: Errors = "raise"
) -> Iterator[tuple[np.ndarray, np.ndarray | None] | Exception]:
    """``(labels, probabilities or None)`` per image; the labels equal
    ``segmenter.predict``'s (without a CRF, the argmax of the same averaged logits). With
    ``errors="return"`` an image that failed gives its exception instead."""
    if not probs:
        for labels in segmenter.predict_many(images, output="labels", errors=errors):
            yield labels if isinstance(labels, Exception) else (labels, None)
    elif segmenter.crf is None:
        for logits in segmenter.predict_many(images, output="logits", errors=errors):
            if isinstance(logits, Exception):
                yield logits
                continue
            yield label_map(logits.argmax(0), logits.shape[0]), torch.softmax(logits, 0).numpy()
    else:
        for p in segmenter.predict_many(images, output="proba", errors=errors):
            if isinstance(p, Exception):
                yield p
                continue
            yield label_map(torch.from_numpy(p).argmax(0), p.shape[0]), p


def describe_error(e: BaseException) -> str:
    """One line for an unexpected per-item error: its type and first line of message."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, MemoryError):
        return "out of memory (try --tile-size 513 or a smaller --batch-size)"
    if "out of memory" in text.lower() or "can't allocate memory" in text.lower():
        return f"out of memory ({text}); try --tile-size 513 or a smaller --batch-size"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def segment_files(
    segmenter: Segmenter,
    files: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    palette: np.ndarray,
    *,
    overlay_alpha: float = 0.5,
    probs: bool = False,
    names: Sequence[str] | None = None,
    max_pixels: int | None = MAX_PIXELS,
    overwrite: bool = True,
) -> Iterator[FileResult]:
    """Segment ``files`` into ``out_dir``: ``<name>.png`` (palette mask), ``<name>_overlay.jpg``
    and with ``probs`` ``<name>_probs.npy``, names from :func:`output_names`. Yields one
    :class:`FileResult` per file, in order. Nothing one file does stops the others
    (:mod:`atrous.failures`): an unreadable input (``max_pixels``: the decompression-bomb
    limit), an image the model fails on (its batch is re-run image by image) and an
    unwritable output are reported in that file's result. Images of equal size are batched;
    warnings met while reading a file (16-bit scaled, alpha dropped...) are in its result's
    ``warnings``. ``overwrite`` False keeps an output that exists (a resumed run writes only
    what is missing); each result's ``outputs`` are the files it wrote."""
    out = Path(out_dir)
    files = [Path(f) for f in files]
    names = list(names) if names is not None else output_names(files)
    # Files in order, each with its image, or None when it already failed: results come
    # out in the files' order although reading runs ahead of the batches.
    queue: deque[tuple[FileResult, np.ndarray | None]] = deque()

    def images() -> Iterator[np.ndarray]:
        for path, name in zip(files, names):
            result = FileResult(Path(path), name)
            try:
                image = read_image(path, max_pixels=max_pixels, on_warning=result.warnings.append)
            except ImageReadError as e:
                result.problem = e.problem
                queue.append((result, None))
                continue
            except Exception as e:  # a reader failure no check named: still this file's
                result.problem = f"cannot read the image ({describe_error(e)})"
                queue.append((result, None))
                continue
            queue.append((result, image))
            yield image

    def failed_first() -> Iterator[FileResult]:
        while queue and queue[0][1] is None:
            yield queue.popleft()[0]

    for got in labels_and_probs(segmenter, images(), probs, errors="return"):
        yield from failed_first()
        result, image = queue.popleft()
        assert image is not None
        if isinstance(got, Exception):
            result.problem = f"segmentation failed: {describe_error(got)}"
        else:
            labels, p = got
            paths = output_paths(out, result.name, probs)
            keep = set() if overwrite else {q for q in paths if q.exists()}
            _write_outputs(result, paths, keep, image, labels, p, palette, overlay_alpha)
        yield result
    yield from failed_first()


def _write_outputs(
    result: FileResult,
    paths: list[Path],
    keep: set[Path],
    image: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray | None,
    palette: np.ndarray,
    alpha: float,
) -> None:
    """Write the mask, overlay and probabilities (``paths``, :func:`output_paths`), except
    those in ``keep``."""
    writers: list[Callable[[Path], Path]] = [
        lambda q: write_mask(labels, palette, q),
        lambda q: write_overlay(image, labels, palette, q, alpha),
    ]
    if probs is not None:
        writers.append(lambda q: write_probs(probs, q))
    try:
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        for path, write in zip(paths, writers, strict=True):
            if path not in keep:
                result.outputs.append(write(path))
    except OSError as e:
        result.problem = f"cannot write outputs to {paths[0].parent} ({e})"
