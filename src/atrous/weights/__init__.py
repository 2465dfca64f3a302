"""Checkpoints: atrous's own safetensors files, torchvision's and VainF's ``.pth`` files.

* :func:`load` — a file or an in-memory state dict → a model in eval mode, with the source
  (``atrous``, ``torchvision``, ``vainf``) and architecture detected from the keys where the
  caller does not say, built with the configuration that source used.
* :func:`convert` — a reference state dict → atrous's names, for a given architecture.
* :func:`save` — safetensors with the build configuration, class names and normalization
  as metadata, so that ``load(path)`` needs no other argument. Written atomically.
* :func:`build_pretrained` — a model whose backbone starts from an ImageNet checkpoint.
* :func:`read_tf_checkpoint`, :func:`list_tf_checkpoint` — the tensors (or names, dtypes and
  shapes) of a TensorFlow V2 checkpoint, such as the TF model zoo's DeepLab tarballs, read
  with NumPy alone (:mod:`.tf_checkpoint`).

Where each part lives: :mod:`.io` (reading files), :mod:`.metadata` (what atrous files
record), :mod:`.detect` (what a state dict is), :mod:`.torchvision` and :mod:`.vainf` (each
reference's names and configuration), :mod:`.convert`, :mod:`.load`, :mod:`.save`,
:mod:`.backbone` (ImageNet backbones) and :mod:`.extensions` (parts a higher layer adds,
such as the learned CRF of :mod:`atrous.crf.rnn_model`, saved in the same file);
:mod:`.tf_checkpoint` reads TensorFlow V2 checkpoints (not yet used by :func:`load`).

``.pth`` files are read with ``torch.load(weights_only=True)``: no code in them runs.
"""

from __future__ import annotations

from .backbone import build_pretrained, load_backbone_weights
from .convert import SOURCES, convert, source_config
from .detect import detect
from .errors import CheckpointError
from .extensions import Extension, register_extension
from .io import StateDict, read_state_dict, unwrap
from .load import load
from .metadata import FORMAT
from .save import save
from .tf_checkpoint import list_tf_checkpoint, read_tf_checkpoint

__all__ = [
    "FORMAT",
    "SOURCES",
    "CheckpointError",
    "Extension",
    "StateDict",
    "build_pretrained",
    "convert",
    "detect",
    "list_tf_checkpoint",
    "load",
    "load_backbone_weights",
    "read_state_dict",
    "read_tf_checkpoint",
    "register_extension",
    "save",
    "source_config",
    "unwrap",
]
