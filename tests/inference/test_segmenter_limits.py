"""Inputs that used to stop a batch: tiny images on GroupNorm models, and huge photos."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import atrous
from atrous.inference import AUTO_TILE_SIZE, Segmenter


@pytest.fixture(scope="module")
def gn_model():
    return atrous.models.build(
        "deeplabv3plus_mobilenetv2", num_classes=3, norm="gn", width_mult=0.5
    )


@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (16, 16)])
def test_tiny_images_are_padded_to_the_model_minimum(gn_model, hw):
    # Before: "Expected more than 1 value per channel when training" from GroupNorm on a
    # 1x1 feature map, and the whole `atrous predict` run stopped.
    seg = Segmenter.from_model(gn_model)
    assert seg.min_size == 17  # output stride 16 + 1
    assert seg.predict(np.zeros((*hw, 3), np.uint8)).shape == hw
    with pytest.raises(ValueError, match="per channel"):
        Segmenter(gn_model).predict(np.zeros((*hw, 3), np.uint8))


def test_padding_leaves_large_enough_inputs_alone(gn_model):
    image = np.random.default_rng(0).integers(0, 256, (40, 36, 3), dtype=np.uint8)
    a = Segmenter.from_model(gn_model).logits(image)
    b = Segmenter(gn_model).logits(image)
    assert (a - b).abs().max() == 0


def test_auto_tile_above_the_pixel_budget_said_once(gn_model):
    seg = Segmenter.from_model(gn_model, auto_tile=200_000)
    small = np.zeros((300, 400, 3), np.uint8)  # 0.12 MP: whole image
    big = np.zeros((600, 700, 3), np.uint8)  # 0.42 MP: tiled
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seg.predict(small)
        assert seg.predict(big).shape == (600, 700)
        seg.predict(big)
    said = [w for w in caught if "tiles" in str(w.message)]
    assert len(said) == 1 and "513" in str(said[0].message)
    assert seg._tile_for(300, 400) is None and seg._tile_for(600, 700) == AUTO_TILE_SIZE
    assert seg.config()["auto_tile"] == 200_000
