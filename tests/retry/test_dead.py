"""The dead set: insertion, trimming by count and age, raw payloads and backtrace encoding."""

from __future__ import annotations

import base64
import json
import zlib

import pytest
import redis

from pyqueue import events
from pyqueue.config import Settings
from pyqueue.errors import PayloadError
from pyqueue.retry import RetryHandler, decode_backtrace, encode_backtrace, kill
from tests.retry.conftest import FakeClock

# error_backtrace as Sidekiq 6.4.1 wrote it: MIME base64, a newline every 60 characters.
CAPTURED_BACKTRACE = (
    "eJyV0EEOgjAQBdCrNN2giTKAhChXMUbbMurAQGur6PEljSYsdTf5+f8tZi9B\n"
    "OQet1SH1us6zoqZBnBz6s/V9IlcSLtgHCNRgR7d1lZZpDkz6m4Dz1mAI1sf9\n"
    "rop7fKF53PE4uf8bVRkNzdZ0YlEIxhE5LMUUfoq/mD01DeNTeQRzVTREerOd\n"
    "0dNFw2g7jNz8DWUWa0YxJ/LwBu/LYYw=\n"
)
CAPTURED_LINES = [
    "/app/jobs.rb:102:in `perform'",
    "/gems/sidekiq-6.4.1/lib/sidekiq/processor.rb:196:in `execute_job'",
    "/gems/sidekiq-6.4.1/lib/sidekiq/processor.rb:164:in `block (2 levels) in process'",
    "/gems/sidekiq-6.4.1/lib/sidekiq/middleware/chain.rb:138:in `block in invoke'",
    "/app/jobs.rb:40:in `call'",
]


def member(n: int) -> str:
    return json.dumps({"class": "DeadJob", "args": [n], "jid": f"{n:024x}"}, separators=(",", ":"))


def test_kill_adds_with_score(r: redis.Redis) -> None:
    kill(r, member(1), Settings(), now=1796414350.379475)
    assert r.zrange("dead", 0, -1, withscores=True) == [(member(1), 1796414350.379475)]


def test_kill_trims_by_count(r: redis.Redis) -> None:
    """dead_max_jobs 3 keeps 2 entries, because Ruby's ZREMRANGEBYRANK dead 0 -3 leaves max - 1."""
    settings = Settings(dead_max_jobs=3)
    for n in range(5):
        kill(r, member(n), settings, now=1000.0 + n)
    assert r.zrange("dead", 0, -1) == [member(3), member(4)]


def test_kill_trims_by_age(r: redis.Redis) -> None:
    settings = Settings(dead_timeout_in_seconds=100)
    kill(r, member(1), settings, now=1000.0)
    kill(r, member(2), settings, now=1050.0)
    kill(r, member(3), settings, now=1120.0)
    # 1120 - 100 = 1020: the entry from 1000 is older, the one from 1050 is not.
    assert r.zrange("dead", 0, -1) == [member(2), member(3)]


def test_kill_age_boundary_inclusive(r: redis.Redis) -> None:
    """ZREMRANGEBYSCORE -inf max includes max, so an entry exactly timeout old goes."""
    settings = Settings(dead_timeout_in_seconds=100)
    kill(r, member(1), settings, now=1000.0)
    kill(r, member(2), settings, now=1100.0)
    assert r.zrange("dead", 0, -1) == [member(2)]


def test_handler_dead_trimmed(r: redis.Redis) -> None:
    """A job exhausted by the handler goes through the same trim."""
    clock = FakeClock(5000.0)
    handler = RetryHandler(r, Settings(dead_max_jobs=2, dead_timeout_in_seconds=60), clock=clock)
    r.zadd("dead", {member(1): 4000.0, member(2): 4990.0, member(3): 4995.0})
    raw = json.dumps({"class": "DeadJob", "args": [], "retry": 0, "jid": "abc"})
    outcome = handler.handle_failure(raw, json.loads(raw), "default", RuntimeError("x"), None)
    assert outcome == events.DEAD
    remaining = [json.loads(m)["jid"] for m in r.zrange("dead", 0, -1)]
    assert remaining == ["abc"]


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"text"', ""])
def test_send_to_dead_raw_keeps_bytes(r: redis.Redis, raw: str) -> None:
    clock = FakeClock(2000.0)
    RetryHandler(r, Settings(), clock=clock).send_to_dead_raw(raw, "payload is not valid JSON")
    assert r.zrange("dead", 0, -1, withscores=True) == [(raw, 2000.0)]
    assert r.zcard("retry") == 0
    assert r.keys("stat:*") == []


def test_send_to_dead_raw_trims(r: redis.Redis) -> None:
    settings = Settings(dead_max_jobs=2)
    handler = RetryHandler(r, settings, clock=FakeClock(3000.0))
    kill(r, member(1), settings, now=2000.0)
    handler.send_to_dead_raw("{broken", "payload is not valid JSON")
    assert r.zrange("dead", 0, -1) == ["{broken"]


def test_handler_invalid_raw_goes_dead(r: redis.Redis) -> None:
    handler = RetryHandler(r, Settings(), clock=FakeClock(2000.0))
    outcome = handler.handle_failure("{broken", {}, "default", RuntimeError("x"), None)
    assert outcome == events.DEAD
    assert r.zrange("dead", 0, -1) == ["{broken"]


def test_decode_captured_mime_backtrace() -> None:
    assert decode_backtrace(CAPTURED_BACKTRACE) == CAPTURED_LINES


def test_encode_backtrace_strict() -> None:
    """pyqueue writes strict base64, byte for byte what Sidekiq 7 writes for the same lines."""
    encoded = encode_backtrace(CAPTURED_LINES)
    assert "\n" not in encoded
    assert encoded == "".join(CAPTURED_BACKTRACE.split())


def test_backtrace_round_trip_unicode() -> None:
    lines = ["/srv/app/jobs.py:12:in `perform'", "/srv/app/naïve ünïcode.py:1:in `<module>'"]
    assert decode_backtrace(encode_backtrace(lines)) == lines


def test_backtrace_is_zlib_json() -> None:
    encoded = encode_backtrace(["a:1:in `b'"])
    assert json.loads(zlib.decompress(base64.b64decode(encoded))) == ["a:1:in `b'"]


@pytest.mark.parametrize(
    "text",
    [
        "not base64 at all!",
        base64.b64encode(b"not zlib").decode(),
        base64.b64encode(zlib.compress(b"not json")).decode(),
        base64.b64encode(zlib.compress(b'{"a":1}')).decode(),
    ],
)
def test_decode_backtrace_invalid(text: str) -> None:
    with pytest.raises(PayloadError, match="error_backtrace"):
        decode_backtrace(text)
