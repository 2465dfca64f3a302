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
* :func:`get_weights`, :func:`list_weights`, :func:`fetch` — the registry of published weights
  (:mod:`.registry`: torchvision's and the TF model zoo's, with their reported metrics and
  protocols), each entry with ``.meta`` and ``.transforms()``; ``load(name)`` fetches,
  checks, converts once and caches (:mod:`.hub`, :mod:`.cache`, :mod:`.download`).

Where each part lives: :mod:`.io` (reading files), :mod:`.metadata` (what atrous files
record), :mod:`.detect` (what a state dict is), :mod:`.torchvision` and :mod:`.vainf` (each
reference's names and configuration), :mod:`.convert`, :mod:`.load`, :mod:`.save`,
:mod:`.backbone` (ImageNet backbones) and :mod:`.extensions` (parts a higher layer adds,
such as the learned CRF of :mod:`atrous.crf.rnn_model`, saved in the same file);
:mod:`.tf_checkpoint` reads TensorFlow V2 checkpoints; :mod:`.registry`, :mod:`.entry`,
:mod:`.hub`, :mod:`.cache` and :mod:`.download` hold the published weights and their cache.

``.pth`` files are read with ``torch.load(weights_only=True)``: no code in them runs.
"""

from __future__ import annotations

from .backbone import build_pretrained, load_backbone_weights
from .convert import SOURCES, convert, source_config
from .detect import detect
from .entry import Entry, Metric
from .errors import CheckpointError
from .extensions import Extension, register_extension
from .hub import fetch
from .io import StateDict, read_state_dict, unwrap
from .load import load
from .metadata import FORMAT
from .registry import get_weights, list_weights
from .save import save
from .tf_checkpoint import list_tf_checkpoint, read_tf_checkpoint

__all__ = [
    "FORMAT",
    "SOURCES",
    "CheckpointError",
    "Entry",
    "Extension",
    "Metric",
    "StateDict",
    "build_pretrained",
    "convert",
    "detect",
    "fetch",
    "get_weights",
    "list_tf_checkpoint",
    "list_weights",
    "load",
    "load_backbone_weights",
    "read_state_dict",
    "read_tf_checkpoint",
    "register_extension",
    "save",
    "source_config",
    "unwrap",
]
