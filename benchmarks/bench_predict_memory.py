"""Peak memory of ``atrous predict`` on a large photo: whole-image inference versus the default
automatic tiling (``--auto-tile``, 4 MP) and an explicit ``--tile-size 513``.

Usage::

    PYTHONPATH=src python benchmarks/bench_predict_memory.py [--image PHOTO] [--megapixels 12]
        [--model deeplabv3plus_mobilenetv2] [--modes default,whole,tile513]

Without ``--image`` a street scene from ``../shared/data/camvid`` (or, failing that, a
generated textured image) is resized to ``--megapixels`` (4:3). Weights are deterministic
random ones (memory does not depend on their values). Each mode is one fresh ``atrous
predict`` process; its peak RSS is the child's ``ru_maxrss``. Prints one line per mode: peak
RSS, wall time, and the share of label pixels equal to the whole-image run's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MODES = {
    "default": [],  # --auto-tile 4 (MP): tiled above the budget
    "whole": ["--auto-tile", "0"],
    "tile513": ["--tile-size", "513"],
}


def _photo(path: Path, megapixels: float, source: str | None) -> Path:
    w = round((megapixels * 1e6 * 4 / 3) ** 0.5)
    h = round(w * 3 / 4)
    if source is None:
        found = sorted((ROOT.parent / "shared" / "data" / "camvid").rglob("*.[jp][pn]g"))
        found = [p for p in found if p.parent.name in ("train", "val")]
        source = str(found[0]) if found else None
    if source is not None:
        im = Image.open(source).convert("RGB").resize((w, h), Image.Resampling.BICUBIC)
    else:
        rng = np.random.default_rng(0)
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    im.save(path, quality=92)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", default=None)
    ap.add_argument("--megapixels", type=float, default=12.0)
    ap.add_argument("--model", default="deeplabv3plus_mobilenetv2")
    ap.add_argument("--num-classes", type=int, default=21)
    ap.add_argument("--modes", default="tile513,default,whole")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        photo = _photo(t / "photo.jpg", args.megapixels, args.image)
        w, h = Image.open(photo).size
        import torch

        import atrous.models as M
        import atrous.weights as W

        torch.manual_seed(0)
        weights = W.save(M.build(args.model, num_classes=args.num_classes), t / "m.safetensors")
        print(
            f"{args.model}, {args.num_classes} classes, photo {w}x{h} "
            f"({w * h / 1e6:.1f} MP), {args.threads} threads"
        )
        labels = {}
        for mode in args.modes.split(","):
            out = t / mode
            cmd = [sys.executable, "-m", "atrous", "predict", str(weights), str(photo)]
            cmd += ["-o", str(out), "--no-progress", *MODES[mode]]
            # each mode in its own process tree so ru_maxrss is that mode's alone
            measure = (
                "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True);"
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
            )
            wrapper = [sys.executable, "-c", measure, *cmd]
            t0 = time.perf_counter()
            proc = subprocess.run(wrapper, env=env, capture_output=True, text=True, check=False)
            dt = time.perf_counter() - t0
            if proc.returncode != 0:
                sys.exit(f"{mode} failed:\n{proc.stderr[-2000:]}")
            peak_gb = int(proc.stdout.strip().splitlines()[-1]) / 1024**2
            labels[mode] = np.asarray(Image.open(out / "photo.png"))
            flags = " ".join(MODES[mode]) or "no flags"
            print(f"{mode:>8} ({flags}): peak RSS {peak_gb:.2f} GiB, {dt:.1f} s", flush=True)
        if "whole" in labels:
            for mode, lab in labels.items():
                if mode != "whole":
                    agree = 100 * (lab == labels["whole"]).mean()
                    print(f"{mode}: {agree:.2f}% of pixels labelled as whole-image inference")


if __name__ == "__main__":
    main()
