"""Response encodings: label PNG depth, COCO RLE against hand-worked examples, JSON body."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from atrous.serve.encode import coco_rle, coco_rle_decode, json_body, label_png


def test_label_png_is_single_channel_8_or_16_bit() -> None:
    labels = np.array([[0, 1], [2, 3]], np.uint8)
    im = Image.open(io.BytesIO(label_png(labels, 21)))
    assert im.mode == "L" and np.array_equal(np.asarray(im), labels)
    big = np.array([[0, 300], [299, 1]], np.uint16)
    im = Image.open(io.BytesIO(label_png(big, 400)))
    assert im.mode.startswith("I") and np.array_equal(np.asarray(im), big)


def test_coco_rle_matches_the_reference_encoding() -> None:
    # Column-major runs starting with background: [[0, 1], [1, 1]] -> 0,1 then 1,1 -> runs 1, 3
    m = np.array([[0, 1], [1, 1]], np.uint8)
    assert coco_rle(m) == {"size": [2, 2], "counts": "13"}
    # A mask starting with foreground opens with an empty background run.
    assert coco_rle(np.ones((2, 3), np.uint8))["counts"] == "06"
    # Runs past the first three are stored as deltas from the run two back, and large or
    # negative values take several 5-bit characters (pycocotools' rleToString).
    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = rng.integers(1, 60, 2)
        mask = rng.random((h, w)) < rng.random()
        rle = coco_rle(mask)
        assert np.array_equal(coco_rle_decode(rle), mask.astype(np.uint8))
    big = np.zeros((100, 100), bool)
    big[:, 50:] = True
    # 5000 = 8 + 32 * (28 + 32 * 4): chars 8|0x20, 28|0x20 (sign bit set: continue), 4
    assert coco_rle(big)["counts"] == "Xl4Xl4"


def test_json_body_fractions_and_masks() -> None:
    labels = np.array([[0, 0, 2], [2, 2, 2]], np.uint8)
    pal = np.array([[0, 0, 0], [1, 1, 1], [9, 8, 7]], np.uint8)
    body = json_body(labels, ["bg", "a", "b"], pal, masks="png")
    assert [c["name"] for c in body["classes"]] == ["bg", "b"]
    assert body["classes"][1] == {
        "id": 2,
        "name": "b",
        "color": [9, 8, 7],
        "pixels": 4,
        "fraction": round(4 / 6, 6),
    }
    seg = body["segments"][1]
    assert seg["label"] == "b" and seg["score"] is None
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(seg["mask"]))))
    assert np.array_equal(mask, (labels == 2) * 255)
    rle = json_body(labels, ["bg", "a", "b"], pal, masks="rle")["segments"][0]["rle"]
    assert np.array_equal(coco_rle_decode(rle), labels == 0)
