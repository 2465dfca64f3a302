"""evaluate() over a dataset, EvalResult reports (table, JSON, PNGs), distributed sums."""

from __future__ import annotations

import json
import math
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from atrous.evaluation import ConfusionMatrix, EvalResult, TrimapAccumulator, evaluate
from atrous.evaluation.report import plot_confusion

NAMES = ["background", "cat", "dog", "unused"]


def make_dataset(n: int = 4, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Images whose red channel encodes the class: a 'perfect' segmenter can read it."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        h, w = 20 + i, 25 + 2 * i
        lab = np.zeros((h, w), np.int64)
        lab[3 : 10 + i, 4:15] = 1
        lab[12:18, 16 + i :] = 2
        lab[2, :] = 255
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img[..., 0] = np.where(lab == 255, 0, lab) * 50
        items.append((img, lab))
    return items


def noisy_segmenter(image: np.ndarray) -> np.ndarray:
    pred = (image[..., 0] // 50).astype(np.uint8)
    pred[:, :2] = 0  # systematic error on the left edge
    return pred


def test_evaluate_tuples_and_dicts_match_direct_confusion():
    data = make_dataset()
    ref = ConfusionMatrix(4)
    for img, lab in data:
        ref.update(noisy_segmenter(img), lab)
    res = evaluate(noisy_segmenter, data, 4, NAMES, trimap_widths=[1, 5])
    np.testing.assert_array_equal(res.confusion.numpy(), ref.numpy())
    assert res.num_images == 4
    dicts = [{"image": i, "mask": m} for i, m in data]
    res2 = evaluate(noisy_segmenter, iter(dicts), 4, NAMES, trimap_widths=None, limit=3)
    assert res2.num_images == 3 and res2.trimap is None
    assert res.metrics.absent == [3]


def test_evaluate_rejects_bad_items_and_shapes():
    data = make_dataset(1)
    with pytest.raises(ValueError, match="no 'mask' key"):
        evaluate(noisy_segmenter, [{"image": data[0][0]}], 4)
    with pytest.raises(TypeError, match="dataset item 0"):
        evaluate(noisy_segmenter, [data[0][0]], 4)
    with pytest.raises(ValueError, match="full resolution"):
        evaluate(lambda im: np.zeros((3, 3), np.uint8), data, 4)
    with pytest.raises(ValueError, match="class_names has 2 names"):
        evaluate(noisy_segmenter, data, 4, ["a", "b"])


def test_reports(tmp_path):
    res = evaluate(noisy_segmenter, make_dataset(), 4, NAMES, trimap_widths=range(1, 6))
    table = res.table(title="toy")
    for name in NAMES:
        assert name in table
    assert "(absent)" in table and "mIoU" in table and "frequency-weighted" in table

    meta = {"model": "toy", "weights": "none.safetensors", "scales": [1.0], "flip": False}
    res.to_json(tmp_path / "out" / "result.json", meta)
    text = (tmp_path / "out" / "result.json").read_text()
    assert "NaN" not in text
    data = json.loads(text)
    assert data["metadata"] == meta
    assert data["metrics"]["absent"] == [3] and data["metrics"]["absent_names"] == ["unused"]
    assert data["metrics"]["per_class_IoU"][3] is None
    assert data["metrics"]["mIoU"] == pytest.approx(res.miou)
    assert len(data["trimap"]["mIoU"]) == 5 and data["trimap"]["width"][0] == 1
    assert np.array(data["confusion_matrix"]).sum() == res.metrics.num_pixels
    assert data["environment"]["torch"] == torch.__version__

    res.plot_trimap(tmp_path / "trimap.png", "with CRF", others={"without CRF": res})
    res.plot_confusion(tmp_path / "cm.png")
    for f in ("trimap.png", "cm.png"):
        with Image.open(tmp_path / f) as im:
            assert im.format == "PNG"
    no_tri = EvalResult(ConfusionMatrix(2))
    with pytest.raises(ValueError, match="trimap"):
        no_tri.plot_trimap(tmp_path / "x.png")


def test_confusion_png_many_classes(tmp_path):
    c = 150
    rng = np.random.default_rng(0)
    mat = rng.integers(0, 100, (c, c)) + np.eye(c, dtype=np.int64) * 1000
    mat[7] = 0  # a class with no ground truth: a blank row, not a division error
    plot_confusion(mat, tmp_path / "cm150.png", [f"class_{i:03d}" for i in range(c)])
    with Image.open(tmp_path / "cm150.png") as im:
        assert min(im.size) >= 2000  # big enough for 150 readable labels


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dist_worker(rank: int, world: int, port: int, queue) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        data = make_dataset(4)[rank::world]  # each rank evaluates its shard
        res = evaluate(noisy_segmenter, data, 4, NAMES, trimap_widths=[1, 3])
        res.all_reduce()
        queue.put((rank, res.confusion.numpy(), res.trimap.bins, res.num_images))
    finally:
        dist.destroy_process_group()


def test_all_reduce_two_gloo_processes():
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.spawn(_dist_worker, args=(2, _free_port(), queue), nprocs=2, join=True)
    got = [queue.get() for _ in range(2)]
    full = evaluate(noisy_segmenter, make_dataset(4), 4, NAMES, trimap_widths=[1, 3])
    for _rank, mat, bins, n in got:
        np.testing.assert_array_equal(mat, full.confusion.numpy())
        np.testing.assert_array_equal(bins, full.trimap.bins)
        assert n == 4


def test_all_reduce_without_process_group_is_noop():
    cm = ConfusionMatrix(2).update(np.eye(2, dtype=int), np.eye(2, dtype=int))
    before = cm.numpy().copy()
    cm.all_reduce()
    TrimapAccumulator(2, [1]).all_reduce()
    np.testing.assert_array_equal(cm.numpy(), before)
    assert not math.isnan(cm.miou)
