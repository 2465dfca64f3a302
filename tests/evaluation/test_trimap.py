"""Trimap boundary bands (DeepLab v1 sec. 5), checked against brute-force distances."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from atrous.evaluation import ConfusionMatrix, TrimapAccumulator, boundary_distance, plot_trimap


def brute_distance(label: np.ndarray, mode: str, ignore: int = 255) -> np.ndarray:
    """For every pixel, min Euclidean distance to a pixel that is a 'boundary' for it."""
    h, w = label.shape
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.full((h, w), np.inf)
    for y in range(h):
        for x in range(w):
            lab = label[y, x]
            if mode == "label":
                other = label != lab
            elif mode == "class":
                other = (label != lab) & (label != ignore)
            else:
                other = label == ignore
            if other.any():
                out[y, x] = np.sqrt(((yy - y) ** 2 + (xx - x) ** 2)[other].min())
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


def test_distance_cropping_exact_within_limit():
    lab = blob_labels(np.random.default_rng(5), 40, 60)
    full = boundary_distance(lab, 255, "label")
    lim = boundary_distance(lab, 255, "label", max_distance=3)
    near = full <= 3
    np.testing.assert_allclose(lim[near], full[near])
    assert np.all(lim[~near] > 3)


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
