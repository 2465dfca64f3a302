"""Exported files (``.onnx``, ``.pt2``, written by :func:`atrous.export.export`) as models
with the eager contract: a normalized float (N, 3, H, W) batch in, ``{"out": logits}`` out,
with ``config`` and ``metadata`` read from the file, so :class:`~atrous.inference.Segmenter`
(multi-scale + flip, tiles, batches, CRF) and every command run them like a
``.safetensors`` model.

- ``.onnx`` runs in ONNX Runtime (:func:`ort_session`); its ``metadata_props`` hold the same
  entries as an atrous safetensors file (:mod:`.metadata`) plus the ``export_*`` entries. An
  ONNX file from elsewhere runs too when it maps one float (N, 3, H, W) input to (N, C, H, W)
  logits (ImageNet normalization assumed).
- ``.pt2`` is a ``torch.export`` program, loaded with every pickle in it restricted to tensors
  (``TORCH_FORCE_WEIGHTS_ONLY_LOAD``): ``torch.export.load`` would otherwise fall back to a
  full unpickle, which can run code.

A file exported with ``--with-preprocess`` or ``--output labels|proba`` is made for use without
atrous; loading it for atrous inference is an error that says how to export one that fits.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from atrous.normalization import Normalization

from .errors import CheckpointError
from .metadata import parse_metadata

__all__ = [
    "BACKENDS",
    "EXPORTED_SUFFIXES",
    "METADATA_FILE",
    "ExportedModel",
    "load_exported",
    "load_program",
    "ort_session",
]

EXPORTED_SUFFIXES = (".onnx", ".pt2")
METADATA_FILE = "atrous_metadata.json"  # the .pt2's extra file
BACKENDS = {".onnx": ("onnxruntime",), ".pt2": ("eager",)}


def _short(e: BaseException, limit: int = 240) -> str:
    text = " ".join(str(e).split())
    return text[:limit] + ("..." if len(text) > limit else "")


# What ONNX Runtime's error says when it has no kernel for an operator of the graph.
_UNSUPPORTED_OPERATOR = (
    "NOT_IMPLEMENTED",
    "Could not find an implementation",
    "is not a registered function/op",
)


def ort_session(path: str | os.PathLike, threads: int | None = None, providers: Any = None) -> Any:
    """An ONNX Runtime session on ``path``: all graph optimizations, ``threads`` intra-op
    threads (default: torch's thread count), the CPU provider unless ``providers`` says."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise CheckpointError(
            f"{path}: running an ONNX file needs onnxruntime: pip install 'atrous[export]'"
        ) from None
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(
            str(path), sess_options=opts, providers=providers or ["CPUExecutionProvider"]
        )
    except Exception as e:
        text = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", str(e))
        text = re.sub(r"Load model from \S+ failed:\s*(Fatal error: )?", "", text)
        if any(k in text for k in _UNSUPPORTED_OPERATOR):
            what = f"ONNX Runtime {ort.__version__} cannot run an operator in it ({_short(text)})"
        elif "INVALID_PROTOBUF" in text or "Protobuf parsing failed" in text:
            what = "not an ONNX model, or a truncated one (it does not parse as ONNX protobuf)"
        else:
            what = f"ONNX Runtime cannot load it: {_short(text)}"
        raise CheckpointError(f"{path}: {what}") from None


@contextlib.contextmanager
def _weights_only() -> Iterator[None]:
    key = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def load_program(path: str | os.PathLike) -> tuple[nn.Module, dict[str, str]]:
    """(the module of a ``.pt2`` program, its atrous metadata), tensors-only unpickling."""
    import zipfile

    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a torch.export .pt2 archive (not a zip file)")
    extra = {METADATA_FILE: ""}
    try:
        with _weights_only():
            program = torch.export.load(str(path), extra_files=extra)
    except Exception as e:
        raise CheckpointError(
            f"{path}: cannot load the torch.export program (torch {torch.__version__}; a .pt2 "
            f"is read only by the torch it was written with, or one close to it; pickled "
            f"objects beyond tensors are refused): {_short(e)}"
        ) from None
    try:
        meta = json.loads(extra[METADATA_FILE] or "{}")
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: {METADATA_FILE} is malformed JSON ({e})") from None
    return program.module(), {str(k): str(v) for k, v in meta.items()}


class ExportedModel(nn.Module):
    """An exported file behind the eager forward contract (see the module docstring).

    Attributes: ``config`` and ``metadata`` as a :class:`~atrous.models.deeplab.DeepLab`'s
    (``metadata["backend"]`` names the runtime, ``metadata["export"]`` the ``export_*``
    entries), ``path``."""

    def __init__(
        self,
        run: Callable[[Tensor], Tensor],
        config: dict[str, Any],
        metadata: dict[str, Any],
        path: Path,
        module: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self._run = run
        self.config = config
        self.metadata = metadata
        self.path = path
        self.program = module  # the .pt2's module (a submodule, so .to() moves it)

    @property
    def num_classes(self) -> int:
        return int(self.config["num_classes"])

    def train(self, mode: bool = True) -> ExportedModel:
        """An exported graph is fixed in inference mode: only the flag is kept."""
        self.training = bool(mode)
        return self

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a float batch of shape (N, 3, H, W), got {tuple(x.shape)}")
        fixed = self.metadata.get("export", {}).get("export_dynamic") == "static"
        size = json.loads(self.metadata.get("export", {}).get("export_size") or "null")
        if fixed and size and [x.shape[0], x.shape[2], x.shape[3]] != size:
            n, h, w = size
            raise ValueError(
                f"{self.path} was exported for a fixed input of batch {n}, {h}x{w}; got batch "
                f"{x.shape[0]}, {x.shape[2]}x{x.shape[3]}: export it with --dynamic, or feed "
                f"that size (e.g. --tile-size {h} --batch-size {n} when H = W)"
            )
        return {"out": self._run(x.float().contiguous())}

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, backend={self.metadata.get('backend')!r}"


def _config_and_usage(
    meta: Mapping[str, str], path: Path, out_shape: list[Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        saved = parse_metadata(meta)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    if saved is not None:
        usage = {k: tuple(v) if k in ("mean", "std") else v for k, v in saved.usage.items()}
        return dict(saved.config), usage
    c = out_shape[1] if out_shape and len(out_shape) == 4 else None
    if not isinstance(c, int):
        raise CheckpointError(
            f"{path}: no atrous metadata and no fixed class count in its output shape "
            f"{out_shape}: export it with `atrous export`, or give a graph whose output is "
            "(N, C, H, W) logits with C fixed"
        )
    norm = Normalization.of(None)  # a graph that records none: the default (ImageNet)
    return {"arch": "onnx", "num_classes": c}, {"mean": norm.mean, "std": norm.std}


def _check_contract(meta: Mapping[str, str], path: Path) -> None:
    got_in, got_out = meta.get("export_input", "float_nchw"), meta.get("export_output", "logits")
    if (got_in, got_out) != ("float_nchw", "logits"):
        raise CheckpointError(
            f"{path}: exported with input {got_in} and output {got_out}, for use without "
            "atrous (e.g. onnxruntime directly); atrous inference (multi-scale, flip, tiles, "
            "CRF) needs normalized float input and logits: export again without "
            "--with-preprocess and with --output logits"
        )


def load_exported(path: str | os.PathLike, backend: str | None = None) -> ExportedModel:
    """An exported ``.onnx``/``.pt2`` file as an :class:`ExportedModel` (``backend``:
    ``onnxruntime`` for ONNX, ``eager`` for .pt2; None takes the one that applies)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    choices = BACKENDS.get(path.suffix)
    if choices is None:
        raise CheckpointError(f"{path}: an exported model ends in .onnx or .pt2")
    backend = backend or choices[0]
    if backend not in choices:
        raise CheckpointError(
            f"{path}: backend {backend!r} does not run a {path.suffix} file; "
            f"use {' or '.join(choices)}"
        )
    if path.suffix == ".onnx":
        session = ort_session(path)
        meta = dict(session.get_modelmeta().custom_metadata_map)
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1:
            raise CheckpointError(
                f"{path}: a segmentation graph has one input, this one has {len(inputs)}: "
                f"{[i.name for i in inputs]}"
            )
        _check_contract(meta, path)
        config, usage = _config_and_usage(meta, path, list(outputs[0].shape))
        name = inputs[0].name

        def run(x: Tensor) -> Tensor:
            return torch.from_numpy(session.run(None, {name: x.cpu().numpy()})[0])

        module = None
    else:
        module, meta = load_program(path)
        _check_contract(meta, path)
        config, usage = _config_and_usage(meta, path, None)
        prog = module

        def run(x: Tensor) -> Tensor:
            return prog(x)

    exported = {k: v for k, v in meta.items() if k.startswith("export_") or k == "atrous_version"}
    if "min_size" in meta:
        usage["min_size"] = int(meta["min_size"])
    metadata = {
        **usage,
        "source": "exported",
        "weights": str(path),
        "backend": backend,
        "export": exported,
    }
    return ExportedModel(run, config, metadata, path, module).eval()
