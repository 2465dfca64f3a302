"""A corpus of broken and hostile checkpoint files, for tests that feed them through
``atrous.weights.load`` or the CLI (``atrous predict`` / ``atrous eval``).

:func:`write_checkpoint_corpus` writes the files and returns, per file name, a substring
that the error for that file must contain. ``evil.pth`` and ``evil_raw.pth`` would create
``folder / MARKER_NAME`` if their pickle ever ran: that file must never exist.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shlex
from pathlib import Path

import torch
from safetensors.torch import save_file

import atrous.models as M
import atrous.weights as W

MARKER_NAME = "EVIL_RAN"
EVIL_GLOBAL = f"{os.system.__module__}.{os.system.__name__}"  # posix.system on Linux


class Evil:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def tiny_model(num_classes: int = 3) -> M.DeepLab:
    """A small DeepLab (MobileNetV2 at width 0.25, ~1M parameters)."""
    torch.manual_seed(0)
    return M.build("deeplabv3_mobilenetv2", num_classes=num_classes, width_mult=0.25).eval()


def _safetensors(path: Path, model: M.DeepLab, **changes: str) -> None:
    """``model`` saved as atrous writes it, with metadata entries replaced by ``changes``."""
    W.save(model, path)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta.update(changes)
    save_file(tensors, str(path), metadata=meta)


def write_checkpoint_corpus(folder: Path) -> dict[str, str]:
    """Write the corpus into ``folder``; returns {file name: substring of its error}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_model()
    sd = model.state_dict()
    marker = folder / MARKER_NAME

    (folder / "not_a_model.pth").write_text("this is a text file, not a checkpoint\n")
    (folder / "empty.pth").write_bytes(b"")
    whole = folder / "whole.pth.tmp"
    torch.save(sd, whole)
    data = whole.read_bytes()
    whole.unlink()
    (folder / "truncated.pth").write_bytes(data[: len(data) // 2])
    torch.save(Evil(marker), folder / "evil.pth")
    (folder / "evil_raw.pth").write_bytes(pickle.dumps(Evil(marker)))
    torch.save(
        {"args": argparse.Namespace(lr=0.01, epochs=30), "model": sd}, folder / "namespace.pth"
    )

    cfg = json.dumps(model.config)
    _safetensors(folder / "bad_json.safetensors", model, config=cfg.replace(", ", " ", 1))
    cfg_arch = {**model.config, "arch": "deeplabv3_mobilenetv4"}
    _safetensors(
        folder / "unknown_arch.safetensors",
        model,
        arch="deeplabv3_mobilenetv4",
        config=json.dumps(cfg_arch),
    )
    cfg_classes = {**model.config, "num_classes": 0}
    _safetensors(
        folder / "bad_num_classes.safetensors",
        model,
        num_classes="0",
        config=json.dumps(cfg_classes),
    )
    (folder / "garbage.safetensors").write_bytes(b"\x07garbage!" * 64)

    return {
        "not_a_model.pth": "neither a zip archive nor a pickle",
        "empty.pth": "empty",
        "truncated.pth": "truncated or corrupt",
        "evil.pth": EVIL_GLOBAL,
        "evil_raw.pth": EVIL_GLOBAL,
        "namespace.pth": "argparse.Namespace",
        "bad_json.safetensors": "metadata 'config': malformed JSON",
        "unknown_arch.safetensors": "did you mean 'deeplabv3_mobilenetv2'",
        "bad_num_classes.safetensors": "num_classes=0",
        "garbage.safetensors": "not a safetensors file",
    }
