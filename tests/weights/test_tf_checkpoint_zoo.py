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
