"""One way from a model and its settings to a Segmenter (issue 26): the settings records
declare the commands' flags and read them back, and every entry point gets the same
Segmenter (the weights' scales, the learned CRF kept on an optimized network)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np
import pytest
import torch

import atrous.models as M
from atrous.crf import with_crf_rnn
from atrous.inference import (
    CRFSettings,
    InferenceSettings,
    OptimizedModel,
    Segmenter,
    build_segmenter,
    prepare_model,
)
from atrous.inference.flags import PAPER_SCALES


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return M.build("deeplabv3plus_mobilenetv2", num_classes=3, width_mult=0.25).eval()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    InferenceSettings.add_arguments(p)
    CRFSettings.add_arguments(p)
    return p


def test_settings_generate_their_flags_and_read_them_back() -> None:
    argv = ["--scales", "paper", "--flip", "--tile-size", "65", "--auto-tile", "2"]
    argv += ["--precision", "int8", "--calib", "images", "--crf-bi-w", "5", "--no-crf-rnn"]
    args = _parser().parse_args(argv)
    assert InferenceSettings.from_args(args) == InferenceSettings(
        scales=PAPER_SCALES,
        flip=True,
        tile_size=65,
        auto_tile=2_000_000,
        precision="int8",
        calibration="images",
        device="auto",
    )
    crf = CRFSettings.from_args(args)
    assert crf.params == {"bi_w": 5.0} and not crf.learned and crf.choice() is None
    assert CRFSettings.from_args(_parser().parse_args(["--crf-params", "x.json"])).params_file
    defaults = InferenceSettings.from_args(_parser().parse_args([]))
    assert (defaults.scales, defaults.auto_tile, defaults.device) == (None, 4_000_000, "auto")
    assert InferenceSettings.from_args(_parser().parse_args(["--auto-tile", "0"])).auto_tile is None
    assert CRFSettings.from_args(_parser().parse_args([])).choice() == "auto"


def test_int8_needs_calibration_said_once() -> None:
    with pytest.raises(ValueError, match="--precision int8 needs --calib DATA"):
        InferenceSettings(precision="int8")


def test_the_settings_load_without_torch() -> None:
    code = (
        "import sys, atrous.inference.settings, atrous.serve.options; "
        "assert 'torch' not in sys.modules and 'starlette' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_default_scales_are_the_weights_own() -> None:
    m = _model()
    m.metadata["inference_scales"] = [0.75, 1.0]
    assert build_segmenter(m).scales == Segmenter.from_model(m).scales == (0.75, 1.0)
    assert build_segmenter(m, InferenceSettings(scales=(1.0,))).scales == (1.0,)
    del m.metadata["inference_scales"]
    assert build_segmenter(m).scales == (1.0,)


def test_the_learned_crf_stays_on_top_of_an_optimized_network() -> None:
    crf_model = with_crf_rnn(_model(), {})
    fast = build_segmenter(crf_model, InferenceSettings(precision="fp32"), tile_size=None)
    plain = Segmenter.from_model(crf_model)
    assert isinstance(fast.model, OptimizedModel) and not isinstance(plain.model, OptimizedModel)
    assert fast.config()["crf"] == plain.config()["crf"] and fast.crf is not None
    assert build_segmenter(crf_model, crf=None).crf is None
    image = np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    a, b = fast.predict_proba(image), plain.predict_proba(image)
    assert np.abs(a - b).max() < 1e-3


def test_a_prepared_model_is_prepared_once() -> None:
    prepared = prepare_model(with_crf_rnn(_model(), {}), InferenceSettings(precision="fp32"))
    assert prepare_model(prepared, InferenceSettings(precision="fp32")) is prepared
    assert build_segmenter(prepared, InferenceSettings(precision="fp32")).model is prepared.net
    assert prepared.config["num_classes"] == 3 and prepared.metadata["precision"] == "fp32"


def test_precision_names_mean_one_thing() -> None:
    from atrous.inference.optimize import PRECISIONS, RUNTIME_PRECISIONS

    assert PRECISIONS is RUNTIME_PRECISIONS == ("fp32", "bf16", "int8")
