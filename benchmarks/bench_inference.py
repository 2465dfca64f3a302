"""Latency and peak memory of :class:`atrous.inference.Segmenter` on large images.

Each case runs in a fresh subprocess so that its peak resident set size (``ru_maxrss``, which
counts torch's native allocations, unlike tracemalloc) belongs to that case alone.

    python benchmarks/bench_inference.py                         # toy MobileNet-sized model
    python benchmarks/bench_inference.py --model deeplabv3plus_mobilenet --sizes 4000x3000
    python benchmarks/bench_inference.py --scales 0.5,1,1.5 --flip --json bench.json

``--model`` is looked up with ``atrous.models.build(name, num_classes=...)`` when that module
exists; ``toy-mobilenet`` (the default) is a MobileNetV2-shaped OS-16 network with a small
ASPP head, about the cost of DeepLabv3-MobileNet, for use before the real models exist.
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

TOY = "toy-mobilenet"


# --- a model of MobileNet cost ---------------------------------------------------------------
def _cbr(cin: int, cout: int, k: int = 1, s: int = 1, d: int = 1, groups: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, s, padding=d * (k - 1) // 2, dilation=d, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dilation: int, expand: int) -> None:
        super().__init__()
        hid = cin * expand
        layers = [_cbr(cin, hid)] if expand != 1 else []
        layers += [
            _cbr(hid, hid, 3, stride, dilation, groups=hid),
            nn.Conv2d(hid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class ToyMobileNetDeepLab(nn.Module):
    """MobileNetV2 layout (t, c, n, s) at output stride 16 (last stride -> dilation 2), a
    1x1 + image-pooling head of 256 channels, logits upsampled to the input (v3 sec. 3.3)."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 1), (6, 320, 1, 1))  # fmt: skip

    def __init__(self, num_classes: int = 21) -> None:
        super().__init__()
        layers: list[nn.Module] = [_cbr(3, 32, 3, 2)]
        cin, dilation = 32, 1
        for i, (t, c, n, s) in enumerate(self.SETTINGS):
            if i >= 5:  # the stride-32 stage, dilated instead (OS 16)
                dilation = 2
            for j in range(n):
                layers.append(_InvertedResidual(cin, c, s if j == 0 else 1, dilation, t))
                cin = c
        self.backbone = nn.Sequential(*layers)
        self.aspp = _cbr(cin, 256)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, 256, 1), nn.ReLU())
        self.project = _cbr(512, 256)
        self.classifier = nn.Conv2d(256, num_classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        f = self.backbone(x)
        g = self.pool(f).expand(-1, -1, *f.shape[-2:])
        y = self.classifier(self.project(torch.cat([self.aspp(f), g], 1)))
        return {"out": nn.functional.interpolate(y, size, mode="bilinear", align_corners=False)}


def build_model(name: str, num_classes: int) -> nn.Module:
    if name == TOY:
        return ToyMobileNetDeepLab(num_classes)
    try:
        from atrous import models
    except ImportError as e:
        raise SystemExit(
            f"--model {name}: atrous.models is not available ({e}); use --model {TOY}"
        ) from e
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
    ap.add_argument("--model", default=TOY, help=f"atrous.models name, or {TOY} (default)")
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
