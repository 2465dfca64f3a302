"""Atomic writes: the file is whole or absent, never partial; JSON results go through it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from atrous.fileio import atomic_write_json, atomic_write_text


def test_atomic_write_json_writes_indented_json_with_a_newline(tmp_path: Path) -> None:
    path = atomic_write_json(tmp_path / "sub" / "r.json", {"b": [1, 2], "a": "é"})
    text = path.read_text(encoding="utf-8")
    assert path == tmp_path / "sub" / "r.json" and text.endswith("}\n")
    assert json.loads(text) == {"b": [1, 2], "a": "é"}
    assert text == json.dumps({"b": [1, 2], "a": "é"}, indent=2) + "\n"
    atomic_write_json(path, [1], indent=None, sort_keys=True)
    assert path.read_text() == "[1]\n"


def test_atomic_write_json_that_fails_leaves_the_old_file(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "r.json", "old\n")
    with pytest.raises(ValueError):
        atomic_write_json(path, {"x": math.nan}, allow_nan=False)
    with pytest.raises(TypeError):
        atomic_write_json(path, {"x": object()})
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no temporary left


def test_atomic_files_get_the_mode_a_plain_write_would(tmp_path) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "config.json", "{}\n")
        plain = tmp_path / "plain.json"
        plain.write_text("{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644
