"""The heads: one builder per head kind, keyword-only options named as the build options."""

from __future__ import annotations

import inspect

import pytest
import torch

import atrous.models as M
from atrous.models import multigrid
from atrous.models.assembly import BACKBONE_BUILDERS, HEAD_BUILDERS
from atrous.models.options import BACKBONE_OPTIONS, HEAD_OPTIONS
from atrous.models.zoo import HEAD_KINDS

# Each head's positional arguments: the channel counts the backbone dictates, and classes.
POSITIONAL = {
    M.LargeFOVHead: ("in_channels", "num_classes"),
    M.ASPPSumHead: ("in_channels", "num_classes"),
    M.DeepLabV3Head: ("in_channels", "num_classes"),
    M.CascadeHead: ("in_channels", "num_classes"),
    M.DeepLabV3PlusHead: ("in_channels", "low_level_in_channels", "num_classes"),
    M.FCNHead: ("in_channels", "num_classes"),
}


def test_builder_tables_cover_the_model_table() -> None:
    row_heads = {spec.head for spec in M.MODELS.values()}
    assert row_heads | {"cascade"} == set(HEAD_KINDS) == set(HEAD_BUILDERS)
    assert set(HEAD_OPTIONS) == row_heads
    backbones = {spec.backbone for spec in M.MODELS.values()}
    assert backbones == set(BACKBONE_BUILDERS) == set(BACKBONE_OPTIONS)


@pytest.mark.parametrize("head", list(POSITIONAL), ids=lambda h: h.__name__)
def test_head_options_are_keyword_only(head: type) -> None:
    params = list(inspect.signature(head).parameters.values())
    positional = tuple(p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD)
    assert positional == POSITIONAL[head]
    assert all(p.kind is p.KEYWORD_ONLY for p in params[len(positional) :])


def test_head_option_names_are_the_build_options() -> None:
    """A head parameter that is also a build option is that option, nothing else."""
    build_options = {k for opts in HEAD_OPTIONS.values() for k in opts} | {"atrous_rates"}
    for head in POSITIONAL:
        names = set(inspect.signature(head).parameters)
        assert not names & {"rates", "fuse_convs", "low_level_project", "num_blocks"}, head
    v3p = set(inspect.signature(M.DeepLabV3PlusHead).parameters)
    assert {"low_level_channels", "decoder_convs", "aspp_dropout", "atrous_rates"} <= v3p
    assert {"head_conv", "aspp_dropout"} <= set(inspect.signature(M.DeepLabV3Head).parameters)
    assert "cascade_blocks" in inspect.signature(M.CascadeHead).parameters
    assert {"low_level_channels", "decoder_convs", "head_conv", "cascade_blocks"} <= build_options


def test_positional_options_are_refused() -> None:
    with pytest.raises(TypeError):
        M.DeepLabV3Head(64, 3, (6, 12, 18))
    with pytest.raises(TypeError):
        M.DeepLabV3PlusHead(64, 24, 3, (6, 12, 18))


def test_low_level_channels_is_the_projection_width() -> None:
    """``low_level_channels`` is the decoder's 48 (v3+ §4.1) in build and head alike; the
    backbone's own low-level width is ``low_level_in_channels``."""
    with torch.device("meta"):
        model = M.build("deeplabv3plus_mobilenetv2", 3, low_level_channels=32)
        head = M.DeepLabV3PlusHead(320, 24, 3, low_level_channels=32)
    assert model.config["low_level_channels"] == 32
    assert model.head.project[0].in_channels == model.backbone.info("low_level").channels == 24
    assert model.head.project[0].out_channels == head.project[0].out_channels == 32
    assert model.head.fuse[0][0].in_channels == 256 + 32


def test_cascade_head_and_multi_grid_homes() -> None:
    from atrous.models import heads

    assert heads.CascadeHead is M.CascadeHead
    assert multigrid.multi_grid_rates is M.multi_grid_rates
    assert M.multi_grid_rates(2, (1, 2, 4)) == (2, 4, 8)
    with pytest.raises(ValueError, match=">= 1"):
        M.build("deeplabv3_resnet50", 3, multi_grid=(1, 0, 1))


def test_build_reads_no_files() -> None:
    with pytest.raises(TypeError, match=r"atrous\.weights\.build_pretrained"):
        M.build("deeplabv3_mobilenetv2", 3, pretrained_backbone="imagenet.pth")
