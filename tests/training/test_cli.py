from __future__ import annotations

import json
from pathlib import Path

from atrous.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

TINY_SETTINGS = [
    "model=deeplabv3_mobilenetv2",
    "crop_size=33",
    "batch_size=2",
    'dataset_options={"length": 4, "size": 40}',
    "val_max_images=1",
    "val_every=2",
    "ckpt_every=1",
    "device=cpu",
]
TINY = [*(a for s in TINY_SETTINGS for a in ("--set", s)), "--no-progress"]


def test_train_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--config", str(CONFIGS / "synthetic_demo.json"), "--out", str(out)]
    assert main([*args, *TINY, "--iterations", "2"]) == 0
    assert {"last.pt", "best.pt", "model.safetensors", "metrics.jsonl", "config.json"} <= {
        p.name for p in out.iterdir()
    }
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("val_miou" in r for r in recs) and any("loss" in r for r in recs)
    assert json.loads((out / "config.json").read_text())["iterations"] == 2
    # A second run into the same folder must not silently overwrite it.
    assert main([*args, *TINY, "--iterations", "2"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    # Continue the same run to 3 iterations from its checkpoint (config from the checkpoint).
    assert main(["train", "--resume", "--out", str(out), "--iterations", "3", "--no-progress"]) == 0
    assert "done: 3 iterations" in capsys.readouterr().out


def test_train_user_errors(tmp_path, capsys):
    assert main(["train"]) == 2
    assert "--config" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "none.json")]) == 2
    assert "none.json: config file not found" in capsys.readouterr().err
    cfg = CONFIGS / "synthetic_demo.json"
    assert main(["train", "--config", str(cfg), "--set", "lr=-1", "--out", str(tmp_path)]) == 2
    assert "lr=-1" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--resume", "--out", str(tmp_path / "x")]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err
