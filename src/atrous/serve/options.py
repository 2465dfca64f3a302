"""What a request may ask of the service, checked against what the server allows.

The server's flags (``atrous serve --scales --flip --crf --tile-size``) are the defaults; a
request may choose its own test-time ``scales`` (each in [:data:`MIN_SCALE`,
:data:`MAX_SCALE`], at most :data:`MAX_SCALES` of them, so one request cannot cost more than
a paper-scale TTA), ``flip``, ``crf`` where the server was started with ``--crf`` or
``--allow-crf``, the response ``format`` and, for JSON, ``masks``. Anything else is refused
(HTTP 422) with a message naming the option.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from atrous.inference.flags import FlagRecord, positive_int, setting
from atrous.inference.settings import InferenceSettings

__all__ = [
    "FORMATS",
    "MASKS",
    "MAX_SCALE",
    "MAX_SCALES",
    "MIN_SCALE",
    "RESPONSE_FORMATS",
    "OptionError",
    "RequestOptions",
    "ServerSettings",
    "parse_options",
]

RESPONSE_FORMATS = ("png", "raw", "overlay", "json")
FORMATS = RESPONSE_FORMATS  # deprecated alias: the formats a response may take
MASKS = ("none", "png", "rle")
MIN_SCALE, MAX_SCALE, MAX_SCALES = 0.25, 2.0, 6
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
# What requests start from unless the server is told otherwise (atrous serve: the weights'
# own scales, resolved by the service).
_INFERENCE = InferenceSettings(scales=(1.0,))
# ServerSettings(scales=..., flip=..., tile_size=...) set these fields of its ``inference``.
_INFERENCE_SHORTCUTS = ("scales", "flip", "tile_size")


class OptionError(ValueError):
    """A request option that is unknown or out of range (HTTP 422)."""


@dataclass(frozen=True, init=False)
class ServerSettings(FlagRecord):
    """How the service runs (``atrous serve``'s flags, each declared here or in
    :class:`~atrous.inference.settings.InferenceSettings`).

    ``inference``: what every request starts from (``scales``, ``flip``, ``tile_size``; a
    request may choose its own scales and flip) and what the model is prepared with
    (``precision``, ``calibration``); ``scales`` None takes the weights' own. The other
    fields: the dense CRF, batching and limits. ``ServerSettings(scales=..., flip=...,
    tile_size=...)`` sets those of ``inference``, and they read back as attributes.
    """

    inference: InferenceSettings = _INFERENCE
    crf: bool = setting(False, "run the dense CRF by default", action="store_true")
    allow_crf: bool = setting(
        False, "let requests turn the dense CRF on (crf=true)", action="store_true"
    )
    # the dense CRF's parameters (a JSON file); giving them turns ``crf`` on
    crf_params: str | None = setting(
        None, "dense-CRF parameters (e.g. best_crf.json of atrous crf-search)", metavar="JSON"
    )
    max_batch: int = setting(8, "images per model batch (default %(default)s)", type=positive_int)
    max_wait_ms: float = setting(
        10.0, "how long a request waits for batch-mates (default %(default)s)", type=float
    )
    max_queue: int = setting(
        64,
        "waiting requests beyond which the server answers 503 (default %(default)s)",
        type=positive_int,
    )
    max_upload_mb: float = setting(
        20.0, "largest upload, MB (413 beyond; default %(default)s)", type=float
    )
    max_pixels: int = setting(
        40_000_000,
        "largest image, pixels, read from the header before decoding (413 beyond; default "
        "%(default).0e)",
        type=float,
        to_value=int,
    )
    warmup_size: tuple[int, int] = (513, 513)
    # RSS (MB) above which the heap is trimmed after a batch (atrous.serve.memory)
    memory_limit_mb: float | None = setting(
        None,
        "RSS above which freed memory is given back to the OS after a batch (default: 3x the "
        "RSS after the warm-up, at least 1024; 0: never)",
        type=float,
    )

    def __init__(self, inference: InferenceSettings | None = None, **values: Any) -> None:
        if "threads" in values:
            values.pop("threads")
            warnings.warn(
                "ServerSettings(threads=...) is ignored and deprecated: the threads are the "
                "process's (atrous serve --threads)",
                DeprecationWarning,
                stacklevel=2,
            )
        shortcuts = {k: values.pop(k) for k in _INFERENCE_SHORTCUTS if k in values}
        inference = dataclasses.replace(inference or _INFERENCE, **shortcuts)
        object.__setattr__(self, "inference", inference)
        for f in dataclasses.fields(self)[1:]:
            object.__setattr__(self, f.name, values.pop(f.name, f.default))
        if values:
            raise TypeError(f"ServerSettings: unknown setting(s) {sorted(values)}")
        object.__setattr__(self, "warmup_size", tuple(self.warmup_size))
        if self.crf_params:  # as --crf-params implies --crf in atrous predict
            object.__setattr__(self, "crf", True)
        self._check()

    def _check(self) -> None:
        for name in ("max_batch", "max_queue"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if not self.max_upload_mb > 0 or not self.max_pixels > 0:
            raise ValueError("max_upload_mb and max_pixels must be positive")
        if self.memory_limit_mb is not None and not self.memory_limit_mb >= 0:
            raise ValueError(f"memory_limit_mb must be >= 0, got {self.memory_limit_mb}")

    @classmethod
    def from_args(cls, args: Any, **values: Any) -> ServerSettings:
        """The settings of ``atrous serve``'s flags, the inference ones included."""
        values.setdefault("inference", InferenceSettings.from_args(args))
        return super().from_args(args, **values)

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain data (what :meth:`from_dict` reads back, through JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServerSettings:
        values = dict(data)
        inference = values.pop("inference", None)
        return cls(None if inference is None else InferenceSettings(**inference), **values)

    @property
    def scales(self) -> tuple[float, ...] | None:
        return self.inference.scales

    @property
    def flip(self) -> bool:
        return self.inference.flip

    @property
    def tile_size(self) -> int | None:
        return self.inference.tile_size

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def crf_allowed(self) -> bool:
        return self.crf or self.allow_crf

    def defaults(self) -> RequestOptions:
        """What a request gets unless it asks (``scales`` resolved: see :class:`SegmentService
        <atrous.serve.app.SegmentService>`)."""
        if self.scales is None:
            raise ValueError("the default scales are the weights' own: resolve them first")
        return RequestOptions(scales=tuple(self.scales), flip=self.flip, crf=self.crf)


@dataclass(frozen=True)
class RequestOptions:
    """One request's inference settings and response shape."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    crf: bool = False
    format: str = "png"
    masks: str = "none"
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def inference_key(self) -> tuple[tuple[float, ...], bool, bool]:
        """Requests with equal keys (and equal image sizes) can share a batch."""
        return (self.scales, self.flip, self.crf)


def _bool(name: str, text: str) -> bool:
    t = text.strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise OptionError(f"option {name!r} must be true or false, got {text!r}")


def _scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise OptionError(
            f"option 'scales' must be comma-separated numbers, got {text!r}"
        ) from None
    if not scales or len(scales) > MAX_SCALES:
        raise OptionError(f"option 'scales' takes 1 to {MAX_SCALES} numbers, got {text!r}")
    bad = [s for s in scales if not (math.isfinite(s) and MIN_SCALE <= s <= MAX_SCALE)]
    if bad:
        raise OptionError(
            f"option 'scales': each scale must be in [{MIN_SCALE}, {MAX_SCALE}], got {bad[0]}"
        )
    return scales


def parse_options(query: Mapping[str, str], settings: ServerSettings) -> RequestOptions:
    """The options of one request (query string and form fields, merged), validated against
    ``settings``; raises :class:`OptionError` naming the first bad one."""
    known = {"format", "scales", "flip", "crf", "masks"}
    unknown = sorted(set(query) - known)
    if unknown:
        raise OptionError(
            f"unknown option {unknown[0]!r}; this endpoint takes {', '.join(sorted(known))}"
        )
    base = settings.defaults()
    fmt = query.get("format", "png").strip().lower()
    if fmt not in RESPONSE_FORMATS:
        raise OptionError(
            f"option 'format' must be one of {', '.join(RESPONSE_FORMATS)}, got {fmt!r}"
        )
    masks = query.get("masks", "none").strip().lower()
    if masks not in MASKS:
        raise OptionError(f"option 'masks' must be one of {', '.join(MASKS)}, got {masks!r}")
    if masks != "none" and fmt != "json":
        raise OptionError("option 'masks' goes with format=json")
    scales = _scales(query["scales"]) if "scales" in query else base.scales
    flip = _bool("flip", query["flip"]) if "flip" in query else base.flip
    crf = _bool("crf", query["crf"]) if "crf" in query else base.crf
    if crf and not settings.crf_allowed:
        raise OptionError(
            "option 'crf': this server does not run the dense CRF (start it with --crf or "
            "--allow-crf)"
        )
    return RequestOptions(scales=scales, flip=flip, crf=crf, format=fmt, masks=masks)
