"""Ctrl-C during ``atrous train`` (issue 28, item 4): the first one saves ``last.pt``, says
exactly that and exits 130; a second one aborts without saving (130); ``--resume`` says
where it resumes from."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import tiny_config

from atrous.cli import main
from atrous.training import Trainer, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "synthetic_demo.json"
SETTINGS = [
    "model=deeplabv3_mobilenetv2",
    "crop_size=33",
    "batch_size=2",
    'dataset_options={"length": 8, "size": 40}',
    "val_max_images=1",
    "val_every=100000",
    "ckpt_every=100000",
    "log_every=1",
    "num_workers=2",  # DataLoader workers get the terminal's Ctrl-C too
    "device=cpu",
]
ARGS = [*(a for s in SETTINGS for a in ("--set", s)), "--no-progress"]


def _wait_for_training(proc: subprocess.Popen, metrics: Path, timeout: float = 120.0) -> None:
    """Until metrics.jsonl holds a training record (the loop runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"atrous train ended early with {proc.returncode}")
        if metrics.is_file() and '"loss"' in metrics.read_text():
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail("atrous train logged no iteration in time")


def test_ctrl_c_saves_last_pt_says_so_and_exits_130(tmp_path, capsys):
    out = tmp_path / "run"
    log = tmp_path / "log.txt"
    cmd = [sys.executable, "-m", "atrous", "train", "--config", str(CONFIG), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with open(log, "w") as f:  # a new session: Ctrl-C goes to the whole process group
        proc = subprocess.Popen(
            [*cmd, *ARGS, "--iterations", "100000"],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            _wait_for_training(proc, out / "metrics.jsonl")
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
            status = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert status == 130, text
    iteration = load_checkpoint(out / "last.pt")["iteration"]
    assert iteration >= 1
    assert not (out / "model.safetensors").exists()
    assert f"interrupted at iteration {iteration}/100000: saved {out / 'last.pt'}" in text
    assert "--resume" in text and "model.safetensors" not in text
    assert text.count("interrupt: finishing") == 1  # said by the trainer, not by each worker
    assert not json.loads((out / "summary.json").read_text())["complete"]
    # --resume says which checkpoint and which iteration it continues from
    resume = ["train", "--resume", "--out", str(out), "--set", "num_workers=0", "--no-progress"]
    assert main([*resume, "--iterations", str(iteration + 1)]) == 0
    said = capsys.readouterr().out
    assert f"resuming {out / 'last.pt'} at iteration {iteration} of {iteration + 1}" in said
    assert f"done: {iteration + 1} iterations" in said


def test_second_ctrl_c_aborts_without_saving_and_exits_130(tmp_path, capsys, monkeypatch):
    real_step = Trainer._step

    def step_then_two_interrupts(self, batches):
        loss = real_step(self, batches)
        if self.iteration == 2:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)  # pressed again before the iteration ended
        return loss

    monkeypatch.setattr(Trainer, "_step", step_then_two_interrupts)
    out = tmp_path / "run"
    args = ["train", "--config", str(CONFIG), "--out", str(out), *ARGS, "--iterations", "6"]
    assert main([*args, "--set", "num_workers=0"]) == 130
    said = capsys.readouterr()
    text = said.out + said.err
    assert "aborted at iteration 2/6: nothing saved" in text
    assert not (out / "last.pt").exists() and not (out / "model.safetensors").exists()
    assert "model.safetensors" not in text and "done:" not in text


def test_resume_of_a_time_limit_run_says_the_budget_left(tmp_path, capsys):
    cfg = tiny_config(iterations=1000, time_limit=10.0)
    first = Trainer(cfg, tmp_path, progress=False)
    first.train(stop_at=6)
    spent = first.elapsed
    capsys.readouterr()
    resumed = Trainer(cfg, tmp_path, resume=True, progress=False)
    said = capsys.readouterr().out
    total = resumed.total_iterations
    assert f"resuming {tmp_path / 'last.pt'} at iteration 6 of {total}" in said
    left = 600.0 - spent
    assert f"{int(left // 60)} min {int(left % 60)} s of the 10 min time budget left" in said


def test_a_step_broken_by_the_ctrl_c_saves_nothing_and_says_so(tmp_path, capsys):
    # a step that fails because of the Ctrl-C (e.g. a DataLoader worker it ended) is not saved
    cfg = tiny_config(iterations=6, ckpt_every=1)
    tr = Trainer(cfg, tmp_path, progress=False)
    real_step = tr._step

    def step(batches):
        if tr.iteration == 2:
            signal.raise_signal(signal.SIGINT)
            raise RuntimeError("DataLoader worker (pid 1) exited unexpectedly")
        return real_step(batches)

    tr._step = step
    tr.train()
    assert tr.interrupted and load_checkpoint(tmp_path / "last.pt")["iteration"] == 2
    said = capsys.readouterr().out
    last = tmp_path / "last.pt"
    assert f"interrupted at iteration 2/6: nothing saved now; {last} holds iteration 2" in said
