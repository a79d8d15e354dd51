"""The dashboard in headless Chromium: every page, the actions a person clicks, the live graph.

One browser serves the whole module; each test gets freshly seeded Redis and
its own app on a loopback port.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from pyqueue import keys
from pyqueue.api.sorted_sets import digest
from tests.web import demo
from tests.web.browser import chromium, served
from tests.web.conftest import AppFactory

pytestmark = pytest.mark.browser

PAGES = [
    ("/", "Dashboard"),
    ("/busy", "Busy"),
    ("/queues", "Queues"),
    ("/queues/mail", "Queue mail"),
    ("/retries", "Retries"),
    ("/scheduled", "Scheduled"),
    ("/dead", "Dead"),
    ("/cron", "Cron"),
    (f"/retries/{demo.NOW + 60!r}-retry0000000000000000001", "Retries: job"),
]


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def base(make_app: AppFactory, seeded: redis.Redis, driver: WebDriver) -> Iterator[str]:
    """Serve a dashboard on the seeded Redis; fail the test on any browser console error."""
    driver.get_log("browser")  # drop what earlier tests left
    with served(make_app(poll_seconds=1)) as url:
        yield url
        driver.get("about:blank")  # stop the live graph's polls before the server goes
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []


def wait(driver: WebDriver, seconds: float = 5.0) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, seconds)


def notice(driver: WebDriver) -> str:
    element = wait(driver).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".notice"))
    )
    return str(element.text)


def checkbox(driver: WebDriver, key: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'input[type=checkbox][value="{key}"]')


def button(driver: WebDriver, text: str, scope: Any = None) -> WebElement:
    root = scope if scope is not None else driver
    return root.find_element(By.XPATH, f'.//button[normalize-space()="{text}"]')


def test_every_page_loads(driver: WebDriver, base: str) -> None:
    for path, title in PAGES:
        driver.get(base + path)
        assert driver.title == f"{title} · pyqueue", path
        assert driver.find_element(By.TAG_NAME, "h1").is_displayed()


def test_retry_selected(driver: WebDriver, base: str, seeded: redis.Redis) -> None:
    driver.get(base + "/retries")
    raw = seeded.zrangebyscore("retry", demo.NOW + 60, demo.NOW + 60)[0]
    checkbox(driver, f"{demo.NOW + 60!r}-{digest(raw)}").click()
    button(driver, "Retry now selected").click()
    assert notice(driver) == "Retried 1 job."
    assert seeded.zscore("retry", raw) is None
    assert seeded.llen("queue:mail") == 31


def test_delete_bad_dead_entry(driver: WebDriver, base: str, seeded: redis.Redis) -> None:
    driver.get(base + "/dead")
    flagged = driver.find_elements(By.CSS_SELECTOR, "tr.flagged")
    assert len(flagged) == 2
    checkbox(driver, f"1714986001.0-{digest('{not json')}").click()
    button(driver, "Delete selected").click()
    assert notice(driver) == "Deleted 1 job."
    assert seeded.zcard("dead") == 2
    assert seeded.zscore("dead", "{not json") is None


def test_kill_from_entry_page(driver: WebDriver, base: str, seeded: redis.Redis) -> None:
    driver.get(base + f"/retries/{demo.NOW + 120!r}-retry0000000000000000002")
    assert "SendGridError" in driver.find_element(By.CSS_SELECTOR, "section.failure").text
    button(driver, "Kill").click()
    assert notice(driver) == "Moved 1 job to the dead set."
    assert driver.title == "Retries · pyqueue"
    assert seeded.zcard("retry") == 4
    assert seeded.zcard("dead") == 4


def test_quiet_process(driver: WebDriver, base: str, seeded: redis.Redis) -> None:
    driver.get(base + "/busy")
    row = driver.find_element(By.XPATH, f'//tr[.//code[text()="{demo.IDENTITY}"]]')
    button(driver, "Quiet", row).click()
    assert notice(driver) == "Sent quiet to 1 process."
    assert seeded.lrange(keys.signals(demo.IDENTITY), 0, -1) == ["TSTP"]


def test_enable_cron_job(driver: WebDriver, base: str, seeded: redis.Redis) -> None:
    driver.get(base + "/cron")
    row = driver.find_element(By.XPATH, '//tr[td[1][contains(., "stuck_scan")]]')
    button(driver, "Enable", row).click()
    assert notice(driver) == "Enabled 1 cron job."
    assert seeded.hget("cron_job:stuck_scan", "status") == "enabled"
    row = driver.find_element(By.XPATH, '//tr[td[1][contains(., "stuck_scan")]]')
    assert button(driver, "Disable", row).is_displayed()


def test_delete_queue_row(driver: WebDriver, base: str, seeded: redis.Redis) -> None:
    driver.get(base + "/queues/critical")
    button(driver, "Delete").click()
    assert notice(driver) == "Deleted 1 job."
    assert seeded.llen("queue:critical") == 0


def test_delete_all_asks_first(driver: WebDriver, base: str, seeded: redis.Redis) -> None:
    driver.get(base + "/dead")
    button(driver, "Delete all").click()
    alert = wait(driver).until(expected_conditions.alert_is_present())
    assert "every entry in dead" in alert.text
    alert.dismiss()
    assert seeded.zcard("dead") == 3
    button(driver, "Delete all").click()
    wait(driver).until(expected_conditions.alert_is_present()).accept()
    assert notice(driver) == "Deleted 3 jobs."
    assert seeded.exists("dead") == 0


def test_select_all_on_page(driver: WebDriver, base: str, seeded: redis.Redis) -> None:
    driver.get(base + "/scheduled")
    driver.find_element(By.CSS_SELECTOR, "input[data-select-all]").click()
    button(driver, "Delete selected").click()
    assert notice(driver) == "Deleted 2 jobs."
    assert seeded.exists("schedule") == 0


def test_live_graph_polls(driver: WebDriver, base: str, seeded: redis.Redis) -> None:
    driver.get(base + "/")
    status = driver.find_element(By.ID, "live-status")
    wait(driver).until(lambda d: "first poll done" in status.text or "last poll" in status.text)
    seeded.incrby(keys.STAT_PROCESSED, 7)
    counter = driver.find_element(By.CSS_SELECTOR, '[data-stat="processed"]')
    wait(driver).until(lambda d: counter.text == "48,220")
    wait(driver).until(lambda d: "last poll: " in status.text)
    points = driver.find_element(By.CSS_SELECTOR, "polyline.processed").get_attribute("points")
    assert points
