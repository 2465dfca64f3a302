"""The dataset formats by name: each format's class registers itself here, and the factory
(:mod:`atrous.data.factory`: building by name, format detection, split listing) reads this
table instead of knowing the layouts itself."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from atrous.data.base import SegmentationDataset

D = TypeVar("D", bound=type[SegmentationDataset])


@dataclass(frozen=True)
class Format:
    """A registered format: its class, and the rank it is tried at by format detection."""

    name: str
    cls: type[SegmentationDataset]
    priority: int


@dataclass(frozen=True)
class Variant:
    """Another dataset name for a format, with some of its splits renamed (``voc_aug``: VOC
    whose ``train`` split is SBD's ``train_aug``)."""

    name: str
    format: str
    split_names: Mapping[str, str] = field(default_factory=dict)


_FORMATS: dict[str, Format] = {}
_VARIANTS: dict[str, Variant] = {}


def register_format(
    name: str, *, priority: int, variants: Mapping[str, Mapping[str, str]] | None = None
) -> Callable[[D], D]:
    """Class decorator: register a dataset class as the format ``name``.

    Detection tries the formats by ``priority``, highest first (a generic layout, which many
    folders match, ranks below the specific ones); :data:`atrous.data.FORMATS` lists them
    in that order. ``variants`` maps other dataset names to split renames of this format.
    """

    def register(cls: D) -> D:
        if name in _FORMATS and _FORMATS[name].cls is not cls:
            raise ValueError(f"dataset format {name!r} is already registered")
        cls.format_name = name
        _FORMATS[name] = Format(name, cls, priority)
        for alias, renames in (variants or {}).items():
            _VARIANTS[alias] = Variant(alias, name, dict(renames))
        return cls

    return register


def formats() -> tuple[Format, ...]:
    """The registered formats, in the order detection tries them."""
    return tuple(sorted(_FORMATS.values(), key=lambda f: -f.priority))


def format_names() -> tuple[str, ...]:
    """The registered format names, in the order detection tries them."""
    return tuple(f.name for f in formats())


def dataset_names() -> tuple[str, ...]:
    """Every name a folder dataset can be built by: each format followed by its variants."""
    names: list[str] = []
    for f in formats():
        names.append(f.name)
        names += [v.name for v in _VARIANTS.values() if v.format == f.name]
    return tuple(names)


def lookup(name: str) -> tuple[type[SegmentationDataset], Mapping[str, str]] | None:
    """The class of a format or variant name and the split renames it applies, or None."""
    if name in _FORMATS:
        return _FORMATS[name].cls, {}
    if name in _VARIANTS:
        v = _VARIANTS[name]
        return _FORMATS[v.format].cls, v.split_names
    return None
