"""The page's live camera in a real browser: headless Chromium with its fake camera (a moving
test pattern, permission granted by the fake prompt) clicks Camera, waits until the overlay of
several answered frames is drawn over the video in the palette's colours and the page shows a
frames/s figure above 0, saves ``tests/artifacts/serve_camera.png``, stops, and shows a denied
permission as one line in the error area. Skipped, saying what to install, without Chromium."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import PALETTE, chromium_driver, running

import atrous.weights as W
from atrous.serve import ServerSettings, create_app

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
FAKE_CAMERA = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")

# The overlay as drawn: its size, alpha, the labels the page holds, and the colour of every
# 97th pixel (RGBA) beside its label.
_READ_OVERLAY = """
const c = document.getElementById("camera-overlay");
const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
const samples = [];
for (let i = 0; i < c.width * c.height; i += 97)
  samples.push([state.labels[i], d[4 * i], d[4 * i + 1], d[4 * i + 2], d[4 * i + 3]]);
return { width: c.width, height: c.height, labels: state.labels.length, samples };
"""


def test_the_camera_streams_frames_draws_the_overlay_and_stops(weights_file) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    model = W.load(weights_file)
    driver = chromium_driver(*FAKE_CAMERA)
    try:
        with running(create_app(model, ServerSettings(warmup_size=(64, 64)))) as url:
            driver.get(url + "/")
            wait = WebDriverWait(driver, 60)
            wait.until(EC.text_to_be_present_in_element((By.ID, "model-name"), "5 classes"))
            driver.find_element(By.ID, "camera-start").click()
            stats = driver.find_element(By.ID, "camera-stats")

            def streaming(d) -> bool:
                state = d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
                assert state != "error", d.find_element(By.ID, "error").text
                answered = int(stats.get_attribute("data-answered") or 0)
                return answered >= 5 and float(stats.get_attribute("data-fps") or 0) > 0

            wait.until(streaming)
            assert "frames/s" in stats.text and "ms round trip" in stats.text
            assert float(stats.get_attribute("data-latency")) > 0
            drawn = driver.execute_script(_READ_OVERLAY)
            # the fake camera's 640x480, sent at the page's 480 pixels on the long side
            assert (drawn["width"], drawn["height"]) == (480, 360)
            assert drawn["labels"] == 480 * 360
            samples = np.asarray(drawn["samples"], dtype=np.int64)
            assert samples[:, 0].max() < len(PALETTE)
            alpha = round(255 * 0.55)  # the opacity slider's default
            assert np.all(np.abs(samples[:, 4] - alpha) <= 1)
            colours = np.asarray(PALETTE)[samples[:, 0]]
            assert np.all(np.abs(samples[:, 1:4] - colours) <= 3)
            assert driver.find_elements(By.CSS_SELECTOR, "#legend li")
            assert not driver.find_element(By.ID, "views").is_displayed()  # the still views
            ARTIFACTS.mkdir(exist_ok=True)
            driver.save_screenshot(str(ARTIFACTS / "serve_camera.png"))

            driver.find_element(By.ID, "camera-stop").click()
            wait.until(EC.text_to_be_present_in_element((By.ID, "status-text"), "Camera stopped"))
            assert "frames answered" in driver.find_element(By.ID, "status-text").text
            assert driver.execute_script(
                "return document.getElementById('camera-video').srcObject === null"
            )
            assert driver.find_element(By.ID, "camera-start").is_enabled()
            assert not driver.find_element(By.ID, "error").is_displayed()
            assert driver.find_element(By.ID, "views").is_displayed()
            assert not driver.find_element(By.ID, "camera-view").is_displayed()

            # a denied permission is one line in the error area
            driver.execute_script(
                "navigator.mediaDevices.getUserMedia = () => Promise.reject("
                "new DOMException('Permission denied', 'NotAllowedError'))"
            )
            driver.find_element(By.ID, "camera-start").click()
            wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
            error = driver.find_element(By.ID, "error").text
            assert error.startswith("Camera permission was denied") and "\n" not in error
            assert driver.find_element(By.ID, "camera-start").is_enabled()
    finally:
        driver.quit()
