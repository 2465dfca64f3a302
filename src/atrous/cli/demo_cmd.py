"""``atrous demo``: the first thing a new user runs.

On the built-in synthetic dataset (no files needed) it trains a small DeepLab v3+
MobileNetV2 for a few minutes on the CPU (or reuses what an earlier run trained), evaluates
it by the papers' protocol (full-resolution images, one confusion matrix, trimap), segments
a few new images, and writes ``report.md`` and ``report.html`` with the metrics table, the
learning curve and the overlays.
"""

from __future__ import annotations

import argparse
import html
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

# The demo's recipe is the packaged configs/synthetic_demo.json (atrous.training.packaged_configs).
DEMO_CONFIG_NAME = "synthetic_demo"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train, evaluate and predict on built-in synthetic data")
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--iterations", type=int, default=None, help="training iterations (600)")
    p.add_argument("--eval-images", type=int, default=32, help="validation images (32)")
    p.add_argument("--retrain", action="store_true", help="train again even if a model exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _train(out: Path, iterations: int | None, retrain: bool, progress: bool) -> tuple[Path, float]:
    from atrous.training import Trainer, load_config

    run_dir = out / "run"
    weights = run_dir / "model.safetensors"
    if weights.is_file() and not retrain:
        print(f"reusing {weights} (trained by an earlier demo; --retrain to train again)")
        return weights, 0.0
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    overrides = [f"iterations={iterations}"] if iterations else []
    t0 = time.perf_counter()
    Trainer(load_config(DEMO_CONFIG_NAME, overrides), run_dir, progress=progress).train()
    return weights, time.perf_counter() - t0


def run(args: argparse.Namespace) -> int:
    import torch

    from atrous import weights as W

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    progress = not args.no_progress
    weights_path, train_s = _train(out, args.iterations, args.retrain, progress)
    model = W.load(weights_path)
    result, palette = _evaluate(model, out, args.eval_images, progress)
    overlays = _predict_new_images(model, out / "predictions", palette)
    m = result.metrics
    summary = {
        "model": model.config["arch"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights": str(weights_path),
        "train_seconds": round(train_s, 1),
        "val_images": result.num_images,
        "miou": m.miou,
        "pixel_accuracy": m.pixel_accuracy,
        "mean_class_accuracy": m.mean_class_accuracy,
        "fw_iou": m.fw_iou,
        "iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(result.class_names, m.iou)},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _write_report(out, summary, overlays)
    print(f"\nreport: {out / 'report.html'} (and report.md)")
    return 0


def _evaluate(model: Any, out: Path, images: int, progress: bool) -> tuple[Any, np.ndarray]:
    """Full-resolution evaluation on the validation split (``eval/``: metrics.json, confusion
    and trimap plots) and the learning curve; returns the result and the dataset's colours."""
    from atrous.data import build_dataset
    from atrous.data.palettes import palette_for
    from atrous.evaluation import evaluate_model
    from atrous.inference import InferenceSettings, build_segmenter
    from atrous.training import load_config
    from atrous.training.curve import plot_learning_curve

    names = list(model.metadata.get("class_names") or map(str, range(model.num_classes)))
    size = load_config(DEMO_CONFIG_NAME).dataset_options["size"]
    val = build_dataset("synthetic", None, "val", length=images, size=size)
    segmenter = build_segmenter(model, InferenceSettings(scales=(1.0,)), crf=None)
    result = evaluate_model(
        model,
        val,
        segmenter=segmenter,
        class_names=names,
        progress=progress,
        dataset_info={"format": "synthetic", "root": None, "split": "val"},
    )
    result.metadata["command"] = "atrous demo"
    eval_dir = out / "eval"
    eval_dir.mkdir(exist_ok=True)
    result.to_json(eval_dir / "metrics.json")
    result.plot_confusion(eval_dir / "confusion.png")
    result.plot_trimap(eval_dir / "trimap.png")
    print(result.table("atrous demo: synthetic val, full resolution"))
    plot_learning_curve(out / "run" / "metrics.jsonl", out / "learning_curve.png")
    return result, palette_for(256, val.palette)


def _predict_new_images(model: Any, pred_dir: Path, palette: np.ndarray) -> list[str]:
    """Segment 4 new images (another seed, larger) with multi-scale + flip; writes input |
    overlay strips and returns their paths relative to the report."""
    from PIL import Image

    from atrous.data import build_dataset
    from atrous.data.palettes import overlay
    from atrous.inference import InferenceSettings, build_segmenter

    pred_dir.mkdir(exist_ok=True)
    tta = build_segmenter(model, InferenceSettings(scales=(0.75, 1.0, 1.25), flip=True))
    fresh = build_dataset("synthetic", None, "test", length=4, size=160)
    overlays = []
    for i in range(len(fresh)):
        image = fresh[i]["image"]
        pred = tta.predict(image)
        # Tint the objects only, so the background keeps the picture readable.
        tinted = overlay(image, pred, palette, alpha=0.55, where=pred > 0)
        Image.fromarray(np.concatenate([image, tinted], axis=1)).save(pred_dir / f"{i}.png")
        overlays.append(f"predictions/{i}.png")
    return overlays


def _write_report(out: Path, s: dict[str, Any], overlays: list[str]) -> None:
    rows = [(n, "absent" if v is None else f"{100 * v:.1f}") for n, v in s["iou"].items()]
    trained = f"{s['train_seconds']:.0f} s on this machine" if s["train_seconds"] else "reused"
    md = [
        "# atrous demo",
        "",
        f"`{s['model']}` ({s['parameters'] / 1e6:.2f} M parameters), trained on the built-in "
        f"synthetic dataset ({trained}), evaluated on {s['val_images']} validation images at "
        "full resolution with one confusion matrix (DeepLab's protocol).",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| mIoU | {100 * s['miou']:.1f} |",
        f"| pixel accuracy | {100 * s['pixel_accuracy']:.1f} |",
        f"| mean class accuracy | {100 * s['mean_class_accuracy']:.1f} |",
        f"| frequency-weighted IoU | {100 * s['fw_iou']:.1f} |",
        "",
        "| class | IoU |",
        "| --- | --- |",
        *[f"| {n} | {v} |" for n, v in rows],
        "",
        "![learning curve](learning_curve.png)",
        "",
        "Accuracy within a band around label boundaries (DeepLab v1/v2 trimap):",
        "",
        "![trimap](eval/trimap.png)",
        "",
        "Predictions on new images (multi-scale 0.75/1/1.25 + flip), input | overlay:",
        "",
        *[f"![prediction]({p})" for p in overlays],
        "",
        "![confusion matrix](eval/confusion.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(md))
    body = [f"<h1>atrous demo</h1><p>{html.escape(md[2])}</p>", "<table>"]
    body += [
        f"<tr><th>{k}</th><td>{v}</td></tr>"
        for k, v in (
            ("mIoU", f"{100 * s['miou']:.1f}"),
            ("pixel accuracy", f"{100 * s['pixel_accuracy']:.1f}"),
            ("mean class accuracy", f"{100 * s['mean_class_accuracy']:.1f}"),
            ("frequency-weighted IoU", f"{100 * s['fw_iou']:.1f}"),
        )
    ]
    body.append("</table><table><tr><th>class</th><th>IoU</th></tr>")
    body += [f"<tr><td>{html.escape(n)}</td><td>{v}</td></tr>" for n, v in rows]
    body.append("</table>")
    body += ['<img src="learning_curve.png">', '<img src="eval/trimap.png">']
    body += [f'<div><img src="{p}"></div>' for p in overlays]
    body.append('<img src="eval/confusion.png" width="600">')
    style = (
        "body{font-family:sans-serif;max-width:900px;margin:2em auto}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:4px 10px;text-align:left}img{max-width:100%}"
    )
    (out / "report.html").write_text(
        f"<!doctype html><meta charset='utf-8'><title>atrous demo</title><style>{style}</style>"
        + "\n".join(body)
    )
