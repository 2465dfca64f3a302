"""``atrous demo``: the first thing a new user runs.

On the built-in synthetic dataset (no files needed) it trains a small DeepLab v3+
MobileNetV2 for a few minutes on the CPU (or reuses what an earlier run trained), evaluates
it by the papers' protocol (full-resolution images, one confusion matrix, trimap), segments
a few new images, and writes ``report.md`` and ``report.html`` (:mod:`._demo_report`) with
the metrics table, the learning curve and each new image beside its ground truth and
prediction, drawn with the weights' colours and a legend.
"""

from __future__ import annotations

import argparse
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
    from atrous.cli._demo_report import legend, write_report
    from atrous.inference.io import model_palette

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    progress = not args.no_progress
    weights_path, train_s = _train(out, args.iterations, args.retrain, progress)
    model = W.load(weights_path)
    palette = model_palette(model)  # the colours saved with the weights (the dataset's)
    result = _evaluate(model, out, args.eval_images, progress)
    examples = _predict_new_images(model, out / "predictions", palette)
    m = result.metrics
    summary = {
        "model": model.config["arch"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights": str(weights_path),
        "train_seconds": round(train_s, 1),
        "val_images": result.num_images,
        "curve_val_images": _curve_val_images(out / "run"),
        "miou": m.miou,
        "pixel_accuracy": m.pixel_accuracy,
        "mean_class_accuracy": m.mean_class_accuracy,
        "fw_iou": m.fw_iou,
        "iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(result.class_names, m.iou)},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    colours = legend(list(result.class_names), palette)
    colours[0] = (f"{colours[0][0]} (not tinted)", colours[0][1])  # see _predict_new_images
    write_report(out, summary, examples, colours)
    print(f"\nreport: {out / 'report.html'} (and report.md)")
    return 0


def _curve_val_images(run_dir: Path) -> int | None:
    """Images of each validation during training (the learning curve's val mIoU): the run's
    ``val_max_images`` of its synthetic validation split; None where the run says nothing."""
    try:
        cfg = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    total = int((cfg.get("dataset_options") or {}).get("length", 200))  # synthetic's default
    limit = cfg.get("val_max_images")
    return min(total, int(limit)) if limit else total


def _evaluate(model: Any, out: Path, images: int, progress: bool) -> Any:
    """Full-resolution evaluation on the validation split (``eval/``: metrics.json, confusion
    and trimap plots) and the learning curve; returns the evaluation result."""
    from atrous.data import build_dataset
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
    print(result.table(f"atrous demo: synthetic val, {result.num_images} images, full resolution"))
    curve = out / "learning_curve.png"
    plot_learning_curve(out / "run" / "metrics.jsonl", curve, _curve_val_images(out / "run"))
    return result


def _predict_new_images(model: Any, pred_dir: Path, palette: np.ndarray) -> list[Any]:
    """Segment 4 new images (another seed, larger) with multi-scale + flip; writes each
    image, its ground truth and the prediction (``predictions/<i>_{image,truth,prediction}
    .png``, drawn with ``palette``) and returns them as report examples."""
    from PIL import Image

    from atrous.cli._demo_report import Example
    from atrous.data import build_dataset
    from atrous.data.palettes import overlay
    from atrous.inference import InferenceSettings, build_segmenter

    pred_dir.mkdir(exist_ok=True)
    tta = build_segmenter(model, InferenceSettings(scales=(0.75, 1.0, 1.25), flip=True))
    fresh = build_dataset("synthetic", None, "test", length=4, size=160)
    examples = []
    for i in range(len(fresh)):
        item = fresh[i]
        image, truth = item["image"], np.asarray(item["mask"])
        pred = tta.predict(image)
        pictures = {"image": image}
        for kind, labels in (("truth", truth), ("prediction", pred)):
            # Tint the objects only, so the background keeps the picture readable.
            pictures[kind] = overlay(image, labels, palette, alpha=0.55, where=labels > 0)
        for kind, picture in pictures.items():
            Image.fromarray(picture).save(pred_dir / f"{i}_{kind}.png")
        examples.append(Example(*(f"predictions/{i}_{k}.png" for k in pictures)))
    return examples
