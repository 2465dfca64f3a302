"""``make gpu-check``: what atrous does on a CUDA GPU, checked and timed in one run (issue 28).

Checks: (a) the tests marked ``cuda``; (b) a short training run with AMP fp16 (loss scaling)
and bf16; (c) SyncBatchNorm under torchrun with 2 processes (2 GPUs); (d) the dense CRF on
CUDA against its CPU result; (e) benchmark rows on CUDA: inference (one 513 px image), a
training step (AMP fp16) and the dense CRF. Prints a table and writes it (with the card's name)
to ``--out`` (default ``benchmarks/results/gpu_check.md``).

Without CUDA (or with ``--cpu-only``) it runs the CPU-safe parts (the CPU half of the CRF
comparison, on a tiny input) and skips the others, saying why; exit status 0. Exit status 1
when a check fails."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "gpu_check.md"


@dataclass
class Check:
    """One row of the table: ``status`` is ``ok``, ``FAIL`` or ``skipped``."""

    name: str
    status: str
    detail: str
    seconds: float = 0.0


class Skip(Exception):
    """A check that cannot run here, and why."""


def cuda_reason(cpu_only: bool) -> str | None:
    """Why the CUDA parts cannot run here (atrous' own device check), or None."""
    if cpu_only:
        return "--cpu-only"
    from atrous.inference.pipeline import cuda_problem

    return cuda_problem(torch.device("cuda"))


def timed(name: str, fn: Callable[[], str]) -> Check:
    """Run ``fn`` (returns the detail; raises on failure) as the check ``name``."""
    start = time.perf_counter()
    try:
        detail = fn()
    except Skip as e:
        return Check(name, "skipped", str(e), time.perf_counter() - start)
    except Exception as e:
        return Check(name, "FAIL", f"{type(e).__name__}: {e}"[:300], time.perf_counter() - start)
    return Check(name, "ok", detail, time.perf_counter() - start)


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """A few iterations of MobileNetV2-0.5 DeepLab v3+ on synthetic 64 px images."""
    cfg: dict[str, Any] = dict(
        model="deeplabv3plus_mobilenetv2",
        model_options={"norm": "gn", "width_mult": 0.5},
        dataset="synthetic",
        dataset_options={"length": 16, "size": 64},
        crop_size=57,
        batch_size=4,
        iterations=8,
        lr=0.01,
        num_workers=0,
        log_every=2,
        val_every=1000,
        val_max_images=2,
        ckpt_every=1000,
        tensorboard=False,
        device="cuda",
    )
    cfg.update(overrides)
    return cfg


def run_tests() -> str:
    """(a) ``pytest -m cuda``: every CUDA-marked test must pass, none be skipped."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "-rs"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    last = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    if done.returncode != 0 or "skipped" in last:
        raise RuntimeError(f"pytest -m cuda: exit {done.returncode}: {last}")
    return last


def train_amp(amp: str) -> str:
    """(b) A short training run under ``amp``; the loss must stay finite."""
    from atrous.training import TrainConfig, Trainer

    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise Skip("this GPU has no bfloat16")
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(**tiny_config(amp=amp)).validate()
        trainer = Trainer(cfg, out, progress=False)
        trainer.train()
        lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
    losses = [float(r["loss"]) for r in map(json.loads, lines) if "loss" in r]
    loss = losses[-1] if losses else float("nan")
    if not torch.isfinite(torch.tensor(loss)):
        raise RuntimeError(f"loss {loss} after {trainer.iteration} iterations")
    return f"{trainer.iteration} iterations, last loss {loss:.3f}"


def sync_bn_torchrun() -> str:
    """(c) ``torchrun --nproc_per_node 2 -m atrous train`` with ``sync_bn`` (BatchNorm)."""
    if torch.cuda.device_count() < 2:
        raise Skip(f"needs 2 GPUs, {torch.cuda.device_count()} visible")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "sync_bn.json"
        options = {"norm": "bn", "width_mult": 0.5}
        config.write_text(json.dumps(tiny_config(sync_bn=True, model_options=options)))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += ["--nproc_per_node", "2", "-m", "atrous", "train", "--config", str(config)]
        cmd += ["--out", str(Path(tmp) / "run"), "--no-progress"]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"torchrun exit {done.returncode}: {done.stderr[-300:]}")
        return done.stdout.strip().splitlines()[-1][:120]


def crf_input(h: int, w: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random image (1, 3, H, W) uint8 and probabilities (1, C, H, W)."""
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.interpolate(torch.rand(1, 3, h // 8, w // 8, generator=g), (h, w))
    logits = torch.nn.functional.interpolate(torch.randn(1, c, h // 4, w // 4, generator=g), (h, w))
    return (img * 255).to(torch.uint8), torch.softmax(2 * logits, 1)


def crf_compare(cuda: bool) -> str:
    """(d) The dense CRF on CUDA against its CPU result (CPU half only without CUDA)."""
    from atrous.crf import dense_crf

    img, probs = crf_input(*((120, 160) if cuda else (24, 32)), 5)
    cpu = dense_crf(img, probs, iterations=5)
    if not torch.allclose(cpu.sum(1), torch.ones(()), atol=1e-4):
        raise RuntimeError("the CPU result is not a distribution over classes")
    if not cuda:
        return f"CPU half only ({tuple(img.shape[2:])}); CUDA half skipped"
    gpu = dense_crf(img.cuda(), probs.cuda(), iterations=5).cpu()
    agree = float((cpu.argmax(1) == gpu.argmax(1)).float().mean())
    diff = float((cpu - gpu).abs().mean())
    if agree < 0.999 or diff >= 1e-4:
        raise RuntimeError(f"labels agree {agree:.4f}, mean |diff| {diff:.2e}")
    return f"labels agree {agree:.4f}, mean |diff| {diff:.1e}"


def cuda_ms(fn: Callable[[], Any], repeat: int = 10) -> float:
    """Median milliseconds of ``fn`` on CUDA, after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeat):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)[len(times) // 2]


def bench_rows() -> list[tuple[str, str, float]]:
    """(e) ``(what, size, median ms)`` on CUDA: inference, a training step, the dense CRF."""
    import atrous.models as M
    from atrous.crf import dense_crf
    from atrous.inference import Segmenter

    model = M.build("deeplabv3plus_mobilenetv2", num_classes=21).cuda().eval()
    seg = Segmenter(model, device="cuda")
    image = torch.randint(0, 256, (513, 513, 3), dtype=torch.uint8).numpy()
    rows = [("inference (v3+ MobileNetV2, fp32)", "513x513", cuda_ms(lambda: seg.logits(image)))]
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda")
    x = torch.randn(8, 3, 321, 321, device="cuda")
    y = torch.randint(0, 21, (8, 321, 321), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.float16):
            out = model(x)
            loss = torch.nn.functional.cross_entropy(
                out["out"] if isinstance(out, dict) else out, y
            )
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    rows.append(("training step (AMP fp16)", "8x321x321", cuda_ms(step)))
    img, probs = crf_input(360, 480, 11)
    img, probs = img.cuda(), probs.cuda()
    rows.append(
        (
            "dense CRF, 10 iterations",
            "480x360, 11 classes",
            cuda_ms(lambda: dense_crf(img, probs), 5),
        )
    )
    return rows


def run_checks(reason: str | None) -> tuple[list[Check], list[tuple[str, str, float]]]:
    """Every check, the CUDA ones skipped (with ``reason``) where there is no CUDA."""
    cuda = reason is None
    checks = [timed("dense CRF: CUDA vs CPU", lambda: crf_compare(cuda))]
    names = ["tests marked cuda", "training, AMP fp16", "training, AMP bf16", "SyncBN, torchrun x2"]
    if not cuda:
        checks += [Check(n, "skipped", "no CUDA (above)") for n in [*names, "benchmark rows"]]
        return checks, []
    checks.insert(0, timed(names[0], run_tests))
    checks.append(timed(names[1], lambda: train_amp("fp16")))
    checks.append(timed(names[2], lambda: train_amp("bf16")))
    checks.append(timed(names[3], sync_bn_torchrun))
    bench: list[tuple[str, str, float]] = []

    def measure() -> str:
        bench.extend(bench_rows())
        return f"{len(bench)} rows (below)"

    checks.append(timed("benchmark rows", measure))
    return checks, bench


def machine() -> str:
    """The card (or the lack of one), torch, and the CPU."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("model name")
        ]
        cpu = f"{names[0]} ({len(names)} logical cores)" if names else cpu
    card = "no CUDA GPU"
    if torch.cuda.is_available():
        card = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return f"GPU: {card}; torch {torch.__version__} (CUDA {torch.version.cuda}); CPU: {cpu}"


def report(checks: list[Check], bench: list[tuple[str, str, float]], reason: str | None) -> str:
    """The Markdown page: machine, checks, benchmark rows."""
    lines = ["# make gpu-check", "", machine(), ""]
    if reason:
        lines += [f"No CUDA, the CUDA parts skipped: {reason}", ""]
    lines += ["| check | status | detail | s |", "|---|---|---|---|"]
    lines += [f"| {c.name} | {c.status} | {c.detail} | {c.seconds:.1f} |" for c in checks]
    if bench:
        lines += ["", "| benchmark (CUDA) | size | median ms |", "|---|---|---|"]
        lines += [f"| {what} | {size} | {ms:.1f} |" for what, size, ms in bench]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the checks, print the table, write it to ``--out``; 1 if a check failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cpu-only", action="store_true", help="skip the CUDA parts even with CUDA"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the Markdown report")
    args = parser.parse_args(argv)
    reason = cuda_reason(args.cpu_only)
    checks, bench = run_checks(reason)
    text = report(checks, bench, reason)
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 1 if any(c.status == "FAIL" for c in checks) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main())
