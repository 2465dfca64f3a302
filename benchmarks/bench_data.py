"""Throughput of the training input pipeline: decode + DeepLab v3 transforms + collate.

Images/s with 0, 1 and 2 DataLoader workers at crop 321 (v2) and 513 (v3), on the synthetic
dataset and, when present, on a CamVid folder (SegNet layout).

    PYTHONPATH=src python benchmarks/bench_data.py [--camvid /work/shared/data/camvid]
        [--images 48] [--batch 8] [--workers 0 1 2] [--crops 321 513]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from atrous.data import CamVid, SyntheticSegmentation, collate, train_transforms


def measure(ds, workers: int, batch: int, n_images: int) -> float:
    """Images per second over ``n_images`` (after one warm-up batch, worker start included
    in the warm-up)."""
    sub = torch.utils.data.Subset(ds, range(min(n_images + batch, len(ds))))
    dl = torch.utils.data.DataLoader(
        sub, batch_size=batch, num_workers=workers, collate_fn=collate, shuffle=False
    )
    it = iter(dl)
    next(it)  # warm-up: worker start-up and first decode
    seen, t0 = 0, time.perf_counter()
    for b in it:
        seen += b["image"].shape[0]
    dt = time.perf_counter() - t0
    return seen / dt if seen else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--camvid", default="/work/shared/data/camvid", help="CamVid root (skipped if absent)"
    )
    p.add_argument("--images", type=int, default=48, help="images timed per configuration")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--crops", type=int, nargs="+", default=[321, 513])
    p.add_argument("--synthetic-size", type=int, default=512, help="synthetic image side")
    args = p.parse_args()
    torch.set_num_threads(1)  # the loader's work is per-sample numpy/PIL, like in training

    sources = {"synthetic": None}
    if Path(args.camvid).is_dir():
        sources["camvid"] = args.camvid
    else:
        print(f"(no CamVid at {args.camvid}: synthetic only)")
    rows = []
    for name, root in sources.items():
        for crop in args.crops:
            tf = train_transforms(crop_size=crop)
            if root is None:
                ds = SyntheticSegmentation(
                    args.images + args.batch, args.synthetic_size, transforms=tf, seed=0
                )
            else:
                ds = CamVid(root, "train", transforms=tf, seed=0)
            for w in args.workers:
                rows.append((name, crop, w, measure(ds, w, args.batch, args.images)))
                print(f"  {name:<9} crop {crop}  workers {w}: {rows[-1][3]:7.1f} img/s", flush=True)
    print()
    print(f"{'dataset':<10} {'crop':>5} {'workers':>8} {'img/s':>8} {'ms/img':>8}")
    for name, crop, w, ips in rows:
        print(f"{name:<10} {crop:>5} {w:>8} {ips:>8.1f} {1000 / ips:>8.1f}")


if __name__ == "__main__":
    main()
