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
    n_good = len(list((tmp_path / FOLDER / "images").glob("good_*")))
    assert n_good == 7 and rep.loaded == n_good and rep.num_items == n_good + len(want)


def test_voc_tool_palette_rejected_then_read_with_palette_check_off(tmp_path: Path) -> None:
    expected = write_dataset_corpus(tmp_path)
    root = tmp_path / VOC
    found = _problems(build_dataset("voc", root, "train"))
    assert set(found) == {"cvat_000001.png", "cvat_000002.png", "cvat_size.png"}
    for name, why in found.items():
        assert expected[name] in why
    found = _problems(build_dataset("voc", root, "train", palette_check="off"))
    assert list(found) == ["cvat_size.png"]


def test_bilevel_and_opaque_grey_alpha_masks_read_as_their_values(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    write_dataset_corpus(tmp_path)
    ds = build_dataset("folder", tmp_path / FOLDER, "")
    by_name = {it.name: it for it in ds.items}
    masks = tmp_path / FOLDER / "masks"
    bilevel = ds.load_item(by_name["good_bilevel"])["mask"]
    np.testing.assert_array_equal(bilevel, np.asarray(Image.open(masks / "good_bilevel.png")))
    assert set(np.unique(bilevel)) == {0, 1}
    la = ds.load_item(by_name["good_la"])["mask"]
    grey = np.asarray(Image.open(masks / "good_la.png").getchannel("L"))
    np.testing.assert_array_equal(la, grey)
    assert set(np.unique(la)) == {0, 2}
