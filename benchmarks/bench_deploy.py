"""Deployment paths side by side (issue 12): torchvision eager vs atrous eager, optimized fp32,
bf16, ONNX Runtime fp32 and int8, on the same weights, in one process, runs interleaved.

    python benchmarks/bench_deploy.py                       # the three models, 513x513
    python benchmarks/bench_deploy.py --large               # also 1024x2048 (Cityscapes size)
    python benchmarks/bench_deploy.py --models deeplabv3_resnet50 --rounds 7
    python benchmarks/bench_deploy.py --accuracy runs/a/model.safetensors,runs/b/model.safetensors

Speed (default): the parity fixtures' deterministic weights (``tests/recipe.py``), loaded into
torchvision's own model and, converted, into atrous's, so every path computes the same
function. torchvision is imported from ``--torchvision DIR`` (``pip install --no-deps
--target DIR torchvision==0.28.0``; ``make bench-deploy`` does it) with its compiled-op
registrations skipped, which its pure-Python models do not need; without it that row is left
out. Per path: the median and the worst of ``--rounds`` warm runs at batch 1, 2 threads; a
fresh process per path (``python -c`` as a user's script would start: import, load the file a
user ships, first call), its total wall time, the first call alone, and its peak RSS (VmHWM);
the file and its size; and the label agreement with atrous fp32 eager on varied real images
from ``../shared/data`` (VOC, ADE20K, Cityscapes, CamVid val, EM), each at its own size.

Accuracy (``--accuracy``): trained weights (e.g. the 30-minute CamVid recipe) run through
every path on CamVid val at the weights' own inference scale: mIoU (the papers' protocol, the
same ``evaluate_model`` as ``atrous eval``), its change against fp32 eager, and the pixel
agreement with fp32 eager per frame (median and worst). int8 is calibrated on 32 CamVid
*train* frames, none of which is scored.
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

import numpy as np
import torch
from common import import_torchvision, peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # recipe.py: the parity fixtures' weights
DATA = ROOT.parent / "shared" / "data"

_TV_MOBILENETV3 = "deeplabv3_mobilenet_v3_large"  # torchvision's name for it
# atrous arch -> (fixture source, fixture name, torchvision builder or None)
MODELS = {
    "deeplabv3_resnet50": ("torchvision", "deeplabv3_resnet50", "deeplabv3_resnet50"),
    "deeplabv3_mobilenetv3_large": ("torchvision", _TV_MOBILENETV3, _TV_MOBILENETV3),
    "deeplabv3plus_mobilenetv2": ("vainf", "deeplabv3plus_mobilenet_os16", None),
}
PATHS = ("torchvision", "eager", "fp32", "bf16", "ort_fp32", "ort_int8")
LABELS = {
    "torchvision": "torchvision eager",
    "eager": "atrous eager",
    "fp32": "atrous optimize fp32",
    "bf16": "atrous optimize bf16",
    "ort_fp32": "ONNX Runtime fp32",
    "ort_int8": "ONNX Runtime int8",
}


def eval_images(limit: int) -> list[tuple[str, np.ndarray]]:
    """Varied real images (street, indoor, objects, microscopy), none from CamVid train."""
    from atrous.imageio import read_image

    groups = [
        sorted((DATA / "voc_sample/VOC2012/JPEGImages").glob("*.jpg"))[:3],
        sorted((DATA / "ade20k_sample/images/validation").glob("*.jpg"))[:3],
        sorted((DATA / "cityscapes_sample/leftImg8bit").rglob("*.png"))[:2],
        sorted((DATA / "camvid/val").glob("*.[jp][pn]g"))[::25],
        sorted((DATA / "membrane/image").glob("*.png"))[:1],
    ]
    files = [f for g in groups for f in g][:limit]
    out = []
    for f in files:
        rgb = read_image(f)
        h, w = rgb.shape[:2]
        s = min(1.0, 1024 / max(h, w))  # the Cityscapes frame at 1024 wide
        if s < 1:
            from PIL import Image

            rgb = np.asarray(Image.fromarray(rgb).resize((round(w * s), round(h * s))))
        out.append((f"{f.parent.name}/{f.name}", rgb))
    return out


def normalize(rgb: np.ndarray) -> torch.Tensor:
    from atrous.normalization import Normalization

    return Normalization()(torch.from_numpy(rgb.copy()).permute(2, 0, 1))[None]


# ---------------------------------------------------------------- the files a user ships


def ship_files(arch: str, work: Path, calib: Path) -> dict[str, Path]:
    """Write each path's file once: torchvision's ``.pth`` state dict, atrous's safetensors,
    the fp32 and int8 (calibrated on ``calib``) ONNX graphs. Returns path name -> file."""
    from recipe import reference_state_dict

    import atrous.weights as W
    from atrous.export import export

    source, fixture, _ = MODELS[arch]
    files = {
        "torchvision": work / f"{arch}.pth",
        "eager": work / f"{arch}.safetensors",
        "ort_fp32": work / f"{arch}.fp32.onnx",
        "ort_int8": work / f"{arch}.int8.onnx",
    }
    files["fp32"] = files["bf16"] = files["eager"]
    if all(f.exists() for f in files.values()):
        return files
    sd = reference_state_dict(source, fixture)
    torch.save(sd, files["torchvision"])
    model = W.load(dict(sd))
    model.aux_classifier = None  # inference: the main output only, as torchvision's runs too
    W.save(model, files["eager"])
    export(model, files["ort_fp32"])
    export(model, files["ort_int8"], precision="int8", calibration=calib)
    return files


def load_path(name: str, arch: str, file: Path, tv: Any) -> Any:
    """(a callable normalized (1, 3, H, W) -> logits) from the file a user would ship."""
    import atrous.weights as W
    from atrous.inference import optimize

    if name == "torchvision":
        build = getattr(tv, MODELS[arch][2])  # torchvision's builder of the model
        m = build(weights=None, weights_backbone=None, num_classes=21, aux_loss=True).eval()
        m.load_state_dict(torch.load(file, weights_only=True))
        m.aux_classifier = None  # inference: the main output only, as atrous runs it
        return _eager(m)
    if name.startswith("ort_"):
        return _eager(W.load(file))
    model = W.load(file).eval()
    return _eager(model if name == "eager" else optimize(model, name))


def _eager(m: Any) -> Any:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = m(x)
        return (out["out"] if isinstance(out, dict) else out).float()

    return run


def available(arch: str, tv: Any) -> list[str]:
    from atrous.inference.optimize import bf16_supported

    paths = list(PATHS)
    if tv is None or MODELS[arch][2] is None:
        paths.remove("torchvision")
    if not bf16_supported():
        paths.remove("bf16")
    return paths


# ---------------------------------------------------------------- speed


def child(args: argparse.Namespace) -> None:
    """One path in a fresh process (started by :func:`fresh`): load and first-call seconds,
    peak RSS, printed as JSON. ``torch`` is imported at module level, as in any script."""
    torch.set_num_threads(args.threads)
    tv = import_torchvision(args.torchvision) if args.path == "torchvision" else None
    t0 = time.perf_counter()
    run = load_path(args.path, args.child, Path(args.file), tv)
    load = time.perf_counter() - t0
    h, w = args.size
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    run(x)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    run(x)
    second = time.perf_counter() - t0
    record = {"load_s": load, "first_s": first, "second_s": second, "peak_rss_mb": peak_rss_mb()}
    print(json.dumps(record))


def fresh(arch: str, name: str, file: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", arch, "--path", name, "--file", str(file)]
    cmd += ["--threads", str(args.threads), "--size", "513", "513"]
    cmd += ["--torchvision", args.torchvision]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    total = time.perf_counter() - t0
    line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    if not line.startswith("{"):
        return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1]}
    # total: process start to the end of the second call; "to first" leaves the second out
    got = json.loads(line)
    return {**got, "to_first_s": total - got["second_s"]}


def bench_model(arch: str, args: argparse.Namespace, work: Path, tv: Any) -> dict[str, Any]:
    files = ship_files(arch, work, Path(args.calib))
    names = available(arch, tv)
    runs = {n: load_path(n, arch, files[n], tv) for n in names}
    sizes = [(513, 513)] + ([(1024, 2048)] if args.large else [])
    result: dict[str, Any] = {"arch": arch, "paths": {n: {} for n in names}}
    images = eval_images(args.images)
    frame = images[0][1]
    from PIL import Image

    for h, w in sizes:
        x = normalize(np.asarray(Image.fromarray(frame).resize((w, h))))
        rounds = args.rounds if h * w <= 513 * 513 else max(2, args.rounds // 2)
        for run in runs.values():
            run(x)  # warm-up
        times: dict[str, list[float]] = {n: [] for n in runs}
        for _ in range(rounds):
            for n, run in runs.items():  # interleaved: drift hits every path alike
                t0 = time.perf_counter()
                run(x)
                times[n].append(time.perf_counter() - t0)
        for n, t in times.items():
            result["paths"][n][f"{h}x{w}"] = {"median_s": statistics.median(t), "worst_s": max(t)}
        medians = ", ".join(f"{n} {statistics.median(t):.3f}" for n, t in times.items())
        print(f"  {arch} {h}x{w}: " + medians, flush=True)
    ref = {key: runs["eager"](normalize(rgb)).argmax(1) for key, rgb in images}
    for n, run in runs.items():
        agree = [
            float((run(normalize(rgb)).argmax(1) == ref[key]).double().mean())
            for key, rgb in images
        ]
        entry = result["paths"][n]
        entry.update(
            agreement_median=statistics.median(agree),
            agreement_worst=min(agree),
            file=files[n].name,
            file_mb=files[n].stat().st_size / 2**20,
        )
    result["images"] = [k for k, _ in images]
    del runs
    for n in names:
        result["paths"][n]["fresh"] = fresh(arch, n, files[n], args)
    return result


def speed_table(results: list[dict[str, Any]], large: bool) -> str:
    head = "| model | path | 513² median s | worst s | × torchvision |"
    if large:
        head += " 1024×2048 median s | × torchvision |"
    head += (
        " fresh process: to first result s / first call s / peak RSS MB | file MB |"
        " label agreement median / worst |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        p = r["paths"]
        base = p.get("torchvision", p["eager"])
        for n, e in p.items():
            s = e["513x513"]
            row = f"| {r['arch']} | {LABELS[n]} | {s['median_s']:.3f} | {s['worst_s']:.3f} | "
            row += f"{s['median_s'] / base['513x513']['median_s']:.2f} |"
            if large:
                big = e["1024x2048"]
                row += (
                    f" {big['median_s']:.2f} | "
                    f"{big['median_s'] / base['1024x2048']['median_s']:.2f} |"
                )
            f = e["fresh"]
            fresh_cell = (
                f"{f['to_first_s']:.1f} / {f['first_s']:.2f} / {f['peak_rss_mb']:.0f}"
                if "first_s" in f
                else f"failed: {f.get('error')}"
            )
            row += (
                f" {fresh_cell} | {e['file_mb']:.1f} |"
                f" {e['agreement_median']:.4f} / {e['agreement_worst']:.4f} |"
            )
            lines.append(row)
    return "\n".join(lines)


# ---------------------------------------------------------------- accuracy


def bench_accuracy(weights: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """mIoU on CamVid val and per-frame agreement with fp32 eager, for every atrous path."""
    import atrous.weights as W
    from atrous.data import build_dataset
    from atrous.evaluation import evaluate_model, split_item
    from atrous.export import export
    from atrous.inference import Segmenter, optimize

    model = W.load(weights).eval()
    arch = model.config["arch"]
    ds = build_dataset("camvid", DATA / "camvid", split="val")
    onnx = {p: work / f"{weights.parent.name}.{p}.onnx" for p in ("ort_fp32", "ort_int8")}
    if not onnx["ort_fp32"].exists():
        export(model, onnx["ort_fp32"])
    if not onnx["ort_int8"].exists():
        export(model, onnx["ort_int8"], precision="int8", calibration=Path(args.calib))
    names = [n for n in available(arch, None) if n != "torchvision"]
    out: dict[str, Any] = {"weights": str(weights), "arch": arch, "paths": {}}
    ref: list[np.ndarray] = []
    for n in names:
        m = W.load(onnx[n]) if n in onnx else model if n == "eager" else optimize(model, n)
        seg = Segmenter.from_model(m)
        t0 = time.perf_counter()
        res = evaluate_model(m, ds, segmenter=seg, trimap_widths=None)
        seconds = time.perf_counter() - t0
        labels = [
            seg.predict(split_item(ds[i])[0]) for i in range(0, len(ds), args.agreement_every)
        ]
        if n == "eager":
            ref = labels
        agree = [float((a == b).mean()) for a, b in zip(labels, ref)]
        out["paths"][n] = {
            "miou": res.miou * 100,
            "seconds": seconds,
            "images": res.num_images,
            "agreement_median": statistics.median(agree),
            "agreement_worst": min(agree),
            "scales": seg.config().get("scales"),
            "per_class": [float(v) * 100 for v in res.metrics.iou],
        }
        print(f"  {weights}: {n} mIoU {res.miou * 100:.2f} ({seconds:.0f} s)", flush=True)
    return out


def accuracy_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| trained model | path | CamVid val mIoU | Δ vs fp32 eager (points) |"
        " pixel agreement with fp32 eager, median / worst frame |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        base = r["paths"]["eager"]["miou"]
        for n, e in r["paths"].items():
            lines.append(
                f"| {r['arch']} | {LABELS[n]} | {e['miou']:.2f} | {e['miou'] - base:+.2f} |"
                f" {e['agreement_median']:.4f} / {e['agreement_worst']:.4f} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=12, help="real images for label agreement")
    ap.add_argument("--large", action="store_true", help="also time 1024x2048")
    ap.add_argument(
        "--accuracy",
        default=None,
        help="comma-separated trained weights: CamVid val mIoU per path instead",
    )
    ap.add_argument(
        "--agreement-every",
        type=int,
        default=5,
        help="accuracy: pixel agreement on every k-th val frame",
    )
    ap.add_argument("--calib", default=str(DATA / "camvid" / "train"))
    ap.add_argument("--torchvision", default=str(ROOT / ".bench" / "torchvision"))
    ap.add_argument("--work", default=None, help="where shipped files are kept (default: tmp)")
    ap.add_argument("--out", default=None, help="write the markdown table and JSON here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--path", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--file", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, nargs=2, default=(513, 513), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.accuracy:
            results = [bench_accuracy(Path(w), args, work) for w in args.accuracy.split(",")]
            md = accuracy_table(results)
        else:
            tv = import_torchvision(args.torchvision)
            results = [bench_model(a, args, work, tv) for a in args.models.split(",")]
            md = speed_table(results, args.large)
    print(md)
    info = {
        "torch": torch.__version__,
        "threads": args.threads,
        "rounds": args.rounds,
        "cpu": _cpu(),
        "results": results,
    }
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(md + "\n")
        out.with_suffix(".json").write_text(json.dumps(info, indent=1))


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
