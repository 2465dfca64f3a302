"""What a request may ask of the service, checked against what the server allows.

The server's flags (``atrous serve --scales --flip --crf --tile-size``) are the defaults; a
request may choose its own test-time ``scales`` (each in [:data:`MIN_SCALE`,
:data:`MAX_SCALE`], at most :data:`MAX_SCALES` of them, so one request cannot cost more than
a paper-scale TTA), ``flip``, ``crf`` where the server was started with ``--crf`` or
``--allow-crf``, the response ``format`` and, for JSON, ``masks``. Anything else is refused
(HTTP 422) with a message naming the option.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "FORMATS",
    "MASKS",
    "MAX_SCALE",
    "MAX_SCALES",
    "MIN_SCALE",
    "OptionError",
    "RequestOptions",
    "ServerSettings",
    "parse_options",
]

FORMATS = ("png", "raw", "overlay", "json")
MASKS = ("none", "png", "rle")
MIN_SCALE, MAX_SCALE, MAX_SCALES = 0.25, 2.0, 6
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class OptionError(ValueError):
    """A request option that is unknown or out of range (HTTP 422)."""


@dataclass(frozen=True)
class ServerSettings:
    """How the service runs (``atrous serve``'s flags)."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    crf: bool = False  # the dense CRF runs by default
    allow_crf: bool = False  # requests may turn the dense CRF on
    tile_size: int | None = None
    max_batch: int = 8
    max_wait_ms: float = 10.0
    max_queue: int = 64
    max_upload_mb: float = 20.0
    max_pixels: int = 40_000_000
    threads: int | None = None
    warmup_size: tuple[int, int] = (513, 513)
    # RSS (MB) above which the heap is trimmed after a batch (atrous.serve.memory); None:
    # 3x the RSS after the warm-up, at least 1024; 0: never
    memory_limit_mb: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if not self.max_upload_mb > 0 or not self.max_pixels > 0:
            raise ValueError("max_upload_mb and max_pixels must be positive")
        if self.memory_limit_mb is not None and not self.memory_limit_mb >= 0:
            raise ValueError(f"memory_limit_mb must be >= 0, got {self.memory_limit_mb}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def crf_allowed(self) -> bool:
        return self.crf or self.allow_crf

    def defaults(self) -> RequestOptions:
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
    if fmt not in FORMATS:
        raise OptionError(f"option 'format' must be one of {', '.join(FORMATS)}, got {fmt!r}")
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
