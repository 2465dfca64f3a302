"""Training under the failure policy (issue 11): typo'd settings suggest the nearest, a
num_classes that disagrees with the dataset is an error unless allowed, bad samples are
skipped, reported once, listed in summary.json and make ``atrous train`` exit 1 (``on_error:
raise`` stops at them), and validation's cost is logged before the first validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bad_datasets import FOLDER, write_dataset_corpus
from train_helpers import tiny_config

from atrous.cli import main
from atrous.training import TrainConfig, Trainer, apply_overrides


def _folder_config(root: Path, **overrides) -> TrainConfig:
    return tiny_config(
        dataset="folder",
        data_root=str(root),
        train_split="",
        val_split="",
        dataset_options={},
        crop_size=17,
        **overrides,
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("data")
    return root / FOLDER, write_dataset_corpus(root)


def test_typo_suggests_the_nearest_setting(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown setting 'num_clases' \(did you mean "
        r"'num_classes'\?\)$",
    ):
        TrainConfig.from_dict({"num_clases": 3}, "c.json")
    with pytest.raises(ValueError, match=r"'learning_rate' \(did you mean 'lr'\?\)"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ValueError, match=r"'zzz'; known: .*num_classes"):
        TrainConfig.from_dict({"zzz": 1})  # nothing close: the known settings are listed
    with pytest.raises(ValueError, match=r"did you mean 'iterations'"):
        apply_overrides(tiny_config(), ["iteratons=5"])
    assert TrainConfig.from_dict({"_comment": "kept"}).model  # comments stay allowed


def test_num_classes_disagreeing_with_the_dataset_is_an_error(tmp_path, corpus) -> None:
    root, _ = corpus
    with pytest.raises(
        ValueError,
        match=r"num_classes=21 but the folder dataset at .* has 3 "
        r"classes \(background, cat, dog\).*allow_num_classes_mismatch",
    ):
        Trainer(_folder_config(root, num_classes=21), tmp_path / "a", progress=False)
    tr = Trainer(
        _folder_config(root, num_classes=5, allow_num_classes_mismatch=True),
        tmp_path / "b",
        progress=False,
    )
    assert tr.num_classes == 5 and tr.class_names[:3] == ["background", "cat", "dog"]
    with pytest.raises(ValueError, match=r"num_classes=2 \(allow_num_classes_mismatch\)"):
        Trainer(
            _folder_config(root, num_classes=2, allow_num_classes_mismatch=True),
            tmp_path / "c",
            progress=False,
        )  # labels 2 exist


def test_bad_samples_are_skipped_listed_and_exit_1(tmp_path, corpus, capsys) -> None:
    root, expected = corpus
    bad = {k: v for k, v in expected.items() if k.startswith("bad_")}
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({**_folder_config(root, iterations=12).to_dict()}))
    rc = main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 1 and "Traceback" not in cap.err
    skipped_lines = [ln for ln in cap.out.splitlines() if ln.startswith("atrous train: skipped ")]
    names = {Path(ln.split(": ", 2)[1].split("skipped ", 1)[1]).name for ln in skipped_lines}
    assert names <= set(bad) and names  # each met is said once
    assert len(skipped_lines) == len(names)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert {Path(s["item"]).name for s in summary["skipped"]} == names
    for s in summary["skipped"]:
        assert bad[Path(s["item"]).name] in s["problem"]
    assert f"{len(names)} bad sample(s) skipped" in cap.out
    assert (tmp_path / "run" / "model.safetensors").is_file()

    rc = main(
        [
            "train",
            "--config",
            str(cfg),
            "--out",
            str(tmp_path / "run2"),
            "--no-progress",
            "--set",
            "on_error=raise",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "training stopped (on_error: raise)" in err and "Traceback" not in err


def test_good_data_exits_0_with_an_empty_skip_list(tmp_path: Path) -> None:
    tr = Trainer(tiny_config(iterations=2), tmp_path, progress=False)
    tr.train()
    assert json.loads((tmp_path / "summary.json").read_text())["skipped"] == []
    assert not tr.skips


def test_validation_cost_is_logged_before_the_first_validation(tmp_path, capsys) -> None:
    tr = Trainer(tiny_config(iterations=8, val_split="val", val_every=7), tmp_path, progress=False)
    tr.train()
    out = capsys.readouterr().out.splitlines()
    (i,) = [k for k, ln in enumerate(out) if ln.startswith("validation: ~2 images every 7")]
    assert "estimated ~" in out[i] and "% of the run" in out[i]
    first_val = next(k for k, ln in enumerate(out) if "val mIoU" in ln)
    assert i < first_val


def test_time_limit_progress_bar_counts_the_budget_seconds(tmp_path, capsys) -> None:
    """Under ``time_limit`` the bar shows seconds of the budget and the re-planned iteration
    count (``it 12/873``), not ``0/100000`` iterations."""
    tr = Trainer(
        tiny_config(iterations=100000, time_limit=0.05, log_every=2), tmp_path, progress=True
    )
    tr.train()
    err = capsys.readouterr().err
    frames = [f for f in err.replace("\r", "\n").splitlines() if f.startswith("train:")]
    assert frames, err
    last = frames[-1]
    assert "/3 s" in last and "100000" not in last, last
    done, total = map(int, last.split("it=", 1)[1].split(",", 1)[0].split("/"))
    assert done == tr.iteration and total == tr.total_iterations < 100000
