"""The model zoo: one table of configurations, read like the papers' tables.

Each row names a backbone, a head, the output stride and the atrous rates (given at the
output stride ``rates_os`` and scaled with the actual one: (6, 12, 18) at 16 becomes
(12, 24, 36) at 8 and (3, 6, 9) at 32, see :func:`scale_rates`). :func:`~.builder.build`
turns a row plus options into a :class:`~.deeplab.DeepLab`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

# What ModelSpec.head names; "cascade" is no row's own head but DeepLab v3's alternative to
# ASPP (§3.2), chosen with the build option head="cascade".
HEAD_KINDS = ("largefov", "aspp_sum", "aspp", "cascade", "decoder")


@dataclass(frozen=True)
class ModelSpec:
    """One configuration of the family, as its paper defines it (``paper``: which paper, and
    the result it reports)."""

    name: str
    version: str
    backbone: str
    head: str  # "largefov" | "aspp_sum" | "aspp" | "decoder" (see HEAD_KINDS)
    output_stride: int
    rates: tuple[int, ...]
    rates_os: int
    multi_grid: tuple[int, ...] | None = None
    separable: bool = False
    norm: str = "bn"
    paper: str = ""


_V3 = "DeepLab v3 (Chen et al. 2017, arXiv:1706.05587)"
_V3P = "DeepLab v3+ (Chen et al., ECCV 2018)"
_BETA = ", TF model zoo's resnet_v1_beta (deep stem, stride on each block's last unit)"

# (a table, one model a row: the formatter would put each field on its own line)
MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec("deeplabv1_vgg16", "v1", "vgg16", "largefov", 8, (12,), 8, norm="none",
                  paper="DeepLab v1 LargeFOV (Chen et al., ICLR 2015), 70.3% VOC12 test with CRF"),
        ModelSpec("deeplabv2_resnet101", "v2", "resnet101", "aspp_sum", 8, (6, 12, 18, 24), 8,
                  multi_grid=(1, 1, 1), norm="frozen_bn",
                  paper="DeepLab v2 ASPP-L (Chen et al., TPAMI 2017), 79.7% VOC12 test with CRF"),
        ModelSpec("deeplabv3_resnet50", "v3", "resnet50", "aspp", 16, (6, 12, 18), 16,
                  multi_grid=(1, 2, 4), paper=_V3),
        ModelSpec("deeplabv3_resnet101", "v3", "resnet101", "aspp", 16, (6, 12, 18), 16,
                  multi_grid=(1, 2, 4), paper=_V3 + ", 77.21% VOC12 val (OS 16, single scale)"),
        ModelSpec("deeplabv3_mobilenetv2", "v3", "mobilenetv2", "aspp", 16, (6, 12, 18), 16,
                  paper=_V3),
        ModelSpec("deeplabv3_mobilenetv3_large", "v3", "mobilenetv3_large", "aspp", 16,
                  (6, 12, 18), 16, paper=_V3),
        ModelSpec("deeplabv3plus_resnet50", "v3+", "resnet50", "decoder", 16, (6, 12, 18), 16,
                  paper=_V3P),
        ModelSpec("deeplabv3plus_resnet101", "v3+", "resnet101", "decoder", 16, (6, 12, 18), 16,
                  paper=_V3P),
        ModelSpec("deeplabv3plus_mobilenetv2", "v3+", "mobilenetv2", "decoder", 16,
                  (6, 12, 18), 16, paper=_V3P),
        ModelSpec("deeplabv3plus_mobilenetv3_large", "v3+", "mobilenetv3_large", "decoder", 16,
                  (6, 12, 18), 16, paper=_V3P),
        ModelSpec("deeplabv3plus_xception65", "v3+", "xception65", "decoder", 16, (6, 12, 18),
                  16, separable=True, paper=_V3P + ", 89.0% VOC12 test (JFT pre-training)"),
        ModelSpec("deeplabv3plus_resnet50_beta", "v3+", "resnet50_beta", "decoder", 16,
                  (6, 12, 18), 16, separable=True, paper=_V3P + _BETA),
        ModelSpec("deeplabv3plus_resnet101_beta", "v3+", "resnet101_beta", "decoder", 16,
                  (6, 12, 18), 16, separable=True, paper=_V3P + _BETA),
    )
}  # fmt: skip

# Names used by torchvision and VainF/DeepLabV3Plus-Pytorch, accepted as aliases.
ALIASES: dict[str, str] = {
    "deeplabv3_mobilenet_v3_large": "deeplabv3_mobilenetv3_large",
    "deeplabv3_mobilenet": "deeplabv3_mobilenetv2",
    "deeplabv3plus_mobilenet": "deeplabv3plus_mobilenetv2",
    "deeplabv3plus_xception": "deeplabv3plus_xception65",
    "deeplabv2_resnet101_aspp_l": "deeplabv2_resnet101",
}

ASPP_S_RATES = (2, 4, 8, 12)  # DeepLab v2 §3.3 ASPP-S at output stride 8


def resolve_name(name: str) -> str:
    """The canonical atrous name for ``name`` (an atrous name or a reference alias)."""
    key = name.lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return key


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` row of ``name`` (aliases accepted)."""
    return MODELS[resolve_name(name)]


def list_models() -> list[str]:
    """The canonical model names, in table order."""
    return list(MODELS)


def scale_rates(rates: Sequence[int], rates_os: int, output_stride: int) -> tuple[int, ...]:
    """Atrous rates given at ``rates_os`` for ``output_stride`` (rates ∝ 1 / stride)."""
    return tuple(max(1, r * rates_os // output_stride) for r in rates)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded): the table's Params."""
    return sum(p.numel() for p in model.parameters())
