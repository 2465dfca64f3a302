"""``make gpu-check`` (``benchmarks/gpu_check.py``, issue 28) in its CPU-only mode, as CI runs
it: the CPU half of the CRF comparison runs, every CUDA part is skipped with its reason, the
report is written and the exit status is 0 (1 when a check fails)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_check"]


def test_cpu_only_runs_the_cpu_parts_and_skips_cuda_saying_why(
    gpu_check: ModuleType, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "gpu_check.md"
    assert gpu_check.main(["--cpu-only", "--out", str(out)]) == 0
    text = out.read_text()
    assert text == capsys.readouterr().out  # the table printed is the table written
    assert "GPU: " in text and "torch " in text and "CPU: " in text
    assert "No CUDA, the CUDA parts skipped: --cpu-only" in text
    rows = {ln.split(" | ")[0][2:]: ln.split(" | ")[1] for ln in text.splitlines() if " | " in ln}
    assert rows["dense CRF: CUDA vs CPU"] == "ok"
    for name in ("tests marked cuda", "training, AMP fp16", "training, AMP bf16"):
        assert rows[name] == "skipped"
    assert rows["SyncBN, torchrun x2"] == "skipped" and rows["benchmark rows"] == "skipped"


def test_a_failed_check_is_exit_status_1(
    gpu_check: ModuleType, tmp_path: Path, monkeypatch, capsys
) -> None:
    def broken(cuda: bool) -> str:
        raise RuntimeError("labels agree 0.5")

    monkeypatch.setattr(gpu_check, "crf_compare", broken)
    assert gpu_check.main(["--cpu-only", "--out", str(tmp_path / "r.md")]) == 1
    assert "| dense CRF: CUDA vs CPU | FAIL | RuntimeError: labels agree 0.5 |" in (
        capsys.readouterr().out
    )


def test_its_flags(gpu_check: ModuleType, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        gpu_check.main(["--cuda-only"])
    assert e.value.code == 2
    assert "--cpu-only" in capsys.readouterr().err
