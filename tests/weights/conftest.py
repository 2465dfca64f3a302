"""Fixtures of the TensorFlow checkpoint reader's tests: the small checkpoints TensorFlow saved
(``tests/fixtures/tf_small``, copied from ``shared/reference/tf_deeplab/small``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

SMALL = Path(__file__).parents[1] / "fixtures" / "tf_small"


@pytest.fixture(scope="session")
def expected() -> dict:
    """``expected.json``: every tensor of both checkpoints, keyed by checkpoint."""
    return json.loads((SMALL / "expected.json").read_text())["checkpoints"]


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """A writable copy of the fixture folder (``one_shard/``, ``two_shards/``)."""
    return Path(shutil.copytree(SMALL, tmp_path / "small"))
