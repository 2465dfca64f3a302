"""``atrous predict WEIGHTS INPUTS... -o OUT``: label maps, overlays and probabilities."""

from __future__ import annotations

import argparse
import glob
import os
import sys
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from atrous.cli import CLIError
from atrous.cli._common import (
    add_inference_args,
    build_segmenter,
    load_model,
    model_palette,
    resolve_device,
)

# What a folder is searched for (recursively); files named explicitly are tried whatever
# their extension, so that a mistake is reported rather than skipped silently.
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm")
_GLOB_CHARS = set("*?[")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment images: palette PNG masks, overlays, probabilities",
        description="Segment image files, folders (searched recursively) and glob patterns. "
        "For each image writes OUT/<name>.png (a palette PNG whose pixel values are class "
        "ids, drawn with the weights' palette or the Pascal VOC colours), "
        "OUT/<name>_overlay.jpg, and with --probs OUT/<name>_probs.npy (float16 C x H x W). "
        "Output names mirror the inputs' paths below their common folder. An input that "
        "cannot be read is reported and skipped; the exit status is then 1.",
    )
    p.add_argument("weights", help="checkpoint: atrous .safetensors, torchvision/VainF .pth")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, folder or glob")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--probs", action="store_true", help="also write class probabilities (.npy)")
    p.add_argument(
        "--overlay-alpha",
        type=float,
        default=0.5,
        help="weight of the class colours in the overlay, 0..1 (default 0.5)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_inference_args(p)
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- inputs
def collect_inputs(inputs: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files to segment, in order and without duplicates, and the inputs that gave none."""
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            files.append(r)

    def add_dir(d: Path, what: str) -> None:
        found = sorted(q for q in d.rglob("*") if q.suffix.lower() in IMAGE_EXTS and q.is_file())
        if not found:
            problems.append((what, "folder holds no image files"))
        for q in found:
            add(q)

    for text in inputs:
        path = Path(text)
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


def output_names(files: list[Path]) -> list[str]:
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


def read_rgb(path: Path) -> Any:
    """HxWx3 uint8 RGB, EXIF orientation applied (as photo viewers show the image)."""
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except UnidentifiedImageError:
        raise ValueError("not an image file (unknown format)") from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"image too large ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"unreadable image ({e})") from None


# --------------------------------------------------------------------------- outputs
def save_mask(labels: Any, palette: Any, path: Path) -> None:
    """A 'P'-mode PNG whose pixel values are the class ids (16-bit grey above 256)."""
    import numpy as np
    from PIL import Image

    if int(labels.max(initial=0)) < 256:
        im = Image.fromarray(labels.astype(np.uint8))
        im.putpalette(np.asarray(palette, np.uint8)[:256].reshape(-1).tolist())  # L -> P
    else:
        im = Image.fromarray(labels.astype(np.uint16))
    im.save(path)


def overlay(image: Any, labels: Any, palette: Any, alpha: float) -> Any:
    import numpy as np

    from atrous.data import colorize

    colours = colorize(labels, palette).astype(np.float32)
    out = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _predict(segmenter: Any, images: Iterator[Any], probs: bool) -> Iterator[tuple[Any, Any]]:
    """(labels, probabilities or None) per image; labels equal ``segmenter.predict``."""
    import torch

    if not probs:
        for labels in segmenter.predict_many(images, output="labels"):
            yield labels, None
    elif segmenter.crf is None:
        # From the logits, so the labels are exactly predict()'s argmax.
        for logits in segmenter.predict_many(images, output="logits"):
            dtype = torch.uint8 if logits.shape[0] <= 256 else torch.int32
            labels = logits.argmax(0).to(dtype).numpy()
            yield labels, torch.softmax(logits, 0).numpy()
    else:
        for p in segmenter.predict_many(images, output="proba"):
            yield p.argmax(0).astype("uint8" if p.shape[0] <= 256 else "int32"), p


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    if not 0.0 <= args.overlay_alpha <= 1.0:
        raise CLIError(f"--overlay-alpha must be in [0, 1], got {args.overlay_alpha}")
    files, problems = collect_inputs(args.inputs)
    device = resolve_device(args.device)
    model = load_model(args.weights)
    palette = model_palette(model)
    segmenter = build_segmenter(model, args, device)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"{out}: cannot create the output folder ({e})") from None

    bar = tqdm(total=len(files), desc="predict", unit="img", disable=args.no_progress)

    def report(what: str, problem: str) -> None:
        tqdm.write(f"atrous predict: error: {what}: {problem}", file=sys.stderr)

    for what, problem in problems:
        report(what, problem)
    failed = len(problems)
    pending: deque[tuple[Path, str, Any]] = deque()

    def images() -> Iterator[Any]:
        nonlocal failed
        for path, name in zip(files, output_names(files)):
            try:
                image = read_rgb(path)
            except ValueError as e:
                report(str(path), str(e))
                failed += 1
                bar.update(1)
                continue
            pending.append((path, name, image))
            yield image

    done = 0
    try:
        for labels, probs in _predict(segmenter, images(), args.probs):
            path, name, image = pending.popleft()
            target = out / name
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                save_mask(labels, palette, target.with_name(target.name + ".png"))
                Image.fromarray(overlay(image, labels, palette, args.overlay_alpha)).save(
                    target.with_name(target.name + "_overlay.jpg"), quality=90
                )
                if probs is not None:
                    np.save(target.with_name(target.name + "_probs.npy"), probs.astype(np.float16))
                done += 1
            except OSError as e:
                report(str(path), f"cannot write outputs to {target.parent} ({e})")
                failed += 1
            bar.update(1)
    except ValueError as e:
        raise CLIError(str(e)) from None
    finally:
        bar.close()
    print(f"atrous predict: {done} image(s) segmented into {out}, {failed} input(s) failed")
    return 1 if failed else 0
