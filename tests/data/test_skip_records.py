"""Skip records reach the main process: each sample carries the problems met while serving
it, ``collate`` gathers them into ``batch["skipped"]`` and ``SkipReport.update`` adds them
up, whatever the number of DataLoader workers."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from atrous.data import SkipReport, VOCSegmentation, collate, train_transforms


@pytest.fixture
def voc_one_bad(voc_root: Path) -> Path:
    voc = voc_root / "VOC2012"
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text(
        "2007_000001\n2007_000002\n2007_000003\n"
    )
    (voc / "JPEGImages" / "2007_000002.jpg").write_bytes(b"garbage")
    return voc_root


def test_sample_carries_its_skips_through_transforms(voc_one_bad: Path) -> None:
    ds = VOCSegmentation(
        voc_one_bad, "train", on_error="skip", transforms=train_transforms(8), seed=0
    )
    assert ds[0]["skipped"] == []
    with pytest.warns(UserWarning, match="skipping"):
        s = ds[1]
    (path, problem), *rest = s["skipped"]
    assert not rest and path.endswith("2007_000002.jpg") and "unreadable image" in problem
    assert ds[1]["skipped"] == s["skipped"]  # met again, recorded again (warned once)
    assert len(ds.skip_report) == 1  # the in-process report, as before


@pytest.mark.parametrize("workers", [0, 2])
def test_skips_reach_the_main_process_with_workers(voc_one_bad: Path, workers: int) -> None:
    ds = VOCSegmentation(voc_one_bad, "train", on_error="skip")
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=collate)
    report = SkipReport()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for batch in loader:
            assert isinstance(batch["skipped"], list)
            report.update(batch["skipped"])
    assert len(report) == 1
    (path,) = report.skipped
    assert path.endswith("2007_000002.jpg") and "2007_000002.jpg" in str(report)


def test_skip_report_add_and_update_keep_the_first_problem() -> None:
    report = SkipReport()
    assert report.add("a.jpg", "unreadable image") is True
    assert report.add("a.jpg", "something else") is False
    report.update([("b.png", "mask file not found"), ("a.jpg", "again")])
    assert report.skipped == {"a.jpg": "unreadable image", "b.png": "mask file not found"}


def test_collate_gathers_skips_and_defaults_to_empty() -> None:
    image = torch.zeros(3, 4, 4)
    batch = collate(
        [
            {"image": image, "name": "x", "skipped": [("bad.jpg", "unreadable image")]},
            {"image": image, "name": "y", "skipped": []},
        ]
    )
    assert batch["skipped"] == [("bad.jpg", "unreadable image")] and batch["name"] == ["x", "y"]
    assert collate([{"image": image, "name": "z"}])["skipped"] == []


def test_synthetic_samples_have_no_skips() -> None:
    from atrous.data import build_dataset

    ds = build_dataset("synthetic", size=16, length=2)
    assert ds[0]["skipped"] == [] and collate([ds[0], ds[1]])["skipped"] == []
