"""Request options: defaults from the server, validation with messages naming the option."""

from __future__ import annotations

import pytest

from atrous.serve.options import OptionError, ServerSettings, parse_options


def test_defaults_come_from_the_server() -> None:
    s = ServerSettings(scales=(0.75, 1.0), flip=True)
    o = parse_options({}, s)
    assert (o.scales, o.flip, o.crf, o.format, o.masks) == ((0.75, 1.0), True, False, "png", "none")
    o = parse_options({"scales": "0.5,1", "flip": "false", "format": "JSON", "masks": "rle"}, s)
    assert (o.scales, o.flip, o.format, o.masks) == ((0.5, 1.0), False, "json", "rle")
    assert o.inference_key == ((0.5, 1.0), False, False)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"colour": "1"}, r"unknown option 'colour'"),
        ({"format": "tiff"}, r"'format' must be one of png, raw, overlay, json"),
        ({"scales": "a,b"}, r"'scales' must be comma-separated numbers"),
        ({"scales": "8"}, r"each scale must be in \[0.25, 2.0\], got 8.0"),
        ({"scales": "1,1,1,1,1,1,1"}, r"takes 1 to 6 numbers"),
        ({"flip": "maybe"}, r"'flip' must be true or false"),
        ({"crf": "1"}, r"does not run the dense CRF \(start it with --crf or --allow-crf\)"),
        ({"masks": "png"}, r"'masks' goes with format=json"),
    ],
)
def test_bad_options_are_named(query, message) -> None:
    with pytest.raises(OptionError, match=message):
        parse_options(query, ServerSettings())


def test_crf_only_where_the_server_allows_it() -> None:
    assert parse_options({"crf": "true"}, ServerSettings(allow_crf=True)).crf
    assert parse_options({}, ServerSettings(crf=True)).crf
    assert not parse_options({"crf": "off"}, ServerSettings(crf=True)).crf


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        ServerSettings(max_batch=0)
    assert ServerSettings(max_upload_mb=1.5).max_upload_bytes == int(1.5 * 2**20)
