"""An atrous model with a learned CRF-as-RNN last layer (Zheng et al. 2015), end to end.

:class:`CRFRNNModel` is a :class:`~atrous.models.deeplab.DeepLab` whose ``forward`` refines the
``"out"`` logits with :class:`~atrous.crf.CRFasRNN`. Zheng et al. (sec. 6) unroll 5 mean-field
iterations while training and 10 at test time: ``iterations`` applies in train mode,
``eval_iterations`` in eval mode.

The CRF's bilateral kernel needs the RGB image. The model recovers it from its own
normalized input, ``rgb = round(255 * (x * std + mean))`` with ``model.metadata``'s mean/std
(the normalization the training transforms and :class:`~atrous.inference.Segmenter` apply), so
``model(x)`` keeps the one-argument signature every trainer and evaluator calls; pass
``image`` explicitly to override.

Inference (``atrous eval`` / ``predict``) does not run the CRF inside the forward: the
:class:`~atrous.inference.Segmenter` gets :meth:`CRFRNNModel.without_crf` (same parameters) and
:meth:`CRFRNNModel.crf_hook`, so the learned CRF runs once per image on the full-resolution,
scale- and flip-averaged probabilities, like the dense CRF of DeepLab v1/v2 — a fully connected
CRF per tile or per scale would not be the same model.

Saving: this module registers the CRF layer as a weights extension
(:func:`atrous.weights.register_extension`): :func:`atrous.weights.save` writes the ``crf.*``
tensors and the options :func:`saved_crf_options` gives as the ``crf_rnn`` metadata entry, and
:func:`atrous.weights.load` rebuilds a ``CRFRNNModel`` from them with :func:`attach_saved_crf`.
pyproject.toml declares this module as the ``crf_rnn`` entry point of the
``atrous.weights_extensions`` group, so a file loads in a process that has not imported it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from atrous.models.deeplab import DeepLab
from atrous.normalization import Normalization
from atrous.weights.extensions import register_extension

from .crfasrnn import CRFasRNN
from .params import KERNEL_FIELDS, STD_FIELDS, CRFParams, check_param

__all__ = [
    "CRF_RNN_DEFAULTS",
    "CRFRNNModel",
    "LearnedCRF",
    "crf_rnn_options",
    "split_crf",
    "with_crf_rnn",
]

# Zheng et al. (sec. 6): 5 iterations in training, 10 at test (the dense CRF's); initial kernels:
# the dense CRF's defaults (DeepLab v2's VOC setting).
CRF_RNN_DEFAULTS: dict[str, Any] = {
    "iterations": 5,
    "eval_iterations": CRFParams.iterations,
    **{key: getattr(CRFParams, key) for key in KERNEL_FIELDS},
    "learn_compat": True,
}


def crf_rnn_options(options: Mapping[str, Any] | None, where: str = "crf_rnn") -> dict[str, Any]:
    """``options`` completed with :data:`CRF_RNN_DEFAULTS` and checked; ValueError names
    ``where`` and the offending key."""
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ValueError(
            f"{where}: must be an object of CRF-as-RNN options or null, got {options!r}"
        )
    unknown = sorted(set(options) - set(CRF_RNN_DEFAULTS))
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {unknown}; known: {sorted(CRF_RNN_DEFAULTS)}")
    opts = {**CRF_RNN_DEFAULTS, **options}
    # the dense CRF's rules: iteration counts as its iterations, the kernels as its kernels
    checks = {"iterations": "iterations", "eval_iterations": "iterations"}
    checks.update({key: key for key in KERNEL_FIELDS})
    for key, rule in checks.items():
        try:
            opts[key] = check_param(rule, opts[key], label=key)
        except ValueError as e:
            raise ValueError(f"{where}.{e}") from None
    if not isinstance(opts["learn_compat"], bool):
        raise ValueError(f"{where}.learn_compat={opts['learn_compat']!r}: must be true or false")
    return opts


class LearnedCRF:
    """A :class:`~atrous.inference.Segmenter` CRF hook running a learned :class:`CRFasRNN`:
    ``(image uint8 (H, W, 3), probs (C, H, W)) -> refined probs (C, H, W)``.

    The probabilities enter as logits ``log p`` (the softmax of the network's logits up to a
    per-pixel constant, which mean field ignores), exactly as in training.
    """

    def __init__(self, crf: CRFasRNN, iterations: int) -> None:
        self.crf = crf
        self.iterations = int(iterations)

    def __call__(self, image: Any, probs: Any) -> np.ndarray:
        p = torch.as_tensor(np.asarray(probs), dtype=torch.float32)
        img = torch.as_tensor(np.ascontiguousarray(image))
        if img.dim() != 3 or img.shape[2] != 3 or p.dim() != 3 or p.shape[1:] != img.shape[:2]:
            raise ValueError(
                f"LearnedCRF expects image (H, W, 3) and probs (C, H, W) of the same size, got "
                f"{tuple(img.shape)} and {tuple(p.shape)}"
            )
        dev = self.crf.compat.device
        logits = torch.log(p.clamp_min(torch.finfo(torch.float32).tiny))[None].to(dev)
        rgb = img.permute(2, 0, 1)[None].to(dev, torch.float32)
        self.crf.iterations = self.iterations
        with torch.no_grad():
            out = self.crf(logits, rgb)
        return torch.softmax(out[0], dim=0).cpu().numpy()

    def config(self) -> dict[str, Any]:
        """What ``Segmenter.config()`` records: the learned weights and fixed stds."""
        c = self.crf
        return {
            "method": "crf_rnn",
            "iterations": self.iterations,
            "pos_xy_std": c.pos_xy_std,
            "bi_xy_std": c.bi_xy_std,
            "bi_rgb_std": c.bi_rgb_std,
            "pos_w": [round(float(v), 6) for v in c.pos_weight.detach().cpu()],
            "bi_w": [round(float(v), 6) for v in c.bi_weight.detach().cpu()],
        }


class CRFRNNModel(DeepLab):
    """``model`` (a :class:`DeepLab`, whose modules are shared, not copied) followed by a
    :class:`CRFasRNN` layer with the options of :data:`CRF_RNN_DEFAULTS`.

    ``forward(x, image=None)`` returns the model's outputs with ``"out"`` refined by the CRF
    (``"aux"`` untouched). ``config`` is the base model's build configuration; the CRF options
    are ``crf_rnn_config``.
    """

    def __init__(self, model: DeepLab, **options: Any) -> None:
        if not isinstance(model, DeepLab):
            raise TypeError(f"CRFRNNModel wraps a DeepLab model, got {type(model).__name__}")
        if isinstance(model, CRFRNNModel):
            model = model.without_crf()
        super().__init__(model.backbone, model.head, model.aux_classifier, model.config)
        self.metadata = dict(model.metadata)
        self.crf_rnn_config = crf_rnn_options(options)
        o = self.crf_rnn_config
        self.crf = CRFasRNN(
            model.num_classes,
            iterations=o["iterations"],
            pos_w=o["pos_w"],
            pos_xy_std=o["pos_xy_std"],
            bi_w=o["bi_w"],
            bi_xy_std=o["bi_xy_std"],
            bi_rgb_std=o["bi_rgb_std"],
            learn_compat=o["learn_compat"],
        )
        self.train(model.training)

    @property
    def iterations(self) -> int:
        """Mean-field iterations of the current mode (train: ``iterations``, eval:
        ``eval_iterations``)."""
        key = "iterations" if self.training else "eval_iterations"
        return int(self.crf_rnn_config[key])

    def rgb_from_input(self, x: Tensor) -> Tensor:
        """The 0-255 RGB image behind a normalized input ``x = (rgb / 255 - mean) / std``:
        the inverse of the weights' :class:`~atrous.normalization.Normalization`, rounded to
        the uint8 colours inference sees."""
        return Normalization.of(self.metadata).invert(x)

    def forward(self, x: Tensor, image: Tensor | None = None) -> dict[str, Tensor]:  # type: ignore[override]
        out = super().forward(x)
        rgb = self.rgb_from_input(x) if image is None else image.float()
        self.crf.iterations = self.iterations
        # The lattice filter works in float32; autocast must not hand it half precision.
        with torch.autocast(x.device.type, enabled=False):
            out["out"] = self.crf(out["out"].float(), rgb)
        return out

    def without_crf(self) -> DeepLab:
        """A plain :class:`DeepLab` sharing this model's backbone and heads (no CRF)."""
        base = DeepLab(self.backbone, self.head, self.aux_classifier, self.config)
        base.metadata = self.metadata
        return base.train(self.training)

    def crf_hook(self, iterations: int | None = None) -> LearnedCRF:
        """The learned CRF as a Segmenter hook (``eval_iterations`` unless given)."""
        n = self.crf_rnn_config["eval_iterations"] if iterations is None else iterations
        return LearnedCRF(self.crf, n)


def split_crf(model: Any) -> tuple[Any, LearnedCRF | None]:
    """``(network, crf hook)`` to build a :class:`~atrous.inference.Segmenter` from: a
    :class:`CRFRNNModel` gives its network without the CRF and its learned CRF (run once on the
    TTA-averaged probabilities); any other model is returned as is, with None."""
    if isinstance(model, CRFRNNModel):
        return model.without_crf(), model.crf_hook()
    return model, None


def with_crf_rnn(model: DeepLab, options: Mapping[str, Any] | None) -> DeepLab:
    """``model`` with a CRF-as-RNN layer per ``options`` (a ``TrainConfig.crf_rnn``), or
    without one when ``options`` is None.

    A model that already has a learned CRF (fine-tuning from a CRF-RNN file) keeps its learned
    weights and compatibility when the kernel stds and class count are unchanged; otherwise the
    CRF starts from ``options``.
    """
    if options is None:
        return model.without_crf() if isinstance(model, CRFRNNModel) else model
    new = CRFRNNModel(model, **options)
    if isinstance(model, CRFRNNModel):
        old = model.crf_rnn_config
        same = all(old[k] == new.crf_rnn_config[k] for k in (*STD_FIELDS, "learn_compat"))
        if same and model.crf.num_classes == new.crf.num_classes:
            new.crf.load_state_dict(model.crf.state_dict())
    return new


def attach_saved_crf(
    model: DeepLab, options: Mapping[str, Any], state: Mapping[str, Tensor], reinit_ok: bool
) -> tuple[CRFRNNModel, list[str]]:
    """Rebuild the CRF layer a weights file recorded (``crf_rnn`` metadata, ``crf.*``
    tensors without the prefix): the load hook of the ``crf_rnn`` weights extension. Returns
    the model and the CRF keys re-initialized because ``num_classes`` was overridden
    (``reinit_ok``)."""
    wrapped = CRFRNNModel(model, **crf_rnn_options(options, "crf_rnn metadata"))
    own = wrapped.crf.state_dict()
    if set(state) != set(own):
        raise ValueError(
            f"crf_rnn: the file's CRF tensors {sorted(state)} do not match the layer's "
            f"{sorted(own)}"
        )
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad and not reinit_ok:
        raise ValueError(
            f"crf_rnn: CRF tensor shapes do not fit {model.num_classes} classes: {bad}"
        )
    if bad:
        return wrapped, [f"crf.{k}" for k in bad]
    wrapped.crf.load_state_dict(dict(state))
    return wrapped, []


def saved_crf_options(model: Any) -> dict[str, Any] | None:
    """The ``crf_rnn`` metadata entry of ``model``: its CRF options, or None for a model
    without a learned CRF; the save hook of the ``crf_rnn`` weights extension."""
    return dict(model.crf_rnn_config) if isinstance(model, CRFRNNModel) else None


register_extension("crf_rnn", tensor_prefix="crf.", save=saved_crf_options, load=attach_saved_crf)
