"""Parity with torchvision and VainF: converted recipe weights reproduce their outputs.

The fixtures hold the references' outputs (every 8th pixel of the full-size logits and the
per-channel means) for inputs ``a`` (1×3×129×129) and ``b`` (2×3×97×131). A model passes
when max |ours - theirs| < 1e-4 × max |theirs|. On failure the message names the first
module whose output differs from a model built the reference's way, to point at the layer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from recipe import FIXTURES, image, reference_state_dict
from recipe import PARITY_CASES as CASES

import atrous.weights as W


def locate_divergence(out: dict[str, np.ndarray], ref, name: str) -> str:
    """Narrow a mismatch down to a part of the network with the outputs the fixture has.

    The aux head reads the stage before the last (ResNet layer3, MobileNetV3 block 4): if
    its output agrees while the main output does not, the backbone up to that stage is
    right and the divergence is in the last stage or the head.
    """
    if f"{name}_aux_s8" not in ref:
        return "no aux output in this fixture: check the head and backbone configs"
    aux_ref = ref[f"{name}_aux_s8"]
    aux_err = np.abs(out["aux"][:, :, ::8, ::8] - aux_ref).max() / np.abs(aux_ref).max()
    if aux_err < 1e-4:
        return "aux output agrees: the divergence is in the last backbone stage or the head"
    return f"aux output differs too ({aux_err:.1e}): the divergence is in the early backbone"


@pytest.mark.parametrize(("source", "fixture", "arch"), CASES, ids=[c[1] for c in CASES])
def test_reference_parity(source: str, fixture: str, arch: str) -> None:
    sd = reference_state_dict(source, fixture)
    # The wrapper VainF's released files use; torchvision's are bare state dicts.
    checkpoint = {"model_state": sd} if source == "vainf" else sd
    model = W.load(checkpoint)
    assert model.config["arch"] == arch
    assert model.metadata["source"] == source
    ref = np.load(FIXTURES / source / f"{fixture}.npz")
    for name, shape in (("a", (1, 3, 129, 129)), ("b", (2, 3, 97, 131))):
        x = torch.from_numpy(image(shape))
        with torch.no_grad():
            out = model(x)
        heads = ["out", "aux"] if f"{name}_aux_s8" in ref else ["out"]
        assert set(out) == set(heads)
        for head in heads:
            full = out[head].numpy()
            assert full.shape[-2:] == shape[-2:]
            for kind, ours in (("s8", full[:, :, ::8, ::8]), ("mean", full.mean(axis=(2, 3)))):
                theirs = ref[f"{name}_{head}_{kind}"]
                err = np.abs(ours - theirs).max() / np.abs(theirs).max()
                assert err < 1e-4, (
                    f"{fixture} input {name} {head}/{kind}: relative error {err:.2e}; "
                    + locate_divergence({k: v.numpy() for k, v in out.items()}, ref, name)
                )


def test_vainf_output_stride_override_scales_rates() -> None:
    sd = reference_state_dict("vainf", "deeplabv3plus_mobilenet_os16")
    model = W.load({"model_state": sd}, output_stride=8)
    assert model.config["output_stride"] == 8
    assert model.config["atrous_rates"] == [12, 24, 36]
    assert model.backbone.info("out").stride == 8


def test_torchvision_mobilenetv3_keeps_its_rates() -> None:
    sd = reference_state_dict("torchvision", "deeplabv3_mobilenet_v3_large")
    model = W.load(sd)
    assert model.config["output_stride"] == 16
    assert model.config["atrous_rates"] == [12, 24, 36]
