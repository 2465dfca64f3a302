"""How much the demo's mIoU varies: the demo recipe (``configs/synthetic_demo.json``, 600
iterations) trained with several seeds and thread counts, each evaluated as ``atrous demo``
does (32 synthetic val images, full resolution, scale 1).

Usage::

    PYTHONPATH=src python benchmarks/demo_spread.py [--seeds 0,1,2,3,4] [--threads 1,2]
        [--iterations 600] [--out /tmp/demo_spread]

Each run is a fresh subprocess (as ``make demo`` is), so thread settings and allocator state
do not leak between runs. Prints one line per run and the median, min and max mIoU per
thread count, and writes ``results.json`` into ``--out``. Also says whether two runs with the
same seed and threads gave the same mIoU (the demo's determinism on this machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, torch
torch.set_num_threads(int(sys.argv[2]))
torch.manual_seed(0)
from atrous.training import Trainer, load_config
from atrous.cli.demo_cmd import DEMO_CONFIG_NAME
from atrous.data import build_dataset
from atrous.evaluation import evaluate_model
from atrous import weights as W
seed, threads, iters, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cfg = load_config(DEMO_CONFIG_NAME, [f"seed={seed}", f"iterations={iters}"])
Trainer(cfg, out, progress=False).train()
model = W.load(out + "/model.safetensors")
val = build_dataset("synthetic", None, "val", length=32, size=cfg.dataset_options["size"])
r = evaluate_model(model, val, scales=(1.0,), crf=None)
print(json.dumps({"seed": seed, "threads": threads, "miou": r.miou}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--repeat-first", action="store_true", help="run seed 0 twice per thread")
    ap.add_argument("--out", default="/tmp/demo_spread")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    runs = []
    plan = [(s, t) for t in threads for s in seeds]
    if args.repeat_first:
        plan += [(seeds[0], t) for t in threads]
    for i, (seed, t) in enumerate(plan):
        run_dir = out / f"run_{i}_s{seed}_t{t}"
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(seed), str(t), str(args.iterations), str(run_dir)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            sys.exit(f"run seed={seed} threads={t} failed:\n{proc.stderr[-2000:]}")
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        runs.append(rec)
        print(
            f"seed {seed} threads {t}: mIoU {100 * rec['miou']:.1f}%  ({rec['seconds']} s)",
            flush=True,
        )
    summary = {}
    for t in threads:
        vals = [100 * r["miou"] for r in runs if r["threads"] == t][: len(seeds)]
        summary[t] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
        print(
            f"threads {t}: {len(vals)} seeds, mIoU median {summary[t]['median']:.1f}%, "
            f"min {summary[t]['min']:.1f}%, max {summary[t]['max']:.1f}%"
        )
    if args.repeat_first:
        for t in threads:
            same = [r["miou"] for r in runs if r["threads"] == t and r["seed"] == seeds[0]]
            print(
                f"threads {t}, seed {seeds[0]} twice: {[round(100 * m, 2) for m in same]} "
                f"({'identical' if len(set(same)) == 1 else 'differ'})"
            )
    (out / "results.json").write_text(json.dumps({"runs": runs, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
