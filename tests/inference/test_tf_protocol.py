"""The TF model zoo's evaluation protocol (pad to the crop, TF resizes, averaged softmax)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import atrous.models as M
from atrous.inference.tf_protocol import TFEvalProtocol, scale_dimension


@pytest.fixture(scope="module")
def model() -> M.DeepLab:
    torch.manual_seed(0)
    tf_options = {"align_corners": True, "padding": "same", "backbone_eps": 1e-3}
    m = M.build("deeplabv3_mobilenetv2", num_classes=3, atrous_rates=(), **tf_options)
    for bn in m.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.1, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
    return m.eval()


def test_scale_dimension_is_tensorflows() -> None:
    assert [scale_dimension(513, s) for s in (0.5, 0.75, 1.25, 1.75)] == [257, 385, 641, 897]
    assert scale_dimension(97, 0.5) == 49


def test_single_scale_is_the_models_softmax_when_nothing_is_padded(model: M.DeepLab) -> None:
    x = torch.randn(1, 3, 65, 81)
    with torch.no_grad():
        got = TFEvalProtocol(model, crop_size=(33, 33))(x)["out"].exp()
        want = model(x)["out"].softmax(1)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_the_image_is_padded_to_the_crop_at_the_bottom_right(model: M.DeepLab) -> None:
    x = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        got = TFEvalProtocol(model, crop_size=(65, 97))(x)["out"].exp()
        canvas = F.pad(x, (0, 27, 0, 15))
        want = model(canvas)["out"].softmax(1)[..., :50, :70]
    assert got.shape[-2:] == (50, 70)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        unpadded = TFEvalProtocol(model, crop_size=(1, 1))(x)["out"].exp()
    assert (unpadded - got).abs().max() > 1e-4  # image pooling saw the padding


def test_scales_and_flip_average_probabilities(model: M.DeepLab) -> None:
    half = torch.randn(1, 3, 65, 33)
    x = torch.cat([half, half.flip(-1)[..., 1:]], dim=-1)  # mirror-symmetric, 65 x 65
    proto = TFEvalProtocol(model, crop_size=(65, 65), scales=(0.75, 1.0, 1.25), flip=True)
    with torch.no_grad():
        out = proto(x)["out"].exp()
        single = TFEvalProtocol(model, crop_size=(65, 65), scales=(0.75,))(x)["out"].exp()
    torch.testing.assert_close(out.sum(1), torch.ones(1, 65, 65))
    torch.testing.assert_close(out, out.flip(-1), atol=1e-6, rtol=1e-5)  # flip-averaged
    assert (out - single).abs().max() > 1e-4


def test_needs_an_eager_deeplab() -> None:
    with pytest.raises(TypeError, match="eager DeepLab"):
        TFEvalProtocol(torch.nn.Conv2d(3, 3, 1))
