""":func:`load`: a checkpoint → the model it belongs to, in eval mode.

The steps, one function each: read the file (:mod:`.io`); set aside the tensors of
extensions (:mod:`.extensions`); parse atrous's metadata (:mod:`.metadata`); resolve the
source and architecture (given, recorded, or detected by :mod:`.detect`); the build
arguments that source used, with the caller's overrides; build; load the tensors; rebuild
the extensions around the model; record where the weights came from.

A registry name (``tf:xception65_coco_voc_trainaug``, :mod:`.registry`) is fetched
(:mod:`.hub`), converted once to an atrous safetensors file kept beside it in the cache, and
loaded from that file with the entry's build options (the settings of its source's headline
number) under the caller's overrides; a path that exists is always read as a path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from atrous.constants import IMAGENET_MEAN, IMAGENET_STD
from atrous.models import build, get_spec
from atrous.models.deeplab import DeepLab
from atrous.models.zoo import scale_rates

from . import cache, hub
from .convert import SOURCES, convert, source_config
from .detect import detect, infer_atrous_options, infer_num_classes
from .entry import Entry
from .errors import CheckpointError
from .exported import EXPORTED_SUFFIXES, load_exported
from .extensions import attach_extensions, split_extensions
from .io import StateDict, checkpoint_name, read_checkpoint
from .metadata import SavedMetadata, parse_metadata
from .registry import get_weights, looks_like_name, weights_for
from .save import save
from .tf_checkpoint import is_tf_checkpoint, read_tf_checkpoint
from .tf_deeplab import (
    TF_MEAN,
    TF_STD,
    convert_tf,
    detect_tf,
    tf_build_options,
    zoo_classes,
)


def load(
    checkpoint: str | os.PathLike | Mapping[str, Tensor] | Entry,
    source: str = "auto",
    arch: str | None = None,
    strict: bool = True,
    backend: str | None = None,
    **overrides: Any,
) -> DeepLab:
    """Build the model a checkpoint belongs to, load it, and return it in eval mode.

    Args:
        checkpoint: a ``.safetensors``/``.pth`` file, an in-memory state dict, a
            TensorFlow DeepLab checkpoint (the prefix ``.../model.ckpt``, its ``.index``, its
            folder or the model zoo's ``.tar.gz``; see :func:`load_tf`), or a registry name
            or entry (``tf:xception65_coco_voc_trainaug``; see :func:`load_registered`).
        source: ``auto`` (detect from the keys), ``atrous``, ``torchvision``, ``vainf`` or
            ``tf``.
        arch: the architecture (atrous name or alias); detected when omitted.
        strict: require every weight of the model to be in the checkpoint.
        **overrides: build arguments that replace the source's, e.g. ``output_stride=8``
            (VainF files do not record it) or ``num_classes=5`` for fine-tuning, which
            re-initializes the classifier layers whose shapes no longer fit.
        backend: for an exported ``.onnx``/``.pt2`` file (:mod:`.exported`), the runtime
            (``onnxruntime`` for ONNX, ``eager`` for .pt2; None: the one that applies). Such
            a file gives an :class:`~.exported.ExportedModel` with the same forward contract.

    The model's ``metadata`` dict holds what using it needs: ``model.metadata["class_names"]``
    (one name per class id, when the file records them), ``palette`` (RGB per class),
    ``mean``/``std`` (the input normalization), ``inference_scales``, ``source`` and
    ``weights`` (the file). See ``docs/using_weights.md``.
    """
    entry = registry_entry(checkpoint)
    if entry is not None:
        if source != "auto" or backend not in (None, "eager"):
            raise ValueError(f"{entry.name}: a registry name takes no source or backend")
        return load_registered(entry, arch, strict, **overrides)
    if isinstance(checkpoint, (str, os.PathLike)) and str(checkpoint).endswith(EXPORTED_SUFFIXES):
        if overrides or arch or source != "auto":
            raise ValueError(
                f"{checkpoint}: an exported model is fixed; source, arch and build overrides "
                f"({sorted(overrides)}) apply to weights files only"
            )
        return load_exported(checkpoint, backend)  # type: ignore[return-value]
    if isinstance(checkpoint, (str, os.PathLike)) and is_tf_checkpoint(checkpoint):
        if source not in ("auto", "tf"):
            raise ValueError(f"{checkpoint}: a TensorFlow checkpoint, not a {source} one")
        return load_tf(checkpoint, arch, strict, overrides)
    if backend not in (None, "eager"):
        raise ValueError(
            f"{checkpoint_name(checkpoint)}: backend {backend!r} runs exported files; a "
            "weights file runs eagerly (export it first: atrous export)"
        )
    where = checkpoint_name(checkpoint)
    sd, meta = read_checkpoint(checkpoint)
    try:
        return _load(sd, meta, source, arch, strict, overrides, where)
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from None


def registry_entry(checkpoint: object) -> Entry | None:
    """The registry entry ``checkpoint`` names, or None for a path or state dict. A path that
    exists is a path; ``source:name`` text is a name (unknown ones raise, with suggestions);
    a bare word without a suffix that is no file is looked up too."""
    if isinstance(checkpoint, Entry):
        return checkpoint
    if not isinstance(checkpoint, str) or os.path.exists(checkpoint):
        return None
    if looks_like_name(checkpoint):
        return get_weights(checkpoint)
    if os.sep in checkpoint or "." in checkpoint:
        return None
    try:
        return get_weights(checkpoint)
    except CheckpointError:
        return None


def load_for_builder(arch: str, weights: str | Entry, **overrides: Any) -> DeepLab:
    """The loader behind the model builders' ``weights=`` (:mod:`atrous.models.pretrained`):
    the entry ``weights`` names for ``arch`` (:func:`.registry.weights_for`), loaded."""
    return load_registered(weights_for(arch, weights), arch, **overrides)


def load_registered(
    name: str | Entry, arch: str | None = None, strict: bool = True, **overrides: Any
) -> DeepLab:
    """A registry entry's model: its file fetched and checked (:func:`.hub.fetch`), converted
    once to atrous safetensors (kept in the cache with its own SHA-256 record, so later loads
    skip the conversion), built with the entry's options and the caller's ``overrides``."""
    entry = get_weights(name)
    if entry.kind != "segmentation":
        raise CheckpointError(
            f"{entry.name}: ImageNet backbone weights, not a segmentation model: start a model "
            f"from them with build_pretrained(MODEL, pretrained_backbone={entry.name!r}), or "
            "pretrained_backbone: imagenet in a training config"
        )
    path = converted_weights(entry)
    model = load(path, arch=arch, strict=strict, **overrides)
    if model.num_classes != entry.num_classes:  # fine-tuning: the entry's names no longer fit
        for key in ("class_names", "palette"):
            model.metadata.pop(key, None)
    model.metadata.update(
        {
            "source": entry.name.split(":", 1)[0],
            "registry": entry.name,
            "weights": entry.name,
            "weights_file": str(path),
        }
    )
    return model


def converted_weights(entry: Entry) -> Path:
    """The entry's atrous safetensors file: the cached conversion when it matches its record
    and the entry's build options, else converted now from the fetched source."""
    target = hub.converted_path(entry)
    build = json.dumps(dict(entry.build), sort_keys=True)
    with hub.locked(target):
        found = hub.cached_conversion(entry)
        if found is not None and (cache.read_record(found) or {}).get("build") == build:
            return found
        source = hub.fetch(entry)
        model = load(source, **dict(entry.build))
        names = zoo_classes(model.num_classes) if model.num_classes == entry.num_classes else {}
        extra = {"registry": entry.name}
        if tuple(entry.inference_scales) != (1.0,):
            extra["inference_scales"] = json.dumps(list(entry.inference_scales))
        save(
            model,
            target,
            class_names=model.metadata.get("class_names", names.get("class_names")),
            palette=model.metadata.get("palette", names.get("palette")),
            extra=extra,
        )
        cache.write_record(
            target, cache.sha256_file(target), converted_from=source.name, build=build
        )
    return target


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
    reinit_ok = "num_classes" in overrides
    extensions = split_extensions(sd, meta)
    saved = parse_metadata(meta)
    source, arch = resolve_source_arch(sd, saved, source, arch)
    kwargs = checkpoint_build_kwargs(sd, saved, source, arch)
    sd = convert(sd, source, arch)
    model = build_checkpoint_model(arch, kwargs, overrides, recorded=saved is not None)

    reinit = drop_mismatched_tensors(model, sd) if reinit_ok else []
    missing, unexpected = load_tensors(model, sd, strict and not reinit)
    missing = [k for k in missing if k not in reinit]  # re-initialized on purpose
    model.metadata.update(usage_metadata(saved, source))
    model, extension_reinit = attach_extensions(model, extensions, reinit_ok)
    model.metadata.update(
        {
            "source": source,
            "weights": where,
            "reinitialized": reinit + extension_reinit,
            "missing_keys": missing,
            "unexpected_keys": unexpected,
        }
    )
    return model.eval()


def load_tf(
    checkpoint: str | os.PathLike,
    arch: str | None = None,
    strict: bool = True,
    overrides: Mapping[str, Any] | None = None,
) -> DeepLab:
    """A TensorFlow DeepLab checkpoint (:mod:`.tf_checkpoint`) as the atrous model that
    computes what the official graph computes (:mod:`.tf_deeplab`), at output stride 16
    unless ``output_stride`` is overridden (the atrous rates scale with it)."""
    overrides = dict(overrides or {})
    where = str(checkpoint)
    tensors = read_tf_checkpoint(checkpoint)
    found = detect_tf({k: v.shape for k, v in tensors.items()}, where)
    if arch is not None and get_spec(arch).name != found.arch:
        raise CheckpointError(f"{where}: holds a {found.arch}, not a {get_spec(arch).name}")
    kwargs = tf_build_options(found, int(overrides.get("output_stride", 16)))
    reinit_ok = "num_classes" in overrides
    try:
        model = build_checkpoint_model(found.arch, kwargs, overrides, recorded=False)
        sd = convert_tf(tensors, model.state_dict(), where, reshape_ok=reinit_ok)
        reinit = drop_mismatched_tensors(model, sd) if reinit_ok else []
        missing, _ = load_tensors(model, sd, strict and not reinit)
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from None
    classes = zoo_classes(found.num_classes) if model.num_classes == found.num_classes else {}
    if classes:
        classes["palette"] = [tuple(int(c) for c in rgb) for rgb in classes["palette"]]
    model.metadata.update(
        {
            **classes,
            "mean": TF_MEAN,
            "std": TF_STD,
            "source": "tf",
            "weights": where,
            "reinitialized": reinit,
            "missing_keys": [k for k in missing if k not in reinit],
            "unexpected_keys": [],
        }
    )
    return model.eval()


def resolve_source_arch(
    sd: StateDict, saved: SavedMetadata | None, source: str, arch: str | None
) -> tuple[str, str]:
    """(source, canonical arch): an atrous file's own; otherwise the caller's, with what
    the caller leaves out (``source="auto"``, ``arch=None``) detected from the keys."""
    if saved is not None:
        return "atrous", get_spec(arch or saved.config["arch"]).name
    if source == "auto" or arch is None:
        detected_source, detected_arch = detect(sd)
        source = detected_source if source == "auto" else source
        arch = arch or detected_arch
    return source, get_spec(arch).name


def build_checkpoint_model(
    arch: str, kwargs: dict[str, Any], overrides: dict[str, Any], recorded: bool
) -> DeepLab:
    """``build(arch)`` with the checkpoint's arguments and the caller's overrides; a
    CheckpointError says which of them does not build."""
    try:
        return build(arch, **with_overrides(kwargs, overrides, arch))
    except (ValueError, TypeError) as e:
        what = "the recorded config" if recorded else "its source's configuration"
        extra = f" with the overrides {overrides}" if overrides else ""
        raise CheckpointError(f"cannot build {arch} from {what}{extra}: {e}") from None


def checkpoint_build_kwargs(
    sd: StateDict, saved: SavedMetadata | None, source: str, arch: str
) -> dict[str, Any]:
    """The build arguments (less ``arch``) that the checkpoint's model was built with: an
    atrous file's recorded config, else what its keys show (atrous) or its source used."""
    if saved is not None:
        kwargs = dict(saved.config)
    elif source == "atrous":
        kwargs = {
            **infer_atrous_options(sd, arch),
            "num_classes": infer_num_classes(sd, "head.", arch),
        }
    else:
        kwargs = source_config(source, arch)
        kwargs["aux"] = any(k.startswith("aux_classifier.") for k in sd)
        kwargs["num_classes"] = infer_num_classes(sd, "classifier.", arch)
    kwargs.pop("arch", None)
    return kwargs


def with_overrides(
    kwargs: dict[str, Any], overrides: Mapping[str, Any], arch: str
) -> dict[str, Any]:
    """``kwargs`` updated with the caller's ``overrides``. A new output stride keeps the
    checkpoint's receptive field: its atrous rates scale with it (unless also overridden)."""
    kwargs = dict(kwargs)
    new_os = overrides.get("output_stride")
    if new_os and "atrous_rates" not in overrides and kwargs.get("atrous_rates"):
        old_os = kwargs.get("output_stride") or get_spec(arch).output_stride
        kwargs["atrous_rates"] = scale_rates(kwargs["atrous_rates"], old_os, int(new_os))
    kwargs.update(overrides)
    return kwargs


def usage_metadata(saved: SavedMetadata | None, source: str) -> dict[str, Any]:
    """What ``model.metadata`` gets from the file: an atrous file's recorded class names,
    normalization, palette and inference scales; ImageNet normalization for a reference
    checkpoint (torchvision and VainF train with it)."""
    if saved is not None:
        usage = saved.usage
    elif source != "atrous":
        usage = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    else:
        usage = {}
    return {k: tuple(v) if k in ("mean", "std") else v for k, v in usage.items()}


def drop_mismatched_tensors(model: nn.Module, sd: StateDict) -> list[str]:
    """Remove checkpoint entries whose shape no longer fits (new ``num_classes``); returns
    their keys."""
    own = model.state_dict()
    dropped = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    for k in dropped:
        del sd[k]
    return dropped


def load_tensors(model: DeepLab, sd: StateDict, strict: bool) -> tuple[list[str], list[str]]:
    """Load ``sd`` into ``model``; returns (missing, unexpected) keys. Any shape mismatch
    raises, and with ``strict`` so does any missing or unexpected key."""
    own = model.state_dict()
    bad = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in sd.items()
        if k in own and own[k].shape != v.shape
    ]
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
