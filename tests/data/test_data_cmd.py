from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from data_helpers import label, save_index

from atrous.cli import CLIError, data_cmd


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    data_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_check_auto_detects_voc_and_reports_frequencies(voc_root: Path, capsys) -> None:
    rc = run_cli(["data", "check", str(voc_root), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "== voc train" in out and "== voc val" in out
    assert "person" in out and "0 problem(s)" in out


def test_check_exit_1_and_names_bad_file(voc_root: Path, capsys) -> None:
    bad = voc_root / "VOC2012" / "SegmentationClass" / "2007_000002.png"
    save_index(bad, label(values=(0, 99), seed=1))
    rc = run_cli(["data", "check", str(voc_root), "--split", "train", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "1 problem(s)" in out and "2007_000002.png: label values [99]" in out


def test_check_folder_with_value_map(tmp_path: Path, capsys) -> None:
    from data_helpers import save_rgb

    save_rgb(tmp_path / "image" / "0.png")
    save_index(tmp_path / "label" / "0.png", np.full((12, 16), 255, np.uint8))
    rc = run_cli(
        ["data", "check", str(tmp_path), "--num-classes", "2", "--map", "255:1", "--no-progress"]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "class_1" in out and "100.00%" in out


def test_check_user_errors(tmp_path: Path) -> None:
    with pytest.raises(CLIError, match="not found"):
        run_cli(["data", "check", str(tmp_path / "nope")])
    (tmp_path / "x").mkdir()
    with pytest.raises(CLIError, match="cannot tell the dataset format"):
        run_cli(["data", "check", str(tmp_path / "x")])


def test_format_choices_are_the_factory_formats() -> None:
    from atrous.data import FORMATS

    parser = argparse.ArgumentParser()
    data_cmd.register(parser.add_subparsers(dest="command"))
    (check,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    data = check.choices["data"]
    (actions,) = [a for a in data._actions if isinstance(a, argparse._SubParsersAction)]
    (fmt,) = [a for a in actions.choices["check"]._actions if a.dest == "format"]
    assert list(fmt.choices) == ["auto", *FORMATS]


def test_registering_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import argparse, sys; from atrous.cli import data_cmd; "
        "data_cmd.register(argparse.ArgumentParser().add_subparsers()); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_check_warns_when_most_pixels_are_ignored(tmp_path: Path, capsys) -> None:
    from data_helpers import save_rgb

    from atrous.data import FolderDataset, scan_dataset

    save_rgb(tmp_path / "images" / "0.png")
    mask = np.zeros((12, 16), np.uint8)
    mask[:, 4:] = 255  # 75% drawn 255, the binary-mask foreground
    save_index(tmp_path / "masks" / "0.png", mask)
    report = scan_dataset(FolderDataset(tmp_path, num_classes=2))
    assert report.ok and len(report.warnings) == 1 and "--map 255:1" in report.warnings[0]
    assert report.ignored_share == 0.75
    rc = run_cli(["data", "check", str(tmp_path), "--num-classes", "2", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "WARNING: 75.0% of the pixels" in out and "1 warning(s)" in out
    rc = run_cli(["data", "check", str(tmp_path), "--num-classes", "2", "--map", "255:1"])
    assert rc == 0 and "WARNING" not in capsys.readouterr().out


def test_check_palette_check_flag(voc_root: Path, capsys) -> None:
    from atrous.data.palettes import ADE20K_PALETTE

    bad = voc_root / "VOC2012" / "SegmentationClass" / "2007_000002.png"
    save_index(bad, label(values=(0, 15), seed=1), ADE20K_PALETTE.tolist() + [[0, 0, 0]] * 106)
    argv = ["data", "check", str(voc_root), "--split", "train", "--no-progress"]
    assert run_cli(argv) == 1 and "--palette-check off" in capsys.readouterr().out
    assert run_cli([*argv, "--palette-check", "off"]) == 0
