"""Jobs whose bytes are not valid UTF-8, as a foreign producer may write them."""

from __future__ import annotations

import json

import redis

from tests.worker.conftest import LaunchFactory, wait_for

NOT_JSON = b"\xff\xfe{broken"
UNKNOWN_CLASS = (
    b'{"class":"GoneJob","args":["caf\xe9"],"queue":"default","retry":true,'
    b'"jid":"0123456789abcdef01234567"}'
)


def raw_client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def test_invalid_bytes_go_to_dead_unchanged(redis_url: str, launch: LaunchFactory) -> None:
    raw = raw_client(redis_url)
    raw.lpush("queue:default", NOT_JSON)

    launch()

    wait_for(lambda: raw.zcard("dead") == 1)
    assert raw.zrange("dead", 0, -1) == [NOT_JSON]
    assert raw.llen("queue:default") == 0


def test_invalid_bytes_in_args_kept_in_retry(redis_url: str, launch: LaunchFactory) -> None:
    raw = raw_client(redis_url)
    raw.lpush("queue:default", UNKNOWN_CLASS)

    launch()

    wait_for(lambda: raw.zcard("retry") == 1)
    [member] = raw.zrange("retry", 0, -1)
    assert b'"args":["caf\xe9"]' in member
    entry = json.loads(member.decode("utf-8", "surrogateescape"))
    assert entry["error_class"] == "UnknownJobClass"
    assert entry["retry_count"] == 0
