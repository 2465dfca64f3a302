"""Reference checkpoints → atrous: renaming their keys and the build options that
reproduce their models, dispatched to one module per source (:mod:`.torchvision`,
:mod:`.vainf`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from torch import Tensor

from atrous.models import get_spec

from . import torchvision, vainf
from .errors import CheckpointError
from .io import StateDict

# Each module has rename_rules(spec) and build_options(spec).
REFERENCE_SOURCES: dict[str, ModuleType] = {"torchvision": torchvision, "vainf": vainf}
SOURCES = ("atrous", *REFERENCE_SOURCES)


def convert(state_dict: Mapping[str, Tensor], source: str, arch: str) -> StateDict:
    """Rename a reference state dict (``source`` = torchvision or vainf) to atrous's names."""
    spec = get_spec(arch)
    if source == "atrous":
        return dict(state_dict)
    rules = REFERENCE_SOURCES[source].rename_rules(spec) if source in REFERENCE_SOURCES else None
    if rules is None:
        raise CheckpointError(f"no conversion from {source!r} for {spec.name!r}")
    compiled = [(re.compile(p), r) for p, r in rules]
    out: StateDict = {}
    for name, tensor in state_dict.items():
        for pattern, repl in compiled:
            new, n = pattern.subn(repl, name, count=1)
            if n:
                name = new
                break
        out[name] = tensor
    return out


def source_config(source: str, arch: str) -> dict[str, Any]:
    """The build options that reproduce ``source``'s model of ``arch`` ({} for atrous)."""
    spec = get_spec(arch)
    if source in REFERENCE_SOURCES:
        return REFERENCE_SOURCES[source].build_options(spec)
    return {}
