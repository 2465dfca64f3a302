"""Checkpoints: atrous's own safetensors files, torchvision's and VainF's ``.pth`` files.

* :func:`load` — a file or an in-memory state dict → a model in eval mode, with the source
  (``atrous``, ``torchvision``, ``vainf``) and architecture detected from the keys where the
  caller does not say, built with the configuration that source used.
* :func:`convert` — a reference state dict → atrous's names, for a given architecture.
* :func:`save` — safetensors with the build configuration, class names and normalization
  as metadata, so that ``load(path)`` needs no other argument. Written atomically.

``.pth`` files are read with ``torch.load(weights_only=True)``: no code in them runs.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from atrous.models import build, get_spec
from atrous.models.deeplab import IMAGENET_MEAN, IMAGENET_STD, DeepLab
from atrous.models.zoo import scale_rates

StateDict = dict[str, Tensor]
SOURCES = ("atrous", "torchvision", "vainf")
FORMAT = "atrous"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model (names the file)."""


# --------------------------------------------------------------------------- reading files
def read_state_dict(path: str | os.PathLike) -> tuple[StateDict, dict[str, str]]:
    """The tensors of a ``.safetensors`` or ``.pth``/``.pt``/``.bin`` file, and its metadata.

    Wrappers used by training scripts (``model_state`` as VainF, ``state_dict``, ``model``)
    are unwrapped, and DataParallel's ``module.`` prefix is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = dict(f.metadata() or {})
                return {k: f.get_tensor(k) for k in f.keys()}, meta  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for foreign or corrupt files
        raise CheckpointError(
            f"{path}: cannot read it as a PyTorch checkpoint with weights_only=True ({e})"
        ) from None
    try:
        return unwrap(obj), {}
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None


def unwrap(obj: Any) -> StateDict:
    """The state dict inside a checkpoint object (see :func:`read_state_dict`)."""
    if isinstance(obj, Mapping):
        for key in ("model_state", "state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError("holds no state dict (expected a mapping of names to tensors)")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not sd:
        raise CheckpointError("holds no tensors")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


# --------------------------------------------------------------------------- detection
def _resnet_depth(sd: Mapping[str, Tensor], prefix: str) -> int:
    blocks = {int(m.group(1)) for k in sd if (m := re.match(rf"{prefix}layer3\.(\d+)\.", k))}
    n = max(blocks) + 1 if blocks else 0
    return {6: 50, 23: 101, 36: 152}.get(n, 0)


def detect(sd: Mapping[str, Tensor]) -> tuple[str, str]:
    """(source, arch) of a state dict, from its key names; raises if it is not recognized."""
    keys = set(sd)
    has = lambda prefix: any(k.startswith(prefix) for k in keys)
    if has("head.") and has("backbone."):
        return "atrous", _detect_atrous_arch(sd)
    if "classifier.4.weight" in keys and has("classifier.0.convs."):
        if has("backbone.layer4."):
            depth = _resnet_depth(sd, "backbone.")
            if depth in (50, 101):
                return "torchvision", f"deeplabv3_resnet{depth}"
        if "backbone.16.0.weight" in keys:
            return "torchvision", "deeplabv3_mobilenetv3_large"
    if has("classifier.aspp.convs.") or has("classifier.classifier.0.convs."):
        plus = has("classifier.aspp.")
        if has("backbone.low_level_features."):
            bb = "mobilenetv2"
        else:
            depth = _resnet_depth(sd, "backbone.")
            bb = f"resnet{depth}" if depth in (50, 101) else ""
        if bb:
            return "vainf", f"deeplabv3{'plus' if plus else ''}_{bb}"
    raise CheckpointError(
        "not a state dict of a known DeepLab (atrous, torchvision deeplabv3_resnet50/101 / "
        "deeplabv3_mobilenet_v3_large, or VainF deeplabv3[plus]_resnet50/101/mobilenet); "
        f"first keys: {sorted(keys)[:5]}"
    )


def _detect_atrous_arch(sd: Mapping[str, Tensor]) -> str:
    keys = set(sd)
    has = lambda prefix: any(k.startswith(prefix) for k in keys)
    if has("backbone.layer4."):
        bb = f"resnet{_resnet_depth(sd, 'backbone.')}"
    elif has("backbone.entry."):
        bb = "xception65"
    elif has("backbone.features.1.block."):
        bb = "mobilenetv3_large"
    elif has("backbone.features.17.conv."):
        bb = "mobilenetv2"
    elif has("backbone.features.28."):
        bb = "vgg16"
    else:
        raise CheckpointError("atrous state dict with an unknown backbone")
    if has("head.fc6."):
        return "deeplabv1_vgg16"
    if has("head.aspp.branches."):
        return f"deeplabv2_{bb}"
    return f"deeplabv3{'plus' if has('head.project.') else ''}_{bb}"


def _infer_atrous_options(sd: Mapping[str, Tensor], arch: str) -> dict[str, Any]:
    """Build options visible in an atrous state dict (for files without metadata)."""
    keys = set(sd)
    opts: dict[str, Any] = {"aux": any(k.startswith("aux_classifier.") for k in keys)}
    spec = get_spec(arch)
    if spec.head in ("aspp", "decoder"):
        if any(k.startswith("head.blocks.") for k in keys):
            opts["head"] = "cascade"
        else:
            branches = {
                int(m.group(1)) for k in keys if (m := re.match(r"head\.aspp\.convs\.(\d+)\.", k))
            }
            opts["separable"] = any(
                ".depthwise." in k for k in keys if k.startswith("head.aspp.convs.")
            )
            last = max(branches)
            opts["image_pooling"] = (
                f"head.aspp.convs.{last}.1.weight" in keys
                and sd[f"head.aspp.convs.{last}.1.weight"].shape[-1] == 1
                and last > 0
            )
            if spec.head == "aspp":
                opts["head_conv"] = "head.conv.0.weight" in keys
            else:
                fuse = {int(m.group(1)) for k in keys if (m := re.match(r"head\.fuse\.(\d+)\.", k))}
                opts["decoder_convs"] = len(fuse)
    return opts


# --------------------------------------------------------------------------- conversion
_TORCHVISION_HEAD = (
    (r"^classifier\.0\.", "head.aspp."),
    (r"^classifier\.1\.", "head.conv.0."),
    (r"^classifier\.2\.", "head.conv.1."),
    (r"^classifier\.4\.", "head.classifier."),
)
_VAINF_V3_HEAD = (
    (r"^classifier\.classifier\.0\.", "head.aspp."),
    (r"^classifier\.classifier\.1\.", "head.conv.0."),
    (r"^classifier\.classifier\.2\.", "head.conv.1."),
    (r"^classifier\.classifier\.4\.", "head.classifier."),
)
_VAINF_V3PLUS_HEAD = (
    (r"^classifier\.project\.", "head.project."),
    (r"^classifier\.aspp\.", "head.aspp."),
    (r"^classifier\.classifier\.0\.", "head.fuse.0.0."),
    (r"^classifier\.classifier\.1\.", "head.fuse.0.1."),
    (r"^classifier\.classifier\.3\.", "head.classifier."),
)
_RULES: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("torchvision", "resnet"): _TORCHVISION_HEAD,
    ("torchvision", "mobilenetv3_large"): ((r"^backbone\.(\d+)\.", r"backbone.features.\1."),)
    + _TORCHVISION_HEAD,
    ("vainf", "resnet_v3"): _VAINF_V3_HEAD,
    ("vainf", "resnet_v3+"): _VAINF_V3PLUS_HEAD,
    ("vainf", "mobilenetv2_v3"): (
        (r"^backbone\.(low|high)_level_features\.", "backbone.features."),
    )
    + _VAINF_V3_HEAD,
    ("vainf", "mobilenetv2_v3+"): (
        (r"^backbone\.(low|high)_level_features\.", "backbone.features."),
    )
    + _VAINF_V3PLUS_HEAD,
}

# The configuration each source's models were built with (REFERENCES.md).
_SOURCE_CONFIG: dict[str, dict[str, Any]] = {
    "torchvision/resnet": {"output_stride": 8, "atrous_rates": (12, 24, 36), "head_conv": True,
                           "multi_grid": None, "aspp_dropout": 0.5},
    "torchvision/mobilenetv3_large": {"output_stride": 16, "atrous_rates": (12, 24, 36),
                                      "head_conv": True, "aspp_dropout": 0.5},
    "vainf/v3": {"output_stride": 16, "atrous_rates": (6, 12, 18), "head_conv": True,
                 "aspp_dropout": 0.1},
    "vainf/v3+": {"output_stride": 16, "atrous_rates": (6, 12, 18), "decoder_convs": 1,
                  "aspp_dropout": 0.1},
}  # fmt: skip


def _rule_key(source: str, arch: str) -> tuple[str, str]:
    spec = get_spec(arch)
    bb = "resnet" if spec.backbone.startswith("resnet") else spec.backbone
    if source == "torchvision":
        return source, bb
    return source, f"{bb}_{spec.version}"


def convert(state_dict: Mapping[str, Tensor], source: str, arch: str) -> StateDict:
    """Rename a reference state dict (``source`` = torchvision or vainf) to atrous's names."""
    arch = get_spec(arch).name
    if source == "atrous":
        return dict(state_dict)
    key = _rule_key(source, arch)
    if key not in _RULES:
        raise CheckpointError(f"no conversion from {source!r} for {arch!r}")
    rules = [(re.compile(p), r) for p, r in _RULES[key]]
    out: StateDict = {}
    for name, tensor in state_dict.items():
        for pattern, repl in rules:
            new, n = pattern.subn(repl, name, count=1)
            if n:
                name = new
                break
        out[name] = tensor
    return out


def source_config(source: str, arch: str) -> dict[str, Any]:
    """The build options that reproduce ``source``'s model of ``arch``."""
    spec = get_spec(arch)
    if source == "torchvision":
        bb = "resnet" if spec.backbone.startswith("resnet") else spec.backbone
        return dict(_SOURCE_CONFIG[f"torchvision/{bb}"])
    if source == "vainf":
        cfg = dict(_SOURCE_CONFIG[f"vainf/{spec.version}"])
        if spec.backbone.startswith("resnet"):
            cfg["multi_grid"] = None
        if spec.backbone == "mobilenetv2":
            cfg["padding"] = "vainf"
        return cfg
    return {}


# --------------------------------------------------------------------------- loading
def load(
    checkpoint: str | os.PathLike | Mapping[str, Tensor],
    source: str = "auto",
    arch: str | None = None,
    strict: bool = True,
    **overrides: Any,
) -> DeepLab:
    """Build the model a checkpoint belongs to, load it, and return it in eval mode.

    Args:
        checkpoint: a ``.safetensors``/``.pth`` file, or an in-memory state dict.
        source: ``auto`` (detect from the keys), ``atrous``, ``torchvision`` or ``vainf``.
        arch: the architecture (atrous name or alias); detected when omitted.
        strict: require every weight of the model to be in the checkpoint.
        **overrides: build arguments that replace the source's, e.g. ``output_stride=8``
            (VainF files do not record it) or ``num_classes=5`` for fine-tuning, which
            re-initializes the classifier layers whose shapes no longer fit.
    """
    where = str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "state dict"
    if isinstance(checkpoint, (str, os.PathLike)):
        sd, meta = read_state_dict(checkpoint)
    else:
        sd, meta = unwrap(checkpoint), {}
    try:
        return _load(sd, meta, source, arch, strict, overrides, where)
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from None


def _load(
    sd: StateDict,
    meta: dict[str, str],
    source: str,
    arch: str | None,
    strict: bool,
    overrides: dict[str, Any],
    where: str,
) -> DeepLab:
    if source not in ("auto", *SOURCES):
        raise ValueError(f"source must be 'auto' or one of {SOURCES}, got {source!r}")
    metadata: dict[str, Any] = {}
    # A learned CRF-as-RNN layer (atrous.crf.rnn_model): its tensors are set aside here and
    # the layer is rebuilt around the model at the end.
    crf_rnn = json.loads(meta["crf_rnn"]) if "crf_rnn" in meta else None
    crf_sd = {k[4:]: sd.pop(k) for k in [k for k in sd if k.startswith("crf.")]} if crf_rnn else {}
    if meta.get("format") == FORMAT:
        config = json.loads(meta["config"])
        source, arch = "atrous", arch or config["arch"]
        metadata = {
            k: json.loads(meta[k])
            for k in ("class_names", "mean", "std", "palette", "inference_scales")
            if k in meta
        }
    else:
        config = {}
        if source == "auto" or arch is None:
            detected_source, detected_arch = detect(sd)
            source = detected_source if source == "auto" else source
            arch = arch or detected_arch
    arch = get_spec(arch).name

    if source == "atrous":
        kwargs = dict(config) or {**_infer_atrous_options(sd, arch)}
        if not config:
            kwargs["num_classes"] = _num_classes(sd, "head.", arch)
    else:
        kwargs = source_config(source, arch)
        kwargs["aux"] = any(k.startswith("aux_classifier.") for k in sd)
        kwargs["num_classes"] = _num_classes(sd, "classifier.", arch)
        sd = convert(sd, source, arch)
        metadata = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    kwargs.pop("arch", None)
    # A new output stride keeps the checkpoint's receptive field: rates scale with it.
    new_os = overrides.get("output_stride")
    if new_os and "atrous_rates" not in overrides and kwargs.get("atrous_rates"):
        old_os = kwargs.get("output_stride") or get_spec(arch).output_stride
        kwargs["atrous_rates"] = scale_rates(kwargs["atrous_rates"], old_os, int(new_os))
    kwargs.update(overrides)
    model = build(arch, **kwargs)

    reinit = _drop_mismatched_classifier(model, sd) if "num_classes" in overrides else []
    missing, unexpected = _load_into(model, sd, strict and not reinit, where)
    missing = [k for k in missing if k not in reinit]  # re-initialized on purpose
    model.metadata.update({k: tuple(v) if k in ("mean", "std") else v for k, v in metadata.items()})
    if crf_rnn is not None:
        from atrous.crf.rnn_model import attach_saved_crf

        try:
            model, crf_reinit = attach_saved_crf(model, crf_rnn, crf_sd, "num_classes" in overrides)
        except ValueError as e:
            raise CheckpointError(str(e)) from None
        reinit += crf_reinit
    model.metadata.update(
        {"source": source, "weights": where, "reinitialized": reinit,
         "missing_keys": missing, "unexpected_keys": unexpected}
    )  # fmt: skip
    return model.eval()


def _num_classes(sd: Mapping[str, Tensor], head_prefix: str, arch: str) -> int:
    candidates = [
        v for k, v in sd.items()
        if k.endswith(".weight") and v.dim() == 4 and v.shape[-1] == 1
        and k.startswith(head_prefix) and not k.startswith("aux")
    ]  # fmt: skip
    spec = get_spec(arch)
    final = {
        "largefov": "fc8.weight", "aspp_sum": "branches.0.weight",
    }.get(spec.head)  # fmt: skip
    for k, v in sd.items():
        if final and k.endswith(final) and k.startswith(head_prefix):
            return int(v.shape[0])
    for k in ("head.classifier.weight", "classifier.4.weight", "classifier.classifier.4.weight",
              "classifier.classifier.3.weight"):  # fmt: skip
        if k in sd:
            return int(sd[k].shape[0])
    if not candidates:
        raise CheckpointError("cannot find the classifier layer to read num_classes from")
    return int(candidates[-1].shape[0])


def _drop_mismatched_classifier(model: nn.Module, sd: StateDict) -> list[str]:
    """Remove checkpoint entries whose shape no longer fits (new num_classes)."""
    own = model.state_dict()
    dropped = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    for k in dropped:
        del sd[k]
    return dropped


def _load_into(
    model: nn.Module, sd: StateDict, strict: bool, where: str
) -> tuple[list[str], list[str]]:
    own = model.state_dict()
    bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
           for k, v in sd.items() if k in own and own[k].shape != v.shape]  # fmt: skip
    if bad:
        raise CheckpointError(
            f"{len(bad)} tensor shape(s) do not fit {model.config.get('arch')}: {bad[:4]}"
        )
    result = model.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    unexpected = list(result.unexpected_keys)
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"does not fit {model.config.get('arch')}: {len(missing)} missing key(s) "
            f"{missing[:4]}, {len(unexpected)} unexpected key(s) {unexpected[:4]}"
        )
    return missing, unexpected


def load_backbone_weights(
    backbone: nn.Module, checkpoint: str | os.PathLike | Mapping[str, Tensor]
) -> list[str]:
    """Load an ImageNet checkpoint in torchvision's naming into a backbone.

    Classifier entries (``fc``, ``classifier``, MobileNetV2's ``features.18``) are ignored;
    every backbone weight must be present. Returns the ignored keys.
    """
    where = str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "state dict"
    sd = (
        read_state_dict(checkpoint)[0]
        if isinstance(checkpoint, (str, os.PathLike))
        else unwrap(checkpoint)
    )
    if all(k.startswith("backbone.") for k in sd):
        sd = {k[len("backbone.") :]: v for k, v in sd.items()}
    own = backbone.state_dict()
    ignored = [k for k in sd if k not in own]
    bad = [k for k in sd if k in own and own[k].shape != sd[k].shape]
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    if bad or missing:
        raise CheckpointError(
            f"{where}: does not fit the {type(backbone).__name__} backbone: "
            f"missing {missing[:4]} ({len(missing)}), wrong shapes {bad[:4]} ({len(bad)})"
        )
    backbone.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    return ignored


# --------------------------------------------------------------------------- saving
def save(
    model: DeepLab,
    path: str | os.PathLike,
    class_names: list[str] | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    extra: dict[str, str] | None = None,
    palette: list[tuple[int, int, int]] | None = None,
) -> Path:
    """Write ``model`` as safetensors with its configuration as metadata, atomically.

    ``class_names``, ``mean``/``std`` (0-1 RGB normalization) and ``palette`` (one RGB
    triple per class, for coloured masks) default to ``model.metadata``'s.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: atrous saves weights as .safetensors")
    cfg = model.config
    class_names = class_names if class_names is not None else model.metadata.get("class_names")
    if class_names is not None and len(class_names) != cfg["num_classes"]:
        raise ValueError(
            f"{len(class_names)} class names for a model of {cfg['num_classes']} classes"
        )
    meta = {
        "format": FORMAT,
        "arch": cfg["arch"],
        "num_classes": str(cfg["num_classes"]),
        "output_stride": str(cfg["output_stride"]),
        "atrous_rates": json.dumps(cfg["atrous_rates"]),
        "config": json.dumps(cfg),
        "mean": json.dumps(list(mean or model.metadata.get("mean", IMAGENET_MEAN))),
        "std": json.dumps(list(std or model.metadata.get("std", IMAGENET_STD))),
    }
    if class_names is not None:
        meta["class_names"] = json.dumps(list(class_names))
    palette = palette if palette is not None else model.metadata.get("palette")
    if palette is not None:
        meta["palette"] = json.dumps([[int(c) for c in rgb] for rgb in palette])
    crf_rnn = getattr(model, "crf_rnn_config", None)  # atrous.crf.CRFRNNModel's CRF layer
    if crf_rnn is not None:
        meta["crf_rnn"] = json.dumps(crf_rnn)
    meta.update(extra or {})
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
