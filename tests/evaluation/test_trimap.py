"""Trimap boundary bands (DeepLab v1 sec. 5), checked against brute-force distances."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from atrous.evaluation import ConfusionMatrix, TrimapAccumulator, boundary_distance, plot_trimap


def brute_distance(label: np.ndarray, mode: str, ignore: int = 255) -> np.ndarray:
    """Pixel loops: boundary pixels by looking at each 4-neighbour, then the min distance
    to any boundary pixel (+1 outside void mode, so that adjacent pixels have d = 1)."""
    h, w = label.shape
    border = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            if mode == "void":
                border[y, x] = label[y, x] == ignore
                continue
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and label[yy, xx] != label[y, x]:
                    if mode == "class" and ignore in (label[yy, xx], label[y, x]):
                        continue
                    border[y, x] = True
    ys, xs = np.nonzero(border)
    out = np.full((h, w), np.inf)
    if ys.size:
        yy, xx = np.mgrid[0:h, 0:w]
        d2 = (yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2
        out = np.sqrt(d2.min(axis=-1).astype(np.float64))
        if mode != "void":
            out += 1
    return out


def blob_labels(rng: np.random.Generator, h: int = 23, w: int = 29) -> np.ndarray:
    lab = np.zeros((h, w), np.int64)
    for k in (1, 2, 3):
        y, x = rng.integers(0, h - 6), rng.integers(0, w - 6)
        lab[y : y + rng.integers(3, 9), x : x + rng.integers(3, 12)] = k
    # a void outline like VOC's around class 1
    m = lab == 1
    ring = np.zeros_like(m)
    ring[1:, :] |= m[:-1, :]
    ring[:-1, :] |= m[1:, :]
    ring &= ~m
    lab[ring] = 255
    return lab


@pytest.mark.parametrize("mode", ["label", "class", "void"])
@pytest.mark.parametrize("seed", [0, 1])
def test_distance_matches_brute_force(mode, seed):
    lab = blob_labels(np.random.default_rng(seed))
    d = boundary_distance(lab, 255, mode)
    ref = brute_distance(lab, mode)
    scored = lab != 255
    np.testing.assert_allclose(d[scored], ref[scored])


def test_straight_edge_distance_is_distance_to_other_label():
    lab = np.zeros((5, 8), int)
    lab[:, 4:] = 1
    np.testing.assert_allclose(boundary_distance(lab)[0], [4, 3, 2, 1, 1, 2, 3, 4])
    lab[:, 3] = 255  # a void column: in "void" mode distances are measured from it
    np.testing.assert_allclose(boundary_distance(lab, boundary="void")[0], [3, 2, 1, 0, 1, 2, 3, 4])
    assert np.isinf(boundary_distance(lab, boundary="class")).all()  # void separates them


def test_no_boundary_is_infinite():
    assert np.all(np.isinf(boundary_distance(np.ones((4, 5), int), 255, "label")))
    assert np.all(np.isinf(boundary_distance(np.ones((4, 5), int), 255, "void")))


@pytest.mark.parametrize("mode", ["label", "void"])
def test_band_matrices_equal_masked_confusion(mode):
    rng = np.random.default_rng(7)
    widths = [1, 2, 3.5, 6]
    tri = TrimapAccumulator(4, widths, boundary=mode)
    labs, preds = [], []
    for _ in range(3):
        lab = blob_labels(rng)
        pred = np.where(rng.random(lab.shape) < 0.8, np.where(lab == 255, 0, lab), 2)
        tri.update(pred, lab)
        labs.append(lab)
        preds.append(pred)
    mats = tri.matrices()
    for wi, w in enumerate(widths):
        cm = ConfusionMatrix(4)
        for lab, pred in zip(labs, preds):
            band = brute_distance(lab, mode) <= w
            cm.update(pred[band][None], lab[band][None])
        np.testing.assert_array_equal(mats[wi], cm.numpy(), err_msg=f"width {w}")
    counts = tri.curve()["num_pixels"]
    assert counts == sorted(counts) and counts[0] > 0


def test_wide_band_equals_whole_image_and_narrow_band_is_harder():
    # One square object; the prediction is the square shifted by one pixel: errors only at
    # the boundary, so the narrow band is much worse than the whole image.
    lab = np.zeros((40, 40), np.int64)
    lab[10:30, 10:30] = 1
    pred = np.zeros_like(lab)
    pred[11:31, 11:31] = 1
    tri = TrimapAccumulator(2, range(1, 41)).update(pred, lab)
    whole = ConfusionMatrix(2).update(pred, lab)
    np.testing.assert_array_equal(tri.matrices()[-1], whole.numpy())
    curve = tri.curve()
    assert curve["mIoU"][0] < curve["mIoU"][-1] - 0.2
    assert curve["pixel_accuracy"][0] < 0.8


def test_batch_merge_and_errors(tmp_path):
    rng = np.random.default_rng(2)
    lab = np.stack([blob_labels(rng) for _ in range(2)])
    pred = np.where(lab == 255, 0, lab)
    a = TrimapAccumulator(4, [1, 2]).update(pred, lab)
    b = TrimapAccumulator(4, [1, 2]).update(pred[0], lab[0])
    b.merge(TrimapAccumulator(4, [1, 2]).update(pred[1], lab[1]))
    np.testing.assert_array_equal(a.matrices(), b.matrices())
    assert a.compute()[0].pixel_accuracy == 1.0
    with pytest.raises(ValueError, match="widths"):
        a.merge(TrimapAccumulator(4, [1, 3]))
    with pytest.raises(ValueError, match="boundary must be one of"):
        TrimapAccumulator(4, boundary="edges")
    with pytest.raises(ValueError, match="positive"):
        TrimapAccumulator(4, widths=[0, 1])
    with pytest.raises(ValueError, match="target has values"):
        TrimapAccumulator(2, [1]).update(np.zeros((3, 3), int), np.eye(3, dtype=int) * 5)

    path = tmp_path / "trimap.png"
    plot_trimap({"without CRF": a, "with CRF": b.curve()}, str(path))
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 500
