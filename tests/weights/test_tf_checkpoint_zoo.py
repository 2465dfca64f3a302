"""The zoo-style DeepLab tarballs of ``shared/reference/tf_deeplab`` (Xception-65, MobileNetV2,
ResNet-50-beta; 8.6-165 MB unpacked), read in place: every name, shape and dtype as its
``*.variables.txt`` lists them, and tensors equal to the reference value rule (``tf_recipe.py``
there, and its copy in this folder). Marked ``shared``: skipped where ``../shared`` is absent."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import tf_recipe

from atrous.weights.tf_checkpoint import list_tf_checkpoint, read_tf_checkpoint

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "tf_deeplab"
pytestmark = [
    pytest.mark.shared,
    pytest.mark.skipif(not SHARED.is_dir(), reason=f"needs the reference fixtures in {SHARED}"),
]
ZOO = ["xception65_v3plus_voc21", "mobilenetv2_v3_voc21", "resnet50beta_v3plus_voc21"]


@pytest.fixture(scope="module")
def reference_recipe() -> ModuleType:
    """The reference's own ``tf_recipe.py``, imported from ``../shared``."""
    spec = importlib.util.spec_from_file_location("shared_tf_recipe", SHARED / "tf_recipe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def variables(zoo: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``name [d0,d1,...] dtype`` per line of ``<zoo>.variables.txt``."""
    out = {}
    for line in (SHARED / f"{zoo}.variables.txt").read_text().splitlines():
        name, dims, dtype = re.fullmatch(r"(\S+) \[([\d,]*)\] (\w+)", line).groups()
        out[name] = (dtype, tuple(int(d) for d in dims.split(",") if d))
    return out


@pytest.mark.parametrize("zoo", ZOO)
def test_zoo_tarball(zoo: str, reference_recipe: ModuleType) -> None:
    tarball = SHARED / f"{zoo}.tar.gz"
    tensors = read_tf_checkpoint(tarball, model_only=False)
    listed = variables(zoo)
    assert {name: (str(a.dtype), a.shape) for name, a in tensors.items()} == listed
    assert tensors["global_step"].shape == () and int(tensors["global_step"]) == 30000
    model = list_tf_checkpoint(tarball)
    assert model == {name: v for name, v in listed.items() if name != "global_step"}
    names = sorted(tensors)
    picks = [*names[::40], max(names, key=lambda n: tensors[n].size), "global_step"]
    for name in picks:
        array = tensors[name]
        want = reference_recipe.value(name, array.shape, array.dtype)
        assert array.tobytes() == want.tobytes(), name
        np.testing.assert_array_equal(tf_recipe.value(name, array.shape, array.dtype), want)


# One output stride per tarball (CI time): the default tests hold all five configurations,
# and benchmarks/tf_parity.py prints the full table from these tarballs.
PARITY = [
    ("xception65_v3plus_voc21", "xception65_v3plus_os16", 16),
    ("mobilenetv2_v3_voc21", "mobilenetv2_v3_os8", 8),
    ("resnet50beta_v3plus_voc21", "resnet50beta_v3plus_os16", 16),
]


@pytest.mark.slow  # the default run proves the same mapping on tests/fixtures/tf_deeplab
@pytest.mark.parametrize("zoo, case, output_stride", PARITY)
def test_zoo_tarball_reproduces_the_official_outputs(
    zoo: str, case: str, output_stride: int
) -> None:
    """What a user does: load the tarball, run the images, compare the full official arrays
    (logits before and after the final resize at every stored size)."""
    import torch

    from atrous import weights

    model = weights.load(SHARED / f"{zoo}.tar.gz", output_stride=output_stride)
    ref, images = np.load(SHARED / f"{case}.npz"), np.load(SHARED / "images.npz")
    mean = torch.tensor(model.metadata["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.metadata["std"]).view(1, 3, 1, 1)
    for key in ref.files:
        what, hw = key.rsplit("_", 1)
        if what not in ("logits", "logits_up"):
            continue
        x = torch.from_numpy(images[f"image_{hw}"]).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            x = (x - mean) / std
            stages = model.backbone(x)
            feats = {role: stages[name] for role, name in model.backbone.roles.items()}
            got = model.head(feats) if what == "logits" else model(x)["out"]
        official = ref[key]
        err = np.abs(got.permute(0, 2, 3, 1).numpy() - official).max() / np.abs(official).max()
        assert err < 1e-4, f"{case} {key}: {err:.2e} of max |official|"
