"""The real training loop's speed on real data: seconds per step of ``Trainer`` (DataLoader
workers, augmentation, loss and optimizer included) for variants of a config, each in a fresh
process, run in interleaved rounds so that the VM's drift falls on every variant alike.

bench_train.py times the bare step on random tensors; this one shows what a ``time_limit``
run gets, which is what decides how many steps fit in 30 minutes.

    PYTHONPATH=src python benchmarks/bench_train_loop.py \
        --config configs/camvid_deeplabv3plus_mobilenetv2_30min.json \
        --set data_root=../shared/data/camvid --steps 30 --rounds 2 \
        --variant fp32=amp=none --variant bf16= --variant bf16_w0=num_workers=0
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

from common import peak_rss_mb


def one(config: str, overrides: list[str], steps: int, warmup: int) -> dict:
    import torch

    from atrous.training import Trainer, load_config

    settings = [*overrides, "val_split=null", "time_limit=null"]
    settings += [f"iterations={steps + warmup + 1}", "tensorboard=false"]
    cfg = load_config(config, settings)
    with tempfile.TemporaryDirectory() as out:
        t = Trainer(cfg, out, progress=False)
        times: list[float] = []
        step = t._step

        def timed(batches):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            loss = step(batches)
            times.append(time.perf_counter() - t0)
            return loss

        t._step = timed  # type: ignore[method-assign]
        t.train(stop_at=steps + warmup)
    dt = statistics.median(times[warmup:])
    return {
        "s_per_step": dt,
        "batch": cfg.batch_size,
        "img_per_s": cfg.batch_size / dt,
        "first_step_s": times[0],
        "threads": torch.get_num_threads(),
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", action="append", default=[], help="key=value for every variant")
    ap.add_argument(
        "--variant",
        action="append",
        required=True,
        help="name=key=value,key=value (name= alone: the config as is)",
    )
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(one(args.config, json.loads(args.child), args.steps, args.warmup)))
        return
    variants = {}
    for v in args.variant:
        name, _, sets = v.partition("=")
        variants[name] = [s for s in sets.split(",") if s]
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, sets in variants.items():
            cmd = [sys.executable, __file__, "--config", args.config]
            cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
            cmd += ["--variant", "x=", "--child", json.dumps([*args.set, *sets])]
            proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[name].append(res)
            print(
                f"round {r + 1} {name}: {res['s_per_step']:.3f} s/step "
                f"({res['img_per_s']:.2f} img/s), peak {res['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    base = next(iter(variants))
    base_s = statistics.median(x["s_per_step"] for x in runs[base])
    print(
        f"\n| variant | settings | s/step (median of {args.rounds} runs) | img/s | vs {base} "
        "| spread s/step | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for name, sets in variants.items():
        s = [x["s_per_step"] for x in runs[name]]
        med = statistics.median(s)
        summary[name] = {"settings": sets, "runs": runs[name], "s_per_step": med}
        print(
            f"| {name} | {', '.join(sets) or 'config'} | {med:.3f} | "
            f"{runs[name][0]['batch'] / med:.2f} | "
            f"{base_s / med:.2f}× | {min(s):.3f}-{max(s):.3f} | "
            f"{max(x['peak_rss_mb'] for x in runs[name]):.0f} |"
        )
    if args.out:
        record = {"config": args.config, "set": args.set, "steps": args.steps, "variants": summary}
        with open(args.out, "w") as f:
            json.dump(record, f, indent=2)


if __name__ == "__main__":
    main()
