"""Loading sidekiq-cron schedule files: saved fields, reloads, removals and kept state."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from pyqueue import keys
from pyqueue.cron import load_schedule_file, read_schedule_file
from pyqueue.errors import ConfigError
from pyqueue.job import Job, unregister
from pyqueue.payload import loads
from tests.cron.helpers import FakeClock, make_poller, make_settings, queued, utc

SCHEDULE = """
email_sender_worker:
  cron: "*/5 * * * *"
  class: EmailSenderWorker
  queue: email_delivery
  retry: 2
  args: ["from-cron", 1]
daily_digest:
  cron: "0 9 * * * America/New_York"
  class: DigestJob
  description: Morning digest
"""


def write(tmp_path: Path, text: str, name: str = "schedule.yml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(r: redis.Redis, path: Path, clock: FakeClock, **settings: object) -> list[str]:
    return load_schedule_file(r, make_settings(**settings), path, clock=clock)


def test_load_saves_every_entry(r: redis.Redis, tmp_path: Path, clock: FakeClock) -> None:
    names = load(r, write(tmp_path, SCHEDULE), clock)

    assert names == ["email_sender_worker", "daily_digest"]
    assert r.smembers("cron_jobs") == {"cron_job:email_sender_worker", "cron_job:daily_digest"}
    assert r.smembers(keys.CRON_LOADED) == {"email_sender_worker", "daily_digest"}
    sender = r.hgetall("cron_job:email_sender_worker")
    assert sender["message"] == (
        '{"retry":2,"queue":"email_delivery","class":"EmailSenderWorker","args":["from-cron",1]}'
    )
    assert sender["args"] == '["from-cron",1]'
    assert sender["status"] == "enabled"
    assert sender["last_enqueue_time"] == ""
    assert sender["date_as_argument"] == "false"
    digest = r.hgetall("cron_job:daily_digest")
    assert loads(digest["message"]) == {
        "retry": True,
        "queue": "default",
        "class": "DigestJob",
        "args": [],
    }
    assert digest["description"] == "Morning digest"
    assert digest["cron"] == "0 9 * * * America/New_York"
    assert all(isinstance(value, str) for value in digest.values())


def test_list_form(r: redis.Redis, tmp_path: Path, clock: FakeClock) -> None:
    text = """
- name: first
  cron: "* * * * *"
  class: FirstJob
- name: second
  cron: "@hourly"
  klass: SecondJob
  args: {"team": 7}
"""
    names = load(r, write(tmp_path, text), clock)

    assert names == ["first", "second"]
    assert r.hget("cron_job:second", "args") == '[{"team":7}]'


def test_reload_removes_only_loaded_jobs(r: redis.Redis, tmp_path: Path, clock: FakeClock) -> None:
    load(r, write(tmp_path, SCHEDULE), clock)
    # A job that Ruby created in the same Redis.
    r.sadd("cron_jobs", "cron_job:ruby_job")
    r.hset("cron_job:ruby_job", mapping={"name": "ruby_job", "klass": "R", "cron": "0 1 * * *"})
    smaller = "\n".join(SCHEDULE.strip().splitlines()[:6])

    names = load(r, write(tmp_path, smaller), clock)

    assert names == ["email_sender_worker"]
    assert r.smembers("cron_jobs") == {"cron_job:email_sender_worker", "cron_job:ruby_job"}
    assert r.exists("cron_job:daily_digest", "cron_job:daily_digest:enqueued") == 0
    assert r.hget("cron_job:ruby_job", "klass") == "R"
    assert r.smembers(keys.CRON_LOADED) == {"email_sender_worker"}


def test_file_without_ruby_job_keeps_it(r: redis.Redis, tmp_path: Path, clock: FakeClock) -> None:
    r.sadd("cron_jobs", "cron_job:ruby_job")
    r.hset("cron_job:ruby_job", mapping={"name": "ruby_job", "klass": "R", "cron": "0 1 * * *"})

    load(r, write(tmp_path, ""), clock)

    assert r.smembers("cron_jobs") == {"cron_job:ruby_job"}


def test_reload_keeps_status_and_last_time(
    r: redis.Redis, tmp_path: Path, clock: FakeClock
) -> None:
    path = write(tmp_path, SCHEDULE)
    load(r, path, clock)
    r.hset("cron_job:email_sender_worker", "status", "disabled")
    r.hset("cron_job:email_sender_worker", "last_enqueue_time", "2024-05-06 11:55:00 UTC")

    load(r, path, clock)

    assert r.hget("cron_job:email_sender_worker", "status") == "disabled"
    assert r.hget("cron_job:email_sender_worker", "last_enqueue_time") == (
        "2024-05-06 11:55:00 UTC"
    )


def test_file_status_wins(r: redis.Redis, tmp_path: Path, clock: FakeClock) -> None:
    load(r, write(tmp_path, SCHEDULE), clock)
    r.hset("cron_job:daily_digest", "status", "disabled")
    text = SCHEDULE + "  status: enabled\n"

    load(r, write(tmp_path, text), clock)

    assert r.hget("cron_job:daily_digest", "status") == "enabled"


def test_reload_updates_definition(r: redis.Redis, tmp_path: Path, clock: FakeClock) -> None:
    load(r, write(tmp_path, SCHEDULE), clock)

    load(r, write(tmp_path, SCHEDULE.replace("*/5 * * * *", "*/10 * * * *")), clock)

    assert r.hget("cron_job:email_sender_worker", "cron") == "*/10 * * * *"


def test_new_job_skips_current_tick(r: redis.Redis, tmp_path: Path) -> None:
    clock = FakeClock(utc("2024-05-06T10:00:30Z"))
    load(r, write(tmp_path, '"tick": {cron: "* * * * *", class: TickJob}'), clock)
    poller = make_poller(r, clock)

    assert poller.poll_once(utc("2024-05-06T10:00:45Z")) == 0
    assert poller.poll_once(utc("2024-05-06T10:01:01.3Z")) == 1
    assert [payload["class"] for payload in queued(r)] == ["TickJob"]


def test_v2_layout_keys(r: redis.Redis, tmp_path: Path, clock: FakeClock) -> None:
    load(r, write(tmp_path, SCHEDULE), clock, cron_layout="v2", cron_namespace="mail")

    assert r.smembers("cron_jobs:mail") == {
        "cron_job:mail:email_sender_worker",
        "cron_job:mail:daily_digest",
    }
    assert r.hget("cron_job:mail:email_sender_worker", "date_as_argument") == "0"
    assert r.exists("cron_jobs", "cron_job:email_sender_worker") == 0


def test_registered_class_lends_options(r: redis.Redis, tmp_path: Path, clock: FakeClock) -> None:
    class NightlyReport(Job):
        queue = "reports"
        retry = 3
        backtrace = 5

        def perform(self) -> None:
            return None

    try:
        load(r, write(tmp_path, 'nightly: {cron: "0 2 * * *", class: NightlyReport}'), clock)
    finally:
        unregister("NightlyReport")

    assert r.hget("cron_job:nightly", "message") == (
        '{"retry":3,"queue":"reports","backtrace":5,"class":"NightlyReport","args":[]}'
    )


GOOD = 'good: {cron: "* * * * *", class: Good}\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD + 'bad: {cron: "61 * * * *", class: A}', "'61 \\* \\* \\* \\*'"),
        (GOOD + "bad: {class: A}", "both cron and class are required"),
        (GOOD + 'bad: {cron: "* * * * *"}', "both cron and class are required"),
        (GOOD + 'bad: {cron: "* * * * *", class: A, status: paused}', "enabled or disabled"),
        (GOOD + 'bad: {cron: "* * * * *", class: A, retry: "often"}', "retry must be"),
        (GOOD + 'bad: {cron: "* * * * *", class: A, args: [2024-05-06]}', "JSON"),
        (GOOD + "bad: [1, 2]", "must be a mapping"),
        (GOOD + "bad: {cron: [", "not valid YAML"),
        (
            "- {name: good, cron: '* * * * *', class: A}\n- {cron: '* * * * *', class: A}",
            "needs a name",
        ),
        ("just text", "mapping of job names"),
    ],
)
def test_invalid_file_changes_nothing(
    r: redis.Redis, tmp_path: Path, clock: FakeClock, text: str, message: str
) -> None:
    path = write(tmp_path, text)

    with pytest.raises(ConfigError, match=message):
        load(r, path, clock)

    assert r.keys("*") == []


def test_missing_file_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_schedule_file(tmp_path / "nope.yml")
