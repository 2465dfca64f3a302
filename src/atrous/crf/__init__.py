"""Fully connected CRF post-processing (Krähenbühl & Koltun 2011; DeepLab v1 sec. 4.3, v2 sec. 3.3).

Public API:

- :func:`dense_crf` / :class:`DenseCRF` — mean-field refinement of probabilities, parity with
  pydensecrf (same lattice arithmetic and ``NORMALIZE_SYMMETRIC`` kernels).
- :class:`CRFParams` — the dense-CRF parameters: defaults (DeepLab v2 VOC), help, validation,
  read from a dict or a JSON file (``best_crf.json`` of ``atrous crf-search``).
- :class:`PermutohedralLattice` — the Gaussian filter of Adams et al. (2010), CPU or CUDA, batched.
- :func:`exact_filter` — the O(N^2) Gaussian filter (small images, tests).
- :class:`CRFasRNN` — the differentiable CRF layer of Zheng et al. (2015).
- :class:`CRFRNNModel`, :func:`with_crf_rnn` — a DeepLab with that layer last, trainable end to
  end (``TrainConfig.crf_rnn``), saved and loaded by :mod:`atrous.weights`.
- :class:`StageTimes` — the stage times of a ``dense_crf`` call (``profile=``), for benchmarks.
- :func:`set_heap_retention` — how much freed memory dense_crf keeps for its next call.
"""

from __future__ import annotations

from .crfasrnn import CRFasRNN
from .dense_crf import DenseCRF, dense_crf
from .exact import exact_filter
from .heap import heap_retention, set_heap_retention
from .kernels import (
    GaussianKernel,
    bilateral_features,
    clear_kernel_cache,
    positional_features,
    positional_kernel,
)
from .lattice import PermutohedralLattice
from .meanfield import mean_field
from .params import CRFParams
from .rnn_model import CRFRNNModel, LearnedCRF, crf_rnn_options, split_crf, with_crf_rnn
from .timing import StageTimes

__all__ = [
    "CRFParams",
    "CRFRNNModel",
    "CRFasRNN",
    "DenseCRF",
    "GaussianKernel",
    "LearnedCRF",
    "PermutohedralLattice",
    "StageTimes",
    "bilateral_features",
    "clear_kernel_cache",
    "crf_rnn_options",
    "dense_crf",
    "exact_filter",
    "heap_retention",
    "mean_field",
    "positional_features",
    "positional_kernel",
    "set_heap_retention",
    "split_crf",
    "with_crf_rnn",
]
