"""atrous.imageio.read_image on what people have: every pixel mode, 16-bit data, alpha,
animations, decompression bombs and broken files (the policies in the module docstring)."""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import EXPECTED_WARNINGS, READ_SHAPES, png_bytes, write_image_corpus
from PIL import Image

from atrous import imageio
from atrous.imageio import MAX_PIXELS, ImageReadError, ImageReadWarning, read_image

RNG = np.random.default_rng(1)
RGB = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
GREY = RNG.integers(0, 256, (6, 5), dtype=np.uint8)


def _read_quietly(path: Path, **kw: object) -> np.ndarray:
    """read_image, failing on any warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return read_image(path, **kw)


def _to8(x: np.ndarray) -> np.ndarray:
    """The documented 16-to-8-bit scaling: x * 255 / 65535, rounded."""
    return np.round(x.astype(np.float64) * 255 / 65535).astype(np.uint8)


def _grey_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str | None]]:
    folder = tmp_path_factory.mktemp("corpus")
    return folder, write_image_corpus(folder)


def test_corpus_every_file_reads_or_fails_as_declared(
    corpus: tuple[Path, dict[str, str | None]],
) -> None:
    folder, outcome = corpus
    assert set(READ_SHAPES) == {n for n, o in outcome.items() if o is None}
    for name, expected in sorted(outcome.items()):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if expected is None:
                out = read_image(folder / name)
                assert out.dtype == np.uint8 and out.shape == READ_SHAPES[name], name
                assert out.flags.writeable and out.flags.c_contiguous, name
            else:
                with pytest.raises(ImageReadError) as e:
                    read_image(folder / name)
                assert expected in e.value.problem, (name, e.value.problem)
                assert e.value.path == str(folder / name)
        messages = [str(w.message) for w in caught]
        if name in EXPECTED_WARNINGS:
            assert len(messages) == 1, (name, messages)
            assert EXPECTED_WARNINGS[name] in messages[0] and name in messages[0]
            assert caught[0].category is ImageReadWarning
        else:
            assert messages == [], (name, messages)


# 1. 8-bit modes: all to RGB, alpha dropped (the stored colours kept).


def test_grey_and_bilevel_are_repeated_on_three_channels(tmp_path: Path) -> None:
    Image.fromarray(GREY, mode="L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(_read_quietly(tmp_path / "l.png"), _grey_rgb(GREY))
    Image.fromarray(GREY > 100).save(tmp_path / "b.png")
    expected = _grey_rgb(np.where(GREY > 100, 255, 0).astype(np.uint8))
    np.testing.assert_array_equal(_read_quietly(tmp_path / "b.png"), expected)


def test_alpha_is_dropped_and_the_stored_colours_kept(tmp_path: Path) -> None:
    alpha = np.zeros((6, 5), np.uint8)  # fully transparent: still the stored colours
    alpha[0] = 255
    Image.fromarray(np.dstack([RGB, alpha]), mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(_read_quietly(tmp_path / "rgba.png"), RGB)
    Image.fromarray(np.dstack([GREY, alpha]), mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(_read_quietly(tmp_path / "la.png"), _grey_rgb(GREY))


def test_palette_reads_its_colours_with_or_without_transparency(tmp_path: Path) -> None:
    im = Image.fromarray(RGB).quantize(8)
    colours = np.array(im.convert("RGB"))
    im.save(tmp_path / "p.png")
    np.testing.assert_array_equal(_read_quietly(tmp_path / "p.png"), colours)
    im.save(tmp_path / "pt.png", transparency=bytes([0, 128, 255, 0, 0, 0, 0, 0]))
    np.testing.assert_array_equal(_read_quietly(tmp_path / "pt.png"), colours)  # no warning
    im.save(tmp_path / "p1.png", transparency=2)  # one transparent index
    np.testing.assert_array_equal(_read_quietly(tmp_path / "p1.png"), colours)
    im.save(tmp_path / "p.gif", transparency=3)
    np.testing.assert_array_equal(_read_quietly(tmp_path / "p.gif"), colours)


def test_cmyk_and_ycbcr_are_converted_to_rgb(tmp_path: Path) -> None:
    Image.fromarray(RGB).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    with Image.open(tmp_path / "c.jpg") as im:
        assert im.mode == "CMYK"
        expected = np.array(im.convert("RGB"))
    np.testing.assert_array_equal(_read_quietly(tmp_path / "c.jpg"), expected)
    Image.fromarray(RGB).convert("YCbCr").save(tmp_path / "y.tif")
    out = _read_quietly(tmp_path / "y.tif")
    assert out.shape == RGB.shape
    assert np.abs(out.astype(int) - RGB).max() <= 3  # YCbCr round trip


def test_rgb_reads_exactly(tmp_path: Path) -> None:
    Image.fromarray(RGB).save(tmp_path / "rgb.png")
    out = _read_quietly(tmp_path / "rgb.png")
    np.testing.assert_array_equal(out, RGB)
    assert out.flags.writeable and out.flags.c_contiguous


# 2. 16-bit data: scaled by the full range, warned when dark; 32-bit and float refused.

RAMP16 = np.array([[0, 1, 128, 129, 257, 385], [386, 4095, 4096, 32767, 65407, 65535]])


@pytest.mark.parametrize(
    ("mode", "dtype", "fmt"),
    [
        ("I;16", "<u2", "PNG"),
        ("I;16", "<u2", "TIFF"),
        ("I;16B", ">u2", "TIFF"),
        ("I;16L", "<u2", "TIFF"),
        ("I;16B", ">u2", "PNG"),
    ],
)
def test_16_bit_grey_is_scaled_by_the_full_range(
    tmp_path: Path, mode: str, dtype: str, fmt: str
) -> None:
    h, w = RAMP16.shape
    p = tmp_path / f"g16.{fmt.lower()}"
    Image.frombytes(mode, (w, h), RAMP16.astype(dtype).tobytes()).save(p, format=fmt)
    with Image.open(p) as im:
        assert im.mode.startswith("I;16")
    out = _read_quietly(p)
    np.testing.assert_array_equal(out, _grey_rgb(_to8(RAMP16)))
    assert out[1, 5, 0] == 255 and out[1, 1, 0] == 16 and out[0, 3, 0] == 1


def test_32_bit_int_image_within_16_bits_reads_as_16_bit(tmp_path: Path) -> None:
    """Mode I (what older Pillow gave for 16-bit PNGs, and 32-bit TIFFs of small values)."""
    Image.fromarray(RAMP16.astype(np.int32)).save(tmp_path / "i.tif")
    with Image.open(tmp_path / "i.tif") as im:
        assert im.mode == "I"
    np.testing.assert_array_equal(_read_quietly(tmp_path / "i.tif"), _grey_rgb(_to8(RAMP16)))


def test_dark_16_bit_image_warns_once_naming_the_file(tmp_path: Path) -> None:
    twelve_bit = (RAMP16 >> 4).astype(np.uint16)  # max 4095 < 65536 / 16
    p = tmp_path / "micro.png"
    Image.fromarray(twelve_bit).save(p)
    with pytest.warns(ImageReadWarning, match=r"micro\.png: .*only up to 4095") as rec:
        out = read_image(p)
    assert len(rec) == 1
    np.testing.assert_array_equal(out, _grey_rgb(_to8(twelve_bit)))  # the same scaling
    Image.fromarray(np.full((2, 2), 4096, np.uint16)).save(tmp_path / "ok.png")
    assert _read_quietly(tmp_path / "ok.png")[0, 0, 0] == 16  # 1/16 of the range: no warning


def test_16_bit_colour_png_keeps_the_high_byte(tmp_path: Path) -> None:
    """Pillow decodes 48- and 64-bit PNGs to their high byte: within 1 of the scaling."""
    rgb16 = RNG.integers(0, 65536, (4, 5, 3), dtype=np.uint16)
    rgb16[0, 0] = (0, 65535, 255)
    (tmp_path / "rgb48.png").write_bytes(png_bytes(rgb16, color_type=2))
    out = _read_quietly(tmp_path / "rgb48.png")
    np.testing.assert_array_equal(out, (rgb16 >> 8).astype(np.uint8))
    assert np.abs(out.astype(int) - _to8(rgb16)).max() <= 1
    rgba16 = np.dstack([rgb16, np.zeros((4, 5), np.uint16)])
    (tmp_path / "rgba64.png").write_bytes(png_bytes(rgba16, color_type=6))
    np.testing.assert_array_equal(_read_quietly(tmp_path / "rgba64.png"), out)


def test_dark_16_bit_colour_png_warns(tmp_path: Path) -> None:
    rgb16 = RNG.integers(0, 4096, (4, 5, 3), dtype=np.uint16)
    rgb16[0, 0, 0] = 4095
    (tmp_path / "dark48.png").write_bytes(png_bytes(rgb16, color_type=2))
    with pytest.warns(ImageReadWarning, match=r"dark48\.png: .*16-bit"):
        read_image(tmp_path / "dark48.png")
    rgb16[0, 0, 0] = 4096
    (tmp_path / "bright48.png").write_bytes(png_bytes(rgb16, color_type=2))
    _read_quietly(tmp_path / "bright48.png")


def test_float_and_wide_int_images_are_refused_with_advice(tmp_path: Path) -> None:
    Image.fromarray(RNG.random((3, 4), dtype=np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ImageReadError, match="unsupported bit depth") as e:
        read_image(tmp_path / "f.tif")
    assert "floating-point" in e.value.problem and "16-bit PNG" in e.value.problem
    Image.fromarray(np.array([[0, 70000]], np.int32)).save(tmp_path / "i.tif")
    with pytest.raises(ImageReadError, match="unsupported bit depth") as e:
        read_image(tmp_path / "i.tif")
    assert "32-bit" in e.value.problem and "16-bit PNG" in e.value.problem
    Image.fromarray(np.array([[-1, 5]], np.int32)).save(tmp_path / "neg.tif")
    with pytest.raises(ImageReadError, match="unsupported bit depth"):
        read_image(tmp_path / "neg.tif")


# 4. Several frames: the first, with a warning.


@pytest.mark.parametrize("suffix", [".gif", ".png", ".tif"])
def test_multi_frame_file_reads_its_first_frame_and_warns(tmp_path: Path, suffix: str) -> None:
    frames = [Image.fromarray(np.full((4, 6, 3), v, np.uint8)) for v in (40, 120, 200)]
    p = tmp_path / f"anim{suffix}"
    frames[0].save(p, save_all=True, append_images=frames[1:])
    with pytest.warns(ImageReadWarning, match=rf"anim\{suffix}: 3 frames.*first") as rec:
        out = read_image(p)
    assert len(rec) == 1
    assert out.shape == (4, 6, 3) and (out == 40).all()


# 5. Decompression bombs: our header check, and PIL's own limit never leaks.


def _bomb(path: Path, width: int, height: int) -> Path:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunks = [(b"IHDR", ihdr), (b"IDAT", zlib.compress(b"\0" * (width + 1))), (b"IEND", b"")]
    body = b"".join(
        struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d) & 0xFFFFFFFF)
        for k, d in chunks
    )
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_max_pixels_is_documented_and_above_big_aerial_tiles() -> None:
    assert 150_000_000 <= MAX_PIXELS <= 250_000_000
    assert "MAX_PIXELS" in (imageio.__doc__ or "")


@pytest.mark.parametrize("pil_limit", ["default", None, 10])
def test_bomb_is_refused_from_its_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pil_limit: object
) -> None:
    if pil_limit != "default":
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pil_limit)
    p = _bomb(tmp_path / "bomb.png", 20_000, 15_000)  # 300 MB if it were decoded
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageReadError) as e:
            read_image(p)
    assert e.value.problem == (
        f"300000000 pixels (20000x15000), more than the limit {MAX_PIXELS}: "
        "a decompression bomb; if the image is real, raise the limit (max_pixels; CLI: "
        "--max-pixels)"
    )
    assert (pil_limit if pil_limit != "default" else 89478485) == Image.MAX_IMAGE_PIXELS


def test_our_limit_governs_not_pils(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(RGB).save(tmp_path / "rgb.png")  # 30 pixels
    for pil_limit in (20, 10, 1):  # PIL would warn (> limit), or raise (> 2 x limit)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pil_limit)
        np.testing.assert_array_equal(_read_quietly(tmp_path / "rgb.png"), RGB)
        assert pil_limit == Image.MAX_IMAGE_PIXELS  # restored
    np.testing.assert_array_equal(_read_quietly(tmp_path / "rgb.png", max_pixels=30), RGB)
    with pytest.raises(ImageReadError, match=r"30 pixels \(5x6\), more than the limit 29"):
        read_image(tmp_path / "rgb.png", max_pixels=29)


def test_bomb_check_runs_before_decoding(tmp_path: Path) -> None:
    """A header of 20000x10000 (200M pixels) and a 1-row body: refused without decoding."""
    p = _bomb(tmp_path / "wide.png", 20_000, 10_001)
    with pytest.raises(ImageReadError, match="decompression bomb"):
        read_image(p)


# 6. Broken files.


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="not found") as e:
        read_image(tmp_path / "missing.jpg")
    assert "check the path" in e.value.problem
    (tmp_path / "scans.png").mkdir()
    with pytest.raises(ImageReadError, match="is a directory"):
        read_image(tmp_path / "scans.png")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty file \(0 bytes\)"):
        read_image(tmp_path / "e.jpg")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.03])
def test_truncated_files_say_truncated(tmp_path: Path, fmt: str, fraction: float) -> None:
    big = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = tmp_path / f"full.{fmt.lower()}"
    Image.fromarray(big).save(full, format=fmt)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(data[: max(int(len(data) * fraction), 12)])
    with pytest.raises(ImageReadError, match="truncated") as e:
        read_image(cut)
    assert "copy" in e.value.problem  # what to do


def test_text_file_named_png_is_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "labels.png").write_text("cat 1\ndog 2\n")
    with pytest.raises(ImageReadError, match="not an image") as e:
        read_image(tmp_path / "labels.png")
    assert "PNG" in e.value.problem  # the formats it can read


def test_unreadable_file_says_permission_denied(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: every file is readable, so no permission error")
    p = tmp_path / "secret.png"
    Image.fromarray(RGB).save(p)
    p.chmod(0)
    try:
        with pytest.raises(ImageReadError, match="permission denied"):
            read_image(p)
    finally:
        p.chmod(0o644)


def test_pil_errors_are_all_translated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A permission error (simulated: tests run as root) becomes an ImageReadError."""

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Image, "open", denied)
    with pytest.raises(ImageReadError, match="permission denied") as e:
        read_image(tmp_path / "x.png")
    assert "readable" in e.value.problem


# 7. Tiny images read fine.


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (3, 2), (1, 7)])
def test_tiny_images_read(tmp_path: Path, shape: tuple[int, int]) -> None:
    img = RNG.integers(0, 256, (*shape, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "t.png")
    np.testing.assert_array_equal(_read_quietly(tmp_path / "t.png"), img)


def test_signature_is_small() -> None:
    import inspect

    params = inspect.signature(read_image).parameters
    assert list(params) == ["path", "max_pixels", "on_warning"]
    assert params["max_pixels"].default == MAX_PIXELS and params["on_warning"].default is None


def test_on_warning_collects_the_warnings_instead_of_warning(tmp_path) -> None:
    # the thread-safe way (a server's decode threads): no process-wide warning filter
    path = tmp_path / "dark12.png"
    Image.fromarray(np.full((8, 8), 4095, np.uint16)).save(path)
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would raise
        read_image(path, on_warning=notes.append)
    assert len(notes) == 1 and "dark12.png: 16-bit image with values only up to 4095" in notes[0]
