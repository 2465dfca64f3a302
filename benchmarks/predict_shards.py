"""``atrous predict`` spread over torchrun processes: images per second with 1 process and with
2, on the same street scenes, at the same total number of CPU threads.

Usage::

    PYTHONPATH=src python benchmarks/predict_shards.py [--images 16] [--repeats 3]
        [--threads 2] [--model deeplabv3plus_mobilenetv2] [--out benchmarks/results/predict_shards.md]

The images are the first ``--images`` of ``../shared/data/camvid/val`` (480 x 360 street
scenes). Weights are deterministic random ones (speed does not depend on their values). Each
row is ``torchrun --standalone --nproc-per-node K -m atrous predict ... --threads T/K`` into a
fresh folder, timed from start to exit, ``--repeats`` times (the median is reported); then
once more with ``--skip-existing`` over the finished folder, which skips every file: its time
is the start-up (torch import, the input listing, the model load), and the images per second
after start-up divide by the rest. Writes a Markdown table with the CPU's model name.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_model

ROOT = Path(__file__).resolve().parents[1]
CAMVID_VAL = ROOT.parent / "shared" / "data" / "camvid" / "val"


def predict(
    procs: int, threads: int, weights: Path, images: list[Path], out: Path, *extra: str
) -> float:
    """Wall seconds of one ``torchrun ... -m atrous predict`` run (it must succeed)."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={procs}",
    ]
    cmd += ["-m", "atrous", "predict", str(weights), *map(str, images), "-o", str(out)]
    cmd += ["--device", "cpu", "--no-progress", "--threads", str(threads), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"predict_shards: {' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="total CPU threads of each row")
    ap.add_argument("--model", default="deeplabv3plus_mobilenetv2")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "predict_shards.md"))
    args = ap.parse_args()

    import torch

    import atrous.models as M
    import atrous.weights as W

    images = sorted(CAMVID_VAL.glob("*.[jp][pn]g"))[: args.images]
    if len(images) < args.images:
        raise SystemExit(
            f"predict_shards: {CAMVID_VAL} holds {len(images)} images, not {args.images}"
        )
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        weights = W.save(M.build(args.model, num_classes=12), Path(tmp) / "w.safetensors")
        for procs in (1, 2):
            threads = max(1, args.threads // procs)
            walls = []
            for i in range(args.repeats):
                out = Path(tmp) / f"out{procs}_{i}"
                walls.append(predict(procs, threads, weights, images, out))
                print(f"{procs} process(es) x {threads} thread(s): {walls[-1]:.1f} s", flush=True)
            written = len(list(out.rglob("*.png")))
            if written != len(images):
                raise SystemExit(f"predict_shards: {written} masks for {len(images)} images")
            start_up = predict(procs, threads, weights, images, out, "--skip-existing")
            print(f"{procs} process(es): start-up {start_up:.1f} s", flush=True)
            rows.append((procs, threads, walls, start_up))

    median = {procs: statistics.median(walls) for procs, _, walls, _ in rows}
    lines = [
        "# `atrous predict` under torchrun: 1 process against 2",
        "",
        f"Command: `PYTHONPATH=src python benchmarks/predict_shards.py --images {args.images} "
        f"--repeats {args.repeats} --threads {args.threads} --model {args.model}`",
        "",
        f"- CPU: {cpu_model()} ({os.cpu_count()} logical CPUs seen), torch {torch.__version__}",
        f"- load average before the runs: {' '.join(f'{x:.2f}' for x in load_before)}; after: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (the machine is shared with other work)",
        f"- {args.images} CamVid val images (480 x 360), `{args.model}` (12 classes, random "
        f"weights), `--device cpu`, {args.threads} threads in all",
        "",
        "| processes | threads each | wall s, each run | median s | images/s | start-up s | "
        "images/s after start-up |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for procs, threads, walls, start_up in rows:
        m = median[procs]
        steady = args.images / (m - start_up) if m > start_up else float("nan")
        each = ", ".join(f"{w:.1f}" for w in walls)
        lines.append(
            f"| {procs} | {threads} | {each} | {m:.1f} | {args.images / m:.2f} | {start_up:.1f} | "
            f"{steady:.2f} |"
        )
    lines += [
        "",
        f"2 processes against 1: {median[1] / median[2]:.2f}x the images per second, start to "
        "finish. Start-up is one `--skip-existing` run over the finished folder (every file "
        "skipped): torch's import, the input listing and the model load.",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
