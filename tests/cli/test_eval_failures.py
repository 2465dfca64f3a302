"""The failure policy in ``atrous eval`` and :func:`atrous.evaluation.evaluate` (issue 11): a bad
pair is reported in one line and left out of the scores, the others are scored exactly as
without it, the skipped items are counted in ``metrics.json``, and the exit status is 1;
``--fail-fast``; ``--palette-check`` for VOC-layout masks drawn with another palette."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import atrous.models as M
import atrous.weights as W
from atrous.cli import main
from atrous.data import DatasetError, build_dataset
from atrous.evaluation import evaluate
from atrous.inference import Segmenter
from tests.bad_datasets import FOLDER, VOC, write_dataset_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("corpus")
    return root, write_dataset_corpus(root)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[int, Path]:
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("w")
    return {
        n: W.save(
            M.build("deeplabv3_mobilenetv2", num_classes=n, norm="gn"), d / f"m{n}.safetensors"
        )
        for n in (3, 21)
    }


def _eval(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(["eval", *args, "--no-progress", "--trimap-widths", "none", "--device", "cpu"])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_bad_pairs_are_skipped_counted_and_the_rest_scored_as_without_them(
    tmp_path: Path, corpus, weights, capsys
) -> None:
    root, expected = corpus
    folder_bad = {k: v for k, v in expected.items() if k.startswith("bad_")}
    out = tmp_path / "ev"
    args = [str(weights[3]), "--data", str(root / FOLDER), "--split", "all"]
    rc, stdout, err = _eval([*args, "--out", str(out)], capsys)
    assert rc == 1 and "Traceback" not in err
    errors = [ln for ln in err.splitlines() if ": error: " in ln]
    assert len(errors) == len(folder_bad)
    for name, problem in folder_bad.items():
        (line,) = [ln for ln in errors if f"/{name}: " in ln]
        assert problem in line
    n_bad = len(folder_bad)
    n_good = len(list((root / FOLDER / "images").glob("good_*")))
    assert f"{n_good} images, {n_bad} skipped" in stdout
    assert f"{n_good + n_bad} item(s): {n_good} evaluated, {n_bad} failed:\n" in err
    res = json.loads((out / "metrics.json").read_text())
    assert res["num_images"] == n_good and res["num_skipped"] == n_bad
    assert {Path(s["item"]).name for s in res["skipped"]} == set(folder_bad)
    assert res["metadata"]["dataset"]["num_skipped"] == n_bad

    clean = tmp_path / "clean"  # the good pairs alone: the same confusion matrix
    shutil.copytree(root / FOLDER, clean)
    for name in folder_bad:
        for p in clean.rglob(Path(name).stem + ".*"):
            p.unlink()
    clean_args = [str(weights[3]), "--data", str(clean), "--split", "all"]
    rc, _, _ = _eval([*clean_args, "--out", str(tmp_path / "ev_clean")], capsys)
    assert rc == 0
    ref = json.loads((tmp_path / "ev_clean" / "metrics.json").read_text())
    assert ref["num_skipped"] == 0 and ref["skipped"] == []
    assert res["confusion_matrix"] == ref["confusion_matrix"]

    rc, _, err = _eval([*args, "--fail-fast"], capsys)
    assert rc == 1 and "stopped at the first failure (--fail-fast)" in err
    assert "bad_image.jpg" in err  # the first bad item, in the dataset's order


def test_palette_check_for_voc_masks_from_an_annotation_tool(corpus, weights, capsys) -> None:
    root, expected = corpus
    args = [str(weights[21]), "--data", str(root / VOC), "--split", "train"]
    rc, _, err = _eval(args, capsys)  # default: every mask is refused, nothing to score
    assert rc == 2 and "no image was evaluated (3 item(s) failed)" in err
    assert err.count('palette_check="off"') >= 2
    rc, stdout, err = _eval([*args, "--palette-check", "off"], capsys)
    assert rc == 1  # the indices are read; the one mask of the wrong size is still refused
    assert "2 images, 1 skipped" in stdout
    (line,) = [ln for ln in err.splitlines() if ": error: " in ln]
    assert "cvat_size.png" in line and expected["cvat_size.png"] in line
    rc, _, err = _eval([*args, "--palette-check", "warn"], capsys)
    assert rc == 1 and "reading the indices anyway" in err


class _FailsOnBright(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if (x.flatten(1).mean(1) > 1.5).any():
            raise RuntimeError("simulated kernel failure")
        return self.net(x)


def test_evaluate_api_raises_by_default_and_skips_on_request(corpus) -> None:
    root, expected = corpus
    ds = build_dataset("folder", root / FOLDER, None, classes_file=None)
    torch.manual_seed(0)
    net = M.build("deeplabv3_mobilenetv2", num_classes=3, norm="gn").eval()
    seg = Segmenter(net)
    with pytest.raises(DatasetError, match=r"bad_image\.jpg"):
        evaluate(seg, ds, 3, trimap_widths=None)
    seen: list[tuple[str, str]] = []
    r = evaluate(seg, ds, 3, trimap_widths=None, on_error=lambda i, p: seen.append((i, p)))
    n_bad = len([n for n in expected if n.startswith("bad_")])
    assert r.num_images == len(ds) - n_bad and len(r.skipped) == n_bad == len(seen)
    assert r.to_dict()["num_skipped"] == n_bad
    assert evaluate(seg, ds, 3, trimap_widths=None, on_error="skip").skipped == r.skipped
    with pytest.raises(ValueError, match="on_error must be"):
        evaluate(seg, ds, 3, on_error="ignore")


def test_a_model_failure_on_one_item_skips_only_that_item() -> None:
    torch.manual_seed(0)
    net = M.build("deeplabv3_mobilenetv2", num_classes=3, norm="gn").eval()
    rng = np.random.default_rng(0)
    items = [
        (rng.integers(0, 120, (16, 20, 3), dtype=np.uint8), rng.integers(0, 3, (16, 20)))
        for _ in range(4)
    ]
    items[1] = (np.full((16, 20, 3), 255, np.uint8), items[1][1])
    items[3] = (items[3][0], np.zeros((8, 8), np.int64))  # label of the wrong size
    r = evaluate(
        Segmenter(_FailsOnBright(net), batch_size=4), items, 3, trimap_widths=None, on_error="skip"
    )
    assert r.num_images == 2
    assert [s["item"] for s in r.skipped] == ["dataset item 1", "dataset item 3"]
    assert r.skipped[0]["problem"] == "segmentation failed: RuntimeError: simulated kernel failure"
    assert "differ in size" in r.skipped[1]["problem"]
    ref = evaluate(Segmenter(net), [items[0], items[2]], 3, trimap_widths=None)
    np.testing.assert_array_equal(r.confusion.numpy(), ref.confusion.numpy())
