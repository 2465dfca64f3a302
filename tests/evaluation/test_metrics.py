"""Confusion matrix and metrics, cross-checked against hand-worked and direct numpy values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from atrous.evaluation import ConfusionMatrix, metrics_from_matrix


def direct_metrics(pred: np.ndarray, target: np.ndarray, c: int, ignore: int = 255) -> dict:
    """Independent per-class computation from pixel masks (no confusion matrix)."""
    valid = target != ignore
    p, t = pred[valid], target[valid]
    iou, acc, freq = [], [], []
    for k in range(c):
        inter = np.sum((p == k) & (t == k))
        union = np.sum((p == k) | (t == k))
        iou.append(inter / union if union else math.nan)
        acc.append(inter / np.sum(t == k) if np.sum(t == k) else math.nan)
        freq.append(np.sum(t == k) / t.size)
    iou_a = np.array(iou)
    return {
        "iou": iou_a,
        "miou": np.nanmean(iou_a),
        "pixel_accuracy": np.mean(p == t),
        "mean_class_accuracy": np.nanmean(np.array(acc)),
        "fw_iou": sum(f * i for f, i in zip(freq, iou) if f > 0),
    }


def test_hand_worked_example():
    # GT      pred
    # 0 0 1   0 1 1
    # 1 2 255 1 1 0
    target = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 1, 0]])
    cm = ConfusionMatrix(4).update(pred, target)
    # rows GT, cols pred: 0->0 once, 0->1 once, 1->1 twice, 2->1 once; the 255 pixel ignored
    expected = np.zeros((4, 4), np.int64)
    expected[0, 0], expected[0, 1], expected[1, 1], expected[2, 1] = 1, 1, 2, 1
    np.testing.assert_array_equal(cm.numpy(), expected)
    m = cm.compute()
    # IoU0 = 1/2, IoU1 = 2/(2+3-2)=2/4... union1 = gt 2 + pred 4 - tp 2 = 4 -> 0.5; IoU2 = 0
    np.testing.assert_allclose(m.iou[:3], [0.5, 0.5, 0.0])
    assert math.isnan(m.iou[3]) and m.absent == [3]
    assert m.miou == pytest.approx(1 / 3)
    assert m.pixel_accuracy == pytest.approx(3 / 5)
    assert m.mean_class_accuracy == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert m.fw_iou == pytest.approx(2 / 5 * 0.5 + 2 / 5 * 0.5 + 1 / 5 * 0.0)
    assert m.num_pixels == 5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_against_direct_numpy(seed):
    rng = np.random.default_rng(seed)
    c = 7
    target = rng.integers(0, c, size=(3, 31, 17))
    target[rng.random(target.shape) < 0.1] = 255
    target[target == 5] = 0  # class 5 never in GT
    pred = np.where(rng.random(target.shape) < 0.6, np.clip(target, 0, c - 1), 0)
    pred = np.where(rng.random(target.shape) < 0.2, rng.integers(0, c, target.shape), pred)
    pred[pred == 6] = 1
    target[target == 6] = 1  # class 6 absent from both
    cm = ConfusionMatrix(c).update(torch.from_numpy(pred), torch.from_numpy(target))
    m = cm.compute()
    d = direct_metrics(pred, target, c)
    np.testing.assert_allclose(m.iou, d["iou"], equal_nan=True)
    for k in ("miou", "pixel_accuracy", "mean_class_accuracy", "fw_iou"):
        assert getattr(m, k) == pytest.approx(d[k]), k
    assert m.absent == [6]
    assert m.iou[5] == 0.0  # predicted but never in GT: a real 0, counted in the mean


def test_absent_classes_do_not_move_the_mean():
    t = np.array([[0, 1], [1, 0]])
    p = np.array([[0, 1], [0, 0]])
    small = ConfusionMatrix(2).update(p, t).compute()
    big = ConfusionMatrix(50).update(p, t).compute()
    assert small.miou == pytest.approx(big.miou)
    assert big.absent == list(range(2, 50))
    assert big.to_dict()["per_class_IoU"][2] is None


def test_batch_equals_sum_of_images_and_merge():
    rng = np.random.default_rng(3)
    t = rng.integers(0, 4, (4, 9, 11))
    p = rng.integers(0, 4, (4, 9, 11))
    whole = ConfusionMatrix(4).update(p, t)
    parts = [ConfusionMatrix(4).update(p[i], t[i]) for i in range(4)]
    summed = parts[0] + parts[1]
    summed += parts[2]
    summed.merge(parts[3])
    np.testing.assert_array_equal(summed.numpy(), whole.numpy())
    assert parts[0].numpy().sum() == 99  # __add__ did not modify its operands
    with pytest.raises(ValueError, match="3 classes"):
        whole.merge(ConfusionMatrix(3))


def test_ignore_index_and_none():
    t = np.array([[255, 1], [0, 255]])
    p = np.array([[1, 1], [0, 0]])
    assert ConfusionMatrix(2).update(p, t).compute().num_pixels == 2
    cm = ConfusionMatrix(2, ignore_index=None)
    with pytest.raises(ValueError, match=r"\[255\] outside \[0, 2\)"):
        cm.update(p, t)
    assert ConfusionMatrix(256, ignore_index=None).update(p, t).compute().num_pixels == 4


def test_bad_inputs_have_clear_errors():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"target has values \[3, 7\]"):
        cm.update(np.zeros((2, 2), int), np.array([[3, 7], [0, 255]]))
    with pytest.raises(ValueError, match="target has values"):
        cm.update(np.zeros((2, 2), int), np.array([[-1, 0], [0, 0]]))
    with pytest.raises(ValueError, match=r"pred has values \[4\]"):
        cm.update(np.array([[4, 0], [0, 0]]), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="shapes differ"):
        cm.update(np.zeros((2, 3), int), np.zeros((3, 2), int))
    with pytest.raises(TypeError, match="integer label map"):
        cm.update(np.zeros((2, 2), np.float32), np.zeros((2, 2), int))
    with pytest.raises(TypeError, match=r"torch\.Tensor or numpy"):
        cm.update([[0]], np.zeros((1, 1), int))
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros(4, int), np.zeros(4, int))
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(0)
    assert cm.numpy().sum() == 0  # failed updates leave no partial counts


def test_empty_matrix_metrics_are_nan_not_zero():
    m = metrics_from_matrix(np.zeros((3, 3)))
    assert math.isnan(m.miou) and math.isnan(m.pixel_accuracy)
    assert m.absent == [0, 1, 2]


def test_uint8_and_bool_inputs():
    t = np.array([[0, 1]], np.uint8)
    p = np.array([[True, True]])
    m = ConfusionMatrix(2).update(p, t).compute()
    np.testing.assert_allclose(m.iou, [0.0, 0.5])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 5, (2, 16, 16))
    p = rng.integers(0, 5, (2, 16, 16))
    cpu = ConfusionMatrix(5).update(p, t)
    gpu = ConfusionMatrix(5).update(torch.from_numpy(p).cuda(), torch.from_numpy(t).cuda())
    assert gpu.mat.is_cuda
    np.testing.assert_array_equal(gpu.numpy(), cpu.numpy())
