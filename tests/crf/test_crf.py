"""Tests of atrous.crf: lattice, exact filter, mean field parity with pydensecrf, CRF-as-RNN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from atrous import memory as process_memory
from atrous.crf import (
    CRFasRNN,
    DenseCRF,
    GaussianKernel,
    PermutohedralLattice,
    bilateral_features,
    clear_kernel_cache,
    dense_crf,
    exact_filter,
    heap_retention,
    mean_field,
    positional_features,
    positional_kernel,
    set_heap_retention,
)
from atrous.crf import heap as crf_heap

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "densecrf"
CONFIG = json.loads((FIXTURES / "densecrf.json").read_text())


def _load(case: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{case}.npz") as z:
        return {k: z[k] for k in z.files}


def _synthetic(h: int, w: int, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A piecewise-smooth image with edges and noise, and noisy one-hot probabilities."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    label = ((xx > w // 3).astype(int) + 2 * (yy > h // 2)) % c
    base = rng.integers(30, 220, size=(c, 3))
    img = base[label] + 10 * np.sin(xx / 5.0)[..., None] + rng.normal(0, 6, (h, w, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    logits = 2.0 * np.eye(c)[label].transpose(2, 0, 1) + rng.normal(0, 1.2, (c, h, w))
    p = np.exp(logits - logits.max(0))
    return img, (p / p.sum(0)).astype(np.float32)


# ---------------------------------------------------------------- parity with the C++ original
PARITY = [
    (case, key)
    for case in CONFIG["cases"]
    for key in CONFIG["cases"][case]["arrays"]
    if "_Q" in key
]


@pytest.fixture(params=["compiled", "torch"])
def crf_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both implementations of the dense CRF's hot path: the compiled mean field and lattice
    (atrous.crf.native, where it was built) and the torch sparse products."""
    if request.param == "compiled":
        from atrous.crf import native

        if not native.available():
            pytest.skip("atrous.crf._native is not built (no C compiler at install)")
    else:
        monkeypatch.setenv("ATROUS_CRF_NATIVE", "0")
    clear_kernel_cache()  # (cached positional lattices were built by the other path)
    yield request.param
    clear_kernel_cache()


@pytest.mark.parametrize(("case", "key"), PARITY)
def test_parity_with_pydensecrf_reference(case: str, key: str, crf_path: str) -> None:
    z = _load(case)
    setting, its = key.rsplit("_Q", 1)
    q = dense_crf(z["image"], z["probs"], iterations=int(its), **CONFIG["params"][setting])
    ref = z[key].astype(np.float32)
    assert q.shape == ref.shape and q.dtype == np.float32
    agree = (q.argmax(0) == ref.argmax(0)).mean()
    assert agree >= 0.999, f"{case}/{key}: label agreement {agree:.5f}"
    assert np.abs(q - ref).mean() <= 1e-3
    # the CRF must actually change something, or the test proves nothing
    assert np.abs(q - z["probs"]).mean() > 1e-2


# ---------------------------------------------------------------- lattice and exact filter
def test_exact_filter_matches_brute_force() -> None:
    torch.manual_seed(0)
    f = torch.randn(2, 30, 3, dtype=torch.float64)
    v = torch.randn(2, 30, 4, dtype=torch.float64)
    d2 = ((f[:, :, None] - f[:, None]) ** 2).sum(-1)
    ref = torch.exp(-0.5 * d2) @ v
    torch.testing.assert_close(exact_filter(f, v, block=7), ref)
    no_self = exact_filter(f[0], v[0], include_self=False)
    torch.testing.assert_close(no_self, ref[0] - v[0])


@pytest.mark.parametrize("kind", ["positional", "bilateral"])
def test_lattice_approximates_exact_gaussian(kind: str) -> None:
    img, _ = _synthetic(24, 32, 3)
    t = torch.from_numpy(img)[None]
    if kind == "positional":
        f = positional_features(1, 24, 32, 3.0)
    else:
        f = bilateral_features(t, 10.0, 20.0)
    lat_k, ex_k = GaussianKernel(f, "lattice"), GaussianKernel(f, "exact")
    v = torch.rand(1, 24 * 32, 5)
    a, b = lat_k(v), ex_k(v)
    rel = ((a - b).abs().mean() / b.abs().mean()).item()
    assert rel < 0.06, rel
    # un-normalized: the lattice is a Gaussian up to a near-constant scale
    ones = torch.ones(1, 24 * 32, 1)
    ratio = lat_k.raw(ones) / ex_k.raw(ones)
    assert (ratio.std() / ratio.mean()).item() < 0.1


def test_lattice_reverse_is_transpose_and_batch_is_independent() -> None:
    img, _ = _synthetic(12, 15, 3)
    img2, _ = _synthetic(12, 15, 3, seed=5)
    t = torch.from_numpy(np.stack([img, img2]))
    f = bilateral_features(t, 5.0, 15.0)
    lat = PermutohedralLattice(f)
    x = torch.randn(2, 180, 3, dtype=torch.float64)
    y = torch.randn(2, 180, 3, dtype=torch.float64)
    lhs = (lat.filter(x) * y).sum()
    rhs = (x * lat.filter(y, reverse=True)).sum()
    torch.testing.assert_close(lhs, rhs)
    # the batched lattice equals per-image lattices
    single = PermutohedralLattice(f[1]).filter(x[1])
    torch.testing.assert_close(lat.filter(x)[1], single)
    assert lat.num_vertices > 0 and lat.d == 5


@pytest.mark.parametrize("kind", ["positional", "bilateral"])
def test_lattice_table_and_sort_builds_agree(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The direct-address-table and the sort-based vertex search build the same lattice."""
    import atrous.crf.lattice as lattice_mod

    monkeypatch.setenv("ATROUS_CRF_NATIVE", "0")  # the torch builds (the compiled one: test_native)
    img, _ = _synthetic(23, 31, 3)
    image = torch.from_numpy(img)[None].expand(2, -1, -1, -1)
    if kind == "positional":
        f = positional_features(2, 23, 31, 1.0)
    else:
        f = bilateral_features(image, 5.0, 10.0)
    x = torch.rand(2, 23 * 31, 4, dtype=torch.float64)
    monkeypatch.setattr(lattice_mod, "_DENSE_TABLE_FACTOR", 10**6)
    table = PermutohedralLattice(f)
    monkeypatch.setattr(lattice_mod, "_DENSE_TABLE_FACTOR", 0)
    sort = PermutohedralLattice(f)
    assert table.num_vertices == sort.num_vertices
    # the same vertices, numbered differently (first use against key order): one bijection
    # maps every point's ids of one build onto the other's
    a, b = table.vertex_ids.long().reshape(-1), sort.vertex_ids.long().reshape(-1)
    relabel = torch.full((table.num_vertices,), -1, dtype=torch.long)
    relabel[a] = b
    assert torch.equal(relabel[a], b)
    assert torch.equal(torch.sort(relabel).values, torch.arange(table.num_vertices))
    torch.testing.assert_close(table.filter(x), sort.filter(x), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(
        table.filter(x, reverse=True), sort.filter(x, reverse=True), rtol=1e-12, atol=1e-9
    )


def test_lattice_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        PermutohedralLattice(torch.zeros(2, 3, 4, 5))
    with pytest.raises(TypeError, match="floating"):
        PermutohedralLattice(torch.zeros(4, 2, dtype=torch.int64))
    lat = PermutohedralLattice(torch.rand(10, 2))
    with pytest.raises(ValueError, match="values must have shape"):
        lat.filter(torch.rand(11, 3))


def test_exact_crf_agrees_with_lattice_crf() -> None:
    z = _load("voc")
    img, probs = z["image"][:40, :60], z["probs"][:, :40, :60]
    lat = dense_crf(img, probs, bi_xy_std=20, bi_rgb_std=10)
    ex = dense_crf(img, probs, bi_xy_std=20, bi_rgb_std=10, method="exact")
    agree = (lat.argmax(0) == ex.argmax(0)).mean()
    assert agree >= 0.97, agree
    assert (lat.argmax(0) != probs.argmax(0)).mean() > 0.01  # the CRF changed labels


# ---------------------------------------------------------------- dense_crf API
def test_dense_crf_layouts_types_and_batch() -> None:
    img, probs = _synthetic(20, 24, 4)
    q_np = dense_crf(img, probs, iterations=3)
    assert isinstance(q_np, np.ndarray) and q_np.shape == probs.shape
    np.testing.assert_allclose(q_np.sum(0), 1.0, atol=1e-5)
    # refinement follows the image edges better than the noisy input
    img2, probs2 = _synthetic(20, 24, 4, seed=3)
    batch_img = torch.from_numpy(np.stack([img, img2])).permute(0, 3, 1, 2)
    batch_p = torch.from_numpy(np.stack([probs, probs2])).to(torch.float64)
    q_t = dense_crf(batch_img, batch_p, iterations=3)
    assert isinstance(q_t, torch.Tensor) and q_t.shape == batch_p.shape
    assert q_t.dtype == torch.float64
    np.testing.assert_allclose(q_t[0].numpy(), q_np, atol=1e-5)
    np.testing.assert_allclose(q_t[1].numpy(), dense_crf(img2, probs2, iterations=3), atol=1e-5)
    # DenseCRF dataclass is the same call
    np.testing.assert_allclose(DenseCRF(iterations=3)(img, probs), q_np)
    # zero iterations return the input
    np.testing.assert_allclose(dense_crf(img, probs, iterations=0), probs, atol=1e-6)


def test_dense_crf_half_precision_input_and_zero_probabilities() -> None:
    img, probs = _synthetic(18, 22, 3)
    probs[:, 0, 0] = [1.0, 0.0, 0.0]  # exact zeros: -log 0 is clamped, not inf/nan
    q32 = dense_crf(img, probs, iterations=3)
    q16 = dense_crf(img, probs.astype(np.float16), iterations=3)
    assert q16.dtype == np.float16 and np.isfinite(q16).all()
    assert (q16.argmax(0) == q32.argmax(0)).mean() > 0.99
    np.testing.assert_allclose(q16.astype(np.float32), q32, atol=5e-3)


@pytest.mark.parametrize(("pos_w", "bi_w"), [(150.0, 200.0), (-400.0, 5.0)])
def test_dense_crf_extreme_weights_fall_back_to_exact_softmax(pos_w: float, bi_w: float) -> None:
    # exp(messages) overflows (huge weights) or underflows (negative ones): the fused path's
    # unnormalized softmax must fall back to the exact one and match the unfused mean field
    img, probs = _synthetic(16, 18, 3)
    q = dense_crf(img, probs, iterations=3, pos_w=pos_w, bi_w=bi_w, bi_xy_std=5.0)
    assert np.isfinite(q).all()
    feats = [
        positional_features(1, 16, 18, 1.0),
        bilateral_features(torch.from_numpy(img)[None], 5.0, 3.0),
    ]
    kernels = [(GaussianKernel(feats[0]), pos_w), (GaussianKernel(feats[1]), bi_w)]
    unary = -torch.from_numpy(probs).permute(1, 2, 0).reshape(1, -1, 3).log()
    ref = mean_field(unary, kernels, 3).reshape(16, 18, 3).permute(2, 0, 1).numpy()
    np.testing.assert_allclose(q, ref, atol=1e-4)


def test_positional_kernel_cache() -> None:
    clear_kernel_cache()
    a = positional_kernel(1, 20, 24, 1.0)
    assert positional_kernel(1, 20, 24, 1.0) is a
    assert positional_kernel(1, 20, 25, 1.0) is not a
    assert positional_kernel(2, 20, 24, 1.0) is not a
    assert positional_kernel(1, 20, 24, 2.0) is not a
    # LRU of two entries: `a` was evicted by the three above
    assert positional_kernel(1, 20, 24, 1.0) is not a
    clear_kernel_cache()
    # a cached kernel gives bit-identical results to a fresh one
    img, probs = _synthetic(20, 24, 4)
    cold = dense_crf(img, probs, iterations=4)
    warm = dense_crf(img, probs, iterations=4)
    np.testing.assert_array_equal(cold, warm)
    clear_kernel_cache()


def test_kernel_degree_matches_filter_of_ones() -> None:
    img, _ = _synthetic(23, 29, 3)
    feats = bilateral_features(torch.from_numpy(img)[None], 5.0, 10.0)
    for f in (feats, positional_features(2, 23, 29, 1.5)):
        lat = PermutohedralLattice(f)
        ones = torch.ones(*f.shape[:2], 1)
        torch.testing.assert_close(lat.degree(), lat.filter(ones), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["positional", "sparse3d"])
def test_composite_blur_equals_the_passes(kind: str) -> None:
    """One composite product = the d+1 blur passes, also where neighbours are absent."""
    if kind == "positional":
        lat = PermutohedralLattice(positional_features(1, 13, 17, 1.0))
    else:  # scattered 3-D features: most blur neighbours absent
        lat = PermutohedralLattice(
            torch.rand(300, 3, generator=torch.Generator().manual_seed(0)) * 9
        )
        assert (lat._lower == lat.num_vertices).float().mean() > 0.3
    x = torch.rand(lat.num_rows, 5, dtype=torch.float64)
    x[-1] = 0  # the zero row
    want = x
    for bm in lat.blur_matrices(torch.float64):
        want = bm @ want
    comp = lat.blur_composite(torch.float64)
    assert comp.shape == (lat.num_rows, lat.num_rows)
    torch.testing.assert_close(comp @ x, want, rtol=1e-12, atol=1e-12)
    assert lat.blur_composite(torch.float64) is comp  # cached
    with pytest.raises(ValueError, match="composite"):
        PermutohedralLattice(torch.rand(20, 5)).blur_composite(torch.float64)


def test_many_labels_take_the_composite_blur_and_row_softmax(monkeypatch) -> None:
    """From COMPOSITE_BLUR_MIN_LABELS / ROW_SOFTMAX_MIN_LABELS labels the fused mean field
    blurs the positional kernel in one product and normalizes by torch's softmax: the same
    result as the per-direction passes and exp + sums."""
    import atrous.crf.fused as fused_mod

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (19, 23, 3), dtype=np.uint8)
    logits = rng.normal(size=(130, 19, 23)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(0)
    fast = dense_crf(img, probs, iterations=5)
    monkeypatch.setattr(fused_mod, "COMPOSITE_BLUR_MIN_LABELS", 10**9)
    monkeypatch.setattr(fused_mod, "ROW_SOFTMAX_MIN_LABELS", 10**9)
    plain = dense_crf(img, probs, iterations=5)
    np.testing.assert_allclose(fast, plain, rtol=1e-4, atol=1e-6)
    assert np.abs(fast - probs).mean() > 0.05 * probs.mean()  # the CRF changed something


def test_lattice_read_only_structure() -> None:
    f = positional_features(2, 9, 11, 1.0)
    lat = PermutohedralLattice(f)
    assert lat.num_points == 2 * 9 * 11
    assert lat.barycentric.shape == lat.vertex_ids.shape == (lat.num_points, 3)
    torch.testing.assert_close(lat.barycentric.sum(1), torch.ones(lat.num_points))
    ids = lat.vertex_ids.long()
    assert ids.min() == 0 and ids.max() == lat.num_vertices - 1
    blurs = lat.blur_matrices(torch.float64)
    assert len(blurs) == 3 and blurs[0].shape == (lat.num_rows, lat.num_rows)
    assert lat.blur_matrices(torch.float64) is blurs  # cached per dtype
    with pytest.raises(AttributeError):
        lat.barycentric = torch.zeros(1)  # type: ignore[misc]


def test_heap_retention_setting_and_nesting() -> None:
    before = heap_retention()
    try:
        with pytest.raises(ValueError, match=">= 0"):
            set_heap_retention(-1)
        set_heap_retention(0)
        assert heap_retention() == 0
        img, probs = _synthetic(12, 14, 3)
        off = dense_crf(img, probs, iterations=2)
        set_heap_retention(1 << 20)
        assert heap_retention() in (0, 1 << 20)  # 0 where the C library is not glibc
        with crf_heap.retained_heap(), crf_heap.retained_heap():
            assert process_memory._depth in (0, 2)
            on = dense_crf(img, probs, iterations=2)
        assert process_memory._depth == 0
        np.testing.assert_array_equal(on, off)
    finally:
        set_heap_retention(before)


@pytest.mark.skipif(not crf_heap.trim_supported(), reason="malloc_trim is glibc's")
def test_trim_if_grown_returns_fragmented_free_memory() -> None:
    """Memory freed in pieces between live blocks stays resident (a later large buffer cannot
    reuse the holes); trim_if_grown returns it, but only after this much growth."""
    assert not crf_heap.trim_if_grown(None)
    with crf_heap.retained_heap():  # every block from the heap, none trimmed on free
        crf_heap.trim_heap()  # (earlier tests' free memory would take the blocks below)
        start = crf_heap.rss_bytes()
        blocks = [torch.ones(256 * 1024) for _ in range(160)]  # 160 x 1 MiB, touched
        del blocks[::2]  # 80 MiB of holes between the live blocks
        grown = crf_heap.rss_bytes()
        assert not crf_heap.trim_if_grown(grown)  # no growth since then: nothing done
        assert crf_heap.rss_bytes() >= grown - (8 << 20)
        assert crf_heap.trim_if_grown(start)
        assert crf_heap.rss_bytes() <= grown - (48 << 20)
        del blocks


def test_dense_crf_compat_matrix() -> None:
    img, probs = _synthetic(16, 20, 3)
    potts = dense_crf(img, probs, iterations=4)
    np.testing.assert_allclose(
        dense_crf(img, probs, iterations=4, compat=1 - np.eye(3)), potts, atol=1e-5
    )
    # no penalty between labels 0 and 1: they stop competing, label 2 loses ground
    mu = 1 - np.eye(3)
    mu[0, 1] = mu[1, 0] = 0
    q = dense_crf(img, probs, iterations=4, compat=mu)
    assert not np.allclose(q, potts, atol=1e-3)


def test_dense_crf_clear_errors() -> None:
    img, probs = _synthetic(10, 12, 3)
    with pytest.raises(ValueError, match="does not match"):
        dense_crf(img[:9], probs)
    with pytest.raises(ValueError, match="sum to 1"):
        dense_crf(img, probs * 2)
    with pytest.raises(ValueError, match="non-negative"):
        dense_crf(img, probs - 0.5)
    with pytest.raises(TypeError, match="uint8"):
        dense_crf(img.astype(np.float32), probs)
    with pytest.raises(TypeError, match="floating-point"):
        dense_crf(img, (probs > 0.5).astype(np.int64))
    with pytest.raises(ValueError, match="expected image"):
        dense_crf(img, probs[None])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        dense_crf(img[..., :2], probs)
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        dense_crf(img.tolist(), probs)
    with pytest.raises(ValueError, match="compat"):
        dense_crf(img, probs, compat=np.eye(4))
    with pytest.raises(ValueError, match="bi_rgb_std"):
        dense_crf(img, probs, bi_rgb_std=0)
    with pytest.raises(ValueError, match="method"):
        dense_crf(img, probs, method="fast")


# ---------------------------------------------------------------- CRF as RNN
def test_crfasrnn_gradcheck() -> None:
    torch.manual_seed(0)
    img, _ = _synthetic(5, 6, 3)
    image = torch.from_numpy(img).permute(2, 0, 1)[None]
    crf = CRFasRNN(3, iterations=2, bi_xy_std=3.0, bi_rgb_std=20.0).double()
    with torch.no_grad():
        crf.compat.add_(0.1 * torch.randn(3, 3, dtype=torch.float64))
    logits = torch.randn(1, 3, 5, 6, dtype=torch.float64, requires_grad=True)

    names = ("pos_weight", "bi_weight", "compat")
    params = [getattr(crf, n).detach().clone().requires_grad_(True) for n in names]

    def fwd(lg: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(crf, dict(zip(names, ps)), (lg, image))

    assert torch.autograd.gradcheck(fwd, (logits, *params), eps=1e-6, atol=1e-5)


def test_crfasrnn_matches_dense_crf_and_trains() -> None:
    img, probs = _synthetic(16, 20, 4)
    image = torch.from_numpy(img).permute(2, 0, 1)[None]
    logits = torch.log(torch.from_numpy(probs))[None]
    crf = CRFasRNN(4, iterations=5)
    out = crf(logits, image)
    ref = dense_crf(img, probs, iterations=5)
    np.testing.assert_allclose(torch.softmax(out, 1)[0].detach().numpy(), ref, atol=1e-4)
    # float images in 0-255 give the same result
    out_f = crf(logits, image.float())
    torch.testing.assert_close(out_f, out)
    target = torch.from_numpy(probs.argmax(0))[None]
    loss = nn.functional.cross_entropy(out, target)
    loss.backward()
    for p in crf.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
        assert p.grad.abs().sum() > 0


def test_crfasrnn_clear_errors() -> None:
    crf = CRFasRNN(3)
    img = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="logits must have shape"):
        crf(torch.zeros(1, 4, 8, 8), img)
    with pytest.raises(ValueError, match="share"):
        crf(torch.zeros(1, 3, 8, 9), img)
    with pytest.raises(ValueError, match="image must have shape"):
        crf(torch.zeros(1, 3, 8, 8), img[:, :2])
    with pytest.raises(ValueError, match="bi_rgb_std"):
        CRFasRNN(3, bi_rgb_std=-1)


# ---------------------------------------------------------------- device
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    z = _load("camvid")
    img = torch.from_numpy(z["image"]).permute(2, 0, 1)[None]
    p = torch.from_numpy(z["probs"])[None]
    cpu = dense_crf(img, p, iterations=5)
    gpu = dense_crf(img.cuda(), p.cuda(), iterations=5).cpu()
    assert (cpu.argmax(1) == gpu.argmax(1)).float().mean() >= 0.999
    assert (cpu - gpu).abs().mean() < 1e-4


# ---------------------------------------------------------------- optional C++ reference
@pytest.mark.crfref
def test_parity_with_live_pydensecrf() -> None:
    dcrf = pytest.importorskip("pydensecrf.densecrf")
    img, probs = _synthetic(75, 100, 5, seed=11)
    d = dcrf.DenseCRF2D(100, 75, 5)
    d.setUnaryEnergy(np.ascontiguousarray(-np.log(probs).reshape(5, -1)))
    d.addPairwiseGaussian(sxy=1, compat=3)
    d.addPairwiseBilateral(sxy=67, srgb=3, rgbim=np.ascontiguousarray(img), compat=4)
    ref = np.array(d.inference(10)).reshape(5, 75, 100)
    q = dense_crf(img, probs)
    assert (q.argmax(0) == ref.argmax(0)).mean() >= 0.999
    assert np.abs(q - ref).mean() <= 1e-4


def test_textured_frame_many_colours_matches_the_cpp(crf_path: str) -> None:
    """The structure of the slowest real frames (issue 14: about one bilateral vertex per
    pixel, most blur neighbours absent) at a small size: the lattice has that structure, the
    two vertex searches agree on it, and the CRF matches pydensecrf2's output stored in
    ``fixtures/densecrf/textured.npz`` (made by ``make_textured.py`` there)."""
    with np.load(FIXTURES / "textured.npz") as z:
        image, probs, ref = z["image"], z["probs"], z["q10"].astype(np.float32)
    h, w = image.shape[:2]
    feats = bilateral_features(torch.from_numpy(image.copy())[None], 67.0, 3.0)
    lat = PermutohedralLattice(feats)
    assert lat.num_vertices >= 0.9 * h * w  # textured: a vertex per pixel or so
    present = (lat._lower < lat.num_vertices).float().mean()
    assert present < 0.6  # most blur neighbours absent
    q = dense_crf(image, probs)
    agree = (q.argmax(0) == ref.argmax(0)).mean()
    assert agree >= 0.999, f"label agreement {agree:.5f}"
    assert np.abs(q - ref).mean() <= 1e-3
    assert np.abs(q - probs).mean() > 1e-2  # the CRF changed something
