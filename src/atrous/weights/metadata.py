"""The metadata atrous writes into its safetensors files, so that ``load(path)`` needs no
other argument. Every value is a string (safetensors' rule), JSON where not a plain word:

* ``format`` = :data:`FORMAT`; ``config``: the build configuration (``DeepLab.config``);
  ``arch``, ``num_classes``, ``output_stride``, ``atrous_rates``: copies of its main entries,
  readable without parsing ``config``;
* ``mean``, ``std`` (input normalization, 0-1 RGB), and optionally ``class_names``,
  ``palette`` (one RGB triple per class) and ``inference_scales``: what using the weights
  needs, restored into ``model.metadata``;
* the entries of registered extensions (:mod:`.extensions`), e.g. ``crf_rnn``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from atrous.constants import IMAGENET_MEAN, IMAGENET_STD
from atrous.models.deeplab import DeepLab

FORMAT = "atrous"
# Entries restored into model.metadata on load.
USAGE_KEYS = ("class_names", "mean", "std", "palette", "inference_scales")


@dataclass
class SavedMetadata:
    """The parsed metadata of an atrous weights file."""

    config: dict[str, Any]
    usage: dict[str, Any] = field(default_factory=dict)  # for model.metadata


def parse_metadata(meta: Mapping[str, str]) -> SavedMetadata | None:
    """The build configuration and usage metadata of an atrous file; None for another file."""
    if meta.get("format") != FORMAT:
        return None
    usage = {k: json.loads(meta[k]) for k in USAGE_KEYS if k in meta}
    return SavedMetadata(config=json.loads(meta["config"]), usage=usage)


def model_metadata(
    model: DeepLab,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
) -> dict[str, str]:
    """The metadata entries of ``model`` (not those of extensions); unset arguments default
    to ``model.metadata``'s. Raises ValueError when the class names do not fit the model."""
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
    return meta
