"""CRFParams (defaults, validation, dict/file readers), DenseCRF.from_params, dense_crf's profile."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest

from atrous.crf import CRFasRNN, CRFParams, DenseCRF, StageTimes, dense_crf
from atrous.crf.rnn_model import CRF_RNN_DEFAULTS

VOC_V2 = {"iterations": 10, "pos_w": 3.0, "pos_xy_std": 1.0}
VOC_V2.update(bi_w=4.0, bi_xy_std=67.0, bi_rgb_std=3.0)


def _inputs(h: int = 12, w: int = 14, c: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    p = rng.random((c, h, w)).astype(np.float32) + 0.1
    return img, p / p.sum(0)


# ---------------------------------------------------------------- defaults: one source
def test_defaults_are_deeplab_v2_voc_and_shared() -> None:
    assert CRFParams().to_dict() == VOC_V2
    assert CRFParams.names() == tuple(VOC_V2)
    sig = inspect.signature(dense_crf).parameters
    assert {k: sig[k].default for k in VOC_V2} == VOC_V2
    assert DenseCRF().params == CRFParams()
    assert DenseCRF().config() == {"method": "dense_crf", **VOC_V2}
    assert DenseCRF().bi_xy_std == 67.0  # the parameters still read as attributes
    # CRF-as-RNN starts from the same kernels; 10 iterations at test time
    assert {k: CRF_RNN_DEFAULTS[k] for k in VOC_V2 if k != "iterations"} == {
        k: v for k, v in VOC_V2.items() if k != "iterations"
    }
    assert CRF_RNN_DEFAULTS["eval_iterations"] == 10
    crf = CRFasRNN(3)
    assert crf.pos_weight.detach().eq(3.0).all() and crf.bi_weight.detach().eq(4.0).all()
    assert (crf.pos_xy_std, crf.bi_xy_std, crf.bi_rgb_std) == (1.0, 67.0, 3.0)
    assert all(CRFParams.help(k) for k in CRFParams.names())


def test_defaults_give_dense_crfs_default_result() -> None:
    img, probs = _inputs()
    ref = dense_crf(img, probs)
    np.testing.assert_array_equal(dense_crf(img, probs, **CRFParams().to_dict()), ref)
    np.testing.assert_array_equal(DenseCRF()(img, probs), ref)
    np.testing.assert_array_equal(DenseCRF.from_params(None)(img, probs), ref)


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("iterations", -1, "iterations=-1: must be a non-negative integer"),
        ("iterations", 2.0, "iterations=2.0: must be a non-negative integer"),
        ("iterations", True, "iterations=True: must be a non-negative integer"),
        ("pos_w", float("nan"), "pos_w=nan: must be a finite number"),
        ("bi_w", "4", "bi_w='4': must be a finite number"),
        ("pos_xy_std", 0, "pos_xy_std=0: must be positive"),
        ("bi_xy_std", -67.0, "bi_xy_std=-67.0: must be positive"),
        ("bi_rgb_std", float("inf"), "bi_rgb_std=inf: must be a finite number"),
    ],
)
def test_validation_names_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        CRFParams(**{field: value})
    img, probs = _inputs()
    with pytest.raises(ValueError, match=field):
        dense_crf(img, probs, **{field: value})


def test_values_are_normalized_and_negative_weights_allowed() -> None:
    p = CRFParams(iterations=np.int64(3), pos_w=-2, bi_rgb_std=np.float32(5.0))
    assert p.iterations == 3 and type(p.iterations) is int
    assert p.pos_w == -2.0 and type(p.pos_w) is float and type(p.bi_rgb_std) is float
    with pytest.raises(AttributeError):
        p.bi_w = 1.0  # type: ignore[misc]


def test_replace_ignores_none_and_rejects_unknown_names() -> None:
    p = CRFParams().replace(iterations=5, bi_w=None)
    assert p == CRFParams(iterations=5)
    with pytest.raises(TypeError, match=r"unknown key\(s\) \['bi_weight'\] \(did you mean 'bi_w'"):
        CRFParams().replace(bi_weight=2.0)
    with pytest.raises(ValueError, match="bi_w=nan"):
        CRFParams().replace(bi_w=float("nan"))


# ---------------------------------------------------------------- from_dict / from_file
def test_from_dict_unknown_key_suggests_the_nearest() -> None:
    assert CRFParams.from_dict({"bi_w": 5}) == CRFParams(bi_w=5.0)
    assert CRFParams.from_dict({"method": "dense_crf", "iterations": 2}).iterations == 2
    with pytest.raises(ValueError) as e:
        CRFParams.from_dict({"bi_weight": 1, "pos_xy_sdt": 2}, where="cfg.crf")
    msg = str(e.value)
    assert msg.startswith("cfg.crf: unknown key(s) ['bi_weight', 'pos_xy_sdt']")
    assert "'bi_w' for 'bi_weight'" in msg and "'pos_xy_std' for 'pos_xy_sdt'" in msg
    assert "known: ['iterations', 'pos_w', 'pos_xy_std', 'bi_w', 'bi_xy_std', 'bi_rgb_std']" in msg
    with pytest.raises(ValueError, match=r"^cfg: bi_rgb_std=0: must be positive$"):
        CRFParams.from_dict({"bi_rgb_std": 0}, where="cfg")
    with pytest.raises(ValueError, match="method='crf_rnn' is not the dense CRF"):
        CRFParams.from_dict({"method": "crf_rnn"})
    with pytest.raises(ValueError, match="expected an object"):
        CRFParams.from_dict([1, 2])  # type: ignore[arg-type]


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_from_file_reads_crf_search_outputs(tmp_path: Path) -> None:
    # best_crf.json of `atrous crf-search` is SearchResult.best_params(): the fixed and the
    # searched parameters with "method"; crf_search.json nests it under "best_params"
    fixed = {"iterations": 10, "pos_w": 3.0, "pos_xy_std": 3.0}
    best = {"method": "dense_crf", **fixed, "bi_w": 5.0, "bi_xy_std": 60.0, "bi_rgb_std": 10.0}
    expected = CRFParams(pos_xy_std=3.0, bi_w=5.0, bi_xy_std=60.0, bi_rgb_std=10.0)
    assert CRFParams.from_file(_write(tmp_path / "best_crf.json", best)) == expected
    point = {"index": 0, "params": {"bi_w": 5.0}, "miou": 0.5}
    report = {"fixed": fixed, "best": point, "best_params": best}
    assert CRFParams.from_file(str(_write(tmp_path / "crf_search.json", report))) == expected
    nested = _write(tmp_path / "nested.json", {"params": {"bi_w": 2.0}})
    assert CRFParams.from_file(nested) == CRFParams(bi_w=2.0)


def test_from_file_errors_name_the_file_and_the_key(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.json", {"best_params": {"bi_rgb_std": -1}})
    with pytest.raises(ValueError, match=r"bad\.json \(best_params\): bi_rgb_std=-1: must be"):
        CRFParams.from_file(bad)
    typo = _write(tmp_path / "typo.json", {"bi_weight": 1})
    with pytest.raises(ValueError, match=r"^--crf-params x: unknown key\(s\) \['bi_weight'\]"):
        CRFParams.from_file(typo, where="--crf-params x")
    with pytest.raises(ValueError, match=r"missing\.json: file not found"):
        CRFParams.from_file(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{bi_w: 1")
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON"):
        CRFParams.from_file(tmp_path / "broken.json")
    with pytest.raises(ValueError, match=r"list\.json: expected an object"):
        CRFParams.from_file(_write(tmp_path / "list.json", [1]))


# ---------------------------------------------------------------- DenseCRF.from_params
def test_dense_crf_from_params_layers_defaults_source_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path / "best_crf.json", {"method": "dense_crf", "iterations": 2, "bi_w": 6})
    assert DenseCRF.from_params(path) == DenseCRF(iterations=2, bi_w=6.0)
    # explicit values win over the file; None means "not given" (a CLI flag left out)
    crf = DenseCRF.from_params(str(path), bi_w=2.0, pos_w=None, iterations=None)
    assert crf == DenseCRF(iterations=2, bi_w=2.0)
    assert crf.params == CRFParams(iterations=2, bi_w=2.0)
    assert DenseCRF.from_params({"bi_xy_std": 50}, iterations=1) == DenseCRF(
        iterations=1, bi_xy_std=50.0
    )
    assert DenseCRF.from_params(CRFParams(pos_w=1.0)) == DenseCRF(CRFParams(pos_w=1.0))
    assert DenseCRF.from_params() == DenseCRF()
    with pytest.raises(TypeError, match="'bi_w' for 'bi_weight'"):
        DenseCRF.from_params(None, bi_weight=1.0)
    with pytest.raises(ValueError, match=r"^--crf-params f: unknown key\(s\) \['x'\]"):
        DenseCRF.from_params(_write(tmp_path / "x.json", {"x": 1}), where="--crf-params f")
    with pytest.raises(TypeError, match="CRFParams"):
        DenseCRF(5)  # type: ignore[arg-type]
    img, probs = _inputs()
    np.testing.assert_array_equal(crf(img, probs), dense_crf(img, probs, iterations=2, bi_w=2.0))


# ---------------------------------------------------------------- profile
def test_dense_crf_profile_records_stage_times() -> None:
    img, probs = _inputs()
    ticks = iter(range(100))
    times = StageTimes(clock=lambda: float(next(ticks)))
    q = dense_crf(img, probs, iterations=2, profile=times)
    np.testing.assert_array_equal(q, dense_crf(img, probs, iterations=2))
    stages = ["start", "checked", "unary", "positional", "bilateral", "built", "end"]
    assert list(times.stamps) == stages
    assert list(times.stamps.values()) == [float(i) for i in range(len(stages))]
    assert times.seconds("start", "built") == 5.0
    assert times.durations() == dict.fromkeys(stages[1:], 1.0)
    # a kernel with zero weight is not built (no stamp); the exact method stamps the same way
    wall = StageTimes()
    dense_crf(img, probs, iterations=1, pos_w=0, method="exact", profile=wall)
    assert list(wall.stamps) == ["start", "checked", "unary", "bilateral", "built", "end"]
    assert all(v >= 0 for v in wall.durations().values())
