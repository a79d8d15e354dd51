"""ScheduledSet, RetrySet and DeadSet on a real redis-server."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from pyqueue.api import (
    AmbiguousReference,
    DeadSet,
    KeyTypeError,
    NotFound,
    RetrySet,
    ScheduledSet,
    find_entry,
)
from pyqueue.api.base import NOT_UTF8, tolerate_invalid_utf8
from pyqueue.api.sorted_sets import digest
from pyqueue.config import Settings
from pyqueue.connection import create_redis
from pyqueue.errors import PayloadError
from tests.api.helpers import (
    BAD_DEAD_ENTRIES,
    BAD_RETRY_ENTRIES,
    encoded,
    failed_job,
    job,
    write_bad_entries,
)


def queued(r: redis.Redis, queue: str = "default") -> list[dict[str, Any]]:
    raws = r.lrange(f"queue:{queue}", 0, -1)
    assert isinstance(raws, list)
    return [json.loads(raw) for raw in raws]


def test_page_newest_and_oldest_first(r: redis.Redis) -> None:
    r.zadd("retry", {encoded(failed_job(f"jid{i}")): 1000.0 + i for i in range(5)})
    retries = RetrySet(r)
    newest = retries.page(0, 2)
    assert newest.total == 5
    assert newest.problems == ()
    assert [e.jid for e in newest.entries] == ["jid4", "jid3"]
    assert [e.score for e in newest.entries] == [1004.0, 1003.0]
    oldest = retries.page(4, 2, newest_first=False)
    assert [e.jid for e in oldest.entries] == ["jid4"]
    assert all(e.set_name == "retry" for e in newest.entries)
    assert newest.entries[0].entry_id == "1004.0-jid4"


def test_page_identical_scores(r: redis.Redis) -> None:
    r.zadd("schedule", {encoded(job(f"same{i}")): 2000.0 for i in range(3)})
    page = ScheduledSet(r).page()
    assert sorted(e.jid or "" for e in page.entries) == ["same0", "same1", "same2"]
    assert {e.score for e in page.entries} == {2000.0}


def test_page_reads_only_the_window(r: redis.Redis) -> None:
    """A page of 10 from 20,000 entries sends one ZCARD and one ZRANGE of 10 members."""
    pipe = r.pipeline(transaction=False)
    for start in range(0, 20_000, 5_000):
        pipe.zadd(
            "dead", {encoded(job(f"{i:024x}")): float(i) for i in range(start, start + 5_000)}
        )
    pipe.execute()
    dead = DeadSet(r)
    r.config_resetstat()
    page = dead.page(offset=10_000, count=10)
    stats: dict[str, Any] = r.info("commandstats")
    assert page.total == 20_000
    assert len(page.entries) == 10
    assert page.entries[0].score == 9_999.0
    assert stats["cmdstat_zcard"]["calls"] == 1
    assert stats["cmdstat_zrevrange"]["calls"] == 1
    read_commands = {name for name in stats if name.startswith(("cmdstat_z", "cmdstat_s"))}
    assert read_commands == {"cmdstat_zcard", "cmdstat_zrevrange"}


def test_find_job_and_lookup(r: redis.Redis) -> None:
    r.zadd("retry", {encoded(failed_job("abc")): 10.0, encoded(failed_job("abcd")): 11.0})
    retries = RetrySet(r)
    entry = retries.find_job("abc")
    assert entry is not None
    assert entry.score == 10.0
    assert retries.find_job("ab") is None
    assert retries.find_job("nope") is None
    assert [e.jid for e in retries.lookup("11.0-abcd")] == ["abcd"]
    assert [e.jid for e in retries.lookup("abcd")] == ["abcd"]
    assert retries.lookup("12.0-abcd") == []


def test_find_job_escapes_glob_characters(r: redis.Redis) -> None:
    r.zadd("retry", {encoded(failed_job("a*[x]?")): 1.0, encoded(failed_job("aZ[x]Q")): 2.0})
    found = RetrySet(r).find_jobs("a*[x]?")
    assert [e.score for e in found] == [1.0]


def test_filter_class_and_search(r: redis.Redis) -> None:
    wrapped = job(
        "aj1",
        **{
            "class": "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper",
            "wrapped": "SignupMailer",
        },
    )
    r.zadd(
        "schedule",
        {
            encoded(job("e1", **{"class": "Reports::Daily"})): 1.0,
            encoded(job("e2", **{"class": "Other", "args": ["Reports::Daily"]})): 2.0,
            encoded(wrapped): 3.0,
        },
    )
    scheduled = ScheduledSet(r)
    assert [e.jid for e in scheduled.filter_class("Reports::Daily")] == ["e1"]
    assert [e.jid for e in scheduled.filter_class("SignupMailer")] == ["aj1"]
    assert [e.jid for e in scheduled.search("Reports::Daily")] == ["e1", "e2"]


def test_find_entry_errors(r: redis.Redis) -> None:
    r.zadd("retry", {encoded(failed_job("dup")): 1.0, encoded(failed_job("dup", args=[2])): 2.0})
    retries = RetrySet(r)
    with pytest.raises(NotFound, match="no entry 'missing' in retry"):
        find_entry(retries, "missing")
    with pytest.raises(AmbiguousReference, match=r"1\.0-dup, 2\.0-dup"):
        find_entry(retries, "dup")
    assert find_entry(retries, "2.0-dup").job.args == [2]


def test_delete_removes_exact_member(r: redis.Redis) -> None:
    first, second = encoded(failed_job("d1")), encoded(failed_job("d2"))
    r.zadd("retry", {first: 5.0, second: 5.0})
    retries = RetrySet(r)
    entry = retries.find_job("d1")
    assert entry is not None
    assert retries.delete(entry) is True
    assert retries.delete(entry) is False
    assert r.zrange("retry", 0, -1) == [second]


def test_retry_keeps_retry_count_and_pushes_once(r: redis.Redis) -> None:
    payload = failed_job("r1", queue="mail", bid="batch-1", custom={"k": 1})
    r.zadd("retry", {encoded(payload): 3000.0})
    retries = RetrySet(r)
    entry = retries.find_job("r1")
    assert entry is not None
    assert retries.retry(entry) is True
    # A second operator acting on the same entry finds it gone and pushes nothing.
    assert retries.retry(entry) is False
    assert r.zcard("retry") == 0
    jobs = queued(r, "mail")
    assert len(jobs) == 1
    pushed = jobs[0]
    assert pushed["retry_count"] == 1
    assert pushed["jid"] == "r1"
    assert pushed["bid"] == "batch-1"
    assert pushed["custom"] == {"k": 1}
    assert pushed["created_at"] == 1_700_000_000.0
    assert isinstance(pushed["enqueued_at"], float)
    assert pushed["enqueued_at"] > 1_700_000_000.5
    assert r.sismember("queues", "mail")


def test_retry_first_failure_goes_to_minus_one(r: redis.Redis) -> None:
    r.zadd("dead", {encoded(failed_job("r0", retry_count=0)): 1.0})
    dead = DeadSet(r)
    entry = dead.find_job("r0")
    assert entry is not None
    assert dead.retry(entry) is True
    assert queued(r)[0]["retry_count"] == -1


def test_add_to_queue_keeps_payload(r: redis.Redis) -> None:
    r.zadd("schedule", {encoded(job("s1", queue="reports", at=5.0)): 5.0})
    scheduled = ScheduledSet(r)
    entry = scheduled.find_job("s1")
    assert entry is not None
    assert scheduled.add_to_queue(entry) is True
    pushed = queued(r, "reports")[0]
    assert "at" not in pushed
    assert pushed["args"] == [1, "two"]
    assert "retry_count" not in pushed


def test_retry_unpushable_entry_leaves_it(r: redis.Redis) -> None:
    write_bad_entries(r)
    retries = RetrySet(r)
    for entry in retries.page().entries:
        with pytest.raises(PayloadError, match="cannot be queued"):
            retries.retry(entry)
    assert r.zcard("retry") == 2
    assert r.llen("queue:default") == 1


def test_kill_moves_to_dead_and_trims(r: redis.Redis) -> None:
    now = time.time()
    r.zadd("dead", {encoded(job(f"old{i}")): now - 100 + i for i in range(3)})
    r.zadd("retry", {encoded(failed_job("k1")): 1.0})
    retries = RetrySet(r, settings=Settings(dead_max_jobs=3))
    entry = retries.find_job("k1")
    assert entry is not None
    assert retries.kill(entry) is True
    assert retries.kill(entry) is False
    assert r.zcard("retry") == 0
    # Ruby's rank trim keeps dead_max_jobs - 1 entries, the newest ones.
    members = r.zrange("dead", 0, -1)
    assert members == [encoded(job("old2")), entry.raw]


def test_kill_bad_entry_keeps_bytes(r: redis.Redis) -> None:
    write_bad_entries(r)
    retries = RetrySet(r)
    for entry in retries.page().entries:
        assert retries.kill(entry) is True
    assert r.zcard("retry") == 0
    for raw in BAD_RETRY_ENTRIES:
        assert r.zscore("dead", raw) is not None


def test_retry_all_skips_bad_entries(r: redis.Redis) -> None:
    write_bad_entries(r)
    r.zadd("retry", {encoded(failed_job(f"ok{i}")): 10.0 + i for i in range(150)})
    result = RetrySet(r).retry_all()
    assert result.done == 150
    assert len(result.skipped) == 2
    assert r.zcard("retry") == 2
    assert r.llen("queue:default") == 151


def test_kill_all_and_clear(r: redis.Redis) -> None:
    r.zadd("schedule", {encoded(job(f"s{i}")): float(i) for i in range(4)})
    assert ScheduledSet(r).kill_all().done == 4
    assert r.zcard("schedule") == 0
    assert r.zcard("dead") == 4
    assert DeadSet(r).clear() == 4
    assert r.exists("dead") == 0


def test_dead_set_cannot_kill() -> None:
    assert not hasattr(DeadSet, "kill")
    assert not hasattr(DeadSet, "kill_all")


def test_bad_entries_listed_flagged_and_deletable(r: redis.Redis) -> None:
    """Every malformed retry and dead entry is listed with problems, and delete removes it."""
    write_bad_entries(r)
    for sorted_set, raws in ((RetrySet(r), BAD_RETRY_ENTRIES), (DeadSet(r), BAD_DEAD_ENTRIES)):
        page = sorted_set.page()
        assert page.problems == ()
        assert {entry.raw for entry in page.entries} == set(raws)
        for entry in page.entries:
            assert entry.job.problems, entry.raw
        for entry in page.entries:
            before = sorted_set.size()
            assert sorted_set.delete(entry) is True
            assert sorted_set.size() == before - 1
        assert sorted_set.size() == 0


def test_entry_without_jid_found_by_digest(r: redis.Redis) -> None:
    write_bad_entries(r)
    dead = DeadSet(r)
    entry_id = f"1714986001.0-{digest('{not json')}"
    found = find_entry(dead, entry_id)
    assert found.raw == "{not json"
    assert found.entry_id == entry_id


def test_wrong_key_type(r: redis.Redis) -> None:
    r.set("retry", "oops")
    retries = RetrySet(r)
    page = retries.page()
    assert page.entries == ()
    assert len(page.problems) == 1
    assert "key 'retry' is a string" in page.problems[0]
    with pytest.raises(KeyTypeError, match="needs a zset"):
        retries.size()
    with pytest.raises(KeyTypeError):
        retries.find_job("x")
    with pytest.raises(KeyTypeError):
        list(retries.entries())
    assert retries.clear() == 0
    assert r.exists("retry") == 0


def test_entries_iterates_all_windows(r: redis.Redis) -> None:
    r.zadd("retry", {encoded(failed_job(f"w{i:03}")): float(i) for i in range(250)})
    jids = [entry.jid for entry in RetrySet(r).entries(newest_first=False, window=100)]
    assert jids == [f"w{i:03}" for i in range(250)]


def test_page_rejects_bad_window(r: redis.Redis) -> None:
    with pytest.raises(ValueError, match="offset >= 0"):
        RetrySet(r).page(-1, 10)


INVALID_UTF8 = b'{"class":"A\xff","args":[],"jid":"bytes1"}'


def test_invalid_utf8_with_strict_connection(r: redis.Redis, redis_url: str) -> None:
    raw_client = redis.Redis.from_url(redis_url)
    raw_client.zadd("retry", {INVALID_UTF8: 1.0})
    retries = RetrySet(r)
    page = retries.page()
    assert page.entries == ()
    assert page.problems == (NOT_UTF8,)
    # The connection that failed to decode was dropped; the client still works.
    assert retries.size() == 1


def test_invalid_utf8_listed_and_deleted(redis_url: str, r: redis.Redis) -> None:
    raw_client = redis.Redis.from_url(redis_url)
    raw_client.zadd("retry", {INVALID_UTF8: 1.0, b"\xfe\xff": 2.0})
    conn = tolerate_invalid_utf8(create_redis(redis_url))
    retries = RetrySet(conn)
    page = retries.page()
    assert len(page.entries) == 2
    readable = retries.find_job("bytes1")
    assert readable is not None
    assert readable.job.problems == (
        "payload contains bytes that are not valid UTF-8; Ruby's JSON parser rejects it",
    )
    for entry in page.entries:
        assert retries.delete(entry) is True
    assert raw_client.zcard("retry") == 0
