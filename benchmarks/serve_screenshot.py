"""The README's screenshot of ``atrous serve``'s page: a real model on a real street frame.

    python benchmarks/serve_screenshot.py runs/deploy_mnv2/model.safetensors \\
        ../shared/data/camvid/val/0016E5_08019.jpg docs/images/serve_page.jpg

Starts ``atrous serve`` (a subprocess on a free local port), drives the page in Debian's
headless Chromium (``chromium`` + ``chromium-driver``, Selenium), uploads the image, waits for
the overlay, hovers the segmentation and saves the window.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serve import Server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights")
    ap.add_argument("image")
    ap.add_argument("out")
    ap.add_argument("--size", default="1400,860", help="browser window, W,H")
    args = ap.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        raise SystemExit("needs chromium and chromium-driver (apt-get install ...)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={args.size}",
        "--force-color-profile=srgb",
        "--hide-scrollbars",
    ):
        opts.add_argument(arg)
    server = Server(args.weights, 8, 2)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        driver.get(server.url + "/")
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_element(By.ID, "model-name").text.strip())
        driver.find_element(By.ID, "file").send_keys(str(Path(args.image).resolve()))
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state"))
        state = driver.find_element(By.TAG_NAME, "body").get_attribute("data-state")
        if state != "done":
            raise SystemExit("the page failed: " + driver.find_element(By.ID, "error").text)
        canvas = driver.find_element(By.ID, "overlay")
        box = canvas.rect
        # hover a point low in the frame (the road, in a street scene)
        ActionChains(driver).move_to_element_with_offset(
            canvas, int(box["width"] * 0.1), int(box["height"] * 0.35)
        ).perform()
        wait.until(lambda d: d.find_element(By.ID, "hover").text)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        png = driver.get_screenshot_as_png()
        if Path(args.out).suffix.lower() in (".jpg", ".jpeg"):  # a smaller file for the README
            import io

            from PIL import Image

            Image.open(io.BytesIO(png)).convert("RGB").save(args.out, quality=88, optimize=True)
        else:
            Path(args.out).write_bytes(png)
        print(
            f"{args.out}: {driver.find_element(By.ID, 'status-text').text} "
            f"{driver.find_element(By.ID, 'hover').text}"
        )
    finally:
        driver.quit()
        server.stop()


if __name__ == "__main__":
    main()
