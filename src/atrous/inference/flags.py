"""Settings records that declare their own command-line flags.

A dataclass field made with :func:`setting` carries its flag (name, parser, help...) in its
metadata, so that an option is declared once: :class:`FlagRecord` turns those fields into
argparse flags (:meth:`~FlagRecord.add_arguments`) and a parsed namespace back into the record
(:meth:`~FlagRecord.from_args`), as :class:`atrous.crf.CRFParams` gives the ``--crf-*`` flags
their help. The parsers of the shared flag types are here too (:func:`parse_scales`,
:func:`positive_int`, :func:`megapixels`). Nothing here imports torch: building the command
line stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "PAPER_SCALES",
    "Flag",
    "FlagRecord",
    "megapixels",
    "parse_scales",
    "positive_int",
    "setting",
]

# DeepLab v3 sec. 4.3: the multi-scale inputs of the test-time augmentation.
PAPER_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)

_FIELD_DEFAULT = object()  # Flag.cli_default: the flag's default is the field's


def parse_scales(text: str) -> tuple[float, ...]:
    """``"1"``, ``"0.5,0.75,1,1.25,1.5,1.75"`` or ``"paper"`` (the v3 sec. 4.3 scales)."""
    if text.strip().lower() in ("paper", "ms"):
        return PAPER_SCALES
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--scales wants comma-separated positive numbers, got {text!r}"
        ) from None
    if not scales or any(not 0 < s < 100 for s in scales):
        raise argparse.ArgumentTypeError(f"--scales wants positive numbers, got {text!r}")
    return scales


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def megapixels(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of megapixels, got {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected megapixels >= 0, got {text!r}")
    return v


@dataclass(frozen=True)
class Flag:
    """How one settings field appears on the command line.

    ``name`` defaults to ``--`` and the field name with dashes; ``action`` is an argparse
    action such as ``"store_true"`` (then ``type``, ``metavar`` and the defaults are unused);
    ``cli_default`` is the flag's default where it differs from the field's (e.g. in other
    units); ``to_value`` turns the parsed flag into the field's value.
    """

    help: str
    name: str | None = None
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    choices: Sequence[str] | None = None
    action: str | None = None
    cli_default: Any = _FIELD_DEFAULT
    to_value: Callable[[Any], Any] | None = None

    def option(self, field_name: str) -> str:
        return self.name or "--" + field_name.replace("_", "-")

    def dest(self, field_name: str) -> str:
        return self.option(field_name).lstrip("-").replace("-", "_")

    def argparse_kwargs(self, field_default: Any, help: str | None = None) -> dict[str, Any]:
        """What ``parser.add_argument`` takes for this flag (``field_default``: the default of
        its field, the flag's unless it has its own)."""
        kwargs: dict[str, Any] = {"help": self.help if help is None else help}
        if self.action is not None:
            return {**kwargs, "action": self.action}
        kwargs["default"] = (
            field_default if self.cli_default is _FIELD_DEFAULT else self.cli_default
        )
        if self.type is not None:
            kwargs["type"] = self.type
        if self.metavar is not None:
            kwargs["metavar"] = self.metavar
        if self.choices is not None:
            kwargs["choices"] = self.choices
        return kwargs


def setting(default: Any, help: str | None = None, **flag: Any) -> Any:
    """A dataclass field with ``default`` and, given ``help``, a command-line :class:`Flag`
    (``flag``: its other arguments)."""
    metadata = {} if help is None else {"flag": Flag(help=help, **flag)}
    return dataclasses.field(default=default, metadata=metadata)


R = TypeVar("R", bound="FlagRecord")


class FlagRecord:
    """A frozen dataclass of settings whose :func:`setting` fields declare their flags."""

    @classmethod
    def flags(cls) -> dict[str, Flag]:
        """Field name -> its flag, in field order (fields without a flag left out)."""
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        return {f.name: f.metadata["flag"] for f in fields if "flag" in f.metadata}

    @classmethod
    def add_arguments(
        cls,
        parser: argparse.ArgumentParser | argparse._ArgumentGroup,
        only: Iterable[str] | None = None,
        skip: Iterable[str] = (),
        help: Mapping[str, str] | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        """Add the flags of the fields ``only`` names (default: all), less ``skip``, to
        ``parser``; ``help`` and ``defaults`` replace a flag's own where a command says it
        in its own words or defaults otherwise."""
        flags = cls.flags()
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        help, defaults = help or {}, defaults or {}
        for name in [n for n in (flags if only is None else only) if n not in set(skip)]:
            kwargs = flags[name].argparse_kwargs(fields[name].default, help.get(name))
            if name in defaults:
                kwargs["default"] = defaults[name]
            parser.add_argument(flags[name].option(name), **kwargs)

    @classmethod
    def from_args(cls: type[R], args: argparse.Namespace, **values: Any) -> R:
        """The record of the flags in ``args`` (fields whose flag a command does not have keep
        their default); ``values`` set other fields."""
        for name, flag in cls.flags().items():
            dest = flag.dest(name)
            if name not in values and hasattr(args, dest):
                value = getattr(args, dest)
                values[name] = value if flag.to_value is None else flag.to_value(value)
        return cls(**values)
