"""The web page in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium; nothing downloaded) loads the page, uploads an image,
waits for the overlay, reads the legend against the model's classes and the segmentation,
hovers a pixel, checks that an error from the server is shown, and saves a screenshot to
``tests/artifacts/serve_page.png``. Without the browser the test is skipped with a reason that
says what to install."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import NAMES, chromium_driver, encode, rgb, running

import atrous.weights as W
from atrous.inference import Segmenter
from atrous.serve import ServerSettings, create_app

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def _open_page(driver, url: str, classes: str):
    """Load the page and wait for the model card's class count; returns the waiter."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    wait = WebDriverWait(driver, 60)
    wait.until(EC.text_to_be_present_in_element((By.ID, "model-name"), classes))
    return wait


def _upload(driver, wait, photo: Path) -> None:
    """Choose ``photo`` and wait until the page has segmented it (or says why not)."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "file").send_keys(str(photo))
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state"))
    assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done", (
        driver.find_element(By.ID, "error").text
    )


def _text(element, class_name: str) -> str:
    """The text of ``element``'s child of class ``class_name``."""
    from selenium.webdriver.common.by import By

    return element.find_element(By.CLASS_NAME, class_name).text


def test_page_uploads_an_image_and_shows_overlay_legend_and_hover(weights_file, tmp_path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    model = W.load(weights_file)
    image = rgb(21, 180, 240)
    photo = tmp_path / "street.png"
    photo.write_bytes(encode(image))
    expected = Segmenter.from_model(model).predict(image)
    present = {
        NAMES[k]: n / expected.size
        for k, n in enumerate(np.bincount(expected.ravel(), minlength=5))
        if n
    }
    driver = chromium_driver()
    try:
        with running(create_app(model, ServerSettings(warmup_size=(64, 64)))) as url:
            wait = _open_page(driver, url, "5 classes")
            card = driver.find_element(By.ID, "card-list").text
            assert "deeplabv3plus_mobilenetv2" in card and "tiny.safetensors" in card
            _upload(driver, wait, photo)
            canvas = driver.find_element(By.ID, "overlay")
            assert (canvas.get_attribute("width"), canvas.get_attribute("height")) == ("240", "180")
            rows = driver.find_elements(By.CSS_SELECTOR, "#legend li")
            legend = {_text(r, "name"): float(_text(r, "frac").rstrip("%")) / 100 for r in rows}
            assert set(legend) == set(present)
            for name, frac in present.items():
                assert legend[name] == pytest.approx(frac, abs=0.0006)
            # the labels the page decoded are the server's (and the Segmenter's)
            decoded = driver.execute_script("return Array.from(state.labels)")
            assert np.array_equal(np.asarray(decoded, np.uint8).reshape(180, 240), expected)
            # hover the centre: the caption names the class there
            ActionChains(driver).move_to_element(canvas).perform()
            wait.until(lambda d: d.find_element(By.ID, "hover").text)
            box = canvas.rect
            x = int((box["width"] // 2) * 240 / box["width"])
            y = int((box["height"] // 2) * 180 / box["height"])
            hover = driver.find_element(By.ID, "hover").text
            assert NAMES[int(expected[y, x])] in hover
            assert driver.find_element(By.ID, "download-mask").is_enabled()
            ARTIFACTS.mkdir(exist_ok=True)
            driver.save_screenshot(str(ARTIFACTS / "serve_page.png"))
            # an error from the server is shown as its text
            bad = tmp_path / "broken.png"
            bad.write_bytes(encode(image)[:300])
            driver.find_element(By.ID, "file").send_keys(str(bad))
            wait.until(
                lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "error"
            )
            assert "truncated" in driver.find_element(By.ID, "error").text
    finally:
        driver.quit()


def test_page_reads_labels_above_255_exactly(tmp_path) -> None:
    """More than 256 classes: the page reads the raw 16-bit labels (a canvas holds 8 bits a
    channel), so hover and legend name classes 256 and up."""
    import torch
    from selenium.webdriver.common.by import By

    import atrous.models as M

    torch.manual_seed(1)
    model = M.build("deeplabv3plus_mobilenetv2", num_classes=300, width_mult=0.25).eval()
    with torch.no_grad():
        model.head.classifier.weight.mul_(50.0)
        model.head.classifier.bias[:256] -= 1e3  # every pixel's class is 256 or above
    model.metadata.update(class_names=[f"c{k}" for k in range(300)])
    image = rgb(5, 96, 128)
    photo = tmp_path / "wide.png"
    photo.write_bytes(encode(image))
    expected = Segmenter.from_model(model).predict(image)
    assert expected.min() >= 256 and len(np.unique(expected)) > 1
    driver = chromium_driver()
    try:
        with running(create_app(model, ServerSettings(warmup_size=(64, 64)))) as url:
            wait = _open_page(driver, url, "300 classes")
            _upload(driver, wait, photo)
            decoded = driver.execute_script("return Array.from(state.labels)")
            assert np.array_equal(np.asarray(decoded).reshape(96, 128), expected)
            names = {_text(r, "name") for r in driver.find_elements(By.CSS_SELECTOR, "#legend li")}
            assert names == {f"c{k}" for k in np.unique(expected)}
    finally:
        driver.quit()
