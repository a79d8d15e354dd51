"""Take the dashboard screenshots in docs/img with headless Chromium.

    .venv/bin/python -m tests.web.screenshots [docs/img]

It starts a private redis-server, writes the sample data of tests/web/demo.py,
serves the dashboard on a loopback port and saves one PNG per main page.
"""

from __future__ import annotations

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
        app = create_app(server.url, clock=lambda: demo.NOW + 30, poll_seconds=2)
        with served(app) as base, chromium(1280, 800) as driver:
            for name, path in PAGES:
                driver.get(base + path)
                if name == "dashboard":
                    draw_live_graph(driver, r)
                fit_height(driver)
                driver.save_screenshot(str(target / f"{name}.png"))
                print(f"saved {target / name}.png")
    finally:
        server.stop()


def fit_height(driver: WebDriver, limit: int = 1600) -> None:
    """Grow the window to the page's height (up to ``limit``), so one PNG shows it all."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1280, min(max(height + 20, 400), limit))


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
