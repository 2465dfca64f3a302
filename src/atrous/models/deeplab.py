"""The DeepLab model: backbone + head (+ auxiliary head), logits upsampled to the input.

Data flows one way: the backbone's stage features are looked up by role (``out``,
``low_level``, ``aux``), the head turns them into class scores at the feature resolution,
and scores are upsampled bilinearly (align_corners=False) to the input size, as torchvision
and VainF do (``align_corners=True`` with the build option of that name, as TensorFlow
DeepLab does). ``forward`` returns ``{"out": logits}`` (+ ``"aux"``), like torchvision.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from atrous.constants import IMAGENET_MEAN, IMAGENET_STD

from .backbone import Backbone
from .layers import upsample_to


class DeepLab(nn.Module):
    """A DeepLab segmentation model.

    Attributes:
        config: everything needed to rebuild the model with :func:`atrous.models.build`
            (``arch``, ``num_classes``, ``output_stride``, ``atrous_rates``, ``aux`` and the
            build options); saved as metadata with the weights.
        metadata: what using the weights needs: ``mean``/``std`` of the input
            normalization (0-1 RGB), ``class_names``, and where the weights came from.
    """

    def __init__(
        self,
        backbone: Backbone,
        head: nn.Module,
        aux_classifier: nn.Module | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_classifier = aux_classifier
        self.config: dict[str, Any] = dict(config or {})
        # Not build options: what inference needs to use the weights (set by atrous.weights).
        self.metadata: dict[str, Any] = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        self._roles = dict(backbone.roles)
        # TensorFlow DeepLab resizes its logits with align_corners=True (build option).
        self.align_corners = bool(self.config.get("align_corners", False))

    @property
    def num_classes(self) -> int:
        return int(self.config["num_classes"])

    @property
    def output_stride(self) -> int:
        return self.backbone.output_stride

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a float batch of shape (N, 3, H, W), got {tuple(x.shape)}")
        size = x.shape[-2:]
        stages = self.backbone(x)
        features = {role: stages[name] for role, name in self._roles.items()}
        result = {"out": upsample_to(self.head(features), size, self.align_corners)}
        if self.aux_classifier is not None:
            result["aux"] = upsample_to(self.aux_classifier(features), size, self.align_corners)
        return result
