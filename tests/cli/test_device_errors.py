"""``--device cuda`` where there is no CUDA (issue 28, item 3): every command that takes
``--device`` says so in one line (exit status 2, no traceback), and the same function
(:func:`atrous.inference.pipeline.resolve_device`) decides it for inference and training: a
CPU-only torch build, a CUDA build with no GPU visible, and a GPU index past the last GPU each
get their own message."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import atrous.models as M
import atrous.weights as W
from atrous.cli import main
from atrous.inference.pipeline import resolve_device
from atrous.training.distributed import training_device

CPU_BUILD = not torch.backends.cuda.is_built()
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synthetic_demo.json"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    model = M.build("deeplabv3_mobilenetv2", num_classes=3, norm="gn", width_mult=0.25)
    return W.save(model, tmp_path_factory.mktemp("w") / "m.safetensors")


def _argv(command: str, weights: Path, tmp: Path) -> list[str]:
    """A run of ``command`` that would do real work on the CPU (small, synthetic)."""
    Image.new("RGB", (24, 16), (90, 40, 200)).save(tmp / "photo.png")
    synthetic = ["--format", "synthetic", "--size", "16", "--limit", "1", "--no-progress"]
    return {
        "train": ["train", "--config", str(CONFIG), "--out", str(tmp / "run"), "--no-progress"],
        "predict": [
            "predict",
            str(weights),
            str(tmp / "photo.png"),
            "-o",
            str(tmp / "o"),
            "--no-progress",
        ],
        "eval": ["eval", str(weights), *synthetic],
        "crf-search": ["crf-search", str(weights), *synthetic],
    }[command]


def _run(argv: list[str], capsys) -> tuple[int, list[str]]:
    rc = main(argv)
    cap = capsys.readouterr()
    assert "Traceback" not in cap.out + cap.err
    return rc, cap.err.splitlines()


@pytest.mark.skipif(not CPU_BUILD, reason="the message of a CPU-only torch build")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
@pytest.mark.parametrize("command", ["train", "predict", "eval", "crf-search"])
def test_cuda_on_a_cpu_build_is_one_line(
    command: str, name: str, weights: Path, tmp_path: Path, capsys
) -> None:
    rc, err = _run([*_argv(command, weights, tmp_path), "--device", name], capsys)
    assert rc == 2
    assert err == [
        f"atrous {command}: error: --device {name}: this torch build has no CUDA "
        f"(torch {torch.__version__}); install a CUDA build (see docs/gpu.md) or use --device cpu"
    ]
    assert not (tmp_path / "run").exists()  # said before any work


def _fake_cuda(monkeypatch, available: bool, count: int) -> None:
    """A CUDA build of torch with ``count`` GPUs visible (``available`` False: none)."""
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count if available else 0)


def test_a_cuda_build_with_no_gpu_visible(monkeypatch) -> None:
    _fake_cuda(monkeypatch, available=False, count=0)
    with pytest.raises(ValueError) as e:
        resolve_device("cuda")
    assert str(e.value).startswith("--device cuda: no CUDA GPU is visible")
    assert "CUDA_VISIBLE_DEVICES" in str(e.value) and "--device cpu" in str(e.value)
    assert resolve_device("auto") == torch.device("cpu")  # auto falls back, quietly


def test_a_gpu_index_past_the_last_gpu(monkeypatch) -> None:
    _fake_cuda(monkeypatch, available=True, count=1)
    with pytest.raises(ValueError) as e:
        resolve_device("cuda:3")
    assert str(e.value) == "--device cuda:3: there is no GPU 3: 1 GPU visible (cuda:0)"
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    assert resolve_device("cuda") == torch.device("cuda")


def test_unknown_device_name() -> None:
    with pytest.raises(ValueError, match=r"--device: unknown device 'gpu'"):
        resolve_device("gpu")


def test_training_decides_with_the_same_function(monkeypatch) -> None:
    _fake_cuda(monkeypatch, available=True, count=2)
    with pytest.raises(ValueError, match=r"--device cuda:3: there is no GPU 3: 2 GPUs visible"):
        training_device("cuda:3")
    monkeypatch.setenv("LOCAL_RANK", "2")  # torchrun started more processes than GPUs
    with pytest.raises(ValueError, match=r"there is no GPU 2: 2 GPUs visible \(cuda:0, cuda:1\)"):
        training_device("cuda", rank=2, world=3)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert training_device("auto", rank=1, world=2) == torch.device("cuda:1")
    assert training_device("cpu") == torch.device("cpu")


def test_train_with_a_missing_gpu_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    _fake_cuda(monkeypatch, available=True, count=1)
    argv = [*_argv("train", Path(), tmp_path), "--device", "cuda:3"]
    rc, err = _run(argv, capsys)
    assert rc == 2
    assert err == [
        "atrous train: error: --device cuda:3: there is no GPU 3: 1 GPU visible (cuda:0)"
    ]
