"""Tests of atrous.crf.native: the compiled mean field and lattice build against the torch path."""

from __future__ import annotations

import importlib
import shutil
import sys
import types
import warnings

import numpy as np
import pytest
import torch

from atrous.crf import (
    GaussianKernel,
    PermutohedralLattice,
    bilateral_features,
    clear_kernel_cache,
    dense_crf,
    native,
    positional_features,
    positional_kernel,
)

needs_native = pytest.mark.skipif(
    not native.available(), reason="atrous.crf._native is not built (no C compiler at install)"
)


def _scene(h: int, w: int, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Regions of a few colours with texture, and noisy one-hot probabilities over c labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    label = ((xx * 3 // w) + 3 * (yy * 2 // h)) % c
    base = rng.integers(20, 235, size=(max(c, 6), 3))
    img = base[label] + 12 * np.sin(xx / 4.0 + yy / 7.0)[..., None] + rng.normal(0, 5, (h, w, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    logits = 1.5 * np.eye(c)[label].transpose(2, 0, 1) + rng.normal(0, 1.0, (c, h, w))
    p = np.exp(logits - logits.max(0))
    return img, (p / p.sum(0)).astype(np.float32)


def _crf(img: np.ndarray, p: np.ndarray, monkeypatch: pytest.MonkeyPatch, on: bool) -> np.ndarray:
    monkeypatch.setenv("ATROUS_CRF_NATIVE", "1" if on else "0")
    clear_kernel_cache()
    try:
        return dense_crf(img, p, iterations=10)
    finally:
        clear_kernel_cache()


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("cc") is None,
    reason="the compiled part is built where a C compiler is (here: Linux with cc)",
)
def test_native_is_built_where_a_compiler_is() -> None:
    """setup.py's extension is optional (an install without a compiler goes on): this test is
    what notices a build that failed where it should not have."""
    assert native.available(), "atrous.crf._native did not build: reinstall and read the log"


@needs_native
@pytest.mark.parametrize("labels", [1, 5, 8, 21, 33])
def test_compiled_and_torch_paths_agree(labels: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every label count (padded to whole vectors inside) gives the torch path's result."""
    img, p = _scene(90, 120, labels, seed=labels)
    fast = _crf(img, p, monkeypatch, on=True)
    ref = _crf(img, p, monkeypatch, on=False)
    assert fast.shape == ref.shape == p.shape and fast.dtype == np.float32
    np.testing.assert_allclose(fast.sum(0), 1.0, atol=1e-5)
    assert np.abs(fast - ref).max() < 1e-4
    if labels > 1:
        assert (fast.argmax(0) == ref.argmax(0)).mean() >= 0.999
        assert np.abs(fast - p).mean() > 1e-2  # the CRF changed something


@needs_native
def test_thread_counts_give_the_same_bits() -> None:
    """One call split over 1, 2, 3 or 5 threads: identical Q.  The splat is a gather (no two
    threads add into one row) and every value is computed the same way whichever thread takes
    its block, so neither the thread count nor the schedule changes a bit."""
    img, p = _scene(240, 300, 7, seed=3)  # 72k pixels: 71 blocks of the pixel pass
    feats = bilateral_features(torch.from_numpy(img)[None], 30.0, 8.0)
    kernels = [(positional_kernel(1, 240, 300, 1.0), 3.0), (GaussianKernel(feats), 4.0)]
    probs = torch.from_numpy(p).permute(1, 2, 0).reshape(-1, 7).contiguous()
    out = [native.mean_field(probs.clone(), kernels, 10, threads=t) for t in (1, 2, 3, 5)]
    for q in out[1:]:
        assert torch.equal(q, out[0])
    assert (out[0] - probs).abs().mean() > 1e-2


@needs_native
def test_a_thread_count_gives_the_same_bits_every_run() -> None:
    """Blocks of pixels and rows go to whichever thread takes them first; repeated calls on 3
    threads give identical bits."""
    img, p = _scene(240, 300, 7, seed=4)
    feats = bilateral_features(torch.from_numpy(img)[None], 30.0, 8.0)
    kernels = [(positional_kernel(1, 240, 300, 1.0), 3.0), (GaussianKernel(feats), 4.0)]
    probs = torch.from_numpy(p).permute(1, 2, 0).reshape(-1, 7).contiguous()
    first = native.mean_field(probs.clone(), kernels, 5, threads=3)
    for _ in range(4):
        assert torch.equal(native.mean_field(probs.clone(), kernels, 5, threads=3), first)


@needs_native
@pytest.mark.parametrize("labels", [5, 8, 21, 45])
def test_q_written_label_major_is_the_transposed_q(labels: int) -> None:
    """``planes``: the last pass writes Q image by image, label-major (a batch of 2).  Between
    the passes Q is kept in the planes themselves (rows of ``labels`` floats, not padded to
    whole vectors): the same bits as Q in a padded buffer of its own, for label counts below,
    at and between whole vectors and beyond the unrolled loops."""
    imgs, ps = zip(*(_scene(60, 80, labels, seed=s) for s in (5, 6)), strict=True)
    img = torch.from_numpy(np.stack(imgs))
    feats = bilateral_features(img, 30.0, 8.0)
    kernels = [(positional_kernel(2, 60, 80, 1.0), 3.0), (GaussianKernel(feats), 4.0)]
    probs = torch.from_numpy(np.stack(ps)).permute(0, 2, 3, 1).reshape(-1, labels).contiguous()
    rows = native.mean_field(probs.clone(), kernels, 4, threads=2)
    planes = torch.empty(2, labels, 60 * 80)
    got = native.mean_field(probs.clone(), kernels, 4, threads=2, planes=planes)
    assert got is planes
    assert torch.equal(planes, rows.view(2, 60 * 80, labels).transpose(1, 2))
    assert (rows - probs).abs().mean() > 1e-3  # the CRF changed something
    with pytest.raises(ValueError, match="planes must be a contiguous float32"):
        native.mean_field(probs.clone(), kernels, 1, planes=torch.empty(2, 4, 60 * 80))


@needs_native
def test_iterations_zero_is_the_normalized_probabilities() -> None:
    img, p = _scene(30, 40, 4)
    q = dense_crf(img, p * 0.9995, iterations=0)  # (sums within the accepted 1e-3 of 1)
    np.testing.assert_allclose(q, p, atol=1e-6)


@needs_native
def test_batch_is_independent_images() -> None:
    a_img, a_p = _scene(40, 50, 3, seed=1)
    b_img, b_p = _scene(40, 50, 3, seed=2)
    img = np.stack([a_img, b_img]).transpose(0, 3, 1, 2)
    both = dense_crf(img, np.stack([a_p, b_p]))
    np.testing.assert_allclose(both[0], dense_crf(a_img, a_p), atol=1e-6)
    np.testing.assert_allclose(both[1], dense_crf(b_img, b_p), atol=1e-6)


@needs_native
@pytest.mark.parametrize("kind", ["positional", "bilateral", "bilateral-batch"])
def test_compiled_lattice_is_the_torch_lattice(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled build finds the same vertices (numbered by first use, as the C++ does),
    the same barycentric weights bit for bit, and filters the same."""
    img, _ = _scene(47, 61, 5)
    if kind == "positional":
        f = positional_features(1, 47, 61, 1.0)
    else:
        batch = 2 if kind.endswith("batch") else 1
        image = torch.from_numpy(img)[None].expand(batch, -1, -1, -1)
        f = bilateral_features(image, 9.0, 7.0)
    fast = PermutohedralLattice(f)
    monkeypatch.setenv("ATROUS_CRF_NATIVE", "0")
    ref = PermutohedralLattice(f)
    assert fast.minus_plus is not None and ref.minus_plus is None
    assert fast.num_vertices == ref.num_vertices
    a, b = fast.vertex_ids.long().reshape(-1), ref.vertex_ids.long().reshape(-1)
    relabel = torch.full((fast.num_vertices,), -1, dtype=torch.long)
    relabel[a] = b
    assert torch.equal(relabel[a], b)  # one bijection between the numberings
    assert torch.equal(fast.barycentric, ref.barycentric)
    # neighbours: the same vertices under the bijection; "plus" undoes "minus"
    minus, plus = (t.long() for t in fast.minus_plus)
    m = fast.num_vertices
    ids = torch.arange(m)
    for j in range(fast.d + 1):
        has = minus[j] < m
        assert torch.equal(plus[j][minus[j][has]], ids[has])
    # each direction's neighbour pairs, mapped through the bijection, are the torch build's
    for j in range(fast.d + 1):
        pairs = []
        for nbrs, ids_of in (
            ((minus[j], plus[j]), relabel),
            ((ref._lower[j].long(), ref._upper[j].long()), torch.arange(m)),
        ):
            codes = []
            for nb in nbrs:
                has = nb < m
                codes.append(ids_of[ids[has]] * m + ids_of[nb[has]])
            pairs.append(torch.cat(codes).sort().values)
        assert torch.equal(pairs[0], pairs[1])
    x = torch.rand(fast.batch, fast.num_pixels, 3, dtype=torch.float64)
    torch.testing.assert_close(fast.filter(x), ref.filter(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fast.degree(), ref.degree(), rtol=1e-5, atol=1e-6)


@needs_native
def test_compiled_lattice_rejects_a_key_range_it_cannot_pack() -> None:
    f = torch.tensor([[0.0] * 40, [1e9] * 40], dtype=torch.float32)
    with pytest.raises(ValueError, match="too large a range"):
        PermutohedralLattice(f)


def test_env_switch_turns_the_compiled_path_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATROUS_CRF_NATIVE", "0")
    assert not native.available()
    img, p = _scene(20, 30, 3)
    assert dense_crf(img, p).shape == p.shape  # the torch path


def test_a_stale_build_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """A compiled module from an older source (another ABI) warns and is left alone: the torch
    path runs until the package is reinstalled."""
    stale = types.ModuleType("atrous.crf._native")
    stale.ABI = native.ABI - 1  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "atrous.crf._native", stale)
    monkeypatch.setattr(sys.modules["atrous.crf"], "_native", stale, raising=False)
    try:
        with pytest.warns(RuntimeWarning, match="stale build"):
            reloaded = importlib.reload(native)
        assert not reloaded.available()
    finally:
        monkeypatch.undo()
        importlib.reload(native)
    assert native._native is None or native._native.ABI == native.ABI


# ---------------------------------------------------------------- the two builds overlapped
def _count_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Calls of the overlapped build, counted."""
    from atrous.crf import densecrf

    calls: list[int] = []
    real = densecrf._Build

    class Counted(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object) -> None:
            calls.append(1)
            super().__init__(*args)

    monkeypatch.setattr(densecrf, "_Build", Counted)
    return calls


@needs_native
def test_overlapped_lattice_builds_give_the_sequential_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With 2 threads the appearance lattice is built on a second thread beside the smoothness
    one: the same result as one after the other, stage stamps in the same order."""
    from atrous.crf import densecrf
    from atrous.crf.timing import StageTimes

    img, p = _scene(250, 210, 5)  # 52,500 pixels: above the overlap's threshold
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        calls = _count_builds(monkeypatch)
        clear_kernel_cache()
        times = StageTimes()
        overlapped = dense_crf(img, p, iterations=3, profile=times)
        assert calls == [1]
        assert list(times.stamps)[3:5] == ["positional", "bilateral"]
        monkeypatch.setattr(densecrf, "_overlap_builds", lambda *a: False)
        clear_kernel_cache()
        sequential = dense_crf(img, p, iterations=3)
        assert calls == [1]
    finally:
        torch.set_num_threads(threads)
        clear_kernel_cache()
    np.testing.assert_array_equal(overlapped, sequential)


@needs_native
def test_an_error_in_the_overlapped_build_reaches_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    img, p = _scene(250, 210, 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        calls = _count_builds(monkeypatch)
        with pytest.raises(ValueError, match="too large a range"):
            dense_crf(img, p, iterations=1, bi_rgb_std=1e-30)  # colours beyond float32's reach
        assert calls == [1]
    finally:
        torch.set_num_threads(threads)
        clear_kernel_cache()


def test_a_read_only_array_is_taken_without_a_warning() -> None:
    """np.asarray of a PIL image is read-only: read in place, no PyTorch warning."""
    img, p = _scene(20, 30, 3)
    img.flags.writeable = False
    p.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = dense_crf(img, p, iterations=2)
    assert q.shape == p.shape
