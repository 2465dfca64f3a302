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

On CPU the lattice and the mean field run compiled (:mod:`atrous.crf.native`, built on install
where a C compiler is present), else through torch's sparse products (:mod:`atrous.crf.fused`).
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it. Loaded on first access (PEP 562), so that the
# light parts (``atrous.crf.params``, which the command line's flags come from) do not pull in
# the lattice and torch.
_NAMES = {
    "CRFasRNN": "crfasrnn",
    "DenseCRF": "densecrf",
    "dense_crf": "densecrf",
    "exact_filter": "exact",
    "heap_retention": "heap",
    "set_heap_retention": "heap",
    "GaussianKernel": "kernels",
    "bilateral_features": "kernels",
    "clear_kernel_cache": "kernels",
    "positional_features": "kernels",
    "positional_kernel": "kernels",
    "PermutohedralLattice": "lattice",
    "mean_field": "meanfield",
    "CRFParams": "params",
    "CRFRNNModel": "rnn_model",
    "LearnedCRF": "rnn_model",
    "crf_rnn_options": "rnn_model",
    "split_crf": "rnn_model",
    "with_crf_rnn": "rnn_model",
    "StageTimes": "timing",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES])
