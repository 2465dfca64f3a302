"""``atrous export`` on the command line: a short summary for a person, the report as JSON
behind ``--json``."""

from __future__ import annotations

import json

import pytest
import torch

import atrous.models as M
import atrous.weights as W
from atrous.cli import main

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    m = M.build("deeplabv3plus_mobilenetv2", num_classes=3, width_mult=0.25).eval()
    return W.save(m, tmp_path_factory.mktemp("export_cmd") / "m.safetensors")


def test_export_prints_a_short_summary(weights, tmp_path, capsys) -> None:
    out = tmp_path / "m.onnx"
    assert main(["export", str(weights), str(out)]) == 0
    text = capsys.readouterr().out
    assert not text.lstrip().startswith("{")  # not the raw report
    lines = text.strip().splitlines()
    assert len(lines) <= 6 and all(len(line.replace(str(out), "")) <= 80 for line in lines), text
    assert f"wrote {out}" in text and "ONNX" in text and " MB" in text
    assert "checks: 2 of 2 passed" in text
    assert f"atrous predict {out}" in text and "--json" in text


def test_export_json_is_the_report(weights, tmp_path, capsys) -> None:
    out = tmp_path / "m.onnx"
    assert main(["export", str(weights), str(out), "--json", "--no-check"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["path"] == str(out) and report["format"] == "onnx"
    assert report["bytes"] == out.stat().st_size and report["checks"] == []
