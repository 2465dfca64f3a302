from __future__ import annotations

import numpy as np
import pytest

from atrous.data import SYNTHETIC_CLASSES, SyntheticSegmentation, build_dataset, colorize


def test_deterministic_by_seed_and_index() -> None:
    a, b = SyntheticSegmentation(5, 64, seed=1), SyntheticSegmentation(5, 64, seed=1)
    np.testing.assert_array_equal(a[3]["image"], b[3]["image"])
    np.testing.assert_array_equal(a[3]["mask"], b[3]["mask"])
    assert not np.array_equal(a[3]["image"], a[4]["image"])
    assert not np.array_equal(a[3]["image"], SyntheticSegmentation(5, 64, seed=2)[3]["image"])
    val = SyntheticSegmentation(5, 64, seed=1, split="val")
    assert not np.array_equal(a[0]["image"], val[0]["image"])


def test_any_size_and_valid_labels() -> None:
    ds = SyntheticSegmentation(20, (48, 80))
    counts = np.zeros(len(SYNTHETIC_CLASSES), int)
    for i in range(len(ds)):
        s = ds[i]
        assert s["image"].shape == (48, 80, 3) and s["image"].dtype == np.uint8
        assert s["mask"].shape == (48, 80) and s["mask"].dtype == np.uint8
        counts += np.bincount(s["mask"].ravel(), minlength=6)[:6]
    assert (counts > 0).all()  # every class appears across 20 images
    assert ds.palette.shape == (6, 3) and ds.num_classes == 6


def test_objects_have_many_sizes() -> None:
    ds = SyntheticSegmentation(30, 128)
    from scipy import ndimage

    areas = []
    for i in range(len(ds)):
        m = ds[i]["mask"]
        for c in range(1, 6):
            lab, _ = ndimage.label(m == c)
            areas += list(np.bincount(lab.ravel())[1:])
    areas = np.asarray(areas)
    assert areas.min() < 60 and areas.max() > 3000


def test_class_colour_statistics_differ() -> None:
    ds = SyntheticSegmentation(10, 96)
    means = np.zeros((6, 3))
    for c in range(6):
        px = np.concatenate([ds[i]["image"][ds[i]["mask"] == c] for i in range(len(ds))])
        means[c] = px.mean(0)
    d = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert d[np.triu_indices(6, 1)].min() > 10


def test_ignore_border() -> None:
    m = SyntheticSegmentation(3, 64, ignore_border=1)[0]["mask"]
    assert (m == 255).any()
    assert colorize(m, SyntheticSegmentation.palette).shape == (64, 64, 3)


def test_factory_and_errors() -> None:
    ds = build_dataset("synthetic", size=32, length=3)
    assert len(ds) == 3 and ds[-1]["name"] == "syn_000002"
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(ValueError, match="size"):
        SyntheticSegmentation(3, 4)
