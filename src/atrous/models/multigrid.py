"""Deprecated module, kept so that old imports keep working.

Multi-grid (DeepLab v3 §3.2) is :func:`~.backbone.multi_grid_rates`, next to the other
dilation rule the backbones share; the cascaded atrous blocks are
:class:`~.heads.CascadeHead`, with the other heads. Import them from :mod:`atrous.models`.
"""

from __future__ import annotations

from .backbone import multi_grid_rates
from .heads import CascadeHead

__all__ = ["CascadeHead", "multi_grid_rates"]
