"""Every model of the family: builds, runs forward and backward, honours its options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import atrous.models as M
from atrous.models.layers import FrozenBatchNorm2d

SIZES = ((33, 47), (50, 38))  # odd and even sides


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("name", M.list_models())
def test_forward_backward_every_model(name: str, output_stride: int) -> None:
    torch.manual_seed(0)
    aux = M.get_spec(name).head != "largefov"
    model = M.build(name, num_classes=3, output_stride=output_stride, aux=aux)
    assert model.backbone.info("out").stride == output_stride
    model.train()
    for h, w in SIZES:
        x = torch.randn(2, 3, h, w)
        out = model(x)
        assert out["out"].shape == (2, 3, h, w)
        if aux:
            assert out["aux"].shape == (2, 3, h, w)
        loss = sum(o.square().mean() for o in out.values())
        model.zero_grad()
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 21, 30))["out"].shape == (1, 3, 21, 30)


def test_builder_functions_and_aliases() -> None:
    assert M.deeplabv3plus_resnet101.__name__ == "deeplabv3plus_resnet101"
    assert "DeepLab v3+" in M.deeplabv3plus_resnet101.__doc__
    with torch.device("meta"):
        m = M.deeplabv3plus_mobilenetv2(num_classes=5, output_stride=8)
        assert m.config["arch"] == "deeplabv3plus_mobilenetv2"
        assert m.config["atrous_rates"] == [12, 24, 36]
        for alias, name in M.ALIASES.items():
            assert M.build(alias, 2).config["arch"] == name
    with pytest.raises(ValueError, match="unknown model"):
        M.build("deeplabv9_resnet1", 2)


@pytest.mark.parametrize(
    ("name", "os_", "rates"),
    [
        ("deeplabv3_resnet50", 16, [6, 12, 18]),
        ("deeplabv3_resnet50", 8, [12, 24, 36]),
        ("deeplabv3_resnet50", 32, [3, 6, 9]),
        ("deeplabv2_resnet101", 8, [6, 12, 18, 24]),
        ("deeplabv2_resnet101", 16, [3, 6, 9, 12]),
        ("deeplabv1_vgg16", 8, [12]),
        ("deeplabv1_vgg16", 16, [6]),
    ],
)
def test_rates_scale_with_output_stride(name: str, os_: int, rates: list[int]) -> None:
    with torch.device("meta"):
        model = M.build(name, 21, output_stride=os_)
    assert model.config["atrous_rates"] == rates
    head = model.head
    if hasattr(head, "aspp") and hasattr(head.aspp, "convs"):
        got = [head.aspp.convs[i + 1][0].dilation[0] for i in range(len(rates))]
    elif hasattr(head, "aspp"):
        got = [b.dilation[0] for b in head.aspp.branches]
    else:
        got = [head.fc6.dilation[0]]
    assert got == rates


def test_explicit_rates_and_aspp_s() -> None:
    with torch.device("meta"):
        m = M.build("deeplabv3_resnet50", 21, atrous_rates=(12, 24, 36))
        assert m.config["atrous_rates"] == [12, 24, 36]
        s = M.build("deeplabv2_resnet101", 21, aspp="S")
        assert [b.dilation[0] for b in s.head.aspp.branches] == [2, 4, 8, 12]


def _layer4_dilations(model: M.DeepLab) -> list[int]:
    return [b.conv2.dilation[0] for b in model.backbone.layer4]


def test_multi_grid_paper_scheme() -> None:
    with torch.device("meta"):
        m16 = M.build("deeplabv3_resnet101", 21, output_stride=16)
        m8 = M.build("deeplabv3_resnet101", 21, output_stride=8)
        custom = M.build("deeplabv3_resnet101", 21, multi_grid=(1, 1, 1))
    assert _layer4_dilations(m16) == [2, 4, 8]  # DeepLab v3 §3.2: (1, 2, 4) × 2
    assert _layer4_dilations(m8) == [4, 8, 16]
    assert [b.conv2.dilation[0] for b in m8.backbone.layer3] == [2] * 23
    assert _layer4_dilations(custom) == [2, 2, 2]
    with pytest.raises(ValueError, match="multi_grid needs 3"):
        M.build("deeplabv3_resnet50", 21, multi_grid=(1, 2))


def test_torchvision_dilation_scheme() -> None:
    with torch.device("meta"):
        m = M.build("deeplabv3plus_resnet50", 21, output_stride=8)
    # torchvision/VainF: the first block of a dilated stage keeps the previous rate.
    assert [b.conv2.dilation[0] for b in m.backbone.layer3] == [1] + [2] * 5
    assert _layer4_dilations(m) == [2, 4, 4]
    assert m.backbone.layer4[0].conv2.stride == (1, 1)


def test_cascade_mode() -> None:
    torch.manual_seed(0)
    model = M.build("deeplabv3_resnet50", 4, head="cascade")
    assert model.config["head"] == "cascade"
    # block5–7 at rates 4, 8, 16 (after block4's 2), times multi-grid (1, 2, 4).
    assert model.head.rates == ((4, 8, 16), (8, 16, 32), (16, 32, 64))
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 40, 40))["out"].shape == (1, 4, 40, 40)
    with pytest.raises(ValueError, match="'aspp' or 'cascade'"):
        M.build("deeplabv3_resnet50", 4, head="pyramid")


def test_image_pooling_and_separable_switches() -> None:
    with torch.device("meta"):
        on = M.build("deeplabv3_mobilenetv2", 4)
        off = M.build("deeplabv3_mobilenetv2", 4, image_pooling=False)
        sep = M.build("deeplabv3plus_mobilenetv2", 4, separable=True)
        x65 = M.build("deeplabv3plus_xception65", 4)
    assert len(on.head.aspp.convs) == 5 and len(off.head.aspp.convs) == 4
    assert on.head.aspp.project[0].in_channels == 5 * 256
    assert off.head.aspp.project[0].in_channels == 4 * 256
    assert isinstance(sep.head.aspp.convs[1], M.SeparableConv2d)
    assert isinstance(sep.head.fuse[0], M.SeparableConv2d)
    assert len(sep.head.fuse) == 2  # two 3×3 convs in the paper's decoder
    assert isinstance(x65.head.aspp.convs[2], M.SeparableConv2d)  # paper default for X-65


def test_reference_head_variants() -> None:
    with torch.device("meta"):
        v3 = M.build("deeplabv3_resnet50", 4, head_conv=True)
        v3p = M.build("deeplabv3plus_resnet50", 4, decoder_convs=1)
    assert v3.head.conv is not None and v3.head.conv[0].kernel_size == (3, 3)
    assert len(v3p.head.fuse) == 1 and v3p.head.fuse[0][0].in_channels == 256 + 48


def test_unknown_option_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="does not take option"):
        M.build("deeplabv3_mobilenetv2", 4, multi_grid=(1, 2, 4))
    with pytest.raises(ValueError, match="output_stride"):
        M.build("deeplabv3_resnet50", 4, output_stride=4)
    with pytest.raises(ValueError, match="norm"):
        M.build("deeplabv3_resnet50", 4, norm="layernorm")
    with pytest.raises(ValueError, match="no normalization"):
        M.build("deeplabv1_vgg16", 4, norm="gn")


@pytest.mark.parametrize("norm", ["bn", "syncbn", "gn", "frozen_bn"])
def test_norm_choices(norm: str) -> None:
    torch.manual_seed(0)
    model = M.build("deeplabv3plus_mobilenetv2", 3, norm=norm, aux=True)
    kinds = {
        "bn": nn.BatchNorm2d,
        "syncbn": nn.SyncBatchNorm,
        "gn": nn.GroupNorm,
        "frozen_bn": FrozenBatchNorm2d,
    }
    norms = [m for m in model.modules() if isinstance(m, tuple(kinds.values()))]
    assert norms and all(type(m) is kinds[norm] for m in norms)
    x = torch.randn(1, 3, 35, 35)
    if norm in ("gn", "frozen_bn"):  # batch statistics free: batch 1 trains fine
        model.train()
        model(x)["out"].mean().backward()
    model.eval()  # SyncBatchNorm runs in eval mode on CPU
    with torch.no_grad():
        assert model(x)["out"].shape == (1, 3, 35, 35)


def test_batch_of_one_with_batchnorm_is_a_clear_error() -> None:
    model = M.build("deeplabv3_mobilenetv2", 3).train()
    with pytest.raises(ValueError, match="batch size >= 2"):
        model(torch.randn(1, 3, 33, 33))
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 33, 33))["out"].shape == (1, 3, 33, 33)


def test_bad_input_shape() -> None:
    model = M.build("deeplabv3_mobilenetv2", 3).eval()
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.randn(3, 33, 33))


def test_v1_and_v2_structure() -> None:
    with torch.device("meta"):
        v1 = M.build("deeplabv1_vgg16", 21)
        v2 = M.build("deeplabv2_resnet101", 21)
    assert v1.head.fc6.out_channels == 1024 and v1.head.fc6.dilation == (12, 12)
    pools = [m for m in v1.backbone.features if isinstance(m, nn.MaxPool2d)]
    assert [p.stride for p in pools] == [2, 2, 2, 1, 1]  # DeepLab v1: pool4/5 at stride 1
    assert len(v2.head.aspp.branches) == 4
    assert all(b.out_channels == 21 for b in v2.head.aspp.branches)
    assert all(
        isinstance(m, FrozenBatchNorm2d)
        for m in v2.backbone.modules()
        if "bn" in type(m).__name__.lower()
    )
    assert [b.conv2.dilation[0] for b in v2.backbone.layer4] == [4, 4, 4]


def test_backbone_contract() -> None:
    """Every backbone reports channels and true strides for its roles, and they hold."""
    x = torch.randn(1, 3, 64, 64)
    for name in M.list_models():
        for os_ in (8, 16, 32):
            with torch.device("meta"):
                model = M.build(name, 2, output_stride=os_)
            bb = model.backbone
            assert bb.info("out").stride == os_, (name, os_)
            assert bb.info("low_level").stride == 4, name
            names = {f.name for f in bb.feature_info}
            assert set(bb.roles.values()) <= names
    bb = M.build("deeplabv3plus_xception65", 2, output_stride=8).backbone.eval()
    with torch.no_grad():
        feats = bb(x)
    for f in bb.feature_info:
        assert feats[f.name].shape[1] == f.channels
        assert feats[f.name].shape[-1] == 64 // f.stride
