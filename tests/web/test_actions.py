"""Dashboard actions posted as a browser posts them: with the page's CSRF token and back link."""

from __future__ import annotations

import json

import redis

from pyqueue.api.sorted_sets import digest
from tests.api.helpers import BAD_DEAD_ENTRIES, BAD_QUEUE_ENTRY, BAD_RETRY_ENTRIES
from tests.web import demo
from tests.web.client import Client, Result

RETRY_ONE = "retry0000000000000000001"


def jids(r: redis.Redis, key: str) -> list[str]:
    """Return the jids in a queue or a set, skipping members that are not JSON objects."""
    members = r.lrange(key, 0, -1) if r.type(key) == "list" else r.zrange(key, 0, -1)
    found = []
    for member in members:
        try:
            item = json.loads(member)
        except ValueError:
            continue
        if isinstance(item, dict):
            found.append(item.get("jid"))
    return found


def key_of(page: Result, raw: str, score: float) -> str:
    key = f"{score!r}-{digest(raw)}"
    assert key in page.checkbox_values()
    return key


def follow(client: Client, result: Result) -> Result:
    assert result.status == 303
    location = result.header("Location")
    assert location is not None
    return client.get(location)


def test_retry_selected(client: Client, seeded: redis.Redis) -> None:
    page = client.get("/retries")
    form_key = [k for k in page.checkbox_values() if k.startswith(f"{demo.NOW + 60!r}-")][0]
    result = client.submit(
        page, "/retries", {"action": "retry", "scope": "selected", "key": form_key}
    )
    assert result.header("Location") == "/retries?done=retry&count=1"
    assert RETRY_ONE not in jids(seeded, "retry")
    queued = [json.loads(raw) for raw in seeded.lrange("queue:mail", 0, -1)]
    retried = [job for job in queued if job["jid"] == RETRY_ONE]
    assert len(retried) == 1
    assert retried[0]["retry_count"] == 0  # one retry given back, as "Retry now" does
    assert "Retried 1 job." in follow(client, result).text


def test_delete_and_kill_selected(client: Client, seeded: redis.Redis) -> None:
    page = client.get("/retries")
    # Highest score first: the jobs retried third, second and first.
    keys = [k for k in page.checkbox_values() if float(k.split("-")[0]) > demo.NOW]
    assert len(keys) == 3
    client.submit(page, "/retries", {"action": "delete", "scope": "selected", "key": keys[:2]})
    assert seeded.zcard("retry") == 3
    page = client.get("/retries")
    result = client.submit(
        page, "/retries", {"action": "kill", "scope": "selected", "key": keys[2]}
    )
    assert result.status == 303
    assert seeded.zcard("retry") == 2
    assert seeded.zcard("dead") == 4
    assert RETRY_ONE in jids(seeded, "dead")


def test_delete_each_bad_entry(client: Client, seeded: redis.Redis) -> None:
    """Every hand-written bad entry can be deleted alone: the set shrinks by exactly one."""
    for kind, key, entries in (
        ("retries", "retry", BAD_RETRY_ENTRIES),
        ("dead", "dead", BAD_DEAD_ENTRIES),
    ):
        for raw, score in entries.items():
            page = client.get(f"/{kind}")
            before = seeded.zcard(key)
            form_key = key_of(page, raw, score)
            result = client.submit(
                page, f"/{kind}", {"action": "delete", "scope": "selected", "key": form_key}
            )
            assert result.status == 303
            assert seeded.zcard(key) == before - 1
            assert seeded.zscore(key, raw) is None


def test_retry_bad_entry_is_skipped(client: Client, seeded: redis.Redis) -> None:
    page = client.get("/dead")
    raw = "{not json"
    result = client.submit(
        page,
        "/dead",
        {"action": "retry", "scope": "selected", "key": key_of(page, raw, 1714986001.0)},
    )
    assert result.header("Location") == "/dead?done=retry&count=0&skipped=1"
    assert seeded.zscore("dead", raw) == 1714986001.0
    assert (
        "1 skipped: gone meanwhile, or the payload cannot be pushed" in follow(client, result).text
    )


def test_retry_all_skips_unpushable(client: Client, seeded: redis.Redis) -> None:
    page = client.get("/retries")
    result = client.submit(page, "/retries", {"action": "retry", "scope": "all"})
    assert result.header("Location") == "/retries?done=retry&count=3&skipped=2"
    assert seeded.zcard("retry") == 2
    assert set(BAD_RETRY_ENTRIES) == set(seeded.zrange("retry", 0, -1))


def test_kill_all_and_delete_all(client: Client, seeded: redis.Redis) -> None:
    page = client.get("/retries")
    client.submit(page, "/retries", {"action": "kill", "scope": "all"})
    assert seeded.zcard("retry") == 0
    assert seeded.zcard("dead") == 8
    page = client.get("/dead")
    result = client.submit(page, "/dead", {"action": "delete", "scope": "all"})
    assert result.header("Location") == "/dead?done=delete&count=8"
    assert seeded.exists("dead") == 0


def test_scheduled_add_to_queue(client: Client, seeded: redis.Redis) -> None:
    page = client.get("/scheduled")
    key = [k for k in page.checkbox_values() if k.startswith(f"{demo.NOW + 3600!r}-")][0]
    client.submit(page, "/scheduled", {"action": "add_to_queue", "scope": "selected", "key": key})
    assert seeded.zcard("schedule") == 1
    assert "sched0000000000000000001" in jids(seeded, "queue:default")


def test_scheduled_rejects_retry_action(client: Client, seeded: redis.Redis) -> None:
    page = client.get("/scheduled")
    result = client.submit(page, "/scheduled", {"action": "kill", "scope": "all"})
    assert result.status == 400
    assert "unknown action" in result.text
    assert seeded.zcard("schedule") == 2


def test_dead_retry_from_entry_page(client: Client, seeded: redis.Redis) -> None:
    entry_id = f"{demo.NOW - 86400!r}-dead0000000000000000001"
    page = client.get(f"/dead/{entry_id}")
    assert page.hidden_fields()["back"] == "/dead"
    form_key = [
        line.split('value="')[1].split('"')[0]
        for line in page.text.splitlines()
        if 'name="key"' in line
    ][0]
    result = client.submit(page, "/dead", {"action": "retry", "scope": "selected", "key": form_key})
    assert result.status == 303
    assert "dead0000000000000000001" in jids(seeded, "queue:default")
    assert result.header("Location") == "/dead?done=retry&count=1"


def test_queue_delete_job(client: Client, seeded: redis.Redis) -> None:
    page = client.get("/queues/mail")
    key = page.checkbox_values()[0]
    # Jobs pushed after the page was read shift every index; the key still finds the job.
    for index in range(3):
        seeded.lpush("queue:mail", demo.payload(f"late{index}", "SendEmailJob", "mail", []))
    result = client.submit(page, "/queues/mail", {"action": "delete", "key": key})
    assert result.header("Location") == "/queues/mail?done=delete&count=1"
    assert "mail0000000000000000029" not in jids(seeded, "queue:mail")
    assert seeded.llen("queue:mail") == 32


def test_queue_delete_bad_entry(client: Client, seeded: redis.Redis) -> None:
    page = client.get("/queues/default")
    key = next(k for k in page.checkbox_values() if k.endswith(digest(BAD_QUEUE_ENTRY)))
    client.submit(page, "/queues/default", {"action": "delete", "key": key})
    assert BAD_QUEUE_ENTRY not in seeded.lrange("queue:default", 0, -1)
    assert seeded.llen("queue:default") == 3


def test_queue_delete_gone_job(client: Client, seeded: redis.Redis) -> None:
    page = client.get("/queues/critical")
    key = page.checkbox_values()[0]
    seeded.delete("queue:critical")
    result = client.submit(page, "/queues/critical", {"action": "delete", "key": key})
    assert result.header("Location") == "/queues/critical?done=delete&count=0&skipped=1"


def test_queue_clear(client: Client, seeded: redis.Redis) -> None:
    page = client.get("/queues")
    result = client.submit(page, "/queues/mail", {"action": "clear"})
    assert result.header("Location") == "/queues?done=clear&count=30"
    assert seeded.exists("queue:mail") == 0
    assert not seeded.sismember("queues", "mail")
    assert "Cleared the queue: 30 jobs deleted." in follow(client, result).text


def test_busy_quiet_and_stop(client: Client, seeded: redis.Redis) -> None:
    page = client.get("/busy")
    client.submit(page, "/busy", {"action": "quiet", "identity": demo.IDENTITY})
    result = client.submit(page, "/busy", {"action": "stop", "identity": demo.IDENTITY})
    assert result.header("Location") == "/busy?done=stop&count=1"
    assert seeded.lrange(f"{demo.IDENTITY}-signals", 0, -1) == ["TERM", "TSTP"]
    assert seeded.ttl(f"{demo.IDENTITY}-signals") > 0


def test_busy_quiet_all_and_gone_process(client: Client, seeded: redis.Redis) -> None:
    page = client.get("/busy")
    client.submit(page, "/busy", {"action": "quiet", "scope": "all"})
    assert seeded.lrange(f"{demo.IDENTITY}-signals", 0, -1) == ["TSTP"]
    result = client.submit(page, "/busy", {"action": "stop", "identity": "gone:1:1"})
    assert result.header("Location") == "/busy?done=stop&count=0&skipped=1"
    assert seeded.exists("gone:1:1-signals") == 0


def test_cron_switches(client: Client, seeded: redis.Redis) -> None:
    page = client.get("/cron")
    client.submit(page, "/cron", {"action": "enable", "name": "stuck_scan"})
    assert seeded.hget("cron_job:stuck_scan", "status") == "enabled"
    client.submit(page, "/cron", {"action": "disable", "name": "daily_digest"})
    assert seeded.hget("cron_job:daily_digest", "status") == "disabled"
    result = client.submit(page, "/cron", {"action": "enqueue", "name": "daily_digest"})
    assert result.header("Location") == "/cron?done=enqueue&count=1"
    queued = [json.loads(raw) for raw in seeded.lrange("queue:default", 0, -1)]
    assert [job["class"] for job in queued].count("DigestJob") == 1
    assert seeded.hget("cron_job:daily_digest", "last_enqueue_time")
    assert "Enqueued 1 cron job now." in follow(client, result).text


def test_cron_delete_and_missing(client: Client, seeded: redis.Redis) -> None:
    page = client.get("/cron")
    client.submit(page, "/cron", {"action": "delete", "name": "stuck_scan"})
    assert seeded.exists("cron_job:stuck_scan") == 0
    assert not seeded.sismember("cron_jobs", "cron_job:stuck_scan")
    result = client.submit(page, "/cron", {"action": "enable", "name": "stuck_scan"})
    assert result.header("Location") == "/cron?done=enable&count=0&skipped=1"


def test_cron_delete_wrong_type_hash(client: Client, seeded: redis.Redis) -> None:
    seeded.sadd("cron_jobs", "cron_job:odd")
    seeded.set("cron_job:odd", "oops")
    page = client.get("/cron")
    client.submit(page, "/cron", {"action": "delete", "name": "odd"})
    assert seeded.exists("cron_job:odd") == 0
    assert client.get("/cron").text.count("is a string") == 0


def test_back_link_outside_is_ignored(client: Client, seeded: redis.Redis) -> None:
    page = client.get("/busy")
    fields = {**page.hidden_fields(), "action": "quiet", "identity": demo.IDENTITY}
    for back in ("https://elsewhere.example/", "//elsewhere.example/busy", "busy"):
        result = client.post("/busy", {**fields, "back": back})
        assert result.header("Location") == "/busy?done=quiet&count=1", back


def test_back_link_keeps_page_and_filter(client: Client, seeded: redis.Redis) -> None:
    page = client.get("/retries?q=SendEmail&page=1&done=retry&count=9")
    assert page.hidden_fields()["back"] == "/retries?q=SendEmail&page=1"
    result = client.submit(
        page, "/retries", {"action": "delete", "scope": "selected", "key": "1.0-x"}
    )
    assert result.header("Location") == "/retries?q=SendEmail&page=1&done=delete&count=0&skipped=1"


def test_notice_ignores_unknown_text(client: Client) -> None:
    page = client.get("/busy?done=<b>hi</b>&count=3")
    assert page.status == 200
    assert 'class="notice"' not in page.text
    assert "&lt;b&gt;hi" not in page.text


def test_delete_all_removes_wrong_type_key(client: Client, seeded: redis.Redis) -> None:
    seeded.delete("dead")
    seeded.set("dead", "oops")
    page = client.get("/dead")
    assert "key &#39;dead&#39; is a string" in page.text
    result = client.submit(page, "/dead", {"action": "delete", "scope": "all"})
    assert result.status == 303
    assert seeded.exists("dead") == 0
