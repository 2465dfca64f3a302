"""Temporal smoothing (``atrous.inference.temporal``): the EMA's arithmetic on synthetic
probability sequences (noise on a static scene flickers less; alpha 1 changes nothing; a size
change or a scene cut starts again), the gated and flow variants on a moving scene, and
``atrous predict --smooth`` end to end on a small generated video."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from videos import decode, street_frames, write_video

import atrous.models as M
import atrous.weights as W
from atrous.cli import build_parser, main
from atrous.inference import Segmenter
from atrous.inference.temporal import (
    SMOOTHING_METHODS,
    EMASmoother,
    FlowEMA,
    GatedEMA,
    SmoothingSpec,
    cut_score,
    lucas_kanade,
    parse_smoothing,
)
from atrous.inference.video import Frame

SMOOTHERS = (EMASmoother, GatedEMA, FlowEMA)


def _frames(images: list[np.ndarray]) -> list[Frame]:
    return [Frame(i, i, i / 10, im) for i, im in enumerate(images)]


def _run(smoother, frames: list[Frame], probs: list[np.ndarray]) -> list[np.ndarray]:
    return [smoother(f, p) for f, p in zip(frames, probs)]


def _flicker(probs: list[np.ndarray]) -> float:
    """Share of pixels whose argmax changes between consecutive frames."""
    labels = [p.argmax(0) for p in probs]
    return float(np.mean([np.mean(a != b) for a, b in pairwise(labels)]))


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random gray texture, HxWx3 uint8."""
    t = ndimage.gaussian_filter(np.random.default_rng(seed).random((h, w)), 2)
    t = (t - t.min()) / (t.max() - t.min())
    return np.repeat((t * 255).astype(np.uint8)[..., None], 3, axis=2)


def _noisy_static(n: int = 12, c: int = 3, size: int = 24, seed: int = 0) -> list[np.ndarray]:
    """Probabilities of a static scene whose classes are nearly tied, with fresh noise each
    frame (the network's jitter): the argmax alone flickers."""
    rng = np.random.default_rng(seed)
    base = np.full((c, size, size), 1.0 / c, np.float32)
    base[0] += 0.03  # class 0 is (slightly) right everywhere
    out = []
    for _ in range(n):
        p = np.clip(base + rng.normal(0, 0.05, base.shape), 1e-3, None).astype(np.float32)
        out.append(p / p.sum(0, keepdims=True))
    return out


def test_ema_is_the_moving_average() -> None:
    probs = _noisy_static(4)
    image = np.zeros((24, 24, 3), np.uint8)
    out = _run(EMASmoother(0.25), _frames([image] * 4), probs)
    expected = probs[0]
    np.testing.assert_array_equal(out[0], probs[0])
    for p, got in zip(probs[1:], out[1:]):
        expected = 0.25 * p + 0.75 * expected
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        np.testing.assert_allclose(got.sum(0), 1.0, rtol=1e-5)  # still distributions


@pytest.mark.parametrize("cls", SMOOTHERS)
def test_smoothing_a_noisy_static_scene_flickers_less(cls) -> None:
    probs = _noisy_static(12)
    frames = _frames([_texture(24, 24)] * 12)
    raw = _flicker(probs)
    smoothed = _flicker(_run(cls(0.2), frames, probs))
    assert raw > 0.3  # the noise does flip labels
    assert smoothed < raw / 3
    # and the smoothed labels are right (class 0) more often than the raw ones
    out = _run(cls(0.2), frames, probs)
    assert np.mean([(p.argmax(0) == 0).mean() for p in out[4:]]) > np.mean(
        [(p.argmax(0) == 0).mean() for p in probs[4:]]
    )


@pytest.mark.parametrize("cls", SMOOTHERS)
def test_alpha_one_is_no_smoothing(cls) -> None:
    images = [np.roll(_texture(24, 32), 2 * i, axis=1) for i in range(6)]
    probs = _noisy_static(6, size=24)
    probs = [np.concatenate([p, p[:, :, :8]], axis=2) for p in probs]  # 24 x 32
    probs = [p / p.sum(0, keepdims=True) for p in probs]
    out = _run(cls(1.0), _frames(images), probs)
    for got, p in zip(out, probs):
        np.testing.assert_array_equal(got, p)


@pytest.mark.parametrize("cls", SMOOTHERS)
def test_a_size_change_starts_again(cls) -> None:
    small, large = _noisy_static(3, size=16), _noisy_static(2, size=24, seed=1)
    frames = _frames([_texture(16, 16)] * 3 + [_texture(24, 24)] * 2)
    s = cls(0.3)
    out = _run(s, frames, small + large)
    np.testing.assert_array_equal(out[3], large[0])  # the new size: the frame's own
    assert not np.array_equal(out[4], large[1])  # then smoothing again
    assert s.resets == [0, 3]


@pytest.mark.parametrize("cls", SMOOTHERS)
def test_a_scene_cut_starts_again_and_a_small_change_does_not(cls) -> None:
    street = _texture(24, 24)
    brighter = np.clip(street.astype(int) + 4, 0, 255).astype(np.uint8)  # same shot
    other = np.zeros_like(street)
    other[..., 2] = 200  # a blue shot: a cut
    assert cut_score(street, brighter) < 0.3 < cut_score(street, other)
    probs = _noisy_static(4)
    s = cls(0.3)
    out = _run(s, _frames([street, brighter, other, other]), probs)
    assert not np.array_equal(out[1], probs[1])
    np.testing.assert_array_equal(out[2], probs[2])
    assert s.resets == [0, 2]
    s.reset()
    np.testing.assert_array_equal(s(Frame(9, 9, 0.9, other), probs[3]), probs[3])


def _moving_square(n: int, step: int, size: tuple[int, int] = (48, 64)) -> tuple:
    """A textured scene panning ``step`` pixels a frame, and class probabilities that move
    with it: class 1 (0.8) on a square, class 0 (0.8) elsewhere."""
    h, w = size
    world = _texture(h, w + step * n, seed=3)
    inside = np.zeros((h, w + step * n), bool)
    inside[12:36, 20:44] = True
    images, probs = [], []
    for i in range(n):
        images.append(world[:, step * i : step * i + w].copy())
        sq = inside[:, step * i : step * i + w]
        p = np.where(sq[None], [[[0.2]], [[0.8]]], [[[0.8]], [[0.2]]]).astype(np.float32)
        probs.append(p)
    return images, probs


def test_flow_keeps_moving_edges_where_the_ema_lags() -> None:
    images, probs = _moving_square(6, step=3)
    frames = _frames(images)
    truth = [p.argmax(0) for p in probs]

    def wrong(cls) -> float:
        out = _run(cls(0.3), frames, probs)
        return float(np.mean([(o.argmax(0) != t).mean() for o, t in zip(out[1:], truth[1:])]))

    assert wrong(EMASmoother) > 0.02  # the plain average drags the square's edges behind
    assert wrong(FlowEMA) < wrong(EMASmoother) / 4
    assert wrong(GatedEMA) < wrong(EMASmoother)  # textured motion opens the gate


def test_lucas_kanade_finds_a_shift() -> None:
    g = torch.from_numpy(_texture(64, 80, seed=5)[..., 0].astype(np.float32) / 255)
    shifted = torch.roll(g, shifts=(2, -5), dims=(0, 1))  # cur(x) = prev(x + (5, -2))
    flow = lucas_kanade(g, shifted)[:, 12:-12, 12:-12]
    assert abs(flow[0].median().item() - 5) < 0.2 and abs(flow[1].median().item() + 2) < 0.2


def test_parse_smoothing() -> None:
    assert parse_smoothing("off") is None and parse_smoothing("none") is None
    assert parse_smoothing("ema") == SmoothingSpec("ema", EMASmoother.default_alpha)
    assert parse_smoothing("gated") == SmoothingSpec("gated", GatedEMA.default_alpha)
    assert parse_smoothing("gated").new().alpha == GatedEMA().alpha == 0.2
    assert parse_smoothing("Flow:0.25") == SmoothingSpec("flow", 0.25)
    assert str(parse_smoothing("gated:1")) == "gated:1"
    assert isinstance(parse_smoothing("gated:0.4").new(), GatedEMA)
    for bad, says in (
        ("blur", "unknown smoothing 'blur': choose off, ema, gated, flow"),
        ("ema:0", "must be in (0, 1], got 0"),
        ("ema:1.5", "must be in (0, 1], got 1.5"),
        ("ema:nan", "must be in (0, 1], got nan"),
        ("ema:fast", "expected METHOD[:ALPHA] with a number ALPHA, got 'ema:fast'"),
        ("off:0.5", "unknown smoothing 'off'"),
    ):
        with pytest.raises(ValueError) as e:
            parse_smoothing(bad)
        assert says in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(5)
    model = M.build("deeplabv3_mobilenetv2", num_classes=3, norm="gn", width_mult=0.25)
    return W.save(model, tmp_path_factory.mktemp("w") / "m.safetensors", class_names=list("abc"))


def _labels(folder: Path, n: int) -> list[np.ndarray]:
    from PIL import Image

    out = []
    for i in range(n):
        with Image.open(folder / f"frame_{i:06d}.png") as im:
            out.append(np.asarray(im))
    return out


def test_predict_smooth_end_to_end(tmp_path: Path, weights: Path, capsys) -> None:
    clip = write_video(tmp_path / "drive.mkv", street_frames(8), codec="ffv1")  # lossless
    base = ["predict", str(weights), str(clip), "--no-progress", "--device", "cpu"]
    assert main([*base, "-o", str(tmp_path / "raw")]) == 0
    assert main([*base, "-o", str(tmp_path / "ema"), "--smooth", "ema:0.3", "--probs"]) == 0
    capsys.readouterr()
    raw = _labels(tmp_path / "raw" / "drive", 8)
    smooth = _labels(tmp_path / "ema" / "drive", 8)

    # The expected labels: the EMA, written out here, of the segmenter's own probabilities.
    seg = Segmenter(W.load(weights))
    state = None
    for i, (_, _, image) in enumerate(decode(clip)):
        p = seg.predict_proba(image)
        state = p if state is None else 0.3 * p + 0.7 * state
        np.testing.assert_array_equal(smooth[i], state.argmax(0))
        np.testing.assert_array_equal(raw[i], seg.predict(image))
        written = np.load(tmp_path / "ema" / "drive" / f"frame_{i:06d}_probs.npy")
        np.testing.assert_allclose(written.astype(np.float32), state, atol=2e-3)
    np.testing.assert_array_equal(smooth[0], raw[0])
    assert any(not np.array_equal(a, b) for a, b in zip(smooth, raw))  # it did something


def test_bad_smooth_values_are_one_line(tmp_path: Path, weights: Path, capsys) -> None:
    clip = write_video(tmp_path / "clip.mp4", street_frames(2))
    base = ["predict", str(weights), str(clip), "-o", str(tmp_path / "o"), "--smooth"]
    for value, says in (
        ("ema:2", "--smooth: alpha (the new frame's weight) must be in (0, 1], got 2"),
        ("median", "--smooth: unknown smoothing 'median': choose off, ema, gated, flow"),
        ("ema:x", "--smooth: expected METHOD[:ALPHA] with a number ALPHA, got 'ema:x'"),
    ):
        assert main([*base, value]) == 2
        assert capsys.readouterr().err.splitlines() == [f"atrous predict: error: {says}"]
    assert not (tmp_path / "o").exists()


def test_help_states_the_default_alphas() -> None:
    predict = build_parser()._subparsers._group_actions[0].choices["predict"]
    (action,) = [a for a in predict._actions if "--smooth" in a.option_strings]
    said = ", ".join(f"{m} {cls.default_alpha:g}" for m, cls in SMOOTHING_METHODS.items())
    assert f"default: {said})" in action.help
