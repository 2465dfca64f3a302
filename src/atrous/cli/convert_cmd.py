"""``atrous convert``: a torchvision, VainF or TensorFlow DeepLab checkpoint → atrous
safetensors."""

from __future__ import annotations

import argparse
import json

from atrous.cli import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a torchvision/VainF/TensorFlow checkpoint to atrous safetensors",
        description="Read a .pth (weights_only) or .safetensors checkpoint, or a TensorFlow "
        "DeepLab checkpoint (the model zoo's .tar.gz, a model.ckpt prefix, its .index or its "
        "folder), build the model its source used, check that every weight loads, and save "
        "it as safetensors with the configuration as metadata (reloads with "
        "`atrous.weights.load(path)`).",
    )
    p.add_argument(
        "input",
        help="checkpoint: .pth, .pt, .bin, .safetensors, or a TensorFlow checkpoint (.tar.gz, "
        "prefix, .index or folder)",
    )
    p.add_argument("output", help="output .safetensors file")
    p.add_argument(
        "--from",
        dest="source",
        default="auto",
        choices=("auto", "torchvision", "vainf", "tf", "atrous"),
    )
    p.add_argument("--arch", default=None, help="architecture (detected when omitted)")
    p.add_argument("--output-stride", type=int, choices=(8, 16, 32), default=None)
    p.add_argument("--class-names", default=None, help="text file: one class name per line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from atrous import weights

    overrides = {}
    if args.output_stride:
        overrides["output_stride"] = args.output_stride
    class_names = None
    if args.class_names:
        path = Path(args.class_names)
        if not path.is_file():
            raise CLIError(f"{path}: no such class-names file")
        class_names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    try:
        model = weights.load(args.input, source=args.source, arch=args.arch, **overrides)
        out = weights.save(model, args.output, class_names=class_names)
    except (FileNotFoundError, ValueError, TypeError) as e:
        raise CLIError(str(e)) from None
    summary = {
        "input": args.input,
        "output": str(out),
        "source": model.metadata["source"],
        **{k: model.config[k] for k in ("arch", "num_classes", "output_stride", "atrous_rates")},
        "aux": model.config["aux"],
    }
    print(json.dumps(summary))
    return 0
