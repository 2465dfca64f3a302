"""The TF model zoo's evaluation protocol, so that its reported numbers can be reproduced.

The zoo's mIoU come from ``research/deeplab/eval.py``: each image is padded at the bottom
and right to ``eval_crop_size`` with the mean pixel (0 after the ``2/255·x − 1``
preprocessing; ``input_preprocess.py``), so image pooling averages over the padding too; the
padded canvas is resized by each of ``eval_scales`` to ``int((d − 1)·s + 1)`` with
``align_corners=True``; the logits at the feature resolution are resized straight back to the
canvas (``align_corners=True``); the softmax probabilities of every scale (and of the
left-right flipped canvas, with ``add_flipped_images``) are averaged and the argmax taken
(``model.predict_labels_multi_scale``). The padded pixels are ignored when scoring.

:class:`TFEvalProtocol` wraps a :class:`~atrous.models.DeepLab` so that it does exactly this
and returns ``log`` of the averaged probabilities as its ``"out"``: the
:class:`~atrous.inference.Segmenter` then runs it as any model at one scale without flipping
(its softmax gives back the averaged probabilities, its argmax the official labels).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

# eval_crop_size of the zoo's evaluation commands (g3doc/{pascal,cityscapes,ade20k}.md).
ZOO_CROP_SIZES = {"voc": (513, 513), "cityscapes": (1025, 2049), "ade20k": (513, 513)}
# eval_scales the zoo lists for its multi-scale numbers ("[0.5:0.25:1.75]").
ZOO_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def scale_dimension(dim: int, scale: float) -> int:
    """TF DeepLab's ``scale_dimension``: ``int((dim - 1) * scale + 1)``."""
    return int((float(dim) - 1.0) * scale + 1.0)


class TFEvalProtocol(nn.Module):
    """A DeepLab evaluated as the official ``eval.py`` evaluates it (see the module doc).

    Args:
        model: a DeepLab (eager: the protocol needs the logits before the final resize).
        crop_size: ``eval_crop_size`` (H, W); images are padded up to it, never cropped.
        scales: ``eval_scales``.
        flip: ``add_flipped_images``.
    """

    def __init__(
        self,
        model: nn.Module,
        crop_size: Sequence[int] = (513, 513),
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
    ) -> None:
        super().__init__()
        if not hasattr(model, "backbone") or not hasattr(model, "head"):
            raise TypeError(
                "the TF evaluation protocol needs an eager DeepLab (its logits before the "
                f"final resize); got {type(model).__name__}"
            )
        self.model = model
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.scales = tuple(float(s) for s in scales)
        self.flip = bool(flip)
        self.metadata = dict(getattr(model, "metadata", {}))
        self.config = dict(getattr(model, "config", {}))

    def _feature_logits(self, x: Tensor) -> Tensor:
        stages = self.model.backbone(x)
        feats = {role: stages[name] for role, name in self.model.backbone.roles.items()}
        return self.model.head(feats)

    def _probabilities(self, canvas: Tensor, scale: float, flip: bool) -> Tensor:
        h, w = canvas.shape[-2:]
        x = canvas.flip(-1) if flip else canvas
        if scale != 1.0:
            size = (scale_dimension(h, scale), scale_dimension(w, scale))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        logits = F.interpolate(
            self._feature_logits(x), size=(h, w), mode="bilinear", align_corners=True
        )
        return (logits.flip(-1) if flip else logits).softmax(1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h, w = x.shape[-2:]
        ch, cw = self.crop_size
        canvas = F.pad(x, (0, max(0, cw - w), 0, max(0, ch - h)))  # 0 = the mean pixel
        passes = [(s, f) for s in self.scales for f in ((False, True) if self.flip else (False,))]
        proba = sum(self._probabilities(canvas, s, f) for s, f in passes) / len(passes)
        return {"out": proba[..., :h, :w].clamp_min(1e-30).log()}


def zoo_protocol(
    model: nn.Module,
    scales: Sequence[float] | None,
    flip: bool,
    crop_size: Sequence[int] | None = None,
    dataset: str | None = None,
) -> TFEvalProtocol:
    """``model`` evaluated as the zoo evaluated it (``atrous eval --protocol tf-zoo``): at
    ``scales`` (default 1) with ``flip``, padded to ``crop_size``, else the zoo's
    ``eval_crop_size`` for ``dataset`` (:data:`ZOO_CROP_SIZES`). The Segmenter then runs the
    wrapper at one scale, without flipping or tiling."""
    if crop_size is None:
        if dataset not in ZOO_CROP_SIZES:
            known = ", ".join(f"{k} {v[0]}x{v[1]}" for k, v in ZOO_CROP_SIZES.items())
            raise ValueError(
                f"the TF zoo protocol needs the eval crop size of a {dataset!r} dataset: give "
                f"--crop-size H,W (the zoo's: {known})"
            )
        crop_size = ZOO_CROP_SIZES[dataset]
    return TFEvalProtocol(model, crop_size, scales or (1.0,), flip)
