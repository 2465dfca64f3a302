"""Extensions: parts of a model that a higher layer adds around a DeepLab (the learned
CRF-as-RNN of :mod:`atrous.crf.rnn_model`) and that are saved in the same weights file.

An extension owns one metadata entry (its options as JSON) and the tensors under one
prefix. It registers itself with :func:`register_extension` when its module is imported:

* ``save(model)`` returns the options to record for ``model``, or None when ``model`` does
  not carry the part (the part's tensors are in ``model.state_dict()`` already);
* ``load(model, options, tensors, reinit_ok)`` rebuilds the part around a loaded DeepLab from
  the recorded options and its tensors (prefix removed), and returns the new model and the
  keys it re-initialized (allowed when ``reinit_ok``: ``num_classes`` was overridden); it
  raises ValueError when they do not fit.

A file can be loaded before anything imported the extension's module: :data:`PROVIDERS`
names, per metadata entry, the module to import then. This package never imports those
modules itself, so :mod:`atrous.weights` stays below them.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from atrous.models.deeplab import DeepLab

from .errors import CheckpointError
from .io import StateDict
from .metadata import json_entry

SaveHook = Callable[[nn.Module], Any]
LoadHook = Callable[[DeepLab, Any, StateDict, bool], tuple[DeepLab, list[str]]]

# Metadata entry -> the module that registers its extension when imported.
PROVIDERS: dict[str, str] = {"crf_rnn": "atrous.crf.rnn_model"}


@dataclass(frozen=True)
class Extension:
    """A registered extension (see the module docstring for the hooks' contract)."""

    metadata_key: str
    tensor_prefix: str
    save: SaveHook
    load: LoadHook


@dataclass
class SavedExtension:
    """One extension's part of a file being loaded: its options and tensors."""

    extension: Extension
    options: Any
    tensors: StateDict


_REGISTRY: dict[str, Extension] = {}


def register_extension(
    metadata_key: str, *, tensor_prefix: str, save: SaveHook, load: LoadHook
) -> Extension:
    """Register (or replace) the extension stored under ``metadata_key``."""
    if not tensor_prefix.endswith("."):
        raise ValueError(f"tensor_prefix must end with '.', got {tensor_prefix!r}")
    ext = Extension(metadata_key, tensor_prefix, save, load)
    _REGISTRY[metadata_key] = ext
    return ext


def registered_extensions() -> list[Extension]:
    """The extensions registered so far, in registration order."""
    return list(_REGISTRY.values())


def extension(metadata_key: str) -> Extension:
    """The extension of ``metadata_key``, importing its provider module if needed."""
    if metadata_key not in _REGISTRY and metadata_key in PROVIDERS:
        module = PROVIDERS[metadata_key]
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise CheckpointError(
                f"{metadata_key}: the file needs {module}, which cannot be imported ({e})"
            ) from None
    if metadata_key not in _REGISTRY:
        raise CheckpointError(f"{metadata_key}: no extension registered for this entry")
    return _REGISTRY[metadata_key]


def extension_metadata(model: nn.Module) -> dict[str, str]:
    """The metadata entries of the extensions ``model`` carries (for saving)."""
    meta = {}
    for ext in registered_extensions():
        options = ext.save(model)
        if options is not None:
            meta[ext.metadata_key] = json.dumps(options)
    return meta


def split_extensions(sd: StateDict, meta: Mapping[str, str]) -> list[SavedExtension]:
    """The extensions a file records, with their tensors taken out of ``sd`` (in place), so
    that ``sd`` holds the DeepLab's own tensors only."""
    saved = []
    for key in [k for k in meta if k in _REGISTRY or k in PROVIDERS]:
        ext = extension(key)
        own = [k for k in sd if k.startswith(ext.tensor_prefix)]
        tensors = {k[len(ext.tensor_prefix) :]: sd.pop(k) for k in own}
        saved.append(SavedExtension(ext, json_entry(meta, key), tensors))
    return saved


def attach_extensions(
    model: DeepLab, saved: list[SavedExtension], reinit_ok: bool
) -> tuple[DeepLab, list[str]]:
    """``model`` with each saved extension rebuilt around it, and the keys re-initialized."""
    reinit: list[str] = []
    for part in saved:
        try:
            model, keys = part.extension.load(model, part.options, part.tensors, reinit_ok)
        except ValueError as e:
            raise CheckpointError(str(e)) from None
        reinit += keys
    return model, reinit
