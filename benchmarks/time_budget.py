"""Does a short ``time_limit`` run train for most of its budget and end on time (issue 28)?

Runs ``atrous train --config configs/camvid_deeplabv3plus_mobilenetv2_30min.json --set
time_limit=3`` (real CamVid from ``../shared/data/camvid``) as a user would, as a fresh
process, on a quiet machine and with another process keeping one core busy, and reports the
command's wall time, the share of it spent training (``summary.json``'s ``seconds``), what
the fitter decided (its log line) and the final validation mIoU. Target: training >= 80% of
the wall time, wall time <= the limit + 10%.

    PYTHONPATH=src python benchmarks/time_budget.py [--minutes 3] [--repeats 2]

Writes ``benchmarks/results/time_budget.md``. Reads ``../shared/data/camvid`` (a benchmark,
not a test: it stops with a message where the folder is absent).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_model

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "camvid_deeplabv3plus_mobilenetv2_30min.json"


def one_run(camvid: Path, minutes: float, busy: bool) -> dict:
    """One ``atrous train`` process; ``busy``: another process spins on one core meanwhile."""
    spinner = None
    if busy:
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            cmd = [
                sys.executable,
                "-m",
                "atrous",
                "train",
                "--config",
                str(CONFIG),
                "--set",
                f"time_limit={minutes}",
                "--set",
                f"data_root={camvid}",
                "--out",
                str(out),
                "--no-progress",
            ]
            env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(f"atrous train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            summary = json.loads((out / "summary.json").read_text())
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    plans = [ln for ln in proc.stdout.splitlines() if ln.startswith("time budget")]
    seconds = summary["seconds"]
    return {
        "busy": busy,
        "wall_s": wall,
        "training_share": seconds["training"] / wall,
        "seconds": seconds,
        "iterations": summary["iterations"],
        "miou": summary["best_val_miou"],
        "val_miou_last": summary["last"].get("val_miou"),
        "plans": plans,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--camvid", default=str(ROOT.parent / "shared" / "data" / "camvid"))
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "time_budget.md"))
    args = ap.parse_args()
    camvid = Path(args.camvid).resolve()
    if not (camvid / "train").is_dir():
        raise SystemExit(f"{camvid}: CamVid not found (give --camvid)")
    runs = []
    for r in range(args.repeats):
        for busy in (False, True):
            res = one_run(camvid, args.minutes, busy)
            runs.append(res)
            print(
                f"run {r + 1} {'busy' if busy else 'quiet'}: {res['wall_s']:.1f} s, training "
                f"{100 * res['training_share']:.0f}%, {res['iterations']} iterations, "
                f"mIoU {res['miou']}",
                flush=True,
            )
    limit = args.minutes * 60
    lines = [
        "# A short `time_limit` run: where the time goes",
        "",
        f"`PYTHONPATH=src python benchmarks/time_budget.py --minutes {args.minutes:g} "
        f"--repeats {args.repeats}` on {cpu_model()} ({os.cpu_count()} cores, torch's default "
        "threads), `atrous train --config configs/camvid_deeplabv3plus_mobilenetv2_30min.json "
        f"--set time_limit={args.minutes:g}` on CamVid (367 train, 101 val frames), each a fresh "
        "process; wall time is the whole command's (start-up, set-up, training, validation, "
        "checkpoints, export). Busy: another process spins on one of the cores throughout.",
        "",
        f"Target: training >= 80% of the wall time; wall time <= {limit * 1.1:.0f} s "
        f"({args.minutes:g} min + 10%).",
        "",
        "| machine | run | wall s | training | set-up s | validation s | checkpoints s "
        "| export s | iterations | val mIoU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, res in enumerate(runs):
        s = res["seconds"]
        miou = "-" if res["miou"] is None else f"{100 * res['miou']:.1f}%"
        lines.append(
            f"| {'busy' if res['busy'] else 'quiet'} | {i // 2 + 1} | {res['wall_s']:.1f} "
            f"| {100 * res['training_share']:.0f}% | {s['setup']:.1f} | {s['validation']:.1f} "
            f"| {s['checkpoint']:.1f} | {s.get('export', 0):.1f} | {res['iterations']} "
            f"| {miou} |"
        )
    for busy in (False, True):
        sel = [r for r in runs if r["busy"] == busy]
        walls = [r["wall_s"] for r in sel]
        shares = [r["training_share"] for r in sel]
        lines.append(
            f"| {'busy' if busy else 'quiet'} | median (worst) | "
            f"{statistics.median(walls):.1f} ({max(walls):.1f}) | "
            f"{100 * statistics.median(shares):.0f}% ({100 * min(shares):.0f}%) | | | | | | |"
        )
    lines += ["", "What the fitter said (first plan line of each run):", ""]
    for i, res in enumerate(runs):
        label = f"{'busy' if res['busy'] else 'quiet'} {i // 2 + 1}"
        for plan in res["plans"]:
            lines.append(f"- {label}: `{plan}`")
    lines += [
        "",
        "The mIoU is the final validation's, on the subset the plan chose (an evenly spaced "
        "subset of the 101 val frames when the full set does not fit 10% of the budget); "
        "`atrous eval` gives the whole split's.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
