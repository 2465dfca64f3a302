"""``data check`` over a mixed folder reports every bad pair and goes on (issue #11)."""

from __future__ import annotations

from pathlib import Path

from bad_datasets import FOLDER, VOC, write_dataset_corpus

from atrous.data import build_dataset, scan_dataset


def _problems(ds) -> dict[str, str]:
    return {Path(p).name: why for p, why in scan_dataset(ds).problems}


def test_every_bad_folder_pair_is_reported_and_good_ones_load(tmp_path: Path) -> None:
    expected = write_dataset_corpus(tmp_path)
    ds = build_dataset("folder", tmp_path / FOLDER, "")
    found = _problems(ds)
    want = {k: v for k, v in expected.items() if k.startswith("bad_")}
    assert set(found) == set(want)
    for name, text in want.items():
        assert text in found[name], (name, found[name])
    rep = scan_dataset(ds)
    assert rep.loaded == 5 and rep.num_items == 11


def test_voc_tool_palette_rejected_then_read_with_palette_check_off(tmp_path: Path) -> None:
    expected = write_dataset_corpus(tmp_path)
    root = tmp_path / VOC
    found = _problems(build_dataset("voc", root, "train"))
    assert set(found) == {"cvat_000001.png", "cvat_000002.png", "cvat_size.png"}
    for name, why in found.items():
        assert expected[name] in why
    found = _problems(build_dataset("voc", root, "train", palette_check="off"))
    assert list(found) == ["cvat_size.png"]
