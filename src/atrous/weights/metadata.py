"""The metadata atrous writes into its safetensors files, so that ``load(path)`` needs no
other argument. Every value is a string (safetensors' rule), JSON where not a plain word:

* ``format`` = :data:`FORMAT`; ``config``: the build configuration (``DeepLab.config``);
  ``arch``, ``num_classes``, ``output_stride``, ``atrous_rates``: copies of its main entries,
  readable without parsing ``config``;
* ``mean``, ``std`` (input normalization, 0-1 RGB), and optionally ``class_names``,
  ``palette`` (one RGB triple per class) and ``inference_scales``: what using the weights
  needs, restored into ``model.metadata``;
* the entries of registered extensions (:mod:`.extensions`), e.g. ``crf_rnn``.

:func:`parse_metadata` checks each entry it reads; a malformed one raises
:class:`~.errors.CheckpointError` naming the entry (the caller adds the file).
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from atrous.models import ALIASES, list_models, resolve_name
from atrous.models.deeplab import DeepLab
from atrous.normalization import Normalization

from .errors import CheckpointError

FORMAT = "atrous"
# Entries restored into model.metadata on load.
USAGE_KEYS = ("class_names", "mean", "std", "palette", "inference_scales")


@dataclass
class SavedMetadata:
    """The parsed metadata of an atrous weights file."""

    config: dict[str, Any]
    usage: dict[str, Any] = field(default_factory=dict)  # for model.metadata


def parse_metadata(meta: Mapping[str, str]) -> SavedMetadata | None:
    """The build configuration and usage metadata of an atrous file; None for another file.

    Raises :class:`CheckpointError` naming the entry that is malformed JSON, an unknown
    architecture, a class count that is not a positive integer, a copy of a config entry
    that disagrees with it, or a usage entry of the wrong type."""
    if meta.get("format") != FORMAT:
        return None
    if "config" not in meta:
        raise CheckpointError(f"metadata has format {FORMAT!r} but no 'config' entry")
    config = json_entry(meta, "config")
    if not isinstance(config, dict):
        raise CheckpointError(f"metadata 'config': must be a JSON object, got {_clip(config)}")
    for key in ("arch", "num_classes"):
        if key not in config:
            raise CheckpointError(f"metadata 'config' has no {key}")
    arch = check_arch(config["arch"], "'config' arch")
    num_classes = _check_num_classes(config["num_classes"], "'config' num_classes")
    if "arch" in meta and check_arch(meta["arch"], "arch") != arch:
        raise CheckpointError(
            f"metadata arch={meta['arch']!r} disagrees with 'config' ({config['arch']!r})"
        )
    if "num_classes" in meta:
        copy = meta["num_classes"]
        value = int(copy) if _is_int_text(copy) else copy
        if _check_num_classes(value, "num_classes", shown=copy) != num_classes:
            raise CheckpointError(
                f"metadata num_classes={copy!r} disagrees with 'config' ({num_classes})"
            )
    usage = {}
    for key in USAGE_KEYS:
        if key in meta:
            value = json_entry(meta, key)
            problem = _USAGE_CHECKS[key](value, num_classes)
            if problem:
                raise CheckpointError(f"metadata {key!r}: {problem}")
            usage[key] = value
    return SavedMetadata(config=config, usage=usage)


def json_entry(meta: Mapping[str, str], key: str) -> Any:
    """The JSON value of ``meta[key]``; CheckpointError naming ``key`` if it is malformed."""
    text = meta[key]
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"metadata {key!r}: malformed JSON ({e.msg} at character {e.pos}): {_clip(text)}"
        ) from None


def check_arch(value: Any, where: str) -> str:
    """The canonical name of the architecture ``value``; CheckpointError naming ``where``,
    the nearest known name and all of them if it is unknown."""
    if isinstance(value, str):
        try:
            return resolve_name(value)
        except ValueError:
            pass
    known = [*list_models(), *ALIASES]
    near = difflib.get_close_matches(str(value), known, n=1, cutoff=0.6)
    hint = f"did you mean {resolve_name(near[0])!r}? " if near else ""
    raise CheckpointError(
        f"metadata {where}={value!r}: unknown architecture; {hint}known: {', '.join(list_models())}"
    )


def _clip(value: Any, limit: int = 60) -> str:
    """``value`` shown in an error: a string quoted, anything else as JSON; cut short."""
    text = repr(value) if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int_text(text: str) -> bool:
    return text.strip().lstrip("+-").isdigit()


def _check_num_classes(value: Any, where: str, shown: Any = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        shown = value if shown is None else shown
        raise CheckpointError(f"metadata {where}={shown!r}: must be a positive integer")
    return value


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _mean_problem(value: Any, _: int) -> str | None:
    ok = isinstance(value, list) and len(value) == 3 and all(map(_is_number, value))
    return None if ok else f"must be 3 numbers, got {_clip(value)}"


def _std_problem(value: Any, _: int) -> str | None:
    ok = isinstance(value, list) and len(value) == 3
    ok = ok and all(_is_number(x) and x > 0 for x in value)
    return None if ok else f"must be 3 positive numbers, got {_clip(value)}"


def _class_names_problem(value: Any, num_classes: int) -> str | None:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        return f"must be a list of strings, got {_clip(value)}"
    if len(value) != num_classes:
        return f"{len(value)} names for {num_classes} classes"
    return None


def _palette_problem(value: Any, _: int) -> str | None:
    def rgb(c: Any) -> bool:
        return (
            isinstance(c, list)
            and len(c) == 3
            and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255 for x in c)
        )

    ok = isinstance(value, list) and all(map(rgb, value))
    return None if ok else f"must be a list of RGB triples (integers 0-255), got {_clip(value)}"


def _scales_problem(value: Any, _: int) -> str | None:
    ok = isinstance(value, list) and value and all(_is_number(x) and x > 0 for x in value)
    return None if ok else f"must be a non-empty list of positive numbers, got {_clip(value)}"


_USAGE_CHECKS: dict[str, Callable[[Any, int], str | None]] = {
    "class_names": _class_names_problem,
    "mean": _mean_problem,
    "std": _std_problem,
    "palette": _palette_problem,
    "inference_scales": _scales_problem,
}


def model_metadata(
    model: DeepLab,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
) -> dict[str, str]:
    """The metadata entries of ``model`` (not those of extensions); unset arguments default
    to ``model.metadata``'s. Raises ValueError when the class names do not fit the model.
    A model whose auxiliary head was removed (``aux_classifier = None``, as for inference) is
    recorded without it, so the file loads back."""
    cfg = dict(model.config)
    if cfg.get("aux") and getattr(model, "aux_classifier", True) is None:
        cfg["aux"] = False
    class_names = class_names if class_names is not None else model.metadata.get("class_names")
    if class_names is not None and len(class_names) != cfg["num_classes"]:
        raise ValueError(
            f"{len(class_names)} class names for a model of {cfg['num_classes']} classes"
        )
    norm = Normalization.of(model.metadata, mean=mean or None, std=std or None)
    meta = {
        "format": FORMAT,
        "arch": cfg["arch"],
        "num_classes": str(cfg["num_classes"]),
        "output_stride": str(cfg["output_stride"]),
        "atrous_rates": json.dumps(cfg["atrous_rates"]),
        "config": json.dumps(cfg),
        "mean": json.dumps(list(norm.mean)),
        "std": json.dumps(list(norm.std)),
    }
    if class_names is not None:
        meta["class_names"] = json.dumps(list(class_names))
    palette = palette if palette is not None else model.metadata.get("palette")
    if palette is not None:
        meta["palette"] = json.dumps([[int(c) for c in rgb] for rgb in palette])
    return meta
