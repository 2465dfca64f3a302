"""Input images to normalised tensors, with clear errors for what a user can get wrong."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Normalizer", "to_uint8_hwc"]

# The statistics every ImageNet-pretrained backbone of the family was trained with.
from atrous.constants import IMAGENET_MEAN, IMAGENET_STD
from atrous.normalization import Normalization


def _check_hw(h: int, w: int, what: str) -> None:
    if h == 0 or w == 0:
        raise ValueError(f"image: {what} is empty ({h}x{w} pixels)")


def _as_chw_tensor(image: Any) -> torch.Tensor:
    """(3, H, W) tensor, uint8 or float in [0, 1], without copying where possible."""
    if isinstance(image, Image.Image):
        # Palette, grey and RGBA images are converted the way PIL displays them.
        image = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(
                f"image: expected a uint8 array of shape (H, W, 3), got dtype {image.dtype} "
                "(convert floats with (x * 255).round().astype(np.uint8))"
            )
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"image: expected shape (H, W, 3) (RGB), got {image.shape}"
                + (" (greyscale: stack it to 3 channels)" if image.ndim == 2 else "")
            )
        _check_hw(image.shape[0], image.shape[1], "array")
        if not image.flags.writeable:  # e.g. np.asarray(PIL image); torch wants writable
            image = image.copy()
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(
                f"image: expected a tensor of shape (3, H, W) (uint8, or float in [0, 1]), "
                f"got {tuple(image.shape)}"
            )
        if not (image.dtype == torch.uint8 or image.is_floating_point()):
            raise TypeError(f"image: expected a uint8 or float tensor, got {image.dtype}")
        _check_hw(image.shape[1], image.shape[2], "tensor")
        return image
    raise TypeError(
        "image: expected a uint8 numpy array (H, W, 3), a PIL image or a (3, H, W) tensor, "
        f"got {type(image).__name__}"
    )


def to_uint8_hwc(image: Any) -> np.ndarray:
    """The image as a uint8 (H, W, 3) RGB array (what the dense CRF's bilateral term uses)."""
    t = _as_chw_tensor(image)
    if t.is_floating_point():
        t = (t.detach().float() * 255.0).round().clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(t.detach().cpu().permute(1, 2, 0).numpy())


class Normalizer(Normalization):
    """:class:`~atrous.normalization.Normalization` of any image a user passes (uint8 HWC
    array, PIL image, (3, H, W) uint8 tensor or float tensor in [0, 1]).

    The default is torchvision/ImageNet style (RGB in [0, 1]); Caffe-era DeepLab v1/v2 weights
    use ``channel_order="BGR"``, ``input_scale=1``, their BGR mean and ``std=(1, 1, 1)``.
    """

    def __call__(  # type: ignore[override]
        self, image: Any, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Normalised float32 (3, H, W) tensor on ``device``."""
        t = _as_chw_tensor(image).to(device)
        # Float tensors are in [0, 1]; bring them to the uint8 range the scale expects.
        return super().__call__(t * 255.0 if t.is_floating_point() else t)
