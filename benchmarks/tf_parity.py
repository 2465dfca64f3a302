"""The parity table of the official TensorFlow DeepLab weights (README, docs/tf_model_zoo.md).

    PYTHONPATH=src python benchmarks/tf_parity.py [--shared ../shared/reference/tf_deeplab]

Loads each zoo-style tarball of the reference fixtures as a user would (``weights.load``), runs
the fixture images and prints, per configuration and array, the largest difference from the
official graph's output relative to its largest magnitude. Writes the markdown table to
``benchmarks/results/tf_parity.md``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from atrous import weights

CASES = [
    ("xception65_v3plus_voc21", "xception65_v3plus_os16", 16),
    ("xception65_v3plus_voc21", "xception65_v3plus_os8", 8),
    ("mobilenetv2_v3_voc21", "mobilenetv2_v3_os16", 16),
    ("mobilenetv2_v3_voc21", "mobilenetv2_v3_os8", 8),
    ("resnet50beta_v3plus_voc21", "resnet50beta_v3plus_os16", 16),
]
WHAT = ("logits", "logits_up", "features", "low_level", "aspp", "decoder")


def outputs(model, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Every endpoint the official fixtures store, the ASPP and decoder outputs by hooks."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        getattr(model.head, name).register_forward_hook(
            lambda _m, _i, out, key=key: seen.__setitem__(key, out)
        )
        for name, key in (("aspp", "aspp"), ("fuse", "decoder"))
        if hasattr(model.head, name)
    ]
    with torch.no_grad():
        stages = model.backbone(x)
        feats = {role: stages[name] for role, name in model.backbone.roles.items()}
        out = {
            "logits": model.head(feats),
            "logits_up": model(x)["out"],
            "features": feats["out"],
            "low_level": feats["low_level"],
            **seen,
        }
    for hook in hooks:
        hook.remove()
    return {k: v.permute(0, 2, 3, 1).numpy() for k, v in out.items()}


def row(shared: Path, tarball: str, case: str, output_stride: int) -> list[str]:
    t0 = time.perf_counter()
    model = weights.load(shared / f"{tarball}.tar.gz", output_stride=output_stride)
    load_s = time.perf_counter() - t0
    ref, images = np.load(shared / f"{case}.npz"), np.load(shared / "images.npz")
    mean = torch.tensor(model.metadata["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.metadata["std"]).view(1, 3, 1, 1)
    worst = dict.fromkeys(WHAT, None)
    for key in ref.files:
        what, hw = key.rsplit("_", 1)
        x = torch.from_numpy(images[f"image_{hw}"]).permute(2, 0, 1)[None].float() / 255
        got = outputs(model, (x - mean) / std)[what]
        if got.shape != ref[key].shape:  # MobileNetV2 v3 builds no decoder tap
            continue
        err = float(np.abs(got - ref[key]).max() / np.abs(ref[key]).max())
        worst[what] = max(err, worst[what] or 0.0)
    cells = [f"{worst[w]:.1e}" if worst[w] is not None else "-" for w in WHAT]
    return [case, model.config["arch"], *cells, f"{load_s:.1f}"]


def cpu_model() -> str:
    """lscpu's "Model name" (from /proc/cpuinfo), else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(__file__).resolve().parents[1].parent / "shared/reference/tf_deeplab"
    ap.add_argument("--shared", type=Path, default=default)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/tf_parity.md"))
    args = ap.parse_args()
    head = ["configuration", "atrous model", *WHAT, "load s"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for tarball, case, os_ in CASES:
        lines.append("| " + " | ".join(row(args.shared, tarball, case, os_)) + " |")
    cpu = cpu_model()
    text = (
        "Largest |atrous - official| / max |official| per array, over the fixture images "
        f"(97x129, 128x96, 305x145); torch {torch.__version__}, {cpu}.\n\n" + "\n".join(lines)
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
