"""palette_for (a model's or dataset's colours, VOC fallback), colorize, overlay and the
legend drawn on video overlays."""

from __future__ import annotations

import numpy as np
import pytest

from atrous.data import colorize, overlay, palette_for
from atrous.data.palettes import VOC_PALETTE, draw_legend, voc_colormap


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


def test_draw_legend_names_the_colours_in_a_corner() -> None:
    image = np.full((120, 160, 3), 200, np.uint8)
    colours = [(250, 0, 0), (0, 250, 0)]
    drawn = draw_legend(image, [("road", colours[0]), ("sky", colours[1])], size=10)
    assert drawn.shape == image.shape and drawn is not image and (image == 200).all()
    changed = (drawn != image).any(2)
    rows, cols = changed.any(1).nonzero()[0], changed.any(0).nonzero()[0]
    assert rows.max() < 40 and cols.max() < 80  # a box in the top-left corner, the rest kept
    assert (drawn[rows.max() + 1 :] == 200).all() and (drawn[:, cols.max() + 1 :] == 200).all()
    # Each row's swatch (inside its white outline) is its colour, one under the other.
    for k, colour in enumerate(colours):
        y = 2 + k * 12 + 5  # pad 2, rows of 10 + 2 pixels, the swatch's middle
        assert tuple(drawn[y, 6]) == colour
    # Too many classes for the height: the last row says how many more there are.
    many = draw_legend(image[:40], [(f"c{k}", (k, k, k)) for k in range(10)], size=10)
    assert tuple(many[2 + 12 + 5, 6]) == (1, 1, 1)  # the second class's swatch
    assert tuple(many[2 + 24 + 5, 6]) == (80, 80, 80)  # "+8 more": text on the box, no swatch
    assert many[2 + 24 : 2 + 24 + 10, 14:30].max() > 150  # white text on the box
    assert draw_legend(image, []).tobytes() == image.tobytes()
