"""ServerSettings composes the inference settings (issue 26): serve's --scales, --flip,
--tile-size, --precision and --calib are InferenceSettings' flags, and the service builds its
Segmenters as atrous predict does (the weights' scales, the learned CRF kept)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

import atrous.models as M
from atrous.cli import build_parser
from atrous.crf import with_crf_rnn
from atrous.inference import InferenceSettings, OptimizedModel
from atrous.serve.app import SegmentService
from atrous.serve.options import FORMATS, RESPONSE_FORMATS, ServerSettings


def _serve_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", "model.safetensors", *argv])


def test_server_settings_compose_inference_settings() -> None:
    s = ServerSettings(scales=(0.5, 1.0), flip=True, max_batch=2)
    assert s.inference == InferenceSettings(scales=(0.5, 1.0), flip=True)
    assert (s.scales, s.flip, s.tile_size, s.max_batch) == ((0.5, 1.0), True, None, 2)
    assert ServerSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert ServerSettings().scales == (1.0,)
    assert ServerSettings(crf_params="best_crf.json").crf
    with pytest.warns(DeprecationWarning, match="threads"):
        ServerSettings(threads=2)
    with pytest.raises(TypeError, match="unknown setting"):
        ServerSettings(colour=1)


def test_serve_flags_come_from_the_settings() -> None:
    args = _serve_args("--flip", "--tile-size", "65", "--precision", "fp32", "--max-batch", "3")
    s = ServerSettings.from_args(args)
    assert s.inference == InferenceSettings(flip=True, tile_size=65, precision="fp32")
    assert (s.max_batch, s.max_pixels, s.crf) == (3, 40_000_000, False)
    assert ServerSettings.from_args(_serve_args("--crf-params", "x.json")).crf_allowed
    with pytest.raises(ValueError, match="--precision int8 needs --calib DATA"):
        ServerSettings.from_args(_serve_args("--precision", "int8"))


def test_the_service_runs_what_predict_runs() -> None:
    torch.manual_seed(0)
    model = M.build("deeplabv3plus_mobilenetv2", num_classes=3, width_mult=0.25).eval()
    model.metadata["inference_scales"] = [0.75, 1.0]
    crf_model = with_crf_rnn(model, {})
    settings = ServerSettings.from_args(_serve_args("--precision", "fp32"))
    service = SegmentService(crf_model, settings)
    assert service.settings.scales == (0.75, 1.0)  # the weights' own, as in predict
    seg = service.segmenter(service.settings.defaults().inference_key)
    assert isinstance(seg.model, OptimizedModel) and seg.crf is not None
    assert service.card()["precision"] == "fp32"


def test_response_formats_keep_their_old_name() -> None:
    assert FORMATS is RESPONSE_FORMATS == ("png", "raw", "overlay", "json")
