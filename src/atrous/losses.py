"""Segmentation losses: cross-entropy with an ignore label, class weights, hard-pixel
mining, the Lovász-softmax and soft Dice region losses, and their combination with
torchvision's auxiliary-head loss.

Every loss takes logits ``(N, C, H, W)`` and an integer target ``(N, H, W)`` in which
``ignore_index`` (255) marks pixels that contribute nothing, gradient included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atrous.constants import IGNORE_INDEX

REGION_LOSSES = ("lovasz", "dice")


def _check(logits: Tensor, target: Tensor) -> None:
    if logits.dim() != 4 or target.dim() != 3:
        raise ValueError(
            f"expected logits (N, C, H, W) and target (N, H, W), got {tuple(logits.shape)} "
            f"and {tuple(target.shape)}"
        )
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match"
        )


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Pixel-wise softmax cross-entropy averaged over the labelled pixels (DeepLab v1 §3.1:
    the sum of per-pixel cross-entropy, ignoring void). With ``weight`` the mean is weighted,
    as in ``F.cross_entropy``; ``label_smoothing`` mixes the one-hot target with the uniform
    distribution (Szegedy et al. 2016 §7). Zero (with a gradient path) when no pixel is
    labelled."""
    _check(logits, target)
    if weight is not None:
        weight = weight.to(device=logits.device, dtype=logits.dtype)
    if not (target != ignore_index).any():
        return logits.sum() * 0.0
    return F.cross_entropy(
        logits,
        target,
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
    )


def ohem_cross_entropy(
    logits: Tensor,
    target: Tensor,
    top_k: float = 0.2,
    weight: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    min_kept: int = 1,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross-entropy over the hardest ``top_k`` fraction of labelled pixels of the batch
    (online hard example mining, Shrivastava et al. 2016; DeepLab's ``top_k_percent_pixels``).
    At least ``min_kept`` pixels are kept; ``top_k=1`` is plain (unweighted-mean) CE."""
    _check(logits, target)
    if not 0 < top_k <= 1:
        raise ValueError(f"top_k must be in (0, 1], got {top_k}")
    if weight is not None:
        weight = weight.to(device=logits.device, dtype=logits.dtype)
    losses = F.cross_entropy(
        logits,
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction="none",
        label_smoothing=label_smoothing,
    ).flatten()
    valid = target.flatten() != ignore_index
    losses = losses[valid]
    if losses.numel() == 0:
        return logits.sum() * 0.0
    k = min(losses.numel(), max(int(min_kept), round(top_k * losses.numel())))
    return losses.topk(k, sorted=False).values.mean()


def _lovasz_grad(gt_sorted: Tensor) -> Tensor:
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. sorted errors
    (Berman et al., CVPR 2018, Alg. 1)."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if gt_sorted.numel() > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1].clone()
    return jaccard


def lovasz_softmax(
    logits: Tensor,
    target: Tensor,
    ignore_index: int = IGNORE_INDEX,
    classes: str = "present",
) -> Tensor:
    """Lovász-softmax loss (Berman et al., CVPR 2018, eq. 12): a convex surrogate of
    1 - IoU per class, averaged over the classes present in the batch (``classes="present"``)
    or all classes (``"all"``). Ignored pixels are removed before sorting."""
    _check(logits, target)
    if classes not in ("present", "all"):
        raise ValueError(f"classes must be 'present' or 'all', got {classes!r}")
    c = logits.shape[1]
    probs = logits.float().softmax(1).permute(0, 2, 3, 1).reshape(-1, c)
    labels = target.reshape(-1)
    valid = labels != ignore_index
    probs, labels = probs[valid], labels[valid]
    if labels.numel() == 0:
        return logits.sum() * 0.0
    per_class = []
    for k in range(c):
        fg = (labels == k).float()
        if classes == "present" and fg.sum() == 0:
            continue
        errors = (fg - probs[:, k]).abs()
        errors_sorted, order = errors.sort(descending=True)
        per_class.append(torch.dot(errors_sorted, _lovasz_grad(fg[order])))
    if not per_class:
        return logits.sum() * 0.0
    return torch.stack(per_class).mean().to(logits.dtype)


def soft_dice(
    logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX, eps: float = 1.0
) -> Tensor:
    """Soft Dice loss 1 - 2|P∩G| / (|P| + |G|) per class, averaged over the classes present
    (Milletari et al., V-Net 2016), computed over labelled pixels only."""
    _check(logits, target)
    c = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1).to(logits.dtype)
    probs = logits.float().softmax(1) * valid
    onehot = F.one_hot(target.clamp(max=c - 1) * (target != ignore_index), c)
    onehot = onehot.permute(0, 3, 1, 2).to(probs.dtype) * valid
    dims = (0, 2, 3)
    inter, card = (probs * onehot).sum(dims), (probs + onehot).sum(dims)
    present = onehot.sum(dims) > 0
    if not present.any():
        return logits.sum() * 0.0
    dice = 1.0 - (2 * inter + eps) / (card + eps)
    return dice[present].mean().to(logits.dtype)


def class_weights_from_counts(
    counts: Sequence[float] | np.ndarray | Tensor,
    method: str = "inverse_log",
    c: float = 1.02,
    image_counts: Sequence[float] | np.ndarray | None = None,
    cap: float | None = None,
) -> Tensor:
    """Class weights from per-class pixel counts.

    ``inverse_log``: w = 1 / ln(c + p), p the class frequency (ENet, Paszke et al. 2016 §5.2;
    c = 1.02 bounds weights to [1, 50]). ``median``: median frequency balancing
    w = median(f) / f (Eigen & Fergus, ICCV 2015), with f = count / pixels of the images
    where the class appears (``image_counts``; all pixels when omitted). Absent classes
    get weight 0. ``cap`` bounds the largest weight to ``cap`` times the smallest present
    one: strong weights buy recall on thin classes with false positives (on CamVid the
    inverse-log weights span 12×).
    """
    n = torch.as_tensor(np.asarray(counts, dtype=np.float64))
    if n.dim() != 1 or (n < 0).any() or n.sum() <= 0:
        raise ValueError("counts must be a 1-D sequence of non-negative pixel counts, not all 0")
    present = n > 0
    if method == "inverse_log":
        w = 1.0 / torch.log(c + n / n.sum())
    elif method == "median":
        denom = (
            torch.as_tensor(np.asarray(image_counts, dtype=np.float64))
            if image_counts is not None
            else torch.full_like(n, float(n.sum()))
        )
        freq = n / denom.clamp(min=1)
        w = freq[present].median() / freq.clamp(min=1e-12)
    else:
        raise ValueError(f"method must be 'inverse_log' or 'median', got {method!r}")
    if cap is not None:
        if cap < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        w = w.clamp(max=float(w[present].min()) * cap)
    return torch.where(present, w, torch.zeros_like(w)).float()


class SegmentationLoss(nn.Module):
    """The training loss: CE (or OHEM CE) + ``region_weight`` × region loss on ``"out"``,
    plus ``aux_weight`` × the same on ``"aux"`` when the model has an auxiliary head
    (torchvision's recipe: 0.5). After each call :attr:`parts` holds the detached terms.
    """

    def __init__(
        self,
        weight: Sequence[float] | Tensor | None = None,
        ohem_top_k: float | None = None,
        region: str | None = None,
        region_weight: float = 1.0,
        aux_weight: float = 0.5,
        ignore_index: int = IGNORE_INDEX,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if region is not None and region not in REGION_LOSSES:
            raise ValueError(f"region loss must be one of {REGION_LOSSES} or None, got {region!r}")
        if ohem_top_k is not None and not 0 < ohem_top_k <= 1:
            raise ValueError(f"ohem_top_k must be in (0, 1], got {ohem_top_k}")
        w = None if weight is None else torch.as_tensor(weight, dtype=torch.float32)
        self.register_buffer("weight", w, persistent=False)
        self.ohem_top_k, self.region, self.region_weight = ohem_top_k, region, region_weight
        self.aux_weight, self.ignore_index = aux_weight, ignore_index
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self.parts: dict[str, float] = {}

    def _single(self, logits: Tensor, target: Tensor, prefix: str) -> Tensor:
        if self.weight is not None and self.weight.numel() != logits.shape[1]:
            raise ValueError(
                f"{self.weight.numel()} class weights for a model of {logits.shape[1]} classes"
            )
        if self.ohem_top_k is not None:
            loss = ohem_cross_entropy(
                logits,
                target,
                self.ohem_top_k,
                self.weight,
                self.ignore_index,
                label_smoothing=self.label_smoothing,
            )
        else:
            loss = cross_entropy(
                logits, target, self.weight, self.ignore_index, self.label_smoothing
            )
        self.parts[f"{prefix}ce"] = float(loss.detach())
        if self.region:
            fn = lovasz_softmax if self.region == "lovasz" else soft_dice
            r = fn(logits, target, ignore_index=self.ignore_index)
            self.parts[f"{prefix}{self.region}"] = float(r.detach())
            loss = loss + self.region_weight * r
        return loss

    def forward(self, outputs: Mapping[str, Tensor] | Tensor, target: Tensor) -> Tensor:
        self.parts = {}
        if isinstance(outputs, Tensor):
            outputs = {"out": outputs}
        loss = self._single(outputs["out"].float(), target, "")
        if "aux" in outputs and self.aux_weight:
            loss = loss + self.aux_weight * self._single(outputs["aux"].float(), target, "aux_")
        return loss
