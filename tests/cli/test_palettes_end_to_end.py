"""A model trained on a dataset draws with that dataset's published colours: the palette is
saved with the weights and every overlay (``atrous predict``) uses it (issue 28, item 5)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors import safe_open

from atrous.cli import main
from atrous.data.palettes import CAMVID_PALETTE, VOC_PALETTE


def _camvid_root(root: Path) -> Path:
    """A CamVid-layout folder (SegNet's release): 4 train and 2 val frames, 11 classes."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for i in range(n):
            name = f"0001TP_{split}{i:03d}"
            (root / split).mkdir(parents=True, exist_ok=True)
            (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
            image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / split / f"{name}.png")
            mask = rng.integers(0, 12, (40, 48), dtype=np.uint8)  # 11 = void
            Image.fromarray(mask, mode="L").save(root / f"{split}annot" / f"{name}.png")
    return root


def _tiny_camvid_config(path: Path, root: Path) -> Path:
    cfg = {
        "model": "deeplabv3_mobilenetv2",
        "model_options": {"norm": "gn", "width_mult": 0.5},
        "dataset": "camvid",
        "data_root": str(root),
        "train_split": "train",
        "val_split": "",
        "crop_size": 33,
        "batch_size": 2,
        "iterations": 2,
        "lr": 0.01,
        "warmup_iters": 0,
        "num_workers": 0,
        "log_every": 1,
        "val_every": 1000,
        "ckpt_every": 1000,
        "device": "cpu",
    }
    path.write_text(json.dumps(cfg))
    return path


def test_camvid_model_saves_and_draws_camvid_colours(tmp_path: Path) -> None:
    root = _camvid_root(tmp_path / "camvid")
    cfg = _tiny_camvid_config(tmp_path / "camvid.json", root)
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    weights = run / "model.safetensors"
    with safe_open(str(weights), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["palette"]) == CAMVID_PALETTE.tolist()

    image = np.random.default_rng(5).integers(0, 256, (36, 44, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "street.png")
    out = tmp_path / "pred"
    flags = ["-o", str(out), "--overlay-alpha", "1", "--no-progress", "--device", "cpu"]
    assert main(["predict", str(weights), str(tmp_path / "street.png"), *flags]) == 0
    with Image.open(out / "street.png") as im:
        labels = np.asarray(im)
        drawn = np.asarray(im.getpalette()[: 11 * 3]).reshape(11, 3)
    np.testing.assert_array_equal(drawn, CAMVID_PALETTE)  # sky (0) is grey, not VOC's black
    # alpha 1: the overlay is the predicted classes' CamVid colours (up to JPEG loss).
    overlay = np.asarray(Image.open(out / "street_overlay.jpg")).astype(int)
    camvid_error = np.abs(overlay - CAMVID_PALETTE.astype(int)[labels]).mean()
    voc_error = np.abs(overlay - VOC_PALETTE.astype(int)[labels]).mean()
    assert camvid_error < 12 and camvid_error < voc_error
