"""atrous: the DeepLab family of semantic-segmentation systems in PyTorch.

DeepLab v1 (VGG-16 LargeFOV), v2 (ResNet + summed ASPP), v3 (multi-grid, cascade, ASPP with
image pooling), v3+ (encoder-decoder), the fully connected CRF, and evaluation by the
papers' protocol. Start with :func:`atrous.models.build` or the ``atrous`` command.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
