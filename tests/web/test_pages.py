"""Dashboard pages rendered through WSGI against a real redis-server."""

from __future__ import annotations

import json
import logging

import pytest
import redis

from pyqueue.connection import create_redis
from pyqueue.payload import dumps
from tests.fixtures.redis_server import RedisServer, free_port
from tests.web import demo
from tests.web.client import Client
from tests.web.conftest import AppFactory

PAGES = [
    ("/", "48,213"),
    ("/busy", demo.IDENTITY),
    ("/queues", "mail"),
    ("/queues/mail", "mail0000000000000000029"),
    ("/retries", "retry0000000000000000001"),
    ("/scheduled", "sched0000000000000000001"),
    ("/dead", "dead0000000000000000001"),
    ("/cron", "daily_digest"),
    ("/retries/1714989660.0-retry0000000000000000001", "SendGridError"),
]


@pytest.mark.parametrize(("path", "expected"), PAGES)
def test_page_renders(client: Client, path: str, expected: str) -> None:
    page = client.get(path)
    assert page.status == 200
    assert page.header("Content-Type") == "text/html; charset=utf-8"
    assert expected in page.text


def test_dashboard_counters_and_history(client: Client) -> None:
    page = client.get("/?days=7")
    assert page.status == 200
    assert 'data-stat="processed">48,213<' in page.text
    assert 'data-stat="failed">312<' in page.text
    # Seven days of history, two bars each; today (offset 0) has 1200 processed.
    assert page.text.count('<rect class="processed"') == 7
    assert "2024-05-06: 1,200 processed" in page.text
    assert "redis_version" in page.text


def test_stats_json(client: Client) -> None:
    result = client.get("/stats.json")
    assert result.status == 200
    assert result.header("Content-Type") == "application/json"
    document = json.loads(result.body)
    assert document["processed"] == 48_213
    assert document["failed"] == 312
    assert document["retries"] == 5
    assert document["dead"] == 3
    assert document["enqueued"] == 35
    assert document["busy"] == 1
    assert document["time"] == demo.NOW


def test_queue_pages(client: Client) -> None:
    first = client.get("/queues/mail")
    second = client.get("/queues/mail?page=2")
    assert len(first.checkbox_values()) == 25
    assert len(second.checkbox_values()) == 5
    assert "page 1 of 2" in first.text
    assert 'href="/queues/mail?page=2"' in first.text
    # Newest first: the last pushed job opens page one, the first pushed ends page two.
    assert first.text.index("mail0000000000000000029") < first.text.index("mail0000000000000000028")
    assert "mail0000000000000000000" in second.text


def test_queue_page_beyond_end(client: Client) -> None:
    page = client.get("/queues/mail?page=99")
    assert page.status == 200
    assert "No jobs on this page." in page.text


def test_set_filter_by_class_and_jid(client: Client) -> None:
    by_jid = client.get("/retries?q=retry0000000000000000002")
    by_class = client.get("/retries?q=SendEmail")
    assert len(by_jid.checkbox_values()) == 1
    assert len(by_class.checkbox_values()) == 3
    assert "3 matching" in by_class.text


def test_set_filter_ignores_arguments(client: Client) -> None:
    page = client.get("/retries?q=alice")
    assert page.status == 200
    assert page.checkbox_values() == []
    assert "Nothing matches alice." in page.text


def test_entry_page_error_and_backtrace(client: Client) -> None:
    page = client.get("/retries/1714989660.0-retry0000000000000000001")
    assert page.status == 200
    assert "SendGridError" in page.text
    for line in demo.BACKTRACE:
        assert line.replace("'", "&#39;") in page.text
    assert "Retry count" in page.text


def test_entry_page_missing(client: Client) -> None:
    page = client.get("/retries/1.0-nosuchjid")
    assert page.status == 404
    assert "no entry" in page.text


def test_bad_entries_listed_and_flagged(client: Client) -> None:
    """Payloads a foreign producer wrote by hand show escaped and flagged, never a 500."""
    queue = client.get("/queues/default")
    retries = client.get("/retries")
    dead = client.get("/dead")
    assert queue.status == 200
    assert retries.status == 200
    assert dead.status == 200
    assert "args is string, not an array" in queue.text
    assert "b18q00000000000000000001" in queue.text
    assert "class is null, not a non-empty string" in retries.text
    assert "args is string, not an array" in retries.text
    assert "payload is not valid JSON" in dead.text
    assert "{not json" in dead.text
    assert "args is object, not an array" in dead.text
    assert len(dead.checkbox_values()) == 3
    assert len(retries.checkbox_values()) == 5


def test_bad_entry_pages(client: Client) -> None:
    dead = client.get("/dead")
    links = [line for line in dead.text.split('"') if line.startswith("/dead/")]
    assert links
    for link in links:
        page = client.get(link)
        assert page.status == 200, link


def test_markup_in_data_is_escaped(client: Client, seeded: redis.Redis) -> None:
    hostile = '<script>alert("x")</script>'
    seeded.zadd(
        "retry",
        {dumps({"class": hostile, "args": [hostile], "jid": "esc1", "error_message": hostile}): 5},
    )
    seeded.sadd("queues", hostile)
    for path in ("/retries", "/retries/5.0-esc1", "/queues", "/"):
        page = client.get(path)
        assert page.status == 200
        assert "<script>alert" not in page.text, path
    assert "&lt;script&gt;alert" in client.get("/retries").text
    assert (
        "HTTP 503 from the SendGrid API &lt;b&gt;try later&lt;/b&gt;" in client.get("/retries").text
    )


def test_wrong_key_types_shown_as_problems(make_app: AppFactory, r: redis.Redis) -> None:
    for key in ("retry", "schedule", "dead", "queues", "processes", "cron_jobs"):
        r.set(key, "oops")
    client = Client(make_app())
    for path in ("/", "/busy", "/queues", "/retries", "/scheduled", "/dead", "/cron"):
        page = client.get(path)
        assert page.status == 200, path
        assert "Problems in the data" in page.text, path
        assert "but Sidekiq&#39;s layout needs a" in page.text, path


def test_wrong_type_queue_and_cron_hash(make_app: AppFactory, r: redis.Redis) -> None:
    r.sadd("queues", "broken")
    r.set("queue:broken", "oops")
    r.sadd("cron_jobs", "cron_job:odd")
    r.set("cron_job:odd", "oops")
    client = Client(make_app())
    queue = client.get("/queues/broken")
    cron = client.get("/cron")
    assert queue.status == 200
    assert "key &#39;queue:broken&#39; is a string" in queue.text
    assert cron.status == 200
    assert "key &#39;cron_job:odd&#39; is a string" in cron.text
    assert 'name="name" value="odd"' in cron.text


def test_invalid_utf8_entry(make_app: AppFactory, r: redis.Redis) -> None:
    raw = b'{"class":"X","args":[],"jid":"utf8bad","note":"\xff\xfe"}'
    r.zadd("dead", {raw: 10.0})
    client = Client(make_app())
    page = client.get("/dead")
    assert page.status == 200
    assert "not valid UTF-8" in page.text
    assert "utf8bad" in page.text


def test_invalid_utf8_with_host_connection(
    make_app: AppFactory, r: redis.Redis, redis_url: str
) -> None:
    """A host's strict connection cannot decode such a process hash; the page reports it."""
    r.sadd("processes", "bad:1:1")
    r.hset("bad:1:1", mapping={"info": b'{"hostname":"\xff"}', "busy": "0"})
    strict = create_redis(redis_url, pool_size=2, encoding_errors="strict")
    try:
        client = Client(make_app(redis=strict))
        page = client.get("/busy")
        assert page.status == 200
        assert "not valid UTF-8" in page.text
    finally:
        strict.close()
        strict.connection_pool.disconnect()


def test_cron_rows(client: Client) -> None:
    page = client.get("/cron")
    assert "in 23 h" in page.text  # next 09:00 UTC from 10:00
    assert ">1 h ago</time>" in page.text  # last run at 09:00
    assert "*/5 * * * *" in page.text
    assert 'value="enable">Enable<' in page.text
    assert 'value="disable">Disable<' in page.text


def test_invalid_cron_line_flagged(make_app: AppFactory, r: redis.Redis) -> None:
    r.sadd("cron_jobs", "cron_job:nightly")
    r.hset("cron_job:nightly", mapping={"name": "nightly", "cron": "not a line", "klass": "X"})
    page = Client(make_app()).get("/cron")
    assert page.status == 200
    assert "nightly" in page.text
    assert "not a line" in page.text
    assert "flagged" in page.text


def test_hide_args(make_app: AppFactory, seeded: redis.Redis) -> None:
    client = Client(make_app(hide_args=True))
    paths = [path for path, _ in PAGES] + [
        "/queues/default",
        "/dead/1714903200.0-dead0000000000000000001",
    ]
    for path in paths:
        page = client.get(path)
        assert page.status == 200, path
        assert demo.SECRET_ARGUMENT not in page.text, path
    assert "[hidden]" in client.get("/retries").text


def test_static_files(client: Client) -> None:
    css = client.get("/static/app.css")
    js = client.get("/static/app.js")
    assert css.status == 200
    assert css.header("Content-Type") == "text/css; charset=utf-8"
    assert js.status == 200
    assert "LiveGraph" in js.text
    assert client.get("/static/nothing.css").status == 404
    assert client.get("/static/../app.py").status == 404


def test_head_and_unknown_methods(client: Client) -> None:
    head = client.request("HEAD", "/")
    assert head.status == 200
    assert head.body == b""
    assert int(head.header("Content-Length") or 0) > 0
    put = client.request("PUT", "/retries")
    assert put.status == 405
    assert put.header("Allow") == "GET, POST"
    assert client.get("/nothing").status == 404


def test_security_headers(client: Client) -> None:
    page = client.get("/")
    policy = page.header("Content-Security-Policy") or ""
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.header("X-Content-Type-Options") == "nosniff"
    assert page.header("Cache-Control") == "no-store"


def test_redis_outage_logged_once(
    client: Client, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Pages respond 503 while Redis is down; one log line marks the start, one the end."""
    redis_server.stop()
    try:
        with caplog.at_level(logging.INFO, logger="pyqueue.web"):
            down = [client.get("/stats.json") for _ in range(3)]
    finally:
        redis_server.start()
    with caplog.at_level(logging.INFO, logger="pyqueue.web"):
        up = client.get("/stats.json")
    assert [page.status for page in down] == [503, 503, 503]
    assert "Redis is unreachable" in down[0].text
    assert up.status == 200
    messages = [record.getMessage() for record in caplog.records]
    assert len([m for m in messages if m.startswith("Redis is unavailable")]) == 1
    assert len([m for m in messages if m.startswith("Redis is available again")]) == 1


def test_redis_down(make_app: AppFactory) -> None:
    # A loopback port that nothing listens on refuses the connection at once.
    unreachable = create_redis(f"redis://127.0.0.1:{free_port()}/0", pool_size=1)
    page = Client(make_app(redis=unreachable)).get("/queues")
    assert page.status == 503
    assert "Redis is unreachable" in page.text
