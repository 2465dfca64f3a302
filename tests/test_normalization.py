"""The one normalization: training crops, inference and CRF-as-RNN's RGB reconstruction agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atrous.data.transforms import Normalize
from atrous.inference.preprocess import Normalizer
from atrous.normalization import Normalization


def test_training_inference_and_inverse_agree():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    norm = Normalization((0.5, 0.4, 0.3), (0.25, 0.2, 0.3))
    train = Normalize(norm.mean, norm.std)({"image": image})["image"]
    infer = Normalizer(norm.mean, norm.std)(image)
    assert torch.equal(train, infer)
    rgb = norm.invert(infer[None])[0]
    assert torch.equal(rgb, torch.from_numpy(image).permute(2, 0, 1).float())


def test_bgr_caffe_style_round_trip_and_metadata():
    caffe = Normalization((104.0, 117.0, 123.0), (1.0, 1.0, 1.0), 1.0, "BGR")
    x = torch.randint(0, 256, (2, 3, 4, 4)).float()
    y = caffe(x)
    assert torch.allclose(y[:, 0], x[:, 2] - 104.0)
    assert torch.equal(caffe.invert(y), x)
    meta = {"mean": [0.1, 0.2, 0.3], "std": [1, 2, 3]}
    assert Normalization.of(meta).mean == (0.1, 0.2, 0.3)
    assert Normalization.of({}).std == Normalization().std  # ImageNet where weights say nothing
    with pytest.raises(ValueError, match="std values must be positive"):
        Normalization((0, 0, 0), (1, 0, 1))
