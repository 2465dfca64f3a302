from __future__ import annotations

import numpy as np
import pytest
import torch

from atrous.data import (
    ColorJitter,
    Compose,
    Normalize,
    PadToSize,
    RandomCrop,
    RandomGaussianBlur,
    RandomHorizontalFlip,
    RandomScale,
    SyntheticSegmentation,
    collate,
    eval_transforms,
    train_transforms,
)
from atrous.data.transforms import IMAGENET_MEAN, as_rng, mean_fill


def blocks(h: int = 40, w: int = 60, seed: int = 0) -> dict:
    """An image whose red channel encodes the mask (30 * class) on 10x10 blocks."""
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, 6, (h // 10, w // 10)).repeat(10, 0).repeat(10, 1).astype(np.uint8)
    img = np.stack([mask * 30, rng.integers(0, 256, mask.shape), mask * 0 + 7], -1)
    return {"image": img.astype(np.uint8), "mask": mask}


def derived(sample: dict) -> np.ndarray:
    return np.round(sample["image"][..., 0].astype(np.float32) / 30).astype(np.uint8)


@pytest.mark.parametrize("seed", range(4))
def test_random_scale_keeps_mask_aligned_and_uses_nearest(seed: int) -> None:
    s = RandomScale((0.5, 2.0))(blocks(), np.random.default_rng(seed))
    assert s["image"].shape[:2] == s["mask"].shape
    assert set(np.unique(s["mask"])) <= set(range(6))  # nearest: no blended labels
    # Bilinear vs nearest differ only at block edges: every mismatch lies within one pixel
    # of a label change (a shifted or unflipped mask would fail this).
    m = s["mask"].astype(int)
    p = np.pad(m, 1, mode="edge")
    win = np.stack(
        [p[dy : dy + m.shape[0], dx : dx + m.shape[1]] for dy in range(3) for dx in range(3)]
    )
    near_edge = win.min(0) != win.max(0)
    mismatch = derived(s) != s["mask"]
    assert not (mismatch & ~near_edge).any()
    assert mismatch.mean() < 0.25


@pytest.mark.parametrize("seed", range(4))
def test_crop_and_flip_keep_exact_alignment(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = Compose([RandomCrop((24, 32)), RandomHorizontalFlip(1.0)])
    s = t(blocks(seed=seed), rng)
    assert s["image"].shape == (24, 32, 3) and s["mask"].shape == (24, 32)
    np.testing.assert_array_equal(derived(s), s["mask"])


def test_flip_actually_flips() -> None:
    b = blocks()
    s = RandomHorizontalFlip(1.0)(b, np.random.default_rng(0))
    np.testing.assert_array_equal(s["mask"], b["mask"][:, ::-1])
    assert RandomHorizontalFlip(0.0)(b, np.random.default_rng(0)) is b


def test_crop_pads_image_with_fill_and_mask_with_ignore() -> None:
    b = blocks(20, 30)
    s = RandomCrop(50, fill=mean_fill())(b, np.random.default_rng(0))
    assert s["image"].shape == (50, 50, 3)
    assert (s["mask"][20:] == 255).all() and (s["mask"][:, 30:] == 255).all()
    assert tuple(s["image"][45, 45]) == mean_fill() == (124, 116, 104)
    np.testing.assert_array_equal(s["mask"][:20, :30], b["mask"])
    n = Normalize()(s)
    assert n["image"][:, 45, 45].abs().max() < 0.01  # mean fill normalizes to ~0


def test_pad_to_size_noop_when_large_enough() -> None:
    b = blocks()
    assert PadToSize(10)(b) is b


def test_color_jitter_changes_image_not_mask() -> None:
    b = blocks()
    s = ColorJitter(0.4, 0.4, 0.4, 0.1)(b, np.random.default_rng(1))
    assert s["mask"] is b["mask"]
    assert s["image"].dtype == np.uint8 and not np.array_equal(s["image"], b["image"])
    ident = ColorJitter(0, 0, 0, 0)(b, np.random.default_rng(1))
    assert np.abs(ident["image"].astype(int) - b["image"]).max() <= 1


def test_normalize_to_tensors() -> None:
    s = Normalize()(blocks())
    assert s["image"].dtype == torch.float32 and s["image"].shape == (3, 40, 60)
    assert s["mask"].dtype == torch.int64
    expected = (30 * blocks()["mask"][0, 0] / 255 - IMAGENET_MEAN[0]) / 0.229
    assert s["image"][0, 0, 0].item() == pytest.approx(expected, abs=1e-5)


def test_train_preset_shapes_and_determinism() -> None:
    t = train_transforms(crop_size=33, color_jitter=0.2)
    a = t(blocks(), np.random.default_rng(7))
    b = t(blocks(), np.random.default_rng(7))
    c = t(blocks(), np.random.default_rng(8))
    assert a["image"].shape == (3, 33, 33) and a["mask"].shape == (33, 33)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(a["image"], c["image"])
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(t(blocks(), g1)["image"], t(blocks(), g2)["image"])
    e = eval_transforms()(blocks())
    assert e["image"].shape == (3, 40, 60)


def _thin_pole(h: int = 120, w: int = 160) -> dict:
    """Road (0) everywhere but a 2-pixel pole (5) at column 150: 1% of the frame."""
    mask = np.zeros((h, w), np.uint8)
    mask[:, 150:152] = 5
    mask[:10, :] = 255  # an unlabelled band: never a crop anchor
    img = np.stack([mask, mask, mask], -1)
    return {"image": img, "mask": mask}


def test_class_balanced_crop_shows_a_rare_class_in_half_the_crops() -> None:
    rng = np.random.default_rng(0)
    uniform = RandomCrop((32, 32))
    balanced = RandomCrop((32, 32), class_balance=1.0)
    seen_u = sum(5 in uniform(_thin_pole(), rng)["mask"] for _ in range(400))
    seen_b = sum(5 in balanced(_thin_pole(), rng)["mask"] for _ in range(400))
    # uniform positions: the pole is in a crop when x in [119, 128] of 0..128 -> ~8%;
    # balanced: half the anchors are road, which may still show the pole; the other half must
    assert seen_u < 0.15 * 400
    assert seen_b >= 0.5 * 400
    for _ in range(50):  # the crop is whole and inside the frame
        s = balanced(_thin_pole(), rng)
        assert s["mask"].shape == (32, 32) and s["image"].shape == (32, 32, 3)


def test_class_balanced_crop_pads_small_frames_and_skips_unlabelled_ones() -> None:
    rng = np.random.default_rng(1)
    small = _thin_pole(20, 160)
    s = RandomCrop((32, 32), class_balance=1.0)(small, rng)
    assert s["mask"].shape == (32, 32)
    empty = {"image": np.zeros((40, 40, 3), np.uint8), "mask": np.full((40, 40), 255, np.uint8)}
    assert RandomCrop(16, class_balance=1.0)(empty, rng)["mask"].shape == (16, 16)
    # class_balance=0 draws exactly what the plain crop draws
    a = RandomCrop(24)(blocks(), np.random.default_rng(5))
    b = RandomCrop(24, class_balance=0.0)(blocks(), np.random.default_rng(5))
    assert np.array_equal(a["image"], b["image"])
    with pytest.raises(ValueError, match="class_balance"):
        RandomCrop(8, class_balance=1.5)


def test_gaussian_blur_smooths_the_image_only() -> None:
    b = blocks()
    s = RandomGaussianBlur(1.0, (2.0, 2.0))(b, np.random.default_rng(0))
    assert np.array_equal(s["mask"], b["mask"])
    noise = b["image"][..., 1].astype(float)
    assert s["image"][..., 1].astype(float).std() < 0.6 * noise.std()
    assert RandomGaussianBlur(0.0)(b, np.random.default_rng(0)) is b
    t = train_transforms(crop_size=24, blur=1.0, class_balance=0.5)
    assert "RandomGaussianBlur" in repr(t) and "class_balance=0.5" in repr(t)
    with pytest.raises(ValueError, match="blur probability"):
        RandomGaussianBlur(2.0)


def test_invalid_arguments_are_clear() -> None:
    with pytest.raises(ValueError, match="scale_range"):
        RandomScale((0, 2))
    with pytest.raises(ValueError, match="crop size"):
        RandomCrop(0)
    with pytest.raises(TypeError, match="rng"):
        as_rng("seed")


def test_dataset_seed_makes_augmentation_a_function_of_epoch_and_index() -> None:
    ds = SyntheticSegmentation(6, 48, transforms=train_transforms(32))
    a, b = ds[2], ds[2]
    assert torch.equal(a["image"], b["image"])
    ds.set_epoch(1)
    assert not torch.equal(ds[2]["image"], a["image"])
    ds.set_epoch(0)
    assert torch.equal(ds[2]["mask"], a["mask"])


def test_dataloader_batches_do_not_depend_on_worker_count() -> None:
    ds = SyntheticSegmentation(4, 40, transforms=train_transforms(24))
    batches = []
    for workers in (0, 2):
        dl = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=collate)
        batches.append([b["image"] for b in dl])
    for x, y in zip(*batches):
        assert torch.equal(x, y)


def test_collate_pads_mixed_sizes_with_ignore() -> None:
    t = eval_transforms()
    batch = collate([t(blocks(40, 60)), t(blocks(30, 70, seed=1))], pad_to=8)
    assert batch["image"].shape == (2, 3, 40, 72) and batch["mask"].shape == (2, 40, 72)
    assert (batch["mask"][1, 30:] == 255).all() and (batch["mask"][0, :, 60:] == 255).all()
    assert (batch["image"][1, :, 30:] == 0).all()
    assert batch["size"].tolist() == [[40, 60], [30, 70]]
    raw = collate([blocks(), blocks(seed=1)])
    assert raw["image"].dtype == torch.uint8 and raw["image"].shape == (2, 3, 40, 60)
    with pytest.raises(ValueError, match="empty"):
        collate([])
