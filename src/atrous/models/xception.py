"""Modified aligned Xception-65 (DeepLab v3+ §3.2, Fig. 4; Chollet 2017; Dai et al. 2017).

Changes from Xception as in the paper and TF DeepLab's ``xception_65``: a deeper middle flow
(16 units), every max-pool replaced by a stride-2 separable conv, and BN (+ ReLU in the
last exit-flow unit) after each 3×3 depthwise conv. Each unit is three separable convs;
the stride sits on the third. Once the output stride is reached, a unit keeps stride 1 at
the rate in force and the rate then multiplies (TF's ``stack_blocks_dense``). The decoder's
low-level feature is entry-flow block 2's second separable conv (stride 4, 256 channels),
TF's ``entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .backbone import Backbone, FeatureInfo
from .layers import ConvNormAct, NormLayer
from .multigrid import multi_grid_rates


class SepConv(nn.Module):
    """Separable conv of Xception: [ReLU] → depthwise → BN [→ ReLU] → pointwise → BN [→ ReLU].

    ``act_inside=False`` puts one ReLU before the depthwise conv (pre-activation, entry and
    middle flow); ``act_inside=True`` puts ReLU after each BN (last exit-flow unit).
    """

    def __init__(
        self, inp: int, out: int, stride: int, rate: int, act_inside: bool, norm_layer: NormLayer
    ) -> None:
        super().__init__()
        act = nn.ReLU if act_inside else None
        self.pre_relu = None if act_inside else nn.ReLU(inplace=False)
        self.depthwise = ConvNormAct(inp, inp, 3, stride, rate, inp, norm_layer, act)
        self.pointwise = ConvNormAct(inp, out, 1, norm_layer=norm_layer, activation=act)

    def forward(self, x: Tensor) -> Tensor:
        if self.pre_relu is not None:
            x = self.pre_relu(x)
        return self.pointwise(self.depthwise(x))


class XceptionUnit(nn.Module):
    """Three separable convs with a residual: skip ``conv`` (1×1 + BN), ``sum`` or ``none``."""

    def __init__(
        self,
        inp: int,
        depths: Sequence[int],
        skip: str,
        stride: int,
        rate: int,
        unit_rates: Sequence[int] = (1, 1, 1),
        act_inside: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        convs, c = [], inp
        rates = multi_grid_rates(rate, unit_rates)
        for i, d in enumerate(depths):
            s = stride if i == 2 else 1
            convs.append(SepConv(c, d, s, rates[i], act_inside, norm_layer))
            c = d
        self.convs = nn.ModuleList(convs)
        self.skip_type = skip
        if skip == "conv":
            self.skip = nn.Sequential(nn.Conv2d(inp, c, 1, stride, bias=False), norm_layer(c))
        self.out_channels = c

    def forward(self, x: Tensor, return_second: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        y = self.convs[0](x)
        second = self.convs[1](y)
        y = self.convs[2](second)
        if self.skip_type == "conv":
            y = y + self.skip(x)
        elif self.skip_type == "sum":
            y = y + x
        return (y, second) if return_second else y


class Xception65(Backbone):
    """Aligned Xception-65; ``forward`` returns ``entry_low`` (stride 4), ``entry`` (3 blocks),
    ``middle`` and ``exit`` features."""

    def __init__(
        self,
        output_stride: int = 16,
        multi_grid: Sequence[int] | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.output_stride = output_stride
        self.stem = nn.Sequential(
            ConvNormAct(3, 32, 3, 2, norm_layer=norm_layer),
            ConvNormAct(32, 64, 3, 1, norm_layer=norm_layer),
        )
        current, rate = 2, 1

        def unit(inp: int, depths: Sequence[int], skip: str, stride: int, **kw) -> XceptionUnit:
            nonlocal current, rate
            if stride > 1 and current * stride > output_stride:
                u = XceptionUnit(inp, depths, skip, 1, rate, norm_layer=norm_layer, **kw)
                rate *= stride
            else:
                u = XceptionUnit(inp, depths, skip, stride, rate, norm_layer=norm_layer, **kw)
                current *= stride
            return u

        self.entry = nn.ModuleList([unit(64, (128, 128, 128), "conv", 2)])
        low_stride = current  # block 2's second conv sees block 1's output stride
        self.entry.append(unit(128, (256, 256, 256), "conv", 2))
        self.entry.append(unit(256, (728, 728, 728), "conv", 2))
        entry_stride = current
        self.middle = nn.Sequential(*[unit(728, (728,) * 3, "sum", 1) for _ in range(16)])
        exit_rates = tuple(multi_grid or (1, 1, 1))
        self.exit = nn.Sequential(
            unit(728, (728, 1024, 1024), "conv", 2),
            unit(1024, (1536, 1536, 2048), "none", 1, unit_rates=exit_rates, act_inside=True),
        )
        self.feature_info = [
            FeatureInfo("entry_low", 256, low_stride),
            FeatureInfo("entry", 728, entry_stride),
            FeatureInfo("middle", 728, entry_stride),
            FeatureInfo("exit", 2048, current),
        ]
        self.roles = {"out": "exit", "low_level": "entry_low", "aux": "middle"}
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.entry[0](self.stem(x))
        x, low = self.entry[1](x, return_second=True)
        x = self.entry[2](x)
        feats = {"entry_low": low, "entry": x}
        x = self.middle(x)
        feats["middle"] = x
        feats["exit"] = self.exit(x)
        return feats
