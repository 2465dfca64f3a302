"""``atrous.evaluation.crf_search`` and the ``atrous crf-search`` command on tiny synthetic setups."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from atrous import weights
from atrous.cli import main
from atrous.crf import dense_crf
from atrous.evaluation.crf_search import DEEPLAB_V1_GRID, Sample, grid_search, parse_values
from atrous.models import build


def test_parse_values():
    assert parse_values("50:10:100") == [50, 60, 70, 80, 90, 100]
    assert parse_values("3, 4.5,0.5:0.25:1") == [3, 4.5, 0.5, 0.75, 1.0]
    assert parse_values("5,5,6") == [5, 6]
    for bad in ("", "a", "1:2", "5:0:10", "10:1:5", "nan"):
        with pytest.raises(ValueError, match="--bi-w"):
            parse_values(bad, "--bi-w")


def test_default_grid_is_deeplab_v1():
    assert len(DEEPLAB_V1_GRID["bi_w"]) == 6 and DEEPLAB_V1_GRID["bi_xy_std"][-1] == 100
    assert DEEPLAB_V1_GRID["bi_rgb_std"] == [3, 4, 5, 6, 7, 8, 9, 10]


def _samples(n: int = 2, size: int = 24) -> list[Sample]:
    """Two-colour images whose labels follow the colours, and blurred, noisy probabilities:
    the bilateral CRF should sharpen them toward the colour edges."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        label = np.zeros((size, size), np.int64)
        c = rng.integers(6, size - 6)
        label[:, c:] = 1
        label[: size // 3, : c // 2] = 2
        image = np.array([[20, 30, 40], [200, 60, 50], [40, 180, 90]], np.uint8)[label]
        onehot = np.eye(3, dtype=np.float32)[label].transpose(2, 0, 1)
        logits = 2.0 * onehot + rng.normal(0, 1.0, onehot.shape).astype(np.float32)
        # smear the logits horizontally so that the network's edges are off
        logits = np.roll(logits, 2, axis=2)
        p = torch.softmax(torch.from_numpy(logits), 0).numpy()
        label[0, 0] = 255  # an ignored pixel
        out.append(Sample(image, p.astype(np.float16), p.argmax(0), label))
    return out


def test_grid_search_scores_every_point_and_picks_argmax():
    samples = _samples()
    grid = {"bi_w": [0.0, 5.0], "bi_xy_std": [10.0], "bi_rgb_std": [3.0, 20.0]}
    fixed = {"iterations": 5, "pos_w": 1.0}
    res = grid_search(samples, 3, grid, fixed, band_widths=(2, 4))
    assert len(res.points) == 4
    assert [p["params"]["bi_w"] for p in res.points] == [0, 0, 5, 5]
    mious = [p["miou"] for p in res.points]
    assert res.best_index == int(np.argmax(mious))
    assert res.best["miou"] == max(mious)
    assert set(res.baseline["band_miou"]) == {"2", "4"}
    # recompute one point by hand: dense_crf with the same parameters
    from atrous.evaluation import ConfusionMatrix

    cm = ConfusionMatrix(3)
    for s in samples:
        params = {"bi_w": 5.0, "bi_xy_std": 10.0, "bi_rgb_std": 20.0}
        q = dense_crf(s.image, s.probs32(), pos_xy_std=3.0, iterations=5, pos_w=1.0, **params)
        cm.update(q.argmax(0), s.label)
    assert res.points[3]["miou"] == pytest.approx(cm.miou)
    # the colour-aware CRF fixes the smeared edges on this data
    assert res.best["miou"] > res.baseline["miou"]
    d = res.to_dict()
    assert d["best"]["index"] == res.best_index and len(d["points"]) == 4
    fixed = {"iterations": 5, "pos_w": 1.0, "pos_xy_std": 3.0}
    assert d["best_params"] == {"method": "dense_crf", **fixed, **res.best["params"]}
    json.dumps(d)  # JSON-serializable
    assert "no CRF" in res.table(2) and "best" in res.table(2)


def test_grid_search_select_band_and_errors():
    samples = _samples(1)
    grid = {"bi_w": [1.0, 8.0], "bi_xy_std": [10.0], "bi_rgb_std": [5.0]}
    res = grid_search(samples, 3, grid, {"iterations": 3}, band_widths=(1, 3), select="band")
    bands = [p["band_miou"]["3"] for p in res.points]
    assert res.best_index == int(np.argmax(bands))
    with pytest.raises(ValueError, match="select"):
        grid_search(samples, 3, grid, select="pixel")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['pos_w'\]"):
        grid_search(samples, 3, {"pos_w": [1.0]})
    with pytest.raises(ValueError, match="bi_xy_std values must be positive"):
        grid_search(samples, 3, {"bi_xy_std": [0.0]})
    with pytest.raises(ValueError, match="at least one sample"):
        grid_search([], 3, grid)


def test_coarse_to_fine_refines_around_the_best():
    samples = _samples(1)
    grid = {"bi_w": [2.0, 6.0], "bi_xy_std": [10.0, 30.0], "bi_rgb_std": [5.0]}
    res = grid_search(samples, 3, grid, {"iterations": 3}, refine=1)
    first = [p for p in res.points if p["round"] == 0]
    second = [p for p in res.points if p["round"] == 1]
    assert len(first) == 4 and second
    b0 = max(first, key=lambda p: p["miou"])["params"]
    for p in second:  # half the spacing around round 0's best; a single value stays fixed
        assert abs(p["params"]["bi_w"] - b0["bi_w"]) in (0.0, 2.0)
        assert abs(p["params"]["bi_xy_std"] - b0["bi_xy_std"]) in (0.0, 10.0)
        assert p["params"]["bi_rgb_std"] == 5.0
    keys = [tuple(p["params"].values()) for p in res.points]
    assert len(keys) == len(set(keys))  # nothing evaluated twice
    assert res.best_index == int(np.argmax([p["miou"] for p in res.points]))
    assert res.to_dict()["refine_rounds"] == 1
    with pytest.raises(ValueError, match="refine"):
        grid_search(samples, 3, grid, refine=-1)


@pytest.fixture
def tiny_weights(tmp_path) -> Path:
    torch.manual_seed(0)
    net = build("deeplabv3_mobilenetv2", num_classes=6, norm="gn", width_mult=0.5)
    return weights.save(net, tmp_path / "net.safetensors")


def test_cli_writes_json_and_best_params(tiny_weights, tmp_path, capsys):
    out = tmp_path / "search"
    flags = "--format synthetic --size 32 --limit 2 --bi-w 3,5 --bi-xy-std 20 --bi-rgb-std 3:2:5"
    flags += " --iterations 3 --no-progress"
    rc = main(["crf-search", str(tiny_weights), *flags.split(), "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "no CRF" in text and "4 grid points on 2 images" in text
    data = json.loads((out / "crf_search.json").read_text())
    assert data["num_images"] == 2 and len(data["points"]) == 4
    assert {"miou", "band_miou", "pixel_accuracy"} <= set(data["baseline"])
    assert data["band_widths"] == [4.0, 8.0]
    best = max(range(4), key=lambda i: data["points"][i]["miou"])
    assert data["points"][best]["miou"] == data["best"]["miou"]
    assert data["fixed"] == {"iterations": 3, "pos_w": 3.0, "pos_xy_std": 3.0}
    assert data["metadata"]["command"] == "atrous crf-search"
    params = json.loads((out / "best_crf.json").read_text())
    assert params["bi_w"] == data["best"]["params"]["bi_w"] and params["iterations"] == 3
    # the file feeds atrous eval --crf-params
    flags = "--format synthetic --size 32 --limit 1 --trimap-widths none --no-progress"
    files = ["--crf-params", str(out / "best_crf.json"), "--out", str(tmp_path / "ev")]
    rc = main(["eval", str(tiny_weights), *flags.split(), *files])
    assert rc == 0
    meta = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metadata"]
    assert meta["crf"]["bi_w"] == params["bi_w"] and meta["crf"]["pos_xy_std"] == 3.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bi-w", "x"], "--bi-w: expected numbers"),
        (["--bi-xy-std", "0"], "--bi-xy-std: values must be positive"),
        (["--bi-rgb-std", "5:1:2"], "--bi-rgb-std"),
        (["--band-widths", "0"], "--band-widths: values must be positive"),
        (["--pos-xy-std", "-1"], "--pos-xy-std must be positive"),
        (["--refine", "-2"], "--refine must be >= 0"),
    ],
)
def test_cli_bad_arguments(tiny_weights, capsys, args, message):
    rc = main(["crf-search", str(tiny_weights), "--format", "synthetic", "--limit", "1", *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("atrous crf-search: error:") and message in err


def test_cli_missing_weights_and_data(tmp_path, tiny_weights, capsys):
    assert main(["crf-search", str(tmp_path / "none.safetensors"), "--format", "synthetic"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert main(["crf-search", str(tiny_weights), "--format", "voc"]) == 2
    assert "--data ROOT is required" in capsys.readouterr().err


def test_cli_skips_bad_pairs_and_exits_1(tmp_path, capsys):
    """The failure policy (issue 11): the search uses the good pairs, each bad one is one
    line, the skipped items are in crf_search.json; --fail-fast stops at the first."""
    from bad_datasets import FOLDER, write_dataset_corpus

    expected = write_dataset_corpus(tmp_path / "data")
    bad = {k: v for k, v in expected.items() if k.startswith("bad_")}
    torch.manual_seed(0)
    net = build("deeplabv3_mobilenetv2", num_classes=3, norm="gn", width_mult=0.5)
    w = weights.save(net, tmp_path / "net.safetensors")
    flags = "--split all --bi-w 3 --bi-xy-std 20 --bi-rgb-std 3 --iterations 2 --no-progress"
    args = ["crf-search", str(w), "--data", str(tmp_path / "data" / FOLDER), *flags.split()]
    rc = main([*args, "--out", str(tmp_path / "s")])
    cap = capsys.readouterr()
    assert rc == 1
    errors = [ln for ln in cap.err.splitlines() if ": error: " in ln]
    assert len(errors) == len(bad)
    assert all(any(f"/{n}: " in ln and p in ln for ln in errors) for n, p in bad.items())
    assert "on 7 images" in cap.out
    data = json.loads((tmp_path / "s" / "crf_search.json").read_text())
    assert len(data["metadata"]["dataset"]["skipped"]) == len(bad)
    assert main([*args, "--fail-fast"]) == 1
    assert "stopped at the first failure" in capsys.readouterr().err
