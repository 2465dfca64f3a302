"""Segmenter: TTA, tiling, batching equivalences on toy models; input validation; CRF hook."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from atrous.inference import IMAGENET_MEAN, IMAGENET_STD, Segmenter, tile_starts


class LocalNet(nn.Module):
    """``depth`` 3x3 convs, no pooling: receptive-field radius = depth (in pixels)."""

    def __init__(self, classes: int = 5, depth: int = 2, symmetric: bool = False) -> None:
        super().__init__()
        chans = [3] + [8] * (depth - 1) + [classes]
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, 3, padding=1) for a, b in itertools.pairwise(chans)
        )
        if symmetric:  # left-right symmetric kernels make the model flip-equivariant
            with torch.no_grad():
                for c in self.convs:
                    c.weight.copy_((c.weight + c.weight.flip(-1)) / 2)
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls.append(tuple(x.shape))
        for i, c in enumerate(self.convs):
            x = c(x)
            if i < len(self.convs) - 1:
                x = torch.tanh(x)
        return {"out": x, "aux": x.detach()}


class StridedNet(nn.Module):
    """Returns logits at 1/2 resolution (tolerated: upsampled to the input)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def reference_logits(model: nn.Module, img: np.ndarray, scales, flip: bool) -> torch.Tensor:
    """Whole-image TTA written out directly: resize, (flip), run, resize back, mean logits."""
    x = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    x = (
        (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    )[None]
    h, w = img.shape[:2]
    outs = []
    with torch.no_grad():
        for s in scales:
            size = (max(1, round(h * s)), max(1, round(w * s)))
            xs = (
                F.interpolate(x, size, mode="bilinear", align_corners=False)
                if size != (h, w)
                else x
            )
            for f in [False, True] if flip else [False]:
                o = model(xs.flip(-1) if f else xs)["out"]
                o = o.flip(-1) if f else o
                outs.append(F.interpolate(o, (h, w), mode="bilinear", align_corners=False))
    return torch.stack(outs).mean(0)[0]


@pytest.fixture(scope="module")
def net() -> LocalNet:
    torch.manual_seed(0)
    return LocalNet()


@pytest.mark.parametrize("scales", [(1.0,), (0.5,), (0.75, 1.0, 1.5)])
@pytest.mark.parametrize("flip", [False, True])
def test_multiscale_flip_matches_direct_computation(net, scales, flip):
    img = image(29, 38)
    got = Segmenter(net, scales=scales, flip=flip).logits(img)
    torch.testing.assert_close(got, reference_logits(net, img, scales, flip), atol=1e-5, rtol=1e-5)


def test_flip_equivariant_model_flip_changes_nothing():
    torch.manual_seed(1)
    sym = LocalNet(symmetric=True)
    img = image(21, 34, seed=3)
    a = Segmenter(sym).logits(img)
    b = Segmenter(sym, flip=True).logits(img)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # and for a generic model flip does change the output (the test above can fail)
    torch.manual_seed(1)
    gen = LocalNet()
    assert (Segmenter(gen).logits(img) - Segmenter(gen, flip=True).logits(img)).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("size", "scales", "flip"),
    [((70, 93), (1.0,), False), ((61, 45), (1.0,), True), ((50, 77), (0.6, 1.3), True)],
)
def test_tiling_equals_whole_image_when_receptive_field_fits(net, size, scales, flip):
    img = image(*size, seed=5)
    whole = Segmenter(net, scales=scales, flip=flip).logits(img)
    net.calls.clear()
    # radius 2 <= overlap / 2 - 1 = 3
    tiled = Segmenter(net, scales=scales, flip=flip, tile_size=24, tile_overlap=8, batch_size=5)
    got = tiled.logits(img)
    torch.testing.assert_close(got, whole, atol=1e-5, rtol=1e-5)
    assert max(max(c[2:]) for c in net.calls) <= 24  # the model never saw more than a tile
    assert max(c[0] for c in net.calls) <= 5  # batch_size respected (flip pairs included)
    assert len(net.calls) > 1


def test_tiling_differs_when_overlap_too_small():
    torch.manual_seed(2)
    deep = LocalNet(depth=6)  # radius 6 > overlap / 2
    img = image(60, 60, seed=1)
    whole = Segmenter(deep).logits(img)
    tiled = Segmenter(deep, tile_size=20, tile_overlap=4).logits(img)
    assert (tiled - whole).abs().max() > 1e-4
    tiled_ok = Segmenter(deep, tile_size=30, tile_overlap=14).logits(img)
    torch.testing.assert_close(tiled_ok, whole, atol=1e-5, rtol=1e-5)


def test_tile_starts_cover_and_overlap():
    for size, t, o in [(100, 24, 8), (24, 24, 8), (25, 24, 8), (1000, 513, 171), (5, 24, 0)]:
        s = tile_starts(size, t, o)
        assert s[0] == 0 and s[-1] + min(t, size) == size
        assert all(b - a <= t - o for a, b in itertools.pairwise(s))


def test_batching_equivalence_and_order(net):
    imgs = [image(20, 30, 1), image(25, 17, 2), image(20, 30, 3), image(20, 30, 4), image(9, 9, 5)]
    single = [Segmenter(net).logits(i) for i in imgs]
    net.calls.clear()
    seg = Segmenter(net, batch_size=3, flip=True, scales=(1.0, 0.5))
    singles_tta = [seg.logits(i) for i in imgs]
    net.calls.clear()
    many = list(seg.predict_many(iter(imgs), output="logits"))
    assert len(many) == len(imgs)
    for a, b in zip(many, singles_tta):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert max(c[0] for c in net.calls) == 2  # images of equal size shared a forward pass
    labels = list(Segmenter(net, batch_size=2).predict_many(imgs))
    for lab, lg in zip(labels, single):
        np.testing.assert_array_equal(lab, lg.argmax(0).numpy())


@pytest.mark.parametrize("size", [(1, 1), (1, 17), (13, 1), (3, 200), (37, 53)])
def test_odd_sizes(net, size):
    img = image(*size)
    seg = Segmenter(net, scales=(0.5, 1.25), flip=True, tile_size=16, tile_overlap=6)
    lab = seg.predict(img)
    assert lab.shape == size and lab.dtype == np.uint8
    probs = seg.predict_proba(img)
    assert probs.shape == (5, *size)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)


def test_input_types_agree(net):
    img = image(15, 22)
    seg = Segmenter(net)
    ref = seg.logits(img)
    chw = torch.from_numpy(img).permute(2, 0, 1)
    for other in (Image.fromarray(img), chw, chw.float() / 255):
        torch.testing.assert_close(seg.logits(other), ref, atol=1e-5, rtol=1e-5)
    grey = Image.fromarray(img[..., 0])  # PIL greyscale is converted to RGB
    assert seg.predict(grey).shape == (15, 22)


def test_bad_inputs_have_clear_errors(net):
    seg = Segmenter(net)
    with pytest.raises(TypeError, match="uint8"):
        seg.predict(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\).*greyscale"):
        seg.predict(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        seg.predict(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        seg.predict(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        seg.predict(torch.zeros(4, 4, 3, dtype=torch.uint8))
    with pytest.raises(TypeError, match="PIL image"):
        seg.predict([[0, 0, 0]])
    with pytest.raises(ValueError, match="output must be"):
        next(seg.predict_many([image(4, 4)], output="masks"))


def test_bad_settings_have_clear_errors(net):
    with pytest.raises(ValueError, match="scales"):
        Segmenter(net, scales=())
    with pytest.raises(ValueError, match="scales"):
        Segmenter(net, scales=(0.0,))
    with pytest.raises(ValueError, match="tile_overlap"):
        Segmenter(net, tile_size=16, tile_overlap=16)
    with pytest.raises(ValueError, match="batch_size"):
        Segmenter(net, batch_size=0)
    with pytest.raises(ValueError, match="std"):
        Segmenter(net, std=(1, 0, 1))
    with pytest.raises(TypeError, match=r"nn\.Module"):
        Segmenter(lambda x: x)
    with pytest.raises(ValueError, match="returns 5 classes but num_classes=21"):
        Segmenter(net, num_classes=21).predict(image(4, 4))
    with pytest.raises(ValueError, match="no 'logits' key"):
        Segmenter(net, output_key="logits").predict(image(4, 4))


def test_low_resolution_output_and_plain_tensor_output():
    torch.manual_seed(0)
    seg = Segmenter(StridedNet())
    assert seg.predict(image(11, 14)).shape == (11, 14)


def test_crf_hook_receives_image_and_probs(net):
    img = image(12, 16)
    seen = {}

    def fake_crf(im: np.ndarray, probs: np.ndarray) -> np.ndarray:
        seen["image"], seen["probs"] = im, probs.copy()
        out = np.zeros_like(probs)
        out[3] = 1.0  # everything becomes class 3
        return out

    seg = Segmenter(net, crf=fake_crf, flip=True)
    lab = seg.predict(Image.fromarray(img))
    np.testing.assert_array_equal(seen["image"], img)
    assert seen["probs"].shape == (5, 12, 16) and seen["probs"].dtype == np.float32
    np.testing.assert_allclose(seen["probs"].sum(0), 1.0, atol=1e-5)
    expected = torch.softmax(Segmenter(net, flip=True).logits(img), 0).numpy()
    np.testing.assert_allclose(seen["probs"], expected, atol=1e-6)
    assert np.all(lab == 3)
    assert seg.predict_proba(img)[3].min() == 1.0
    # logits are the pre-CRF averaged logits
    torch.testing.assert_close(seg.logits(img), Segmenter(net, flip=True).logits(img))
    bad = Segmenter(net, crf=lambda im, p: p[:, :-1])
    with pytest.raises(ValueError, match="crf returned shape"):
        bad.predict(img)


def test_config_records_settings(net):
    cfg = Segmenter(net, scales=(0.5, 1.0), flip=True, tile_size=64).config()
    assert cfg["scales"] == [0.5, 1.0] and cfg["flip"] and cfg["tile_overlap"] == 21
    assert cfg["tta_average"] == "logits" and cfg["mean"] == list(IMAGENET_MEAN)


def test_end_to_end_with_evaluate(net):
    from atrous.evaluation import ConfusionMatrix, evaluate

    imgs = [image(20, 30, i) for i in range(3)]
    seg = Segmenter(net, batch_size=2)
    labels = [seg.predict(i) for i in imgs]
    res = evaluate(seg, list(zip(imgs, labels)), 5, trimap_widths=[1, 2])
    assert res.metrics.pixel_accuracy == 1.0
    cm = ConfusionMatrix(5)
    for lab in labels:
        cm.update(lab, lab)
    np.testing.assert_array_equal(res.confusion.numpy(), cm.numpy())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(net):
    img = image(40, 50)
    cpu = Segmenter(net, scales=(0.5, 1.0), flip=True, tile_size=24, tile_overlap=8).logits(img)
    gpu_net = LocalNet()
    gpu_net.load_state_dict(net.state_dict())
    gpu = Segmenter(
        gpu_net, scales=(0.5, 1.0), flip=True, tile_size=24, tile_overlap=8, device="cuda"
    )
    torch.testing.assert_close(gpu.logits(img), cpu, atol=1e-4, rtol=1e-4)


def test_benchmark_smoke(tmp_path):
    """The benchmark runs a case in a subprocess and reports latency and peak RSS."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_inference.py"
    spec = importlib.util.spec_from_file_location("bench_inference", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    args = ["--sizes", "96x64", "--tile-size", "64", "--repeat", "1", "--threads", "1"]
    assert bench.main([*args, "--json", str(out)]) == 0
    (r,) = json.loads(out.read_text())
    assert r["peak_rss_bytes"] >= r["rss_before_inference_bytes"] > 0
    assert r["seconds_median"] > 0 and r["size"] == [96, 64]
