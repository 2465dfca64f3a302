"""Dense-CRF parameters: their defaults, help text and validation, in one record.

The fully connected CRF of Krähenbühl & Koltun (2011) as DeepLab uses it (v1 sec. 4.3, v2 sec.
3.3) has a *smoothness* kernel on positions (weight ``w2`` = ``pos_w``, std ``theta_gamma`` =
``pos_xy_std``) and an *appearance* kernel on positions and colours (weight ``w1`` = ``bi_w``,
stds ``theta_alpha`` = ``bi_xy_std`` and ``theta_beta`` = ``bi_rgb_std``), and runs a number of
mean-field ``iterations``.  :class:`CRFParams` holds them; its defaults are DeepLab v2's PASCAL
VOC setting.  :func:`~atrous.crf.dense_crf`, :class:`~atrous.crf.DenseCRF` and the initial
kernels of :class:`~atrous.crf.CRFasRNN` take their defaults from it, and each field's
``metadata["help"]`` describes it (for command-line flags).

Files: :meth:`CRFParams.from_file` reads a JSON object of these keys, as ``best_crf.json`` of
``atrous crf-search`` (an optional ``"method": "dense_crf"`` entry is accepted), or an object
that nests one under ``"best_params"`` (``crf_search.json``) or ``"params"``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["KERNEL_FIELDS", "STD_FIELDS", "CRFParams", "ParamsSource", "check_param"]

# What each field is, for its validation: a count of iterations, a kernel weight or a std.
_ITERATIONS, _WEIGHT, _STD = "iterations", "weight", "std"


def _param(default: float, kind: str, help: str) -> Any:
    return field(default=default, metadata={"kind": kind, "help": help})


@dataclass(frozen=True)
class CRFParams:
    """Dense-CRF parameters (defaults: DeepLab v2, PASCAL VOC), validated on construction.

    ValueError names the field: ``iterations`` must be a non-negative integer, the weights
    finite numbers (a negative weight is allowed: it rewards label changes), the standard
    deviations positive finite numbers.  Numbers are stored as ``int`` / ``float``.
    """

    iterations: int = _param(10, _ITERATIONS, "mean-field iterations")
    pos_w: float = _param(3.0, _WEIGHT, "smoothness weight w2")
    pos_xy_std: float = _param(1.0, _STD, "theta_gamma, pixels")
    bi_w: float = _param(4.0, _WEIGHT, "appearance weight w1")
    bi_xy_std: float = _param(67.0, _STD, "theta_alpha, pixels")
    bi_rgb_std: float = _param(3.0, _STD, "theta_beta")

    def __post_init__(self) -> None:
        for name in self.names():
            object.__setattr__(self, name, check_param(name, getattr(self, name)))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The field names, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def help(cls, name: str) -> str:
        """The help text of field ``name`` (what a command-line flag says about it)."""
        return _FIELDS[name].metadata["help"]

    def replace(self, **overrides: Any) -> CRFParams:
        """A copy with ``overrides`` applied; ``None`` values are ignored (not given).

        TypeError for a name that is not a field, ValueError for an invalid value.
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(given) - set(self.names()))
        if unknown:
            raise TypeError(f"CRFParams.replace: {_unknown_keys(unknown, self.names())}")
        return dataclasses.replace(self, **given)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (what :meth:`from_dict` reads back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "CRF parameters") -> CRFParams:
        """Parameters from a mapping of field names (missing ones keep their defaults).

        A ``"method": "dense_crf"`` entry (what ``DenseCRF.config()`` and crf-search write) is
        accepted.  ValueError, starting with ``where``, for anything else: an unknown key (the
        known ones are listed, and the nearest suggested) or an invalid value.
        """
        if not isinstance(data, Mapping):
            raise ValueError(
                f"{where}: expected an object of dense-CRF parameters, got {type(data).__name__}"
            )
        values = dict(data)
        method = values.pop("method", "dense_crf")
        if method != "dense_crf":
            raise ValueError(f"{where}: method={method!r} is not the dense CRF ('dense_crf')")
        unknown = sorted(set(values) - set(cls.names()), key=str)
        if unknown:
            raise ValueError(f"{where}: {_unknown_keys(unknown, cls.names())}")
        try:
            return cls(**values)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], where: str | None = None) -> CRFParams:
        """Parameters from a JSON file: an object of field names (``best_crf.json`` of
        ``atrous crf-search``), or one nested under ``"best_params"`` (its ``crf_search.json``)
        or ``"params"``.

        ValueError for a missing or unreadable file, invalid JSON, or invalid contents; the
        message starts with ``where`` (default: the path) and names the offending key.
        """
        p = Path(path)
        where = str(p) if where is None else where
        try:
            text = p.read_text()
        except FileNotFoundError:
            raise ValueError(f"{where}: file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{where}: cannot read the file ({e})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e})") from None
        for key in ("best_params", "params"):
            if isinstance(data, dict) and isinstance(data.get(key), dict):
                return cls.from_dict(data[key], where=f"{where} ({key})")
        return cls.from_dict(data, where=where)

    @classmethod
    def from_source(cls, source: ParamsSource, where: str | None = None) -> CRFParams:
        """Parameters from a :class:`CRFParams` (returned as is), a mapping
        (:meth:`from_dict`), a JSON file path (:meth:`from_file`), or None (the defaults).

        ``where`` starts the error messages (default: the path, or ``"CRF parameters"``).
        """
        if source is None:
            return cls()
        if isinstance(source, CRFParams):
            return source
        if isinstance(source, Mapping):
            return cls.from_dict(source, where="CRF parameters" if where is None else where)
        if isinstance(source, (str, os.PathLike)):
            return cls.from_file(source, where=where)
        raise TypeError(
            "CRF parameters must be a CRFParams, a mapping, a JSON file path or None, got "
            f"{type(source).__name__}"
        )


# What CRFParams.from_source (and DenseCRF.from_params) read.
ParamsSource = CRFParams | Mapping[str, Any] | str | os.PathLike[str] | None

_FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(CRFParams)}
# The kernels' weights and stds (all but the iterations), and the stds alone.
KERNEL_FIELDS = tuple(n for n, f in _FIELDS.items() if f.metadata["kind"] != _ITERATIONS)
STD_FIELDS = tuple(n for n, f in _FIELDS.items() if f.metadata["kind"] == _STD)


def check_param(name: str, value: Any, label: str | None = None) -> int | float:
    """``value`` checked as CRFParams field ``name`` and returned as ``int`` / ``float``.

    The one place the rules live (CRF-as-RNN options use it too); ValueError
    ``"{label}={value!r}: must be ..."`` with ``label`` defaulting to ``name``.
    """
    label = name if label is None else label
    kind = _FIELDS[name].metadata["kind"]
    if kind == _ITERATIONS:
        if not _is_int(value) or value < 0:
            raise ValueError(f"{label}={value!r}: must be a non-negative integer")
        return int(value)
    if not _is_real(value) or not math.isfinite(value):
        raise ValueError(f"{label}={value!r}: must be a finite number")
    if kind == _STD and value <= 0:
        raise ValueError(f"{label}={value!r}: must be positive")
    return float(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _unknown_keys(unknown: Iterable[Any], known: tuple[str, ...]) -> str:
    """``unknown key(s) [...]`` with the nearest known name of each where one is close."""
    unknown = list(unknown)
    hints = []
    for key in unknown:
        near = difflib.get_close_matches(str(key), known, n=1)
        if near:
            hints.append(f"{near[0]!r} for {key!r}")
    hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
    return f"unknown key(s) {unknown}{hint}; known: {list(known)}"
