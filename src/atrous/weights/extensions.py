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

A file can be loaded before anything imported the extension's module: each extension is
declared as a package entry point in the group :data:`ENTRY_POINT_GROUP` (name: the metadata
entry; value: the module that registers it), and the first file that needs it loads that
module. atrous declares its own in ``pyproject.toml``::

    [project.entry-points."atrous.weights_extensions"]
    crf_rnn = "atrous.crf.rnn_model"

so the declaration is in the project's files, not in this layer's code: :mod:`atrous.weights`
never imports the modules above it, and another installed package can add an extension the
same way. (An editable install reads entry points from its install-time metadata: after
changing them, install again.) :data:`PROVIDERS` adds entries by hand, for a package that is
not installed.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from torch import nn

from atrous.models.deeplab import DeepLab

from .errors import CheckpointError
from .io import StateDict
from .metadata import json_entry

SaveHook = Callable[[nn.Module], Any]
LoadHook = Callable[[DeepLab, Any, StateDict, bool], tuple[DeepLab, list[str]]]

# The entry-point group that declares, per metadata entry, the module registering its extension.
ENTRY_POINT_GROUP = "atrous.weights_extensions"
# Metadata entry -> module, added by hand to (and overriding) the declared entry points.
PROVIDERS: dict[str, str] = {}


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


@functools.cache
def _declared_providers() -> dict[str, str]:
    """Metadata entry -> module, as the installed packages' entry points declare them (read
    once per process)."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _provider(metadata_key: str) -> str | None:
    """The module that registers the extension of ``metadata_key``, or None."""
    return PROVIDERS.get(metadata_key) or _declared_providers().get(metadata_key)


def extension(metadata_key: str) -> Extension:
    """The extension of ``metadata_key``, loading the module that provides it if needed."""
    if metadata_key in _REGISTRY:
        return _REGISTRY[metadata_key]
    module = _provider(metadata_key)
    if module is None:
        raise CheckpointError(
            f"{metadata_key}: no extension registered for this entry, and no installed package "
            f"declares one (entry points {ENTRY_POINT_GROUP!r})"
        )
    try:
        EntryPoint(metadata_key, module, ENTRY_POINT_GROUP).load()
    except ImportError as e:
        raise CheckpointError(
            f"{metadata_key}: the file needs {module}, which cannot be imported ({e})"
        ) from None
    if metadata_key not in _REGISTRY:
        raise CheckpointError(f"{metadata_key}: {module} registers no extension for this entry")
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
    for key in [k for k in meta if k in _REGISTRY or _provider(k) is not None]:
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
