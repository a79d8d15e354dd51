"""Take the dashboard screenshots in docs/img with headless Chromium.

    .venv/bin/python -m tests.web.screenshots [docs/img]

It starts a private redis-server, writes the sample data of tests/web/demo.py,
serves the dashboard on a loopback port and saves one PNG per main page.
"""

from __future__ import annotations

import base64
import sys
import tempfile
import time
from pathlib import Path

import redis
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from pyqueue import keys
from pyqueue.web import create_app
from tests.fixtures.redis_server import RedisServer
from tests.web import demo
from tests.web.browser import chromium, served

PAGES = (
    ("dashboard", "/"),
    ("busy", "/busy"),
    ("queues", "/queues"),
    ("queue", "/queues/mail"),
    ("retries", "/retries"),
    ("retry-job", "/retries/1714989660.0-retry0000000000000000001"),
    ("dead", "/dead"),
    ("cron", "/cron"),
)


def main(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    server = RedisServer(Path(tempfile.mkdtemp(prefix="pyqueue-shots-")))
    server.start()
    try:
        r = server.client()
        demo.seed(r)
        app = create_app(server.url, clock=lambda: demo.NOW + 30, poll_seconds=2, page_size=10)
        with served(app) as base, chromium(1280, 400) as driver:
            for name, path in PAGES:
                driver.get(base + path)
                if name == "dashboard":
                    draw_live_graph(driver, r)
                save_page(driver, target / f"{name}.png")
                print(f"saved {target / name}.png")
    finally:
        server.stop()


def save_page(driver: WebDriver, path: Path) -> None:
    """Save the whole page as a PNG, also the part below the window (Chrome DevTools)."""
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.write_bytes(base64.b64decode(shot["data"]))


def draw_live_graph(driver: WebDriver, r: redis.Redis) -> None:
    """Let the live graph poll a few times while the counters grow."""
    for step in range(6):
        r.incrby(keys.STAT_PROCESSED, 40 + 25 * (step % 3))
        r.incrby(keys.STAT_FAILED, step % 2)
        time.sleep(2.1)
    WebDriverWait(driver, 10).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "polyline.processed").get_attribute("points")
    )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img"))
