"""``atrous serve``'s app on a real uvicorn server on a free local port: every endpoint, every
output format against the Segmenter, every bad input, batching and the full queue."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import threading

import httpx
import numpy as np
import pytest
from bad_inputs import _bomb_png
from conftest import NAMES, PALETTE, encode, rgb, running
from PIL import Image

import atrous.weights as W
from atrous.inference import Segmenter
from atrous.serve import ServerSettings, create_app
from atrous.serve.encode import coco_rle_decode, overlay_jpeg


@pytest.fixture(scope="module")
def model(weights_file):
    return W.load(weights_file)


@pytest.fixture(scope="module")
def server(model):
    settings = ServerSettings(
        max_batch=4, max_wait_ms=5, warmup_size=(64, 64), max_upload_mb=0.5, max_pixels=2_000_000
    )
    with running(create_app(model, settings)) as url:
        yield url


def _reference(model, image, **kw):
    return Segmenter.from_model(model, **kw).predict(image)


def test_health_ready_card_metrics_and_page(server, model) -> None:
    assert httpx.get(server + "/healthz").json() == {"status": "alive"}
    ready = httpx.get(server + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    card = httpx.get(server + "/v1/model").json()
    assert card["arch"] == "deeplabv3plus_mobilenetv2" and card["num_classes"] == 5
    assert card["class_names"] == NAMES and card["palette"] == PALETTE
    assert card["preprocessing"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert card["weights"] == "tiny.safetensors" and card["ready"] is True
    assert card["limits"]["formats"] == ["JPEG", "PNG", "WebP"]
    page = httpx.get(server + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="overlay"' in page.text and "http" not in page.text.split("<script>")[1][:0]
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    metrics = httpx.get(server + "/metrics")
    assert metrics.status_code == 200
    assert "atrous_request_latency_seconds_bucket" in metrics.text
    assert "atrous_queue_depth" in metrics.text and "atrous_batch_size_bucket" in metrics.text
    missing = httpx.get(server + "/v2/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_curl_data_binary_is_read_by_its_bytes(server, model) -> None:
    # curl --data-binary @photo.png sends application/x-www-form-urlencoded
    image = rgb(8, 50, 60)
    r = httpx.post(
        server + "/v1/segment",
        content=encode(image),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), _reference(model, image))


def test_png_labels_equal_the_segmenter(server, model) -> None:
    image = rgb(1, 90, 120)
    r = httpx.post(
        server + "/v1/segment", content=encode(image), headers={"content-type": "image/png"}
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    got = Image.open(io.BytesIO(r.content))
    assert got.mode == "L"
    assert np.array_equal(np.asarray(got), _reference(model, image))
    assert float(r.headers["x-inference-seconds"]) > 0


def test_raw_labels_and_the_timing_headers(server, model) -> None:
    image = rgb(3, 70, 90)
    r = httpx.post(server + "/v1/segment?format=raw", content=encode(image))
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert r.headers["x-label-shape"] == "70,90" and r.headers["x-label-dtype"] == "uint8"
    got = np.frombuffer(r.content, np.uint8).reshape(70, 90)
    assert np.array_equal(got, _reference(model, image))
    timing = dict(part.split(";dur=") for part in r.headers["server-timing"].split(", "))
    assert list(timing) == ["read", "decode", "queue", "model", "encode"]
    assert all(float(v) >= 0 for v in timing.values()) and float(timing["model"]) > 0
    assert r.headers["x-batch-size"] == "1"


def test_the_readers_warnings_reach_the_client(server, model) -> None:
    # 12-bit data in a 16-bit PNG reads dark: the reader says so, in a header and in JSON
    dark = (rgb(4, 40, 50)[..., 0].astype(np.uint16) * 16).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(dark).save(buf, format="PNG")
    r = httpx.post(server + "/v1/segment?format=json", content=buf.getvalue())
    assert r.status_code == 200, r.text
    assert "16-bit image with values only up to" in r.headers["x-image-warnings"]
    assert "reads dark" in r.json()["warnings"][0]
    plain = httpx.post(server + "/v1/segment?format=json", content=encode(rgb(4, 40, 50)))
    assert "x-image-warnings" not in plain.headers and plain.json()["warnings"] == []


def test_multipart_with_options_json_masks_and_overlay(server, model) -> None:
    image = rgb(2, 75, 101)
    ref = _reference(model, image, scales=(0.5, 1.0), flip=True)
    files = {"image": ("photo.jpg", encode(image, "PNG"), "image/png")}
    r = httpx.post(
        server + "/v1/segment?format=json&masks=png",
        files=files,
        data={"scales": "0.5,1", "flip": "true"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["height"], body["width"]) == (75, 101)
    assert body["options"] == {"scales": [0.5, 1.0], "flip": True, "crf": False}
    counts = np.bincount(ref.ravel(), minlength=5)
    assert {c["name"]: c["pixels"] for c in body["classes"]} == {
        NAMES[k]: int(n) for k, n in enumerate(counts) if n
    }
    assert sum(c["fraction"] for c in body["classes"]) == pytest.approx(1.0, abs=1e-4)
    for seg in body["segments"]:
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(seg["mask"]))))
        assert np.array_equal(mask > 0, ref == seg["id"])
    r = httpx.post(
        server + "/v1/segment",
        params={"format": "json", "masks": "rle", "scales": "0.5,1", "flip": "1"},
        content=encode(image),
    )
    for seg in r.json()["segments"]:
        assert np.array_equal(coco_rle_decode(seg["rle"]).astype(bool), ref == seg["id"])
    r = httpx.post(server + "/v1/segment?format=overlay", content=encode(image))
    assert r.headers["content-type"] == "image/jpeg"
    expected = overlay_jpeg(image, _reference(model, image), np.asarray(PALETTE, np.uint8))
    assert r.content == expected


def test_exif_orientation_is_applied_like_predict(server, model) -> None:
    image = rgb(3, 40, 70)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=95, exif=exif)
    r = httpx.post(server + "/v1/segment", content=buf.getvalue())
    labels = np.asarray(Image.open(io.BytesIO(r.content)))
    assert labels.shape == (70, 40)  # as displayed


def _bomb() -> bytes:
    return _bomb_png(3000, 3000)  # a header that declares 9 MP, a few bytes of data


@pytest.mark.parametrize(
    ("case", "status", "code", "message"),
    [
        ("empty", 400, "empty_upload", "empty"),
        ("text", 400, "not_an_image", "not an image"),
        ("truncated", 400, "unreadable_image", "truncated"),
        ("gif", 415, "unsupported_image_type", "GIF images are not supported"),
        ("content_type", 400, "not_an_image", "not an image"),
        ("curl_text", 400, "not_an_image", "not an image"),
        ("too_large", 413, "upload_too_large", "over the limit of 0.5 MB"),
        ("bomb", 413, "too_many_pixels", "9000000 pixels (3000x3000)"),
        ("option", 422, "bad_option", "unknown option 'colour'"),
        ("scale", 422, "bad_option", "each scale must be in"),
        ("crf", 422, "bad_option", "does not run the dense CRF"),
        ("no_file", 400, "no_file", "no file field"),
    ],
)
def test_bad_requests_get_a_clear_4xx(server, case, status, code, message) -> None:
    png = encode(rgb(4, 40, 40))
    kw: dict = {"content": png}
    params: dict = {}
    if case == "empty":
        kw = {"content": b""}
    elif case == "text":
        kw = {"content": b"hello, this is not an image at all"}
    elif case == "truncated":
        kw = {"content": encode(rgb(4, 200, 200), "JPEG")[:600]}
    elif case == "gif":
        kw = {"content": encode(rgb(4, 40, 40), "GIF")}
    elif case == "content_type":
        kw = {"content": b'{"image": "x"}', "headers": {"content-type": "application/json"}}
    elif case == "curl_text":  # curl --data-binary @notes.txt: the bytes are the problem
        form = "application/x-www-form-urlencoded"
        kw = {"content": b"my notes\nline two\n", "headers": {"content-type": form}}
    elif case == "too_large":
        kw = {"content": np.random.default_rng(0).bytes(600_000)}
    elif case == "bomb":
        kw = {"content": _bomb()}
    elif case == "option":
        params = {"colour": "red"}
    elif case == "scale":
        params = {"scales": "0.5,9"}
    elif case == "crf":
        params = {"crf": "true"}
    elif case == "no_file":
        form = b'--b\r\nContent-Disposition: form-data; name="format"\r\n\r\npng\r\n--b--\r\n'
        kw = {"content": form, "headers": {"content-type": "multipart/form-data; boundary=b"}}
    r = httpx.post(server + "/v1/segment", params=params, **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["status"] == status and err["code"] == code
    assert message in err["message"] and "Traceback" not in r.text


def test_concurrent_requests_share_a_batch_and_a_bad_one_does_not_hurt(model) -> None:
    settings = ServerSettings(max_batch=4, max_wait_ms=400, warmup_size=(64, 64))
    app = create_app(model, settings)
    images = [rgb(10 + i, 64, 96) for i in range(2)]
    with running(app) as url:

        def post(data, slow=False):
            def body():  # a slow upload: still arriving when the other image is ready
                yield data[: len(data) // 2]
                threading.Event().wait(0.3)
                yield data[len(data) // 2 :]

            return httpx.post(url + "/v1/segment", content=body() if slow else data, timeout=30)

        batcher = app.state.service.batcher
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futs = [pool.submit(post, encode(images[0]), slow=True)]
            while batcher.incoming == 0:  # the slow upload is arriving
                threading.Event().wait(0.005)
            futs.append(pool.submit(post, encode(images[1])))
            futs.append(pool.submit(post, b"not an image"))
            replies = [f.result() for f in futs]
        metrics = httpx.get(url + "/metrics").text
    assert [r.status_code for r in replies] == [200, 200, 400]
    for image, r in zip(images, replies):
        assert np.array_equal(
            np.asarray(Image.open(io.BytesIO(r.content))), _reference(model, image)
        )
    line = next(ln for ln in metrics.splitlines() if ln.startswith("atrous_batch_size_count"))
    assert float(line.split()[-1]) == 1.0  # both images in one batch
    assert 'atrous_batch_size_bucket{le="1.0"} 0.0' in metrics


def test_a_full_queue_answers_503_with_retry_after(model) -> None:
    settings = ServerSettings(max_batch=1, max_wait_ms=0, max_queue=1, warmup_size=(64, 64))
    app = create_app(model, settings)
    service = app.state.service
    release = threading.Event()
    real = service.batcher.run_batch

    def slow(jobs):
        release.wait(20)
        return real(jobs)

    with running(app) as url:
        service.batcher.run_batch = slow
        data = encode(rgb(5, 48, 48))
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(httpx.post, url + "/v1/segment", content=data, timeout=30)
            while service.batcher.running == 0:
                threading.Event().wait(0.01)
            second = pool.submit(httpx.post, url + "/v1/segment", content=data, timeout=30)
            while service.batcher.depth == 0:
                threading.Event().wait(0.01)
            third = httpx.post(url + "/v1/segment", content=data, timeout=30)
            assert httpx.get(url + "/healthz", timeout=5).status_code == 200  # still answers
            release.set()
            assert first.result().status_code == 200 and second.result().status_code == 200
        metrics = httpx.get(url + "/metrics").text
    assert third.status_code == 503 and third.headers["retry-after"] == "1"
    assert third.json()["error"]["code"] == "busy"
    assert "atrous_rejected_total 1.0" in metrics


def test_readyz_waits_for_the_warm_up(model) -> None:
    settings = ServerSettings(warmup_size=(64, 64))
    app = create_app(model, settings)
    service = app.state.service
    gate = threading.Event()
    real = service.warm_up

    def slow_warm_up():
        gate.wait(20)
        real()

    service.warm_up = slow_warm_up
    with running(app, ready=False) as url:
        assert httpx.get(url + "/healthz").status_code == 200
        r = httpx.get(url + "/readyz")
        assert r.status_code == 503 and r.json()["status"] == "warming up"
        early = httpx.post(url + "/v1/segment", content=encode(rgb(6, 40, 40)))
        assert early.status_code == 503 and early.json()["error"]["code"] == "not_ready"
        gate.set()
        for _ in range(200):
            if httpx.get(url + "/readyz").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert json.loads(httpx.get(url + "/readyz").text)["status"] == "ready"


def test_an_exported_onnx_model_is_served_like_weights(weights_file, tmp_path) -> None:
    from atrous.export import export

    export(W.load(weights_file), tmp_path / "tiny.onnx")
    exported = W.load(tmp_path / "tiny.onnx")
    image = rgb(12, 70, 90)
    with running(create_app(exported, ServerSettings(warmup_size=(64, 64)))) as url:
        card = httpx.get(url + "/v1/model").json()
        r = httpx.post(url + "/v1/segment", content=encode(image))
    assert card["source"] == "exported" and card["class_names"] == NAMES
    assert r.status_code == 200
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(r.content))), _reference(exported, image)
    )


def test_memory_past_the_limit_is_trimmed_after_a_batch(model) -> None:
    from atrous.serve.memory import trim

    if not trim():
        pytest.skip("needs glibc's malloc_trim")
    app = create_app(model, ServerSettings(warmup_size=(64, 64), memory_limit_mb=1))
    with running(app) as url:
        card = httpx.get(url + "/v1/model").json()
        r = httpx.post(url + "/v1/segment", content=encode(rgb(6, 40, 40)))
        metrics = httpx.get(url + "/metrics").text
    assert r.status_code == 200 and card["memory_limit_mb"] == 1
    assert "atrous_memory_trims_total 1.0" in metrics
    rss = next(ln for ln in metrics.splitlines() if ln.startswith("atrous_resident_memory_bytes"))
    assert float(rss.split()[-1]) > 2**20
