"""CRF-as-RNN: mean-field inference as a differentiable layer (Zheng et al. 2015).

Each mean-field iteration of the fully connected CRF (Krähenbühl & Koltun 2011) is written as
differentiable steps — message passing with the two Gaussian kernels (permutohedral lattice),
weighting by learnable per-label kernel weights, a learnable compatibility transform, adding the
unaries and a softmax — and unrolled for a fixed number of iterations (Zheng et al. 2015, sec.
4-5).  The filtering is linear in Q, so its backward pass is the transposed lattice filter; the
kernel standard deviations are fixed hyper-parameters, as in the paper.

As the last layer of an atrous model, trained end to end, it is
:class:`~atrous.crf.CRFRNNModel` (``TrainConfig.crf_rnn``).  Called directly, ``crf(logits,
image)`` takes ``image``, the un-normalized RGB image (uint8 or float in 0-255), ``(B, 3, H,
W)``, the size of ``logits``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .kernels import GaussianKernel, bilateral_features, positional_features
from .meanfield import mean_field
from .params import CRFParams

__all__ = ["CRFasRNN"]


class CRFasRNN(nn.Module):
    """Unrolled mean-field CRF with learnable kernel weights and label compatibility.

    Args:
        num_classes: number of labels C.
        iterations: unrolled mean-field iterations (Zheng et al. train with 5, test with 10).
        pos_w, bi_w: initial smoothness / appearance kernel weights (one per label, learnable).
        pos_xy_std, bi_xy_std, bi_rgb_std: fixed kernel standard deviations.
            Kernel defaults: :class:`~atrous.crf.CRFParams` (DeepLab v2's VOC setting).
        learn_compat: learn the ``(C, C)`` compatibility ``mu`` (initialized to Potts, 1 - I).

    ``forward(logits, image)`` takes logits ``(B, C, H, W)`` (treated as negative unary
    energies) and an RGB image ``(B, 3, H, W)`` in 0-255, and returns refined logits.
    """

    def __init__(
        self,
        num_classes: int,
        iterations: int = 5,
        pos_w: float = CRFParams.pos_w,
        pos_xy_std: float = CRFParams.pos_xy_std,
        bi_w: float = CRFParams.bi_w,
        bi_xy_std: float = CRFParams.bi_xy_std,
        bi_rgb_std: float = CRFParams.bi_rgb_std,
        learn_compat: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        # validated as the dense CRF's (ValueError naming the parameter)
        init = CRFParams(iterations, pos_w, pos_xy_std, bi_w, bi_xy_std, bi_rgb_std)
        self.num_classes = num_classes
        self.iterations = init.iterations
        self.pos_xy_std, self.bi_xy_std = init.pos_xy_std, init.bi_xy_std
        self.bi_rgb_std = init.bi_rgb_std
        self.pos_weight = nn.Parameter(torch.full((num_classes,), init.pos_w))
        self.bi_weight = nn.Parameter(torch.full((num_classes,), init.bi_w))
        compat = 1.0 - torch.eye(num_classes)
        if learn_compat:
            self.compat = nn.Parameter(compat)
        else:
            self.register_buffer("compat", compat)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, iterations={self.iterations}, "
            f"pos_xy_std={self.pos_xy_std}, bi_xy_std={self.bi_xy_std}, "
            f"bi_rgb_std={self.bi_rgb_std}"
        )

    def forward(self, logits: Tensor, image: Tensor) -> Tensor:
        if not isinstance(logits, Tensor) or not isinstance(image, Tensor):
            raise TypeError("CRFasRNN expects torch tensors (logits, image)")
        if logits.dim() != 4 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"logits must have shape (B, {self.num_classes}, H, W), got {tuple(logits.shape)}"
            )
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must have shape (B, 3, H, W), got {tuple(image.shape)}")
        if image.shape[0] != logits.shape[0] or image.shape[2:] != logits.shape[2:]:
            raise ValueError(
                f"image {tuple(image.shape)} and logits {tuple(logits.shape)} must share batch "
                "and spatial size"
            )
        if not logits.is_floating_point():
            raise TypeError(f"logits must be floating point, got {logits.dtype}")
        b, c, h, w = logits.shape
        with torch.no_grad():
            img = image.detach().permute(0, 2, 3, 1)
            if img.is_floating_point():
                # The lattice expects 0-255 colours; integral values keep parity with uint8 input.
                img = img.to(torch.float32)
            kernels_f = [
                GaussianKernel(positional_features(b, h, w, self.pos_xy_std, logits.device)),
                GaussianKernel(bilateral_features(img, self.bi_xy_std, self.bi_rgb_std)),
            ]
        unary = -logits.permute(0, 2, 3, 1).reshape(b, h * w, c)
        dtype = unary.dtype
        kernels = [
            (kernels_f[0], self.pos_weight.to(dtype)),
            (kernels_f[1], self.bi_weight.to(dtype)),
        ]
        out = mean_field(unary, kernels, self.iterations, self.compat.to(dtype), return_logits=True)
        return out.reshape(b, h, w, c).permute(0, 3, 1, 2)
