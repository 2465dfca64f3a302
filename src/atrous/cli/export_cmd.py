"""``atrous export``: a weights file → ``.onnx`` or ``.pt2``, checked against the eager model."""

from __future__ import annotations

import argparse
import json

from atrous.cli import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    _add_export(sub)
    _add_quantize(sub)


def _add_quantize(sub: argparse._SubParsersAction) -> None:
    """``atrous quantize``: ``export --precision int8`` with the export's other defaults."""
    q = sub.add_parser(
        "quantize",
        help="int8 ONNX calibrated on your images (= export --precision int8)",
        description="Export a model to an int8 ONNX file (ONNX Runtime, static QDQ "
        "quantization, per-channel weights) calibrated on --calib images.",
    )
    q.add_argument("weights", help="model file (.safetensors, or a torchvision/VainF .pth)")
    q.add_argument("--calib", required=True, metavar="DATA", help="a folder or dataset root")
    q.add_argument("--out", required=True, dest="output", help="output .onnx file")
    q.add_argument("--calib-images", type=int, default=32, help="calibration images taken")
    _add_json(q)
    q.set_defaults(
        func=run,
        precision="int8",
        opset=18,
        dynamic=True,
        size=None,
        with_preprocess=False,
        graph_output="logits",
        no_crf=True,
        no_simplify=False,
        no_check=False,
    )


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX (.onnx) or torch.export (.pt2)",
        description="Export a model to ONNX (run by ONNX Runtime) or a torch.export program "
        "(.pt2), with dynamic batch, height and width, the weights' class names, palette and "
        "normalization inside, and the written file compared with the eager model at two "
        "other sizes before it is kept. `atrous predict/eval` run the result like weights.",
    )
    p.add_argument("weights", help="model file (.safetensors, or a torchvision/VainF .pth)")
    p.add_argument("output", help="output file: .onnx or .pt2")
    _add_graph_args(p)
    _add_precision_args(p)
    p.add_argument("--no-simplify", action="store_true", help="keep the exporter's ONNX graph")
    p.add_argument("--no-check", action="store_true", help="skip the comparison with eager")
    _add_json(p)
    p.set_defaults(func=run)


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the export report as one JSON line")


def _add_graph_args(p: argparse.ArgumentParser) -> None:
    """What the exported graph is: opset, shapes, its input and its output."""
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default %(default)s)")
    p.add_argument(
        "--dynamic",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="dynamic batch, height and width (default); --no-dynamic fixes them to --size",
    )
    p.add_argument(
        "--size",
        type=int,
        nargs=3,
        metavar=("BATCH", "HEIGHT", "WIDTH"),
        default=None,
        help="trace size (static default: 1 513 513)",
    )
    p.add_argument(
        "--with-preprocess",
        action="store_true",
        help="the graph takes uint8 (N, H, W, 3) RGB images and normalizes them itself",
    )
    p.add_argument(
        "--output",
        dest="graph_output",
        choices=("logits", "proba", "labels"),
        default="logits",
        help="what the graph returns: logits (default; what atrous predict/eval run), their "
        "softmax, or the argmax labels (uint8 up to 256 classes, else int32)",
    )
    p.add_argument(
        "--no-crf",
        action="store_true",
        help="a CRF-as-RNN model: export its network alone (the CRF cannot be exported)",
    )


def _add_precision_args(p: argparse.ArgumentParser) -> None:
    """The exported arithmetic (export's precisions, not those of ``--precision`` in
    ``atrous predict``) and the int8 calibration."""
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default="fp32",
        help="fp16: half-precision weights and arithmetic, float32 input/output (for GPU "
        "runtimes; ONNX only); int8: static quantization calibrated on --calib (ONNX only)",
    )
    p.add_argument(
        "--calib",
        default=None,
        metavar="DATA",
        help="int8 calibration images: a folder or a dataset root",
    )
    p.add_argument(
        "--calib-images",
        type=int,
        default=32,
        help="calibration images taken, evenly spread (default %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    from atrous.cli._common import load_model
    from atrous.export import ExportError, export

    model = load_model(args.weights)
    if getattr(model, "metadata", {}).get("source") == "exported":
        raise CLIError(f"{args.weights}: already an exported model; export its weights file")
    try:
        report = export(
            model,
            args.output,
            output=args.graph_output,
            with_preprocess=args.with_preprocess,
            dynamic=args.dynamic,
            size=args.size,
            opset=args.opset,
            simplify=not args.no_simplify,
            crf="drop" if args.no_crf else "error",
            check=not args.no_check,
            precision=args.precision,
            calibration=args.calib,
            calibration_images=args.calib_images,
        )
    except ExportError as e:
        raise CLIError(f"{args.weights}: {e}") from None
    summary = report.to_dict()
    summary["details"].pop("metadata", None)
    summary["details"].pop("ops", None)
    print(json.dumps(summary) if args.json else _human(summary, args.precision))
    return 0


_FORMATS = {"onnx": "ONNX (ONNX Runtime)", "pt2": "torch.export program"}


def _human(report: dict, precision: str | None) -> str:
    """A few lines for a person: the file, its format and size, the checks, how to use it."""
    path, checks = report["path"], report["checks"]
    kind = _FORMATS.get(report["format"], report["format"])
    lines = [
        f"wrote {path}: {kind}, {precision or 'fp32'}, {report['bytes'] / 2**20:.1f} MB, "
        f"in {report['seconds']:.1f} s"
    ]
    if not checks:
        lines.append("checks: none (--no-check)")
    else:
        passed = sum(bool(c.get("ok")) for c in checks)
        sizes = ", ".join("x".join(str(n) for n in c["size"]) for c in checks)
        lines.append(f"checks: {passed} of {len(checks)} passed against the eager model ({sizes})")
    lines.append(f"use it: atrous predict {path} IMAGE")
    lines.append(f"    or: atrous serve {path}")
    lines.append("(--json prints the full report)")
    return "\n".join(lines)
