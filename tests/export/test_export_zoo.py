"""Every model of the zoo, and the torchvision/VainF checkpoints converted from the parity
fixtures, exports to ONNX and .pt2 with dynamic batch, height and width, and matches eager at
two sizes other than the trace size (issue 12). Slow (a minute per model on 2 cores): run by
``make test-slow`` in CI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from recipe import FIXTURES, image, reference_state_dict
from recipe import PARITY_CASES as CASES

import atrous.models as M
import atrous.weights as W
from atrous.export import export
from atrous.models.zoo import list_models
from atrous.weights.exported import load_exported

# A small width where the backbone has one (MobileNetV2); full size otherwise.
OPTIONS = {"mobilenetv2": {"width_mult": 0.5}}
SIZES = ((1, 3, 77, 101), (2, 3, 129, 66))  # neither is the trace size (2, 97, 129)


def _build(name: str) -> torch.nn.Module:
    spec = M.get_spec(name)
    torch.manual_seed(0)
    return M.build(name, num_classes=4, **OPTIONS.get(spec.backbone, {})).eval()


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("fmt", [".onnx", ".pt2"])
def test_every_zoo_model_exports_and_matches_eager(name, fmt, tmp_path) -> None:
    model = _build(name)
    report = export(model, tmp_path / f"m{fmt}")
    assert all(c["ok"] for c in report.checks), report.checks
    exported = load_exported(tmp_path / f"m{fmt}")
    for shape in SIZES:
        x = torch.randn(*shape)
        with torch.no_grad():
            ref, got = model(x)["out"], exported(x)["out"]
        assert got.shape == ref.shape
        assert float((got - ref).abs().max() / ref.abs().max()) < 1e-4, (name, shape)


@pytest.mark.slow
@pytest.mark.parametrize(("source", "fixture", "arch"), CASES, ids=[c[1] for c in CASES])
def test_converted_reference_checkpoints_export_with_reference_parity(
    source, fixture, arch, tmp_path
) -> None:
    """torchvision/VainF weights → atrous → ONNX still give the reference's own outputs: the
    parity fixtures' inputs through ONNX Runtime, within 1e-4 of the reference (relative)."""
    model = W.load(reference_state_dict(source, fixture))
    export(model, tmp_path / "m.onnx")
    exported = load_exported(tmp_path / "m.onnx")
    ref = np.load(FIXTURES / source / f"{fixture}.npz")
    for name, shape in (("a", (1, 3, 129, 129)), ("b", (2, 3, 97, 131))):
        with torch.no_grad():
            full = exported(torch.from_numpy(image(shape)))["out"].numpy()
        for kind, ours in (("s8", full[:, :, ::8, ::8]), ("mean", full.mean(axis=(2, 3)))):
            theirs = ref[f"{name}_out_{kind}"]
            assert np.abs(ours - theirs).max() / np.abs(theirs).max() < 1e-4, (fixture, name)
