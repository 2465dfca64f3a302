"""``atrous weights list | info | fetch | verify | import``, and a registry name given to a
command that takes weights (``predict``), against a local server (``tests/http_server.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from http_server import FileServer
from PIL import Image
from registry_files import MNV2_VOC, damaged, isolate, tf_tarball

from atrous.cli import main
from atrous.weights import get_weights, list_weights

FILE = get_weights(MNV2_VOC).file_name


def test_list_and_info(tmp_path: Path, monkeypatch, capsys) -> None:
    isolate(monkeypatch, tmp_path)
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in list_weights())
    assert "82.2% mIoU, PASCAL VOC 2012 val" in out
    assert main(["weights", "list", "--json", "--kind", "backbone"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(list_weights("backbone"))
    assert main(["weights", "info", "tf:xception65_cityscapes_trainfine"]) == 0
    info = capsys.readouterr().out
    assert "78.79% mIoU, Cityscapes val (OS 16, eval scales [1.0], no flip" in info
    assert "--output-stride 8 --scales 0.75,1,1.25 --flip" in info  # the 80.42% protocol
    assert "model_zoo.md" in info and "Apache-2.0" in info and "cached       no" in info
    assert main(["weights", "info", "tf:nope"]) == 2
    assert "atrous weights list" in capsys.readouterr().err


def test_fetch_then_verify(tmp_path: Path, monkeypatch, capsys) -> None:
    with FileServer({FILE: tf_tarball()}) as server:
        home = isolate(monkeypatch, tmp_path, server.url)
        assert main(["weights", "fetch", MNV2_VOC, "--no-progress"]) == 0
    cached = home / "weights" / FILE
    assert f"{MNV2_VOC}: {cached}" in capsys.readouterr().out
    assert main(["weights", "verify"]) == 0
    assert "ok   tf:mobilenetv2_coco_voc_trainaug" in capsys.readouterr().out
    cached.write_bytes(damaged(cached.read_bytes()))
    assert main(["weights", "verify", MNV2_VOC, "tf:xception65_coco_voc_trainaug"]) == 1
    out = capsys.readouterr().out
    assert "FAIL tf:mobilenetv2_coco_voc_trainaug" in out and "differs from" in out
    assert "FAIL tf:xception65_coco_voc_trainaug: -: not in the cache" in out


def test_import_a_good_file_then_use_it_offline(tmp_path: Path, monkeypatch, capsys) -> None:
    home = isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("ATROUS_OFFLINE", "1")
    assert main(["weights", "fetch", MNV2_VOC]) == 2
    err = capsys.readouterr().err
    assert f"atrous weights import {FILE}" in err and len(err.strip().splitlines()) == 1
    downloaded = tmp_path / "Downloads" / FILE
    downloaded.parent.mkdir()
    downloaded.write_bytes(tf_tarball())
    assert main(["weights", "import", str(downloaded)]) == 0
    assert "CRC32C of the index and of" in capsys.readouterr().out
    assert (home / "weights" / FILE).read_bytes() == tf_tarball()
    assert main(["weights", "verify"]) == 0
    image = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 56, 3), 128, np.uint8)).save(image)
    assert main(["predict", MNV2_VOC, str(image), "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "photo.png").is_file()
    assert main(["weights", "verify", MNV2_VOC]) == 0
    assert "converted file: SHA-256 as recorded" in capsys.readouterr().out


def test_import_refuses_a_corrupt_or_wrong_file(tmp_path: Path, monkeypatch, capsys) -> None:
    home = isolate(monkeypatch, tmp_path)
    bad = tmp_path / FILE
    bad.write_bytes(damaged(tf_tarball()))
    assert main(["weights", "import", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not imported" in err and "Traceback" not in err
    assert not (home / "weights" / FILE).exists()
    other = tmp_path / "renamed.tar.gz"
    other.write_bytes(tf_tarball())  # a MobileNetV2 VOC checkpoint is no Xception-65
    assert main(["weights", "import", str(other), "--name", "tf:xception65_ade20k_train"]) == 2
    assert "not tf:xception65_ade20k_train's" in capsys.readouterr().err
    assert main(["weights", "import", str(other)]) == 2
    assert "give --name" in capsys.readouterr().err


def test_commands_take_a_registry_name(tmp_path: Path, monkeypatch, capsys) -> None:
    with FileServer({FILE: tf_tarball()}) as server:
        isolate(monkeypatch, tmp_path, server.url)
        image = tmp_path / "photo.png"
        Image.fromarray(np.full((33, 47, 3), 200, np.uint8)).save(image)
        rc = main(["predict", MNV2_VOC, str(image), "-o", str(tmp_path / "out")])
    assert rc == 0 and (tmp_path / "out" / "photo.png").is_file()
    assert main(["predict", "tf:mobilenetv2_coco_voc_trainaugx", str(image), "-o", "x"]) == 2
    assert "did you mean tf:mobilenetv2_coco_voc_trainaug" in capsys.readouterr().err
