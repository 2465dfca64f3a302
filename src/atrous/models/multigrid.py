"""Multi-grid (DeepLab v3 sec. 3.2): within an atrous block, each unit gets its own dilation,
``block rate × unit rate``; with unit rates (1, 2, 4) a block at rate 2 runs at (2, 4, 8).

ResNet's and Xception's atrous stages and the v3 cascade of extra blocks
(:class:`~atrous.models.heads.CascadeHead`, block5-7 at rates doubling from block4's) apply it.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["multi_grid_rates"]


def multi_grid_rates(block_rate: int, unit_rates: Sequence[int]) -> tuple[int, ...]:
    """The dilation of each unit of a block: ``block_rate × unit rate`` (DeepLab v3 sec. 3.2
    "Multi-grid": (1, 2, 4) at block rate 2 gives (2, 4, 8))."""
    if any(r < 1 for r in unit_rates):
        raise ValueError(f"multi-grid unit rates must be >= 1, got {tuple(unit_rates)}")
    return tuple(block_rate * r for r in unit_rates)
