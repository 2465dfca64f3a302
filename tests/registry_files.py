"""Stand-ins for the registry's files, made from the parity fixtures' deterministic weights,
and the environment that points atrous at a test cache and a local server.

* :func:`tf_tarball` — a TF model-zoo style tarball (``<folder>/model.ckpt.index`` and
  ``.data-00000-of-00001``) of a ``tests/fixtures/tf_deeplab`` case, written as TensorFlow
  writes it (``tests/weights/tf_writer.py``), valued by the reference rule (``tf_recipe.py``).
* :func:`torchvision_pth` — a torchvision-named state dict of a parity fixture (``recipe.py``),
  as ``torch.save`` bytes, and :func:`with_file` — a registry entry renamed to such a file
  (its hash prefix is the stand-in's, not the published one).
* :func:`isolate` — ``ATROUS_HOME``/``TORCH_HOME`` in a temporary folder, short timeouts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import sys
import tarfile
from functools import cache
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "weights"))

from recipe import reference_state_dict
from tf_fixtures import write_variables_checkpoint

from atrous.weights import registry
from atrous.weights.entry import Entry

# The registry row each TF fixture stands in for (same architecture and class count).
MNV2_VOC = "tf:mobilenetv2_coco_voc_trainaug"


@cache
def tf_tarball(variables_file: str = "mobilenetv2_v3_voc21.variables.txt") -> bytes:
    """The bytes of a zoo-style ``.tar.gz`` of the fixture checkpoint (global_step included)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp) / "model.ckpt"
        write_variables_checkpoint(prefix, variables_file)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for part in ("model.ckpt.index", "model.ckpt.data-00000-of-00001"):
                data = (Path(tmp) / part).read_bytes()
                info = tarfile.TarInfo(f"deeplabv3_fixture/{part}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()


def damaged(data: bytes) -> bytes:
    """``data`` with one byte changed in the middle (a tarball then fails to inflate, or
    inflates to a tensor whose CRC32C no longer matches)."""
    mid = len(data) // 2
    return data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]


@cache
def torchvision_pth(fixture: str = "deeplabv3_mobilenet_v3_large", backbone: bool = False) -> bytes:
    """``torch.save`` bytes of a torchvision parity state dict (``backbone``: its ImageNet
    backbone part, as torchvision's classification file names it: a MobileNetV3's
    ``backbone.N`` is its classifier's ``features.N``)."""
    sd = reference_state_dict("torchvision", fixture)
    if backbone:
        prefix = "features." if "mobilenet" in fixture else ""
        sd = {
            prefix + k.removeprefix("backbone."): v
            for k, v in sd.items()
            if k.startswith("backbone.")
        }
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


def with_file(entry_name: str, data: bytes, monkeypatch: pytest.MonkeyPatch) -> Entry:
    """Register (for this test) ``entry_name`` renamed to a file of ``data``: the published
    name with the stand-in's SHA-256 prefix. Returns the patched entry."""
    entry = registry.get_weights(entry_name)
    prefix = hashlib.sha256(data).hexdigest()[:8]
    name = entry.file_name.replace(entry.sha256_prefix, prefix)
    url = entry.urls[0].rsplit("/", 1)[0] + "/" + name
    patched = dataclasses.replace(entry, urls=(url,), sha256_prefix=prefix)
    monkeypatch.setitem(registry._BY_NAME, entry_name, patched)
    monkeypatch.setattr(
        registry, "ENTRIES", tuple(patched if e.name == entry_name else e for e in registry.ENTRIES)
    )
    import atrous.weights.hub as hub

    monkeypatch.setattr(hub, "ENTRIES", registry.ENTRIES)
    return patched


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mirror: str | None = None) -> Path:
    """A fresh cache under ``tmp_path`` (returned: ``$ATROUS_HOME``), torchvision's cache
    beside it, no offline flag, ``mirror`` as ``ATROUS_MIRROR``, 1-2 s timeouts."""
    home = tmp_path / "atrous_home"
    monkeypatch.setenv("ATROUS_HOME", str(home))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("ATROUS_OFFLINE", raising=False)
    monkeypatch.setenv("ATROUS_DOWNLOAD_TIMEOUT", "2")
    monkeypatch.setenv("ATROUS_DOWNLOAD_RETRIES", "2")
    monkeypatch.setenv("ATROUS_DOWNLOAD_BACKOFF", "0.05")
    if mirror:
        monkeypatch.setenv("ATROUS_MIRROR", mirror)
    else:
        monkeypatch.delenv("ATROUS_MIRROR", raising=False)
    return home
