"""Training-step throughput: images/s of forward + loss + backward + SGD/poly step, and the
peak resident memory, for DeepLab v3+ MobileNetV2 / ResNet-50 at crop 321 and 513.

Each (model, crop) runs in its own subprocess so that its peak RSS is its own. Inputs are
random tensors (the data pipeline has its own benchmark, bench_data.py).

    PYTHONPATH=src python benchmarks/bench_train.py [--quick] [--batch 2] [--iters 3]
        [--models deeplabv3plus_mobilenetv2 deeplabv3plus_resnet50] [--crops 321 513]
        [--amp none|bf16] [--channels-last] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from common import peak_rss_mb


def one(model_name: str, crop: int, batch: int, iters: int, amp: str, channels_last: bool) -> dict:
    import torch

    from atrous.losses import SegmentationLoss
    from atrous.models import build
    from atrous.training import PolyLR, build_optimizer

    torch.manual_seed(0)
    model = build(model_name, num_classes=21).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model, 0.007)
    sched = PolyLR(opt, 1000)
    crit = SegmentationLoss()
    x = torch.randn(batch, 3, crop, crop)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 21, (batch, crop, crop))
    ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with ctx:
            out = model(x)
        crit(out, y).backward()
        opt.step()
        sched.step()

    step()  # warm-up: allocator and kernel selection
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    # The median resists bursts from other processes on a shared machine.
    dt = statistics.median(times)
    return {
        "model": model_name,
        "crop": crop,
        "batch": batch,
        "iters": iters,
        "images_per_s": batch / dt,
        "s_per_iter": dt,
        "s_per_iter_max": max(times),
        "peak_rss_mb": peak_rss_mb(),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--models", nargs="+", default=["deeplabv3plus_mobilenetv2", "deeplabv3plus_resnet50"]
    )
    p.add_argument("--crops", nargs="+", type=int, default=[321, 513])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--amp", choices=("none", "bf16"), default="none")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument(
        "--quick", action="store_true", help="MobileNetV2 at crop 321 only, batch 2, 2 iterations"
    )
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = p.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.one:
        name, crop = args.one.rsplit(":", 1)
        result = one(name, int(crop), args.batch, args.iters, args.amp, args.channels_last)
        print(json.dumps(result))
        return
    if args.quick:
        args.models, args.crops = ["deeplabv3plus_mobilenetv2"], [321]
        args.batch, args.iters = 2, 2
    rows = []
    for name in args.models:
        for crop in args.crops:
            cmd = [sys.executable, __file__, "--one", f"{name}:{crop}"]
            cmd += ["--batch", str(args.batch), "--iters", str(args.iters)]
            cmd += ["--amp", args.amp, "--threads", str(args.threads)]
            if args.channels_last:
                cmd.append("--channels-last")
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                print(f"{name} crop {crop}: failed\n{res.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"  {name} crop {crop}: {r['images_per_s']:.2f} img/s", file=sys.stderr)
    print(
        f"\ntraining step (fwd+loss+bwd+SGD), batch {args.batch}, median of {args.iters} "
        f"timed iterations, amp={args.amp}, channels_last={args.channels_last}"
    )
    print(
        f"{'model':<30} {'crop':>5} {'img/s':>8} {'s/iter':>8} {'max s':>7} "
        f"{'peak RSS MB':>12} {'thr':>4}"
    )
    for r in rows:
        print(
            f"{r['model']:<30} {r['crop']:>5} {r['images_per_s']:>8.2f} "
            f"{r['s_per_iter']:>8.2f} {r['s_per_iter_max']:>7.2f} "
            f"{r['peak_rss_mb']:>12.0f} {r['threads']:>4}"
        )


if __name__ == "__main__":
    main()
