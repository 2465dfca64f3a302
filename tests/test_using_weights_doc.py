"""``docs/using_weights.md`` says what a loaded model carries in ``model.metadata`` (class
names, palette, normalization...); its Python snippet runs, and ``atrous.weights.load``'s
docstring points there."""

from __future__ import annotations

import re
from pathlib import Path

import atrous.models as M
import atrous.weights as W

DOC = Path(__file__).resolve().parents[1] / "docs" / "using_weights.md"


def test_load_documents_the_metadata() -> None:
    doc = W.load.__doc__ or ""
    assert 'model.metadata["class_names"]' in doc and "docs/using_weights.md" in doc


def test_the_using_weights_page_runs(tmp_path, monkeypatch) -> None:
    text = DOC.read_text()
    for key in ("class_names", "palette", "mean", "std", "source", "weights", "inference_scales"):
        assert f"`{key}`" in text, key
    m = M.build("deeplabv3plus_mobilenetv2", num_classes=3, width_mult=0.25)
    m.metadata.update(class_names=["background", "road", "car"], palette=[[0, 0, 0]] * 3)
    W.save(m, tmp_path / "model.safetensors")
    monkeypatch.chdir(tmp_path)
    (snippet,) = re.findall(r"```python\n(.*?)```", text, re.S)
    exec(compile(snippet, str(DOC), "exec"), {})
