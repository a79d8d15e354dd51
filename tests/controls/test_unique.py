"""Unique jobs: digests, options, push-time conflicts and the worker-side lock rules."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
import redis

from pyqueue import Client, ClientChain, Job, keys, testing, unique
from pyqueue.errors import ArgumentError, JobDefinitionError, UnknownJobClass
from pyqueue.job import lookup
from pyqueue.payload import Payload
from tests.controls import jobs
from tests.controls.helpers import controls, lock_holder, pop_job, run, scheduled
from tests.worker.conftest import wait_for


class ReplaceJob(Job, name="ControlsSuite::ReplaceJob"):
    queue = jobs.QUEUE
    unique = True
    on_conflict = "replace"
    # Only the first argument identifies the work, so a newer value replaces a waiting one.
    unique_key = staticmethod(lambda key, value: key)

    def perform(self, key: str, value: int) -> None:
        jobs.conn().set(jobs.RUNS + key, value)


class RejectJob(Job, name="ControlsSuite::RejectJob"):
    queue = jobs.QUEUE
    unique = "until_expired"
    unique_ttl = 60
    on_conflict = "reject"

    def perform(self, key: str) -> None:
        return None


def test_digest_ignores_dict_key_order() -> None:
    one = unique.digest("A", "q", [{"x": 1, "y": 2}], None)
    two = unique.digest("A", "q", [{"y": 2, "x": 1}], None)
    assert one == two
    assert len(one) == 64


def test_digest_covers_class_and_queue() -> None:
    base = unique.digest("A", "q", [1], None)
    assert unique.digest("B", "q", [1], None) != base
    assert unique.digest("A", "other", [1], None) != base
    assert unique.digest("A", "q", [2], None) != base


def test_digest_uses_key_function() -> None:
    first = unique.digest("A", "q", ["k", 1], lambda key, value: key)
    second = unique.digest("A", "q", ["k", 2], lambda key, value: key)
    assert first == second


def test_digest_key_function_error() -> None:
    with pytest.raises(ArgumentError, match="unique_key of A raised"):
        unique.digest("A", "q", [1], lambda: "no args")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"unique": "forever"}, "unique is 'forever'"),
        ({"unique": True, "ttl": 0}, "unique_ttl is 0"),
        ({"unique": True, "ttl": True}, "unique_ttl is True"),
        ({"unique": True, "key": "name"}, "unique_key is 'name'"),
        ({"unique": True, "on_conflict": "ignore"}, "on_conflict is 'ignore'"),
        ({"unique": "while_executing", "on_conflict": "replace"}, "needs a lock taken at push"),
        ({"unique": "until_executed", "on_conflict": "reschedule"}, "needs unique while_executing"),
    ],
)
def test_options_rejected(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ArgumentError, match=message):
        unique.resolve_options(**options)


def test_options_defaults() -> None:
    assert unique.resolve_options(None) is None
    assert unique.resolve_options(False) is None
    options = unique.resolve_options(True)
    assert options == unique.UniqueOptions("until_executed", 3600.0, "log")
    serial = unique.resolve_options("while_executing")
    assert serial is not None
    assert serial.on_conflict == "reschedule"


def test_bad_class_option_fails_definition() -> None:
    with pytest.raises(JobDefinitionError, match="BadJob: on_conflict is 'drop'"):

        class BadJob(Job, name="ControlsSuite::BadJob"):
            unique = True
            on_conflict = "drop"

    # Validation runs before registration, so the name stays free.
    with pytest.raises(UnknownJobClass):
        lookup("ControlsSuite::BadJob")


def test_bad_push_option_raises(r: redis.Redis) -> None:
    with pytest.raises(ArgumentError, match="timeout is -1"):
        jobs.CountJob.set(timeout=-1).perform_async("x")
    assert r.llen(keys.queue(jobs.QUEUE)) == 0


def test_push_fields_and_lock(r: redis.Redis) -> None:
    jid = jobs.UntilExecutedJob.perform_async("a")
    payload = pop_job(r)
    assert payload["jid"] == jid
    assert payload["unique_lock"] == "until_executed"
    assert payload["unique_ttl"] == 3600.0
    assert payload["unique_on_conflict"] == "log"
    assert payload["unique_digest"] == unique.digest(
        "ControlsSuite::UntilExecutedJob", jobs.QUEUE, ["a"], None
    )
    assert lock_holder(r, payload) == jid
    ttl_ms = r.pttl(keys.unique_lock(payload["unique_digest"]))
    assert 3_590_000 < ttl_ms <= 3_600_000


def test_duplicate_push_logged_and_dropped(
    r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pyqueue.unique")
    first = jobs.UntilExecutedJob.perform_async("a")
    assert jobs.UntilExecutedJob.perform_async("a") is None
    assert r.llen(keys.queue(jobs.QUEUE)) == 1
    assert f"holder jid={first}" in caplog.text
    # Other arguments are another job.
    assert jobs.UntilExecutedJob.perform_async("b") is not None


def test_scheduled_lock_covers_delay(r: redis.Redis) -> None:
    jobs.UntilExecutedJob.perform_in(600, "later")
    member = r.zrange(keys.SCHEDULE, 0, 0)[0]
    ttl_ms = r.pttl(keys.unique_lock(json.loads(member)["unique_digest"]))
    assert 4_190_000 < ttl_ms <= 4_200_000


def test_reject_to_dead_set(r: redis.Redis) -> None:
    first = RejectJob.perform_async("k")
    second = RejectJob.perform_async("k")
    assert second is None
    dead = [json.loads(member) for member in r.zrange(keys.DEAD, 0, -1)]
    assert len(dead) == 1
    assert dead[0]["error_class"] == "UniqueConflict"
    assert first in dead[0]["error_message"]
    assert dead[0]["jid"] != first
    assert "failed_at" in dead[0]
    assert r.llen(keys.queue(jobs.QUEUE)) == 1


def test_replace_queued_job(r: redis.Redis) -> None:
    ReplaceJob.perform_async("k", 1)
    jobs.CountJob.perform_async("other")
    newer = ReplaceJob.perform_async("k", 2)
    assert newer is not None
    queued = [json.loads(raw) for raw in r.lrange(keys.queue(jobs.QUEUE), 0, -1)]
    assert [job["args"] for job in queued] == [["k", 2], ["other"]]
    assert lock_holder(r, queued[0]) == newer


def test_replace_scheduled_job(r: redis.Redis) -> None:
    ReplaceJob.perform_in(300, "k", 1)
    newer = ReplaceJob.perform_async("k", 2)
    assert r.zcard(keys.SCHEDULE) == 0
    assert pop_job(r)["jid"] == newer


def test_replace_running_job_drops_new(r: redis.Redis) -> None:
    holder = ReplaceJob.perform_async("k", 1)
    pop_job(r)  # A worker took it: the lock stays while it runs.
    assert ReplaceJob.perform_async("k", 2) is None
    digest = unique.digest("ControlsSuite::ReplaceJob", jobs.QUEUE, ["k", 2], ReplaceJob.unique_key)
    assert r.get(keys.unique_lock(digest)) == holder


def test_vetoed_push_releases_lock(r: redis.Redis, redis_url: str) -> None:
    chain = ClientChain()
    chain.add(lambda payload, queue, call_next: None)
    client = Client(redis_url, middleware=chain)
    assert jobs.UntilExecutedJob.set(client=client).perform_async("v") is None
    assert r.keys("pyqueue:unique:*") == []


def test_while_executing_takes_no_push_lock(r: redis.Redis) -> None:
    assert jobs.SerialJob.perform_async("s", 0) is not None
    assert jobs.SerialJob.perform_async("s", 0) is not None
    assert r.llen(keys.queue(jobs.QUEUE)) == 2
    assert r.keys("pyqueue:unique:*") == []


def test_fake_mode_takes_no_lock(r: redis.Redis) -> None:
    with testing.fake():
        jobs.UntilExecutedJob.perform_async("f")
        jobs.UntilExecutedJob.perform_async("f")
        assert len(testing.jobs(jobs.UntilExecutedJob)) == 2
        testing.clear()
    assert r.keys("pyqueue:unique:*") == []


def test_bulk_push_locks_each_job(r: redis.Redis) -> None:
    jids = jobs.UntilExecutedJob.perform_bulk([["x"], ["y"], ["x"]])
    assert jids[0] is not None
    assert jids[1] is not None
    assert jids[2] is None
    assert r.llen(keys.queue(jobs.QUEUE)) == 2


def test_until_executed_released_on_success(r: redis.Redis) -> None:
    jobs.UntilExecutedJob.perform_async("a")
    payload = pop_job(r)
    run(controls(r), payload)
    assert lock_holder(r, payload) is None
    assert jobs.runs("a") == 1


def test_until_executed_kept_on_failure(r: redis.Redis) -> None:
    jid = jobs.UntilExecutedJob.perform_async("a")
    payload = pop_job(r)

    def fail(job: Job) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run(controls(r), payload, fail)
    assert lock_holder(r, payload) == jid


def test_until_executing_released_before_run(r: redis.Redis) -> None:
    jobs.UntilExecutingJob.perform_async("a")
    payload = pop_job(r)
    seen: list[str | None] = []
    run(controls(r), payload, lambda job: seen.append(lock_holder(r, payload)))
    assert seen == [None]


def test_until_expired_kept_after_run(r: redis.Redis) -> None:
    jid = RejectJob.perform_async("k")
    payload = pop_job(r)
    run(controls(r), payload)
    assert lock_holder(r, payload) == jid


def test_while_executing_holds_lock_during_run(r: redis.Redis) -> None:
    jid = jobs.SerialJob.perform_async("s", 0)
    payload = pop_job(r)
    seen: list[str | None] = []
    run(controls(r), payload, lambda job: seen.append(lock_holder(r, payload)))
    assert seen == [jid]
    assert lock_holder(r, payload) is None


def _serial_conflict(r: redis.Redis, on_conflict: str | None) -> Payload:
    """Push two SerialJob copies, let another jid hold the lock, and fetch the second."""
    options = {} if on_conflict is None else {"on_conflict": on_conflict}
    jobs.SerialJob.set(**options).perform_async("s", 0)
    first = pop_job(r)
    unique.acquire(r, first["unique_digest"], first["jid"], 30)
    return first


@pytest.mark.parametrize("on_conflict", [None, "reschedule"])
def test_while_executing_conflict_reschedules(r: redis.Redis, on_conflict: str | None) -> None:
    first = _serial_conflict(r, on_conflict)
    jobs.SerialJob.set(
        **({} if on_conflict is None else {"on_conflict": on_conflict})
    ).perform_async("s", 0)
    second = pop_job(r)
    ran: list[str] = []
    before = time.time()
    run(controls(r, rand=lambda: 0.0), second, lambda job: ran.append(job.jid))

    assert ran == []
    [(member, score)] = scheduled(r)
    assert member["jid"] == second["jid"]
    assert member["unique_reschedules"] == 1
    assert "enqueued_at" not in member
    # The first conflict waits half of 1 s when rand() is 0.
    assert before + 0.5 <= score < time.time() + 0.5
    assert lock_holder(r, first) == first["jid"]


def test_while_executing_conflict_reject(r: redis.Redis) -> None:
    _serial_conflict(r, "reject")
    jobs.SerialJob.set(on_conflict="reject").perform_async("s", 0)
    second = pop_job(r)
    run(controls(r), second, lambda job: pytest.fail("must not run"))
    [dead] = [json.loads(member) for member in r.zrange(keys.DEAD, 0, -1)]
    assert dead["jid"] == second["jid"]
    assert dead["error_class"] == "UniqueConflict"


def test_while_executing_conflict_log(r: redis.Redis) -> None:
    _serial_conflict(r, "log")
    jobs.SerialJob.set(on_conflict="log").perform_async("s", 0)
    run(controls(r), pop_job(r), lambda job: pytest.fail("must not run"))
    assert r.zcard(keys.SCHEDULE) == 0
    assert r.zcard(keys.DEAD) == 0


def test_while_executing_reentrant_for_same_jid(r: redis.Redis) -> None:
    """A job recovered from a dead process runs again under its own, still held lock."""
    first = _serial_conflict(r, None)
    ran: list[str] = []
    run(controls(r), first, lambda job: ran.append(job.jid))
    assert ran == [first["jid"]]
    assert lock_holder(r, first) is None


def test_release_after_recovery(r: redis.Redis) -> None:
    first = _serial_conflict(r, None)
    assert unique.release_after_recovery(r, first)
    assert lock_holder(r, first) is None
    jid = jobs.UntilExecutedJob.perform_async("a")
    payload = pop_job(r)
    assert not unique.release_after_recovery(r, payload)
    assert lock_holder(r, payload) == jid


def test_release_only_by_holder(r: redis.Redis) -> None:
    jobs.UntilExecutedJob.perform_async("a")
    payload = pop_job(r)
    assert not unique.release(r, payload["unique_digest"], "0" * 24)
    assert lock_holder(r, payload) == payload["jid"]
    assert unique.release(r, payload["unique_digest"], payload["jid"])


def test_death_releases_lock(launch: Any, r: redis.Redis) -> None:
    launch()
    jid = jobs.FailingUniqueJob.perform_async("d")
    dead = wait_for(lambda: r.zrange(keys.DEAD, 0, -1), timeout=10)
    assert json.loads(dead[0])["jid"] == jid
    # Death handlers run just after the dead-set write, so the release may lag it.
    assert wait_for(lambda: r.keys("pyqueue:unique:*") == [], timeout=5)
    assert jobs.runs("d") == 1
