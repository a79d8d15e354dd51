"""Payload and process writers for the data API tests, shaped as Sidekiq writes them."""

from __future__ import annotations

from typing import Any

import redis

from pyqueue.payload import dumps

# The malformed entries that a foreign producer once wrote with redis-cli.
BAD_QUEUE_ENTRY = (
    '{"class":"EchoJob","args":"{\\"id\\":null,\\"type\\":\\"tag\\"}","queue":"default",'
    '"retry":true,"jid":"b18q00000000000000000001"}'
)
BAD_RETRY_ENTRIES = {
    '{"class":"EchoJob","args":"{\\"id\\":null}","queue":"default","retry":true,'
    '"jid":"b18r00000000000000000001","retry_count":0,"error_message":"x",'
    '"error_class":"RuntimeError","failed_at":1714985990.0}': 1714986000.0,
    '{"class":null,"args":[],"jid":null}': 1714986002.0,
}
BAD_DEAD_ENTRIES = {
    '{"class":"EchoJob","args":{"id":1},"jid":"b18d00000000000000000001"}': 1714986000.0,
    "{not json": 1714986001.0,
}


def write_bad_entries(r: redis.Redis) -> None:
    """Write the five malformed entries as raw LPUSH / ZADD, as a foreign producer would."""
    r.lpush("queue:default", BAD_QUEUE_ENTRY)
    r.sadd("queues", "default")
    r.zadd("retry", BAD_RETRY_ENTRIES)
    r.zadd("dead", BAD_DEAD_ENTRIES)


def job(jid: str, **fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "retry": True,
        "queue": "default",
        "args": [1, "two"],
        "class": "EchoJob",
        "jid": jid,
        "created_at": 1_700_000_000.0,
        "enqueued_at": 1_700_000_000.5,
    }
    payload.update(fields)
    return payload


def failed_job(jid: str, **fields: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "error_message": "boom",
        "error_class": "RuntimeError",
        "failed_at": 1_700_000_001.0,
        "retry_count": 2,
    }
    return job(jid, **{**defaults, **fields})


def add_entries(r: redis.Redis, key: str, entries: dict[str, float]) -> None:
    r.zadd(key, entries)


def encoded(payload: dict[str, Any]) -> str:
    return dumps(payload)


def write_process(
    r: redis.Redis,
    identity: str,
    *,
    info: dict[str, Any] | str | None = None,
    busy: int = 0,
    quiet: bool = False,
    rss: int = 51_200,
    beat: float = 1_700_000_000.0,
    work: dict[str, dict[str, Any]] | None = None,
    work_key: str = ":work",
    extra: dict[str, str] | None = None,
) -> None:
    """Write a process as a heartbeat does: the set member, the hash and its work hash."""
    if info is None:
        info = {
            "hostname": identity.split(":")[0],
            "started_at": 1_699_999_000.0,
            "pid": 4242,
            "tag": "app",
            "concurrency": 5,
            "queues": ["default", "mail"],
            "labels": ["blue"],
            "identity": identity,
            "version": "0.1.0",
            "embedded": False,
        }
    fields = {
        "info": info if isinstance(info, str) else dumps(info),
        "busy": str(busy),
        "beat": repr(beat),
        "quiet": "true" if quiet else "false",
        "rss": str(rss),
        "rtt_us": "150",
    }
    fields.update(extra or {})
    r.sadd("processes", identity)
    r.hset(identity, mapping=fields)
    r.expire(identity, 60)
    if work:
        r.hset(identity + work_key, mapping={tid: dumps(value) for tid, value in work.items()})
