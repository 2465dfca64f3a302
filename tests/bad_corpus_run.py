"""Run every generated bad-input corpus (``bad_inputs``, ``bad_datasets``, ``bad_checkpoints``)
through the commands a user runs (``predict``, ``eval``, ``data check``, ``train``) and record
the outcome of each file: what ``tests/test_bad_input_corpus.py`` asserts, and the table of
issue 11's closing note::

    PYTHONPATH=src:tests python tests/bad_corpus_run.py   # prints the markdown table

Each run goes through :func:`atrous.cli.main` in this process, with stdout and stderr
captured: an outcome is the one line the command printed for that file (or that its output
was written), and every run's exit status.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from bad_checkpoints import MARKER_NAME, write_checkpoint_corpus
from bad_datasets import FOLDER, VOC, write_dataset_corpus
from bad_inputs import write_image_corpus

import atrous.models as M
import atrous.weights as W
from atrous.cli import main
from atrous.inference.io import output_names


@dataclass
class Run:
    """One command over a corpus: its exit status and the per-file outcomes."""

    command: str
    rc: int
    outcomes: dict[str, str]  # file name -> "ok: ..." or "error: <the line's problem>"
    out: str
    err: str


def cli(args: list[str]) -> tuple[int, str, str]:
    """``atrous ARGS`` in this process: (exit status, stdout, stderr)."""
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        rc = main(args)
    return rc, o.getvalue(), e.getvalue()


def _error_lines(err: str, command: str) -> dict[str, str]:
    """{file name: problem} of the command's ``error: PATH: PROBLEM`` lines."""
    found = {}
    for line in err.splitlines():
        m = re.match(rf"atrous {command}: error: (\S+?): (.*)$", line)
        if m:
            found[Path(m.group(1)).name] = m.group(2)
    return found


def weights(folder: Path, num_classes: int) -> Path:
    torch.manual_seed(0)
    model = M.build("deeplabv3_mobilenetv2", num_classes=num_classes, width_mult=0.25, norm="gn")
    return W.save(model, folder / f"w{num_classes}.safetensors")


def run_predict(tmp: Path) -> tuple[Run, dict[str, str | None]]:
    """The image corpus through ``atrous predict``."""
    expected = write_image_corpus(tmp / "images")
    w = weights(tmp, 3)
    out = tmp / "pred"
    rc, o, e = cli(["predict", str(w), str(tmp / "images"), "-o", str(out), "--no-progress"])
    errors = _error_lines(e, "predict")
    names = dict(zip(expected, output_names([tmp / "images" / n for n in expected])))
    outcomes = {}
    for name in expected:
        if name in errors:
            outcomes[name] = f"error: {errors[name]}"
        elif (out / f"{names[name]}.png").is_file():
            warned = [ln for ln in e.splitlines() if "warning:" in ln and f"/{name}:" in ln]
            outcomes[name] = "ok: mask + overlay" + (
                f" (warning: {warned[0].split(': ', 3)[-1]})" if warned else ""
            )
        else:
            outcomes[name] = "MISSING: no output and no error"
    return Run("predict", rc, outcomes, o, e), expected


def run_checkpoints(tmp: Path) -> tuple[list[Run], dict[str, str]]:
    """Each bad checkpoint through ``atrous predict`` and ``atrous eval``."""
    expected = write_checkpoint_corpus(tmp / "ckpt")
    image = tmp / "one.png"
    from PIL import Image

    Image.new("RGB", (20, 16), (90, 120, 30)).save(image)
    runs = []
    for name in expected:
        path = tmp / "ckpt" / name
        predict = ["predict", str(path), str(image), "-o", str(tmp / "o"), "--no-progress"]
        evaluate = ["eval", str(path), "--format", "synthetic", "--limit", "2", "--no-progress"]
        evaluate += ["--trimap-widths", "none"]
        for command, args in (("predict", predict), ("eval", evaluate)):
            rc, o, e = cli(args)
            lines = [ln for ln in e.splitlines() if ln.strip()]
            outcome = f"error: {lines[-1].split(': error: ', 1)[-1]}" if lines else "no error"
            runs.append(Run(command, rc, {name: outcome}, o, e))
    assert not (tmp / "ckpt" / MARKER_NAME).exists(), "a checkpoint's pickle ran"
    return runs, expected


def run_datasets(tmp: Path) -> tuple[list[Run], dict[str, str]]:
    """The dataset corpus through ``atrous data check`` and ``atrous eval``."""
    expected = write_dataset_corpus(tmp / "data")
    folder, voc = tmp / "data" / FOLDER, tmp / "data" / VOC
    runs = []
    rc, o, e = cli(["data", "check", str(folder), "--no-progress"])
    problems = {}
    for line in o.splitlines():
        m = re.match(r"problem: (\S+?): (.*)$", line)
        if m:
            problems[Path(m.group(1)).name] = m.group(2)
    runs.append(Run("data check", rc, _with_good(folder, problems, "ok: loaded"), o, e))
    w3, w21 = weights(tmp, 3), weights(tmp, 21)
    ev = ["--no-progress", "--trimap-widths", "none"]
    rc, o, e = cli(["eval", str(w3), "--data", str(folder), "--split", "all", *ev])
    runs.append(Run("eval", rc, _with_good(folder, _error_lines(e, "eval"), "ok: scored"), o, e))
    for check in ("error", "off"):
        args = ["eval", str(w21), "--data", str(voc), "--split", "train", *ev]
        rc, o, e = cli([*args, "--palette-check", check])
        found = _error_lines(e, "eval")
        masks = sorted(p.name for p in (voc / "VOCdevkit/VOC2012/SegmentationClass").iterdir())
        train = (voc / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt").read_text().split()
        outcomes = {
            m: (f"error: {found[m]}" if m in found else "ok: scored")
            for m in masks
            if Path(m).stem in train
        }
        runs.append(Run(f"eval --palette-check {check}", rc, outcomes, o, e))
    return runs, expected


def run_train(tmp: Path) -> tuple[Run, dict[str, str]]:
    """The folder dataset through ``atrous train``: every bad sample is met (enough epochs),
    skipped with one line and listed in ``summary.json``; the run still saves a model."""
    import json

    expected = write_dataset_corpus(tmp / "data")
    folder = tmp / "data" / FOLDER
    n_pairs = len(list((folder / "images").iterdir()))
    config = {
        "model": "deeplabv3_mobilenetv2",
        "model_options": {"norm": "gn", "width_mult": 0.25},
        "dataset": "folder",
        "data_root": str(folder),
        "train_split": "",
        "val_split": "",
        "crop_size": 17,
        "batch_size": 2,
        "iterations": 2 * n_pairs,
        "num_workers": 0,
        "deterministic": True,
        "log_every": 1000,
        "val_every": 100000,
        "ckpt_every": 100000,
        "device": "cpu",
    }
    cfg = tmp / "train.json"
    cfg.write_text(json.dumps(config))
    run_dir = tmp / "run"
    rc, o, e = cli(["train", "--config", str(cfg), "--out", str(run_dir), "--no-progress"])
    problems = {}
    for line in o.splitlines():
        m = re.match(r"atrous train: skipped (\S+?): (.*)$", line)
        if m:
            problems[Path(m.group(1)).name] = m.group(2)
    summary = json.loads((run_dir / "summary.json").read_text())
    listed = {Path(s["item"]).name for s in summary["skipped"]}
    outcomes = {}
    for name, outcome in _with_good(folder, problems, "ok: trained on").items():
        if outcome.startswith("error: "):
            tag = "in summary.json" if name in listed else "NOT in summary.json"
            outcome = f"skipped ({tag}): {outcome[7:]}"
        outcomes[name] = outcome
    return Run("train", rc, outcomes, o, e), expected


def _with_good(folder: Path, problems: dict[str, str], ok: str) -> dict[str, str]:
    """Outcome per mask of a folder dataset (the image's name where the image is at fault)."""
    out = {}
    for mask in sorted((folder / "images").iterdir()):
        stem = mask.stem
        hit = [n for n in problems if Path(n).stem == stem]
        out[hit[0] if hit else f"{stem}.png"] = f"error: {problems[hit[0]]}" if hit else ok
    return out


def table(runs: list[Run]) -> str:
    lines = ["| file | command | exit | outcome |", "| --- | --- | --- | --- |"]
    for r in runs:
        for name, outcome in r.outcomes.items():
            text = re.sub(r"(/[^/\s'\"]+)+/", "", outcome).replace("|", "\\|")
            lines.append(f"| `{name}` | `atrous {r.command}` | {r.rc} | {text} |")
    return "\n".join(lines)


def all_runs(tmp: Path) -> list[Run]:
    runs = [run_predict(tmp / "p")[0]]
    runs += run_checkpoints(tmp / "c")[0]
    runs += run_datasets(tmp / "d")[0]
    runs.append(run_train(tmp / "t")[0])
    return runs


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        print(table(all_runs(Path(d))))
        sys.exit(0)
