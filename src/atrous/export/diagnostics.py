"""What the exporters say: :class:`ExportError` (one line, what to do), and :func:`quiet`
for their progress prints and warnings."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

__all__ = ["ExportError", "first_line", "quiet"]


class ExportError(ValueError):
    """A model that cannot be exported as asked, or an exported file that does not match its
    eager model; the message says which and what to do."""


# The exporters' loggers that report progress (silenced by :func:`quiet`).
_CHATTY_LOGGERS = (
    "torch.onnx",
    "torch.export",
    "torch._dynamo",
    "torch.fx.experimental.symbolic_shapes",
)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The exporters' progress prints and warnings about optional packages (torchvision's
    ops, deprecations) are not the user's concern: silenced, errors still raise."""
    loggers = [logging.getLogger(n) for n in _CHATTY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def first_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"
