"""``atrous predict``: palette masks equal Segmenter.predict, bad inputs reported and
skipped, probabilities, output names that do not collide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import atrous.models as M
import atrous.weights as W
from atrous.cli import main
from atrous.data.palettes import voc_colormap
from atrous.inference import Segmenter
from atrous.inference.io import output_names

PALETTE = [[10, 20, 30], [200, 0, 0], [0, 200, 0], [0, 0, 200]]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    model = M.build("deeplabv3_mobilenetv2", num_classes=4, norm="gn")
    return W.save(model, tmp_path_factory.mktemp("m") / "m.safetensors", class_names=list("abcd"))


def _image(path: Path, seed: int, size: tuple[int, int] = (40, 50)) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return img


def test_predict_files_folder_glob_with_bad_inputs(tmp_path: Path, weights: Path, capsys) -> None:
    src = tmp_path / "in"
    imgs = {
        "a/x": _image(src / "a" / "x.png", 0),
        "a/sub/y": _image(src / "a" / "sub" / "y.png", 1, (33, 47)),
        "b/x": _image(src / "b" / "x.png", 2),  # same stem as a/x.png
        "c/z": _image(src / "c" / "z.png", 3),
    }
    (src / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # corrupt
    (src / "c" / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    inputs = [src / "a", src / "b" / "*.png", src / "c" / "z.png", src / "c" / "notes.txt"]
    flags = ["-o", str(out), "--no-progress", "--device", "cpu"]
    rc = main(["predict", str(weights), *map(str, inputs), *flags])
    assert rc == 1
    cap = capsys.readouterr()
    errors = [ln for ln in cap.err.splitlines() if "error" in ln]
    assert len(errors) == 2
    assert any("broken.png" in ln for ln in errors)
    assert any("notes.txt" in ln and "not an image" in ln for ln in errors)
    assert "6 input(s): 4 segmented into" in cap.out and ", 2 failed:\n" in cap.out

    seg = Segmenter(W.load(weights))
    voc = voc_colormap(256)
    for name, img in imgs.items():
        with Image.open(out / f"{name}.png") as im:
            assert im.mode == "P"
            np.testing.assert_array_equal(np.asarray(im), seg.predict(img))
            pal = np.asarray(im.getpalette()[: 4 * 3]).reshape(4, 3)
            np.testing.assert_array_equal(pal, voc[:4])
        with Image.open(out / f"{name}_overlay.jpg") as ov:
            assert ov.size == (img.shape[1], img.shape[0]) and ov.mode == "RGB"
        assert not (out / f"{name}_probs.npy").exists()
    assert not list(out.rglob("broken*")) and not list(out.rglob("notes*"))


def test_predict_probs_and_palette_from_metadata(tmp_path: Path, capsys) -> None:
    torch.manual_seed(2)
    model = M.build("deeplabv3_mobilenetv2", num_classes=4, norm="gn")
    w = W.save(model, tmp_path / "p.safetensors", palette=PALETTE)
    img = _image(tmp_path / "in" / "q.jpg", 5, (31, 45))
    out = tmp_path / "out"
    flags = ["-o", str(out), "--probs", "--overlay-alpha", "1", "--no-progress"]
    rc = main(["predict", str(w), str(tmp_path / "in"), *flags])
    assert rc == 0
    assert "1 segmented into" in (o := capsys.readouterr().out) and ", 0 failed" in o
    decoded = np.asarray(Image.open(tmp_path / "in" / "q.jpg").convert("RGB"))
    expect = Segmenter(W.load(w)).predict(decoded)
    with Image.open(out / "q.png") as im:
        assert im.mode == "P"
        labels = np.asarray(im)
        pal = np.asarray(im.getpalette()[:12]).reshape(4, 3)
    np.testing.assert_array_equal(labels, expect)
    np.testing.assert_array_equal(pal, PALETTE)
    probs = np.load(out / "q_probs.npy")
    assert probs.dtype == np.float16 and probs.shape == (4, *img.shape[:2])
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=5e-3)
    assert (probs.astype(np.float32).argmax(0) == labels).mean() > 0.99
    # alpha 1: the overlay is the class colours alone (up to JPEG loss).
    overlay = np.asarray(Image.open(out / "q_overlay.jpg")).astype(int)
    assert np.abs(overlay - np.asarray(PALETTE)[labels]).mean() < 12


def test_predict_nothing_found_and_bad_alpha(tmp_path: Path, weights: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    inputs = [tmp_path / "empty", tmp_path / "*.jpg", tmp_path / "missing.png"]
    flags = ["-o", str(tmp_path / "out"), "--no-progress"]
    rc = main(["predict", str(weights), *map(str, inputs), *flags])
    assert rc == 2  # nothing to segment: the run could not start
    err = capsys.readouterr().err
    assert "no image or video files" in err and "no file matches" in err and "missing.png" in err
    assert len(err.splitlines()) == 3 and "no image or video to segment" in err
    flags = ["-o", str(tmp_path / "o"), "--overlay-alpha", "2"]
    rc = main(["predict", str(weights), str(tmp_path), *flags])
    assert rc == 2 and "--overlay-alpha" in capsys.readouterr().err


def test_output_names_mirror_paths_and_keep_extensions(tmp_path: Path) -> None:
    files = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg", tmp_path / "b" / "x.png"]
    assert output_names(files) == ["a/x", "b/x_jpg", "b/x_png"]
    assert output_names([tmp_path / "a" / "x.jpg"]) == ["x"]


def test_predict_with_dense_crf(tmp_path: Path) -> None:
    """--crf refines the probabilities: outputs are valid and labels are their argmax."""
    torch.manual_seed(0)
    model = M.build("deeplabv3_mobilenetv2", num_classes=3, norm="gn")
    weights = W.save(model, tmp_path / "m.safetensors")
    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    Image.fromarray((np.random.default_rng(0).random((30, 40, 3)) * 255).astype(np.uint8)).save(img)
    out = tmp_path / "out"
    flags = ["--probs", "--crf", "--crf-iterations", "3", "--no-progress"]
    assert main(["predict", str(weights), str(img), "-o", str(out), *flags]) == 0
    probs = np.load(out / "a_probs.npy").astype(np.float32)
    assert probs.shape == (3, 30, 40)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=2e-3)
    mask = np.array(Image.open(out / "a.png"))
    np.testing.assert_array_equal(mask, probs.argmax(0))
