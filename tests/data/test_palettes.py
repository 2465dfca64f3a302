"""palette_for (a model's or dataset's colours, VOC fallback), colorize and overlay."""

from __future__ import annotations

import numpy as np
import pytest

from atrous.data import colorize, overlay, palette_for
from atrous.data.palettes import VOC_PALETTE, voc_colormap


def test_palette_for_falls_back_to_voc_colours() -> None:
    np.testing.assert_array_equal(palette_for(21), VOC_PALETTE)
    out = palette_for(256)
    assert out.shape == (256, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, voc_colormap(256))


def test_palette_for_takes_the_given_colours_first() -> None:
    given = [(1, 2, 3), (4, 5, 6)]
    out = palette_for(4, given)
    np.testing.assert_array_equal(out[:2], given)
    np.testing.assert_array_equal(out[2:], voc_colormap(4)[2:])  # not covered: VOC
    np.testing.assert_array_equal(palette_for(1, given), [(1, 2, 3)])  # extra rows dropped
    flat = palette_for(2, [1, 2, 3, 4, 5, 6])  # a flat list, as JSON metadata stores it
    np.testing.assert_array_equal(flat, given)
    np.testing.assert_array_equal(palette_for(3, []), voc_colormap(3))


@pytest.mark.parametrize(
    "bad", [[(0, 0, 256)], [(-1, 0, 0)], [1, 2], [(1, 2, 3, 4)], [("a", "b", "c")]]
)
def test_palette_for_rejects_bad_palettes(bad) -> None:
    with pytest.raises(ValueError, match="palette"):
        palette_for(3, bad)
    with pytest.raises(ValueError):
        palette_for(0)


def _image_and_labels() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, (5, 7)).astype(np.uint8)
    labels[0, 0] = 255
    return image, labels


def test_overlay_is_the_rounded_alpha_blend() -> None:
    image, labels = _image_and_labels()
    pal = palette_for(3)
    for alpha in (0.0, 0.3, 0.5, 1.0):
        blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colorize(labels, pal).astype(
            np.float32
        )
        expected = np.clip(blend + 0.5, 0, 255).astype(np.uint8)
        out = overlay(image, labels, pal, alpha)
        assert out.dtype == np.uint8 and out.shape == image.shape
        np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(overlay(image, labels, pal, 0.0), image)
    np.testing.assert_array_equal(overlay(image, labels, pal, 1.0), colorize(labels, pal))


def test_overlay_where_keeps_the_other_pixels() -> None:
    image, labels = _image_and_labels()
    pal = palette_for(3)
    out = overlay(image, labels, pal, 0.55, where=labels > 0)
    keep = labels == 0
    np.testing.assert_array_equal(out[keep], image[keep])
    np.testing.assert_array_equal(out[~keep], overlay(image, labels, pal, 0.55)[~keep])


def test_overlay_checks_its_arguments() -> None:
    image, labels = _image_and_labels()
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, labels, palette_for(3), 1.5)
    with pytest.raises(ValueError, match="HxW"):
        overlay(image, labels[:-1], palette_for(3))
