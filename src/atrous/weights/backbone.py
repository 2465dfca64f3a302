"""ImageNet backbone checkpoints (torchvision's naming): loading one into a backbone, and
:func:`build_pretrained`, a model whose backbone starts from one (DeepLab v1 §4.1, v2 §4,
v3 §4 and v3+ §4 all start from ImageNet-pretrained backbones)."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from atrous.models import build, get_spec
from atrous.models.deeplab import DeepLab

from . import hub
from .entry import Entry
from .errors import CheckpointError
from .io import Checkpoint, checkpoint_name, read_checkpoint
from .registry import get_weights, imagenet_weights, looks_like_name


def load_backbone_weights(backbone: nn.Module, checkpoint: Checkpoint) -> list[str]:
    """Load an ImageNet checkpoint in torchvision's naming into a backbone.

    Classifier entries (``fc``, ``classifier``, MobileNetV2's ``features.18``) are ignored;
    every backbone weight must be present. A ``backbone.`` prefix on every key (a DeepLab's
    backbone) is removed. Returns the ignored keys.
    """
    where = checkpoint_name(checkpoint)
    sd, _ = read_checkpoint(checkpoint)
    if all(k.startswith("backbone.") for k in sd):
        sd = {k[len("backbone.") :]: v for k, v in sd.items()}
    own = backbone.state_dict()
    ignored = [k for k in sd if k not in own]
    bad = [k for k in sd if k in own and own[k].shape != sd[k].shape]
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    if bad or missing:
        raise CheckpointError(
            f"{where}: does not fit the {type(backbone).__name__} backbone: "
            f"missing {missing[:4]} ({len(missing)}), wrong shapes {bad[:4]} ({len(bad)})"
        )
    backbone.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    return ignored


def build_pretrained(
    name: str, *, pretrained_backbone: Checkpoint | Entry | None, **build_kwargs: Any
) -> DeepLab:
    """:func:`atrous.models.build` ``(name, **build_kwargs)``, then the backbone's weights
    from ``pretrained_backbone``: a local ImageNet checkpoint file in torchvision's naming or
    its state dict (see :func:`load_backbone_weights`), ``"imagenet"`` (the registry's
    ImageNet entry for this model's backbone) or a registry name of such an entry (fetched
    once, :mod:`.hub`). With None it is just ``build``.

    Raises :class:`CheckpointError` (naming the file) when the checkpoint does not fit.
    """
    backbone = get_spec(name).backbone
    entry = backbone_entry(pretrained_backbone, backbone)
    model = build(name, **build_kwargs)
    if entry is not None:
        load_backbone_weights(model.backbone, hub.fetch(entry))
    elif pretrained_backbone is not None:
        load_backbone_weights(model.backbone, pretrained_backbone)  # type: ignore[arg-type]
    return model


def backbone_entry(pretrained_backbone: object, backbone: str) -> Entry | None:
    """The registry entry ``pretrained_backbone`` names (``"imagenet"``: the one for
    ``backbone``), or None for a file or state dict. An entry atrous cannot load into this
    backbone raises :class:`CheckpointError` before anything is downloaded."""
    if isinstance(pretrained_backbone, Entry):
        entry = pretrained_backbone
    elif not isinstance(pretrained_backbone, str) or os.path.exists(pretrained_backbone):
        return None
    elif pretrained_backbone.lower() == "imagenet":
        entry = imagenet_weights(backbone)
    elif looks_like_name(pretrained_backbone):
        entry = get_weights(pretrained_backbone)
    else:
        return None
    if entry.kind != "backbone" or entry.arch != backbone:
        raise CheckpointError(
            f"{entry.name}: not ImageNet weights for the {backbone} backbone "
            f"(the registry's is {imagenet_weights(backbone).name})"
        )
    if entry.format == "tf_imagenet":
        raise CheckpointError(
            f"{entry.name}: atrous cannot load TensorFlow ImageNet backbone checkpoints yet "
            f"(no mapping of the slim ImageNet {backbone} variables to atrous's names); "
            "start from a DeepLab checkpoint of the TF zoo instead, e.g. "
            "train --weights tf:xception65_coco_voc_trainaug (head re-initialized)"
        )
    return entry
