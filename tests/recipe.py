"""Deterministic, machine-independent weights and inputs for parity fixtures.

Implements the specification of the reference fixtures (splitmix64 over CRC-32 of the
parameter name in the reference implementation's naming), so tests can rebuild the exact
state dicts the torchvision and VainF outputs in ``tests/fixtures/reference`` came from.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import torch

_MASK = 0xFFFFFFFFFFFFFFFF

FIXTURES = Path(__file__).parent / "fixtures" / "reference"
# (source, fixture, atrous arch) of every parity fixture.
PARITY_CASES = [
    ("torchvision", "deeplabv3_resnet50", "deeplabv3_resnet50"),
    ("torchvision", "deeplabv3_resnet101", "deeplabv3_resnet101"),
    ("torchvision", "deeplabv3_mobilenet_v3_large", "deeplabv3_mobilenetv3_large"),
    ("vainf", "deeplabv3plus_resnet50_os16", "deeplabv3plus_resnet50"),
    ("vainf", "deeplabv3plus_resnet101_os16", "deeplabv3plus_resnet101"),
    ("vainf", "deeplabv3plus_mobilenet_os16", "deeplabv3plus_mobilenetv2"),
    ("vainf", "deeplabv3_mobilenet_os16", "deeplabv3_mobilenetv2"),
]


def uniform(n: int, seed: int) -> np.ndarray:
    """``n`` floats in [0, 1) from splitmix64 at positions seed, seed+1, …, as float64."""
    with np.errstate(over="ignore"):
        z = (np.arange(n, dtype=np.uint64) + np.uint64(seed)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)


def value(key: str, shape: tuple[int, ...]) -> np.ndarray:
    """The tensor for entry ``key``: Kaiming-uniform for ndim >= 2, norm scales in
    [0.25, 0.75), running variances in [0.5, 1.5), means and biases in [-0.1, 0.1)."""
    n = int(np.prod(shape)) if len(shape) else 1
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, dtype=np.int64)
    u = uniform(n, zlib.crc32(key.encode()))
    if len(shape) >= 2:
        v = (u * 2.0 - 1.0) * np.sqrt(6.0 / int(np.prod(shape[1:])))
    elif key.endswith("running_var"):
        v = 0.5 + u
    elif key.endswith(".weight"):
        v = 0.25 + 0.5 * u
    else:
        v = (u - 0.5) * 0.2
    return v.reshape(shape).astype(np.float32)


def image(shape: tuple[int, ...], seed: int = 12345) -> np.ndarray:
    """A float32 batch in [-2, 2), like a normalized image."""
    return (uniform(int(np.prod(shape)), seed) * 4.0 - 2.0).reshape(shape).astype(np.float32)


def state_dict(entries: list[tuple[str, list[int], str]]) -> dict[str, torch.Tensor]:
    """A state dict for (name, shape, dtype) entries as the fixtures' JSON lists them."""
    return {name: torch.from_numpy(value(name, tuple(shape))) for name, shape, _ in entries}


def reference_state_dict(source: str, fixture: str) -> dict[str, torch.Tensor]:
    """The recipe state dict (reference names) of a parity fixture."""
    meta = json.loads((FIXTURES / source / f"{fixture}.json").read_text())
    return state_dict(meta["state_dict"])


def to_reference_names(sd: dict[str, torch.Tensor], source: str, arch: str) -> dict:
    """Rename an atrous state dict to torchvision's or VainF's names (inverse of
    ``atrous.weights.convert``), to make reference-format checkpoints in tests."""
    from atrous.models import get_spec

    spec = get_spec(arch)
    out = {}
    for k, v in sd.items():
        if spec.backbone == "mobilenetv3_large":
            k = k.replace("backbone.features.", "backbone.")
        if spec.backbone == "mobilenetv2":
            idx = int(k.split(".")[2]) if k.startswith("backbone.features.") else -1
            part = "low_level_features" if idx < 4 else "high_level_features"
            k = k.replace("backbone.features.", f"backbone.{part}.")
        head = "classifier." if source == "torchvision" else "classifier.classifier."
        if spec.version == "v3+":
            k = k.replace("head.project.", "classifier.project.")
            k = k.replace("head.aspp.", "classifier.aspp.")
            k = k.replace("head.fuse.0.0.", "classifier.classifier.0.")
            k = k.replace("head.fuse.0.1.", "classifier.classifier.1.")
            k = k.replace("head.classifier.", "classifier.classifier.3.")
        else:
            k = k.replace("head.aspp.", head + "0.").replace("head.conv.0.", head + "1.")
            k = k.replace("head.conv.1.", head + "2.").replace("head.classifier.", head + "4.")
        out[k] = v
    return out
