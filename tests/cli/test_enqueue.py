from __future__ import annotations

import json
import re
import time

import redis
from click.testing import CliRunner

from pyqueue.cli import main


def enqueue(redis_url: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["enqueue", *args, "--redis-url", redis_url])
    return result.exit_code, result.stdout, result.stderr


def test_enqueue_prints_jid_and_pushes(r: redis.Redis, redis_url: str) -> None:
    code, out, _ = enqueue(redis_url, "EmailSenderWorker", '[100, "x"]', "-q", "email_delivery")

    assert code == 0
    jid = out.strip()
    assert re.fullmatch(r"[0-9a-f]{24}", jid)
    payload = json.loads(r.lindex("queue:email_delivery", -1) or "")
    assert payload["jid"] == jid
    assert payload["class"] == "EmailSenderWorker"
    assert payload["args"] == [100, "x"]
    assert payload["retry"] is True


def test_enqueue_default_args_and_queue(r: redis.Redis, redis_url: str) -> None:
    code, _, _ = enqueue(redis_url, "Noop")

    assert code == 0
    assert json.loads(r.lindex("queue:default", -1) or "")["args"] == []


def test_enqueue_in_schedules(r: redis.Redis, redis_url: str) -> None:
    before = time.time()
    code, _, _ = enqueue(redis_url, "Later", "[]", "--in", "60")

    assert code == 0
    [(member, score)] = r.zrange("schedule", 0, -1, withscores=True)
    assert before + 59 <= score <= time.time() + 61
    assert "at" not in json.loads(member)


def test_enqueue_at_iso_time(r: redis.Redis, redis_url: str) -> None:
    code, _, _ = enqueue(redis_url, "Later", "[]", "--at", "2099-01-01T09:00:00Z")

    assert code == 0
    [(_, score)] = r.zrange("schedule", 0, -1, withscores=True)
    assert score == 4070941200.0


def test_enqueue_at_past_runs_now(r: redis.Redis, redis_url: str) -> None:
    code, _, _ = enqueue(redis_url, "Late", "[]", "--at", "1700000000")

    assert code == 0
    assert r.zcard("schedule") == 0
    assert r.llen("queue:default") == 1


def test_enqueue_retry_values(r: redis.Redis, redis_url: str) -> None:
    for flag, expected in (("3", 3), ("false", False), ("TRUE", True), ("0", 0)):
        code, _, _ = enqueue(redis_url, "Job", "[]", "--retry", flag)
        assert code == 0
        assert json.loads(r.lpop("queue:default") or "")["retry"] == expected


def test_enqueue_usage_errors(r: redis.Redis, redis_url: str) -> None:
    cases = [
        (["Job", "{not json"], "not valid JSON"),
        (["Job", '{"a": 1}'], "must be a JSON array"),
        (["Job", "[]", "--in", "5", "--at", "1700000000"], "give only one"),
        (["Job", "[]", "--retry", "often"], "whole number, true or false"),
        (["Job", "[]", "--at", "tomorrow"], "ISO 8601"),
    ]
    for args, message in cases:
        code, _, err = enqueue(redis_url, *args)
        assert code == 2, args
        assert message in err, args
    assert r.keys("*") == []


def test_enqueue_rejects_nan_argument(r: redis.Redis, redis_url: str) -> None:
    code, _, err = enqueue(redis_url, "Job", "[NaN]")

    assert code == 1
    assert "args[0]" in err
    assert r.keys("*") == []


def test_enqueue_redis_unreachable(redis_url: str) -> None:
    code, _, err = enqueue("redis://127.0.0.1:1/0", "Job", "[]")

    assert code == 3
    assert "cannot reach Redis" in err
