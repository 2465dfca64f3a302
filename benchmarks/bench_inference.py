"""Latency and peak memory of :class:`atrous.inference.Segmenter` on large images.

Each case runs in a fresh subprocess so that its peak resident set size (``ru_maxrss``, which
counts torch's native allocations, unlike tracemalloc) belongs to that case alone.

    python benchmarks/bench_inference.py                         # deeplabv3_mobilenetv2
    python benchmarks/bench_inference.py --model deeplabv3plus_mobilenet --sizes 4000x3000
    python benchmarks/bench_inference.py --scales 0.5,1,1.5 --flip --json bench.json

``--model`` is any name ``atrous.models.build`` takes (default ``deeplabv3_mobilenetv2``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

DEFAULT_MODEL = "deeplabv3_mobilenetv2"


def build_model(name: str, num_classes: int) -> nn.Module:
    """A zoo model by name (random weights: latency does not depend on them)."""
    from atrous import models

    return models.build(name, num_classes=num_classes)


# --- one case, in its own process --------------------------------------------------------------
def _worker(cfg: dict[str, Any]) -> dict[str, Any]:
    from atrous.inference import Segmenter

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    model = build_model(cfg["model"], cfg["num_classes"])
    w, h = cfg["size"]
    img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    seg = Segmenter(
        model,
        scales=cfg["scales"],
        flip=cfg["flip"],
        tile_size=cfg["tile_size"],
        tile_overlap=cfg["tile_overlap"],
        batch_size=cfg["batch_size"],
        device=cfg["device"],
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(cfg["repeat"]):
        t0 = time.perf_counter()
        lab = seg.predict(img)
        if cfg["device"].startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    assert lab.shape == (h, w)
    return {
        **cfg,
        "seconds": times,
        "seconds_median": statistics.median(times),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_before_inference_bytes": rss_before,
        "params": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
    }


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected WIDTHxHEIGHT") from e
    return w, h


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"atrous.models name (default {DEFAULT_MODEL})"
    )
    ap.add_argument("--num-classes", type=int, default=21)
    ap.add_argument("--sizes", default="513x513,2048x1024,4000x3000", help="WxH,WxH,...")
    ap.add_argument("--tile-size", type=int, default=513, help="0: no tiling")
    ap.add_argument("--tile-overlap", type=int, default=None)
    ap.add_argument("--scales", default="1.0")
    ap.add_argument("--flip", action="store_true")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None, help="also write all results here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker is not None:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0

    results = []
    print(f"{'size':>11} {'tiles':>6} {'median s':>9} {'peak RSS MiB':>13} {'before MiB':>11}")
    for text in args.sizes.split(","):
        cfg = {
            "model": args.model,
            "num_classes": args.num_classes,
            "size": _size(text),
            "tile_size": args.tile_size or None,
            "tile_overlap": args.tile_overlap,
            "scales": [float(s) for s in args.scales.split(",")],
            "flip": args.flip,
            "batch_size": args.batch_size,
            "repeat": args.repeat,
            "threads": args.threads,
            "device": args.device,
        }
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[1] / "src")
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(cfg)],
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode != 0:
            print(f"{text:>11} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
            results.append({**cfg, "error": proc.stderr[-2000:], "returncode": proc.returncode})
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(r)
        print(
            f"{text:>11} {r['tile_size'] or 'off':>6} {r['seconds_median']:>9.2f} "
            f"{r['peak_rss_bytes'] / 2**20:>13.0f} {r['rss_before_inference_bytes'] / 2**20:>11.0f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
