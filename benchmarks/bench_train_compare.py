"""Training steps side by side (issue 15): torchvision's reference against atrous's trainer,
same model, same initial weights, same batch and crop, on these CPUs.

    python benchmarks/bench_train_compare.py                    # both cases, every variant
    python benchmarks/bench_train_compare.py --cases deeplabv3plus_mobilenetv2 --steps 5
    python benchmarks/bench_train_compare.py --variants torchvision atrous atrous-bf16-cl

Cases (the issue's): ``deeplabv3_resnet50`` crop 513 batch 4 with the auxiliary loss, and
``deeplabv3plus_mobilenetv2`` crop 321 batch 8 (torchvision has no v3+; its row is left out
and atrous's plain fp32 step is the baseline). Variants:

- ``torchvision``: torchvision's model (``--torchvision DIR``, ``make bench-deploy`` installs
  it; its compiled-op registrations are skipped, the models do not use them) in its reference
  recipe's step: cross-entropy on ``out`` + 0.5 on ``aux``, SGD momentum 0.9, poly LR;
- ``atrous``: ``atrous.training.Trainer``'s own step (the code ``atrous train`` runs), fp32;
- ``atrous-cl``: + ``channels_last``; ``atrous-bf16-cl``: + ``amp: bf16`` (this CPU has
  AVX512-BF16); ``atrous-bf16-cl-compile``: + ``compile: true`` (inductor; its compile time
  is the first step's, reported apart).

Every variant runs in its own fresh process (peak RSS is its own: VmHWM), on the same
initial weights (torchvision's, seeded, loaded into atrous's model: the names are shared), one
untimed first step (kernel selection, compilation), then ``--steps`` timed ones; the rows
give the median s/step, images/s, the first step and the peak RSS, and the ratio of
throughput to the baseline (torchvision where it has the model). ``--rounds`` repeats the
whole set of processes, interleaved, and keeps each variant's fastest median (this VM
stalls now and then).
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
from typing import Any

from common import import_torchvision, peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "deeplabv3_resnet50": {"crop": 513, "batch": 4, "aux": True, "tv": "deeplabv3_resnet50"},
    "deeplabv3plus_mobilenetv2": {"crop": 321, "batch": 8, "aux": False, "tv": None},
}
VARIANTS = {
    "torchvision": {},
    "atrous": {"amp": "none", "channels_last": False, "compile": False},
    "atrous-cl": {"amp": "none", "channels_last": True, "compile": False},
    "atrous-bf16-cl": {"amp": "bf16", "channels_last": True, "compile": False},
    "atrous-bf16-cl-compile": {"amp": "bf16", "channels_last": True, "compile": True},
}
NUM_CLASSES = 21
LR = 0.01


def tv_model(seg: Any, spec: dict[str, Any]) -> Any:
    """torchvision's model of a case, untrained (``seg``: its segmentation module)."""
    return getattr(seg, spec["tv"])(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=spec["aux"]
    )


def initial_weights(case: str, path: Path, tv_dir: str | None) -> bool:
    """Seeded initial weights for ``case`` (torchvision's model where it has one) saved to
    ``path``; True when they came from torchvision."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    spec = CASES[case]
    seg = import_torchvision(tv_dir) if spec["tv"] else None
    if seg is not None:
        model = tv_model(seg, spec)
    else:
        from atrous.models import build

        model = build(case, num_classes=NUM_CLASSES, aux=spec["aux"])
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(path))
    return seg is not None


def run_one(
    case: str,
    variant: str,
    weights: str,
    steps: int,
    threads: int,
    tv_dir: str | None,
    out_dir: str,
) -> dict[str, Any]:
    """One fresh process: the variant's steps on one fixed random batch."""
    import itertools

    import torch
    from safetensors.torch import load_file

    torch.set_num_threads(threads)
    spec = CASES[case]
    crop, batch = spec["crop"], spec["batch"]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, crop, crop, generator=g)
    y = torch.randint(0, NUM_CLASSES, (batch, crop, crop), generator=g)
    sd = load_file(weights)
    if variant == "torchvision":
        import torch.nn.functional as F

        from atrous.training import PolyLR

        seg = import_torchvision(tv_dir)
        model = tv_model(seg, spec)
        model.load_state_dict(sd)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=LR, momentum=0.9, weight_decay=1e-4)
        sched = PolyLR(opt, 1000)

        def step() -> float:
            opt.zero_grad(set_to_none=True)
            out = model(x)
            loss = F.cross_entropy(out["out"], y, ignore_index=255)
            if "aux" in out:
                loss = loss + 0.5 * F.cross_entropy(out["aux"], y, ignore_index=255)
            loss.backward()
            opt.step()
            sched.step()
            return float(loss)
    else:
        from atrous.training import Trainer
        from atrous.training.config import TrainConfig
        from atrous.weights.convert import convert, source_config

        opts = VARIANTS[variant]
        model_options = {}
        if any(k.startswith("classifier.") for k in sd):  # torchvision's names and options
            sd = convert(sd, "torchvision", case)
            model_options = source_config("torchvision", case)
        cfg = TrainConfig(
            model=case,
            num_classes=NUM_CLASSES,
            aux=spec["aux"],
            model_options=model_options,
            allow_num_classes_mismatch=True,
            dataset="synthetic",
            dataset_options={"size": 64, "length": 16},
            val_split=None,
            crop_size=crop,
            batch_size=batch,
            num_workers=0,
            iterations=1000,
            optimizer="sgd",
            lr=LR,
            tensorboard=False,
            amp=opts["amp"],
            channels_last=opts["channels_last"],
            compile=opts["compile"],
        )
        trainer = Trainer(cfg, out_dir, progress=False)
        missing, unexpected = trainer.model.load_state_dict(sd, strict=False)
        if [k for k in missing + unexpected if not k.endswith("num_batches_tracked")]:
            raise RuntimeError(f"weights do not match: missing {missing}, unexpected {unexpected}")
        trainer._train_mode()
        batches = itertools.repeat({"image": x, "mask": y, "skipped": []})

        def step() -> float:
            return trainer._step(batches)

    t0 = time.perf_counter()
    first_loss = step()
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {
        "case": case,
        "variant": variant,
        "first_s": first,
        "first_loss": first_loss,
        "s_per_step": statistics.median(times),
        "s_max": max(times),
        "steps": steps,
        "images_per_s": batch / statistics.median(times),
        "peak_rss_mb": peak_rss_mb(),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=3, help="timed steps per process")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved repeats; fastest kept")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--torchvision",
        default=str(ROOT / ".bench" / "torchvision"),
        help="where torchvision is installed (pip install --no-deps --target)",
    )
    ap.add_argument("--out", help="write the markdown table and JSON here (no suffix)")
    ap.add_argument(
        "--one", nargs=3, metavar=("CASE", "VARIANT", "WEIGHTS"), help=argparse.SUPPRESS
    )
    args = ap.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run_one(*args.one, args.steps, args.threads, args.torchvision, tmp)))
        return
    pythonpath = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": pythonpath}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    title = (
        f"# training step side by side, {args.threads} threads, {args.steps} timed steps "
        f"per process after one untimed, fastest of {args.rounds} interleaved round(s)"
    )
    header = (
        "| model | crop | batch | variant | s/step | img/s | vs baseline | first step s "
        "| peak RSS MB | loss at step 1 |"
    )
    lines = [title, "", header, "|---|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        weights = {}
        for case in args.cases:
            w = Path(tmp) / f"{case}.safetensors"
            from_tv = initial_weights(case, w, args.torchvision)
            weights[case] = (str(w), from_tv)
        for _ in range(args.rounds):
            for case in args.cases:
                w, from_tv = weights[case]
                for variant in args.variants:
                    if variant == "torchvision" and not from_tv:
                        continue
                    cmd = [sys.executable, __file__, "--one", case, variant, w]
                    cmd += ["--steps", str(args.steps), "--threads", str(args.threads)]
                    cmd += ["--torchvision", args.torchvision]
                    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    if r.returncode != 0:
                        print(f"{case} {variant} failed:\n{r.stderr[-3000:]}", file=sys.stderr)
                        continue
                    res = json.loads(r.stdout.strip().splitlines()[-1])
                    print(
                        f"  {case} {variant}: {res['s_per_step']:.2f} s/step, "
                        f"peak {res['peak_rss_mb']:.0f} MB",
                        file=sys.stderr,
                        flush=True,
                    )
                    old = rows.get((case, variant))
                    if old is None or res["s_per_step"] < old["s_per_step"]:
                        res["peak_rss_mb"] = max(
                            res["peak_rss_mb"], old["peak_rss_mb"] if old else 0
                        )
                        rows[(case, variant)] = res
    for case in args.cases:
        spec = CASES[case]
        base = rows.get((case, "torchvision")) or rows.get((case, "atrous"))
        for variant in args.variants:
            r = rows.get((case, variant))
            if r is None:
                continue
            ratio = base["s_per_step"] / r["s_per_step"] if base else float("nan")
            mem = r["peak_rss_mb"] / base["peak_rss_mb"] if base else float("nan")
            lines.append(
                f"| {case} | {spec['crop']} | {spec['batch']} | {variant} | "
                f"{r['s_per_step']:.2f} | {r['images_per_s']:.2f} | {ratio:.2f}x speed, "
                f"{mem:.2f}x memory | {r['first_s']:.1f} | {r['peak_rss_mb']:.0f} | "
                f"{r['first_loss']:.4f} |"
            )
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).with_suffix(".md").write_text(text + "\n")
        records = [{**v} for v in rows.values()]
        Path(args.out).with_suffix(".json").write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
