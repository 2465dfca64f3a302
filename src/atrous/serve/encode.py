"""Responses of ``POST /v1/segment``: the label map as a PNG, a coloured overlay, or JSON with
class names, per-class pixel fractions and optional per-class masks (base64 PNG, the shape of
the Hugging Face image-segmentation task, or COCO run-length encoding)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from atrous.data.palettes import overlay
from atrous.imageio import label_dtype

__all__ = [
    "class_summary",
    "coco_rle",
    "coco_rle_decode",
    "json_body",
    "label_png",
    "label_raw",
    "overlay_jpeg",
]


def label_png(labels: np.ndarray, num_classes: int) -> bytes:
    """The label map as a single-channel PNG whose pixel values are class ids: 8-bit grey up
    to 256 classes, 16-bit above (:func:`atrous.imageio.label_dtype`)."""
    if label_dtype(num_classes) == np.uint8:
        im = Image.fromarray(labels.astype(np.uint8), mode="L")
    else:
        im = Image.fromarray(labels.astype(np.uint16))
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def label_raw(labels: np.ndarray, num_classes: int) -> bytes:
    """The label map's bytes, row-major, in :func:`atrous.imageio.label_dtype` (uint8, or
    little-endian uint16 above 256 classes): ``numpy.frombuffer(body, dtype).reshape(h, w)``,
    or a typed array in a browser, which cannot read a 16-bit PNG's values."""
    return np.ascontiguousarray(
        labels, dtype=np.dtype(label_dtype(num_classes)).newbyteorder("<")
    ).tobytes()


def overlay_jpeg(image: np.ndarray, labels: np.ndarray, palette: np.ndarray) -> bytes:
    """The class colours blended half over the image (the arithmetic of ``atrous predict``'s
    ``_overlay.jpg``), as JPEG."""
    buf = io.BytesIO()
    Image.fromarray(overlay(image, labels, palette, 0.5)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def class_summary(
    labels: np.ndarray, class_names: Sequence[str], palette: np.ndarray
) -> list[dict[str, Any]]:
    """The classes present in ``labels``: id, name, colour, pixel count and fraction."""
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=len(class_names))
    total = max(1, int(labels.size))
    return [
        {
            "id": k,
            "name": class_names[k],
            "color": [int(c) for c in palette[k]],
            "pixels": int(n),
            "fraction": round(int(n) / total, 6),
        }
        for k, n in enumerate(counts[: len(class_names)])
        if n
    ]


def coco_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's compressed run-length encoding of a binary (H, W) mask, as ``pycocotools.mask
    .encode`` writes it: runs over the column-major pixels, starting with background, and
    the counts as COCO's LEB128-like string (5 bits per character, deltas from the run two
    back after the first three)."""
    h, w = mask.shape
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], edges, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs.insert(0, 0)
    out = []
    for i, run in enumerate(runs):
        x = int(run) - (int(runs[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return {"size": [int(h), int(w)], "counts": "".join(out)}


def coco_rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """The binary (H, W) uint8 mask of a compressed COCO RLE (the inverse of :func:`coco_rle`,
    for clients and tests)."""
    h, w = rle["size"]
    s = rle["counts"]
    runs: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    flat = np.zeros(h * w, dtype=np.uint8)
    pos = 0
    for i, n in enumerate(runs):
        if i % 2:
            flat[pos : pos + n] = 1
        pos += n
    return flat.reshape((w, h)).T.copy()


def _mask_png(mask: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def json_body(
    labels: np.ndarray,
    class_names: Sequence[str],
    palette: np.ndarray,
    masks: str = "none",
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON response: size, the classes present (:func:`class_summary`) and, with
    ``masks="png"``, one ``{"label", "id", "score": None, "mask": base64 PNG (0/255)}`` entry
    per present class (the Hugging Face image-segmentation shape), or with ``masks="rle"`` a
    COCO ``"rle"`` instead of the PNG."""
    h, w = labels.shape
    classes = class_summary(labels, class_names, palette)
    body: dict[str, Any] = {"height": int(h), "width": int(w), "classes": classes}
    if masks != "none":
        segments = []
        for c in classes:
            m = labels == c["id"]
            entry: dict[str, Any] = {"label": c["name"], "id": c["id"], "score": None}
            if masks == "png":
                entry["mask"] = _mask_png(m)
            else:
                entry["rle"] = coco_rle(m)
            segments.append(entry)
        body["segments"] = segments
    if info:
        body.update(info)
    return body
