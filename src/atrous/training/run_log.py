"""What a training run writes as it goes (rank 0 only): console lines, ``metrics.jsonl``
records and their TensorBoard scalars, image strips, and JSON files (``config.json``,
``summary.json``), written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from atrous.fileio import atomic_write_text

__all__ = ["RunLog", "tensorboard_tag"]


def tensorboard_tag(key: str) -> str:
    """metrics.jsonl key -> TensorBoard tag: ``val_miou`` -> ``val/miou``."""
    for prefix in ("val_", "loss_"):
        if key.startswith(prefix):
            return prefix[:-1] + "/" + key[len(prefix) :]
    return "train/" + key


class RunLog:
    """The run folder's log. ``enabled=False`` (ranks other than 0) makes every call a no-op;
    ``tensorboard`` writes scalars and images under ``<out>/tensorboard``. While ``bar`` (a
    tqdm progress bar) is set, lines are written above it and leave it intact."""

    def __init__(self, out: Path, enabled: bool = True, tensorboard: bool = False) -> None:
        self.out, self.enabled, self.tensorboard = Path(out), enabled, tensorboard
        self.metrics_path = self.out / "metrics.jsonl"
        self.bar: Any = None
        self._tb: Any = None

    def text(self, msg: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def record(self, record: dict[str, Any]) -> None:
        """Append ``record`` (with an ``iteration`` key) to metrics.jsonl and TensorBoard."""
        if not self.enabled:
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        tb = self.writer(record["iteration"])
        if tb is not None:
            for k, v in record.items():
                if k != "iteration" and isinstance(v, (int, float)):
                    tb.add_scalar(tensorboard_tag(k), v, record["iteration"])

    def write_json(self, name: str, data: Any) -> Path | None:
        """Write ``data`` as ``<out>/<name>`` (indented JSON), atomically; None when disabled."""
        if not self.enabled:
            return None
        return atomic_write_text(self.out / name, json.dumps(data, indent=2) + "\n")

    def image(self, tag: str, hwc: np.ndarray, iteration: int) -> None:
        tb = self.writer(iteration)
        if tb is not None:
            tb.add_image(tag, hwc, iteration, dataformats="HWC")

    def writer(self, iteration: int) -> Any:
        """The TensorBoard writer (created on first use at ``iteration``: events after it,
        from an earlier, interrupted segment of the run, are purged), or None."""
        if self._tb is None and self.enabled and self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out / "tensorboard"), purge_step=iteration + 1)
        return self._tb

    def truncate_after(self, iteration: int) -> None:
        """Drop records logged after ``iteration`` (a crash between a log and the next
        checkpoint): the resumed run logs those iterations again."""
        if not self.enabled or not self.metrics_path.is_file():
            return
        keep = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                if json.loads(line).get("iteration", 0) <= iteration:
                    keep.append(line)
            except json.JSONDecodeError:  # a line cut by the crash
                continue
        atomic_write_text(self.metrics_path, "".join(x + "\n" for x in keep))

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()
