from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from atrous.losses import (
    SegmentationLoss,
    class_weights_from_counts,
    cross_entropy,
    lovasz_softmax,
    ohem_cross_entropy,
    soft_dice,
)


def _data(seed: int = 0, n: int = 2, c: int = 4, h: int = 6, w: int = 5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g)
    target = torch.randint(0, c, (n, h, w), generator=g)
    return logits, target


def test_ce_ignores_255_pixels_entirely():
    logits, target = _data()
    target[0, :3] = 255
    valid = target != 255
    manual = -F.log_softmax(logits, 1).gather(1, target.clamp(max=3)[:, None])[:, 0][valid].mean()
    assert torch.allclose(cross_entropy(logits, target), manual, atol=1e-6)
    # Changing logits where the label is ignored changes neither loss nor gradient elsewhere.
    x = logits.clone().requires_grad_(True)
    cross_entropy(x, target).backward()
    assert torch.all(x.grad[0, :, :3] == 0)


def test_ce_all_ignored_is_zero_with_gradient_path():
    logits, target = _data()
    x = logits.requires_grad_(True)
    loss = cross_entropy(x, torch.full_like(target, 255))
    loss.backward()
    assert loss.item() == 0 and torch.all(x.grad == 0)


def test_class_weights_scale_terms():
    logits, target = _data(1)
    w = torch.tensor([1.0, 2.0, 0.5, 3.0])
    per_px = F.cross_entropy(logits, target, reduction="none")
    wt = w[target]
    expected = (per_px * wt).sum() / wt.sum()
    assert torch.allclose(cross_entropy(logits, target, weight=w), expected, atol=1e-6)


def test_label_smoothing_mixes_in_the_uniform_target_on_labelled_pixels_only():
    logits, target = _data(2)
    target[1, :2] = 255
    eps, c = 0.1, logits.shape[1]
    logp = F.log_softmax(logits, 1)
    valid = target != 255
    nll = -logp.gather(1, target.clamp(max=c - 1)[:, None])[:, 0]
    uniform = -logp.mean(1)
    expected = ((1 - eps) * nll + eps * uniform)[valid].mean()
    got = cross_entropy(logits, target, label_smoothing=eps)
    assert torch.allclose(got, expected, atol=1e-6)
    loss = SegmentationLoss(label_smoothing=eps)
    assert torch.allclose(loss(logits, target), expected, atol=1e-6)
    assert ohem_cross_entropy(logits, target, 1.0, label_smoothing=eps) > 0
    with pytest.raises(ValueError, match="label_smoothing"):
        SegmentationLoss(label_smoothing=1.0)


def test_weight_helpers():
    counts = [900, 90, 10, 0]
    w = class_weights_from_counts(counts, "inverse_log")
    assert w[3] == 0  # absent class
    assert w[0] < w[1] < w[2]  # rarer classes weigh more
    assert math.isclose(float(w[0]), 1 / math.log(1.02 + 0.9), rel_tol=1e-5)
    capped = class_weights_from_counts(counts, "inverse_log", cap=2.0)
    assert capped[3] == 0 and capped[0] == w[0] and capped[2] == pytest.approx(2 * w[0])
    with pytest.raises(ValueError, match="cap"):
        class_weights_from_counts(counts, "inverse_log", cap=0.5)
    m = class_weights_from_counts([100, 50, 25], "median")
    assert torch.allclose(m, torch.tensor([0.5, 1.0, 2.0]))
    with pytest.raises(ValueError, match="method"):
        class_weights_from_counts(counts, "nope")


def test_ohem_keeps_top_k_hardest_pixels():
    logits, target = _data(2)
    target[1] = 255
    per = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    per = per[target != 255]
    k = round(0.25 * per.numel())
    expected = per.sort(descending=True).values[:k].mean()
    assert torch.allclose(ohem_cross_entropy(logits, target, top_k=0.25), expected, atol=1e-6)
    # top_k=1 is plain CE; OHEM is never below it.
    assert torch.allclose(ohem_cross_entropy(logits, target, 1.0), cross_entropy(logits, target))
    assert ohem_cross_entropy(logits, target, 0.1) > cross_entropy(logits, target)
    with pytest.raises(ValueError, match="top_k"):
        ohem_cross_entropy(logits, target, 0.0)


@pytest.mark.parametrize("fn", [lovasz_softmax, soft_dice])
def test_region_loss_gradient_sign_and_ignore(fn):
    logits, target = _data(3)
    target[0, 0] = 255
    x = logits.clone().requires_grad_(True)
    loss = fn(x, target)
    loss.backward()
    assert 0 < loss.item() <= 1
    # Raising the true-class logit lowers the loss: gradient w.r.t. it is <= 0 everywhere.
    gt = target.clamp(max=3)[:, None]
    g_true = x.grad.gather(1, gt)[:, 0]
    valid = target != 255
    assert torch.all(g_true[valid] <= 1e-7) and (g_true[valid] < 0).any()
    # Ignored pixels get no gradient.
    assert torch.all(x.grad[0, :, 0] == 0)
    # A perfect prediction costs ~0.
    perfect = 50 * F.one_hot(target.clamp(max=3), 4).permute(0, 3, 1, 2).float()
    assert fn(perfect, target).item() < 1e-3


def test_lovasz_matches_iou_for_hard_predictions():
    # With one-hot probabilities the Lovász extension equals 1 - IoU of each present class.
    target = torch.tensor([[[0, 0, 1, 1]]])
    pred = torch.tensor([[[0, 1, 1, 1]]])
    logits = 1e4 * F.one_hot(pred, 2).permute(0, 3, 1, 2).float()
    iou0, iou1 = 1 / 2, 2 / 3
    expected = ((1 - iou0) + (1 - iou1)) / 2
    assert math.isclose(lovasz_softmax(logits, target).item(), expected, rel_tol=1e-4)


def test_combined_loss_adds_weighted_aux_and_region():
    logits, target = _data(4)
    aux, _ = _data(5)
    crit = SegmentationLoss(aux_weight=0.5)
    total = crit({"out": logits, "aux": aux}, target)
    expected = cross_entropy(logits, target) + 0.5 * cross_entropy(aux, target)
    assert torch.allclose(total, expected, atol=1e-6)
    assert set(crit.parts) == {"ce", "aux_ce"}
    crit = SegmentationLoss(region="lovasz", region_weight=2.0, aux_weight=0.0)
    total = crit({"out": logits, "aux": aux}, target)
    expected = cross_entropy(logits, target) + 2 * lovasz_softmax(logits, target)
    assert torch.allclose(total, expected, atol=1e-6)
    with pytest.raises(ValueError, match="class weights"):
        SegmentationLoss(weight=[1.0, 2.0])(logits, target)
    with pytest.raises(ValueError, match="region"):
        SegmentationLoss(region="focal")


def test_shape_mismatch_is_a_clear_error():
    logits, target = _data()
    with pytest.raises(ValueError, match="do not match"):
        cross_entropy(logits, target[:, :-1])
