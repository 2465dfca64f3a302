"""The failure policy in ``atrous predict`` (issue 11): a folder with any mix of bad files gives
output for every good file, one line per bad file, a summary and exit status 1; a model or
CRF failure on one image costs only that image, not its batch; ``--fail-fast``; large images
tiled automatically (said once); ``--max-pixels``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import atrous.models as M
import atrous.weights as W
from atrous.cli import main
from atrous.inference import AUTO_TILE_SIZE, Segmenter
from atrous.inference.io import output_names, segment_files
from tests.bad_inputs import EXPECTED_WARNINGS, write_image_corpus


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    model = M.build("deeplabv3_mobilenetv2", num_classes=3, norm="gn")
    return W.save(model, tmp_path_factory.mktemp("w") / "m.safetensors")


def _predict(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(["predict", *args, "--no-progress", "--device", "cpu"])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_corpus_folder_gives_every_good_file_and_one_line_per_bad(
    tmp_path: Path, weights: Path, capsys
) -> None:
    outcome = write_image_corpus(tmp_path / "in")
    good = sorted(n for n, o in outcome.items() if o is None)
    bad = sorted(n for n, o in outcome.items() if o is not None)
    assert len(good) >= 15 and len(bad) >= 7
    rc, out, err = _predict([str(weights), str(tmp_path / "in"), "-o", str(tmp_path / "o")], capsys)
    assert rc == 1
    assert "Traceback" not in err + out
    errors = [ln for ln in err.splitlines() if ": error: " in ln]
    assert len(errors) == len(bad)  # one line per bad file, nothing else is an error
    for name in bad:
        (line,) = [ln for ln in errors if f"/{name}: " in ln]
        assert outcome[name] in line, line
    names = dict(zip(outcome, output_names([tmp_path / "in" / n for n in outcome])))
    for name in good:
        with Image.open(tmp_path / "o" / f"{names[name]}.png") as im:
            assert im.mode == "P"
        assert (tmp_path / "o" / f"{names[name]}_overlay.jpg").is_file()
    made = {p.name for p in (tmp_path / "o").iterdir()}
    assert len(made) == 2 * len(good)
    for name, text in EXPECTED_WARNINGS.items():  # losses worth knowing are said, as warnings
        assert any(": warning: " in ln and name in ln and text in ln for ln in err.splitlines())
    head, *listed = out.strip().splitlines()[-5:]  # a few failures, one per line, and the rest
    assert f"{len(outcome)} input(s): {len(good)} segmented" in head
    assert head.endswith(f"{len(bad)} failed:")
    assert all(ln.startswith("  ") and ln.split(": ")[0].endswith(tuple(bad)) for ln in listed[:3])
    assert listed[3] == f"  ... and {len(bad) - 3} more (see the errors above)"


def test_fail_fast_stops_at_the_first_bad_file(tmp_path: Path, weights: Path, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "c.png"):
        Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(src / name)
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    args = [str(weights), str(src), "-o", str(tmp_path / "o")]
    rc, _, err = _predict([*args, "--fail-fast"], capsys)
    assert rc == 1
    assert "stopped at the first failure (--fail-fast)" in err and "b.png" in err
    assert not (tmp_path / "o" / "c.png").exists()  # the run stopped there
    rc, _, _ = _predict(args, capsys)
    assert rc == 1 and (tmp_path / "o" / "c.png").exists()  # without it, it goes on


class _FailsOnBright(nn.Module):
    """A model that fails (as a kernel would) whenever its batch holds a bright image."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls.append(x.shape[0])
        if (x.flatten(1).mean(1) > 1.5).any():
            raise RuntimeError("simulated kernel failure")
        return self.net(x)


def test_a_failing_image_costs_only_itself_not_its_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = M.build("deeplabv3_mobilenetv2", num_classes=3, norm="gn").eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 120, (24, 32, 3), dtype=np.uint8) for _ in range(4)]
    images[2] = np.full((24, 32, 3), 255, np.uint8)  # the one the model fails on
    files = []
    for i, im in enumerate(images):
        files.append(tmp_path / "in" / f"{i}.png")
        files[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(im).save(files[-1])
    model = _FailsOnBright(net)
    seg = Segmenter(model, batch_size=4)
    results = list(segment_files(seg, files, tmp_path / "o", np.zeros((256, 3), np.uint8)))
    assert [r.ok for r in results] == [True, True, False, True]
    assert results[2].problem == "segmentation failed: RuntimeError: simulated kernel failure"
    assert model.calls[0] == 4 and model.calls[1:] == [1, 1, 1, 1]  # batch, then one by one
    ref = Segmenter(net)
    for i in (0, 1, 3):
        with Image.open(tmp_path / "o" / f"{i}.png") as im:
            np.testing.assert_array_equal(np.asarray(im), ref.predict(images[i]))


def test_predict_many_returns_errors_in_order() -> None:
    torch.manual_seed(0)
    net = M.build("deeplabv3_mobilenetv2", num_classes=3, norm="gn").eval()
    seg = Segmenter(_FailsOnBright(net), batch_size=2)
    good = np.zeros((16, 16, 3), np.uint8)
    items = [good, np.full((16, 16, 3), 255, np.uint8), "not an image", good]
    out = list(seg.predict_many(items, errors="return"))
    assert isinstance(out[1], RuntimeError) and isinstance(out[2], Exception)
    assert out[0].shape == (16, 16) and out[3].shape == (16, 16)
    with pytest.raises(RuntimeError, match="simulated"):
        list(seg.predict_many(items[:2]))  # the default still raises
    with pytest.raises(ValueError, match="errors must be"):
        next(seg.predict_many(items, errors="skip"))


def test_a_crf_failure_is_the_image_s_failure(tmp_path: Path, weights: Path) -> None:
    def crf(image: np.ndarray, probs: np.ndarray) -> np.ndarray:
        if image.shape[0] == 17:
            raise MemoryError()
        return probs

    files = []
    for i, h in enumerate((16, 17, 16)):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(np.zeros((h, 20, 3), np.uint8)).save(files[-1])
    seg = Segmenter.from_model(W.load(weights), crf=crf)
    results = list(segment_files(seg, files, tmp_path / "o", np.zeros((256, 3), np.uint8)))
    assert [r.ok for r in results] == [True, False, True]
    assert "out of memory" in results[1].problem and "--tile-size" in results[1].problem


def test_an_unexpected_reader_error_names_the_file(tmp_path: Path, weights: Path, monkeypatch):
    import atrous.inference.io as io

    real = io.read_image

    def flaky(path, **kw):
        if Path(path).name == "b.png":
            raise KeyError("tRNS")  # what a reader bug looks like
        return real(path, **kw)

    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / name)
    monkeypatch.setattr(io, "read_image", flaky)
    seg = Segmenter.from_model(W.load(weights))
    files = [tmp_path / "a.png", tmp_path / "b.png"]
    results = list(segment_files(seg, files, tmp_path / "o", np.zeros((256, 3), np.uint8)))
    assert results[0].ok and results[1].problem == "cannot read the image (KeyError: 'tRNS')"


def test_large_images_are_tiled_by_default_and_said_once(
    tmp_path: Path, weights: Path, capsys
) -> None:
    rng = np.random.default_rng(1)
    src = tmp_path / "in"
    src.mkdir()
    tall = [rng.integers(0, 256, (AUTO_TILE_SIZE + 40, 30, 3), dtype=np.uint8) for _ in range(2)]
    for i, im in enumerate(tall):
        Image.fromarray(im).save(src / f"t{i}.png")
    args = [str(weights), str(src), "-o", str(tmp_path / "o")]
    rc, _, err = _predict([*args, "--auto-tile", "0.01"], capsys)  # 10,000-pixel budget
    assert rc == 0
    notes = [ln for ln in err.splitlines() if "note:" in ln]
    assert len(notes) == 1 and "tiles" in notes[0] and "megapixels" in notes[0]
    tiled = Segmenter.from_model(W.load(weights), tile_size=AUTO_TILE_SIZE)
    for i, im in enumerate(tall):
        with Image.open(tmp_path / "o" / f"t{i}.png") as out:
            np.testing.assert_array_equal(np.asarray(out), tiled.predict(im))
    rc, _, err = _predict([*args, "--auto-tile", "0"], capsys)  # 0: never tiles
    assert rc == 0 and "note:" not in err
    # The default budget keeps ordinary photos whole: a 4 MP budget.
    rc, _, err = _predict(args, capsys)
    assert rc == 0 and "note:" not in err


def test_max_pixels_refuses_larger_images(tmp_path: Path, weights: Path, capsys) -> None:
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "big.png")
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(tmp_path / "small.png")
    rc, _, err = _predict(
        [str(weights), str(tmp_path), "-o", str(tmp_path / "o"), "--max-pixels", "1000"], capsys
    )
    assert rc == 1
    assert "big.png: 2000 pixels (50x40), more than the limit 1000" in err
    assert (tmp_path / "o" / "small.png").exists()
