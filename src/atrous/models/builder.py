""":func:`build`: a row of the model table plus options → a :class:`~.deeplab.DeepLab`.

The steps, each in its own place: the row (:mod:`.zoo`), the options and rates
(:mod:`.options`), the backbone and head builders (:mod:`.assembly`). Every builder
function of :mod:`atrous.models` (``deeplabv3plus_resnet101`` …) is :func:`build` with its
row's name. Nothing here reads a file: ImageNet backbone weights are loaded by
:func:`atrous.weights.build_pretrained`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .assembly import make_aux_head, make_backbone, make_head
from .deeplab import DeepLab
from .options import resolve_head_kind, resolve_options, resolve_output_stride, resolve_rates
from .pretrained import load_pretrained
from .zoo import MODELS, get_spec


def build(
    name: str,
    num_classes: int = 21,
    output_stride: int | None = None,
    aux: bool = False,
    atrous_rates: Sequence[int] | None = None,
    **options: Any,
) -> DeepLab:
    """Build a DeepLab model by name (see :func:`~.zoo.list_models`).

    Args:
        name: an atrous model name, or a torchvision/VainF alias.
        num_classes: number of output classes.
        output_stride: 8, 16 or 32 (default: the row's, as in its paper).
        aux: add torchvision's auxiliary FCN head on the stage before the last.
        atrous_rates: rates of the ASPP/LargeFOV head; default the row's, scaled to OS.
        **options: per-head/backbone options: ``norm`` (bn, syncbn, gn, frozen_bn),
            ``multi_grid`` (ResNet/Xception), ``image_pooling``, ``separable``,
            ``head`` ("aspp" or v3's "cascade"), ``head_conv`` (torchvision/VainF extra 3×3),
            ``aspp_dropout``, ``decoder_convs`` (2 in the paper, 1 in VainF),
            ``low_level_channels`` (the v3+ decoder's projection of the low-level
            feature, 48), ``aspp`` ("L"/"S", v2), ``cascade_blocks``,
            ``width_mult`` and ``padding`` ("zeros" or VainF's "vainf") of MobileNetV2.
            An ImageNet backbone checkpoint is loaded by
            :func:`atrous.weights.build_pretrained`, not here.

    Returns:
        a :class:`~.deeplab.DeepLab` whose ``config`` rebuilds it.
    """
    spec = get_spec(name)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    os_ = resolve_output_stride(spec, output_stride)
    opts = resolve_options(spec, options)
    head_kind = resolve_head_kind(spec, opts)
    rates = resolve_rates(spec, head_kind, os_, atrous_rates, opts)

    backbone = make_backbone(spec.backbone, os_, opts["norm"], opts)
    head = make_head(head_kind, backbone, num_classes, rates, opts)
    aux_head = make_aux_head(backbone, num_classes, opts) if aux else None
    config = {
        "arch": spec.name,
        "num_classes": num_classes,
        "output_stride": os_,
        "atrous_rates": list(rates),
        "aux": bool(aux),
        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(opts.items())},
    }
    return DeepLab(backbone, head, aux_head, config)


def model_builder(name: str) -> Callable[..., DeepLab]:
    """:func:`build` with ``name`` fixed, named and documented after the row."""
    spec = MODELS[name]

    def builder(num_classes: int | None = None, *, weights: Any = None, **kwargs: Any) -> DeepLab:
        if weights is not None:  # published weights (their class count unless overridden)
            given = {} if num_classes is None else {"num_classes": num_classes}
            return load_pretrained(name, weights, **given, **kwargs)
        return build(name, 21 if num_classes is None else num_classes, **kwargs)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (
        f"{spec.paper}: {spec.backbone} backbone, {spec.head} head, output stride "
        f"{spec.output_stride}, rates {spec.rates} at OS {spec.rates_os}.\n\n"
        "Keyword arguments are those of :func:`atrous.models.build`; ``weights`` (a registry "
        'name, ``"DEFAULT"`` or a dataset such as ``"voc"``) starts from published '
        "weights (:func:`~.pretrained.load_pretrained`)."
    )
    return builder
