"""The ``weights=`` argument of the model builders, in torchvision's style::

    model = atrous.models.deeplabv3plus_xception65(weights="voc")
    model = atrous.models.deeplabv3_resnet101(weights="torchvision:deeplabv3_resnet101_coco")

The builders live here, in layer 1, and the published weights (registry, download, cache,
conversion) in :mod:`atrous.weights`, layer 2, which this layer never imports. The loader is
found as the weights extensions are: through a package entry point, declared in the project's
``pyproject.toml``::

    [project.entry-points."atrous.pretrained"]
    registry = "atrous.weights.load:load_for_builder"

(An editable install reads entry points from its install-time metadata: after changing them,
install again.)
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from typing import Any, Protocol

from torch import nn

ENTRY_POINT_GROUP = "atrous.pretrained"


class PretrainedLoader(Protocol):
    def __call__(self, arch: str, weights: Any, **overrides: Any) -> nn.Module: ...


@cache
def _loader() -> PretrainedLoader:
    found = list(entry_points(group=ENTRY_POINT_GROUP))
    if not found:
        raise RuntimeError(
            f"no loader of published weights is declared (entry point group "
            f"{ENTRY_POINT_GROUP!r}): atrous's installed metadata is older than its code; "
            "install it again (pip install -e .), or use atrous.weights.load(NAME)"
        )
    return found[0].load()


def load_pretrained(arch: str, weights: Any, **overrides: Any) -> nn.Module:
    """Model ``arch`` with the published ``weights`` (a registry name or entry, ``"DEFAULT"``,
    or the dataset its classes come from: ``"voc"``, ``"cityscapes"``, ``"ade20k"``), in eval
    mode; ``overrides`` are build arguments (``num_classes=5`` re-initializes the classifier
    for fine-tuning, ``output_stride=8`` rescales the rates)."""
    return _loader()(arch, weights, **overrides)
