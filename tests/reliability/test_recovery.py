"""Recovery of dead processes' working lists: liveness, push back, recovery count, dead set."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from pyqueue import config
from pyqueue.heartbeat import hostname
from pyqueue.payload import Payload
from pyqueue.recovery import (
    Recovery,
    RecoveryLimitExceeded,
    RecoveryService,
    died_on_this_host,
    owner_is_gone,
)
from pyqueue.retry import death_handlers
from tests.reliability.support import MARK, jid_of, job

ME = "recoverer-host:100:bbbbbbbbbbbb"
GHOST = "ghost-host:200:cccccccccccc"
NOW = 1_800_000_000.0


def make_recovery(conn: redis.Redis, **settings: Any) -> Recovery:
    return Recovery(conn, config.build(settings), ME, clock=lambda: NOW)


def leave_behind(conn: redis.Redis, identity: str, *raws: str) -> None:
    """Put jobs in the working list of ``identity``, as a process killed mid-job leaves them."""
    conn.lpush(f"pyqueue:working:{identity}", *raws)
    conn.sadd("pyqueue:working_index", identity)


def register(conn: redis.Redis, identity: str) -> None:
    """Make ``identity`` look like a live process, as its heartbeat does."""
    conn.sadd("processes", identity)
    conn.hset(identity, "info", "{}")
    conn.expire(identity, 60)


def test_dead_process_jobs_return_to_queues(r: redis.Redis) -> None:
    raws = [job(MARK, [], jid_of(1)), job(MARK, [], jid_of(2), queue="low")]
    leave_behind(r, GHOST, *raws)

    assert make_recovery(r).recover_dead() == 2

    assert r.lrange("queue:default", 0, -1) == [raws[0]]
    assert r.lrange("queue:low", 0, -1) == [raws[1]]
    assert r.exists(f"pyqueue:working:{GHOST}", f"pyqueue:working:{ME}") == 0
    # The recovering process stays indexed: its list held the jobs on their way back.
    assert r.smembers("pyqueue:working_index") == {ME}
    assert r.get(f"pyqueue:recoveries:{jid_of(1)}") == "1"
    assert 0 < r.ttl(f"pyqueue:recoveries:{jid_of(1)}") <= 24 * 3600


def test_recovered_jobs_keep_their_order(r: redis.Redis) -> None:
    """The job fetched first is fetched first again, before jobs that were waiting."""
    first, second = job(MARK, [], jid_of(1)), job(MARK, [], jid_of(2))
    waiting = job(MARK, [], jid_of(3))
    r.lpush("queue:default", waiting)
    # LMOVE puts each fetched job at the head, so the first fetched is at the tail.
    leave_behind(r, GHOST, first, second)

    make_recovery(r).recover_dead()

    assert [r.rpop("queue:default") for _ in range(3)] == [first, second, waiting]


def test_recovery_releases_while_executing_lock(r: redis.Redis) -> None:
    """The dead process held the job's while_executing lock; recovery frees it for copies."""
    raw = job(MARK, [], jid_of(1), unique_lock="while_executing", unique_digest="d1")
    r.set("pyqueue:unique:d1", jid_of(1), px=60_000)
    other = job(MARK, [], jid_of(2), unique_lock="until_executed", unique_digest="d2")
    r.set("pyqueue:unique:d2", jid_of(2), px=60_000)
    leave_behind(r, GHOST, raw, other)

    make_recovery(r).recover_dead()

    assert r.exists("pyqueue:unique:d1") == 0
    # An until_executed lock guards the job until it has run, so it stays.
    assert r.get("pyqueue:unique:d2") == jid_of(2)
    assert r.llen("queue:default") == 2


def test_live_process_is_left_alone(r: redis.Redis) -> None:
    raw = job(MARK, [], jid_of(1))
    leave_behind(r, GHOST, raw)
    register(r, GHOST)

    assert make_recovery(r).recover_dead() == 0

    assert r.lrange(f"pyqueue:working:{GHOST}", 0, -1) == [raw]
    assert r.llen("queue:default") == 0


def test_stopped_process_counts_as_gone(r: redis.Redis) -> None:
    """A process that left ``processes`` is gone even while its hash has not expired."""
    register(r, GHOST)
    assert not owner_is_gone(r, GHOST)

    r.srem("processes", GHOST)

    assert owner_is_gone(r, GHOST)


def test_expired_heartbeat_counts_as_gone(r: redis.Redis) -> None:
    register(r, GHOST)
    r.delete(GHOST)

    assert owner_is_gone(r, GHOST)


def test_dead_pid_on_this_host_counts_as_gone(r: redis.Redis) -> None:
    """On its own host a killed process is gone at once, before its hash expires."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = f"{hostname()}:{child.pid}:dddddddddddd"
    alive = f"{hostname()}:{os.getppid()}:eeeeeeeeeeee"
    mine = f"{hostname()}:{os.getpid()}:ffffffffffff"
    for identity in (dead, alive, mine):
        register(r, identity)

    assert died_on_this_host(dead)
    assert not died_on_this_host(alive)
    # This process's pid under another identity: a restarted container reusing pid 1.
    assert died_on_this_host(mine)
    assert not died_on_this_host(f"other-host:{child.pid}:dddddddddddd")
    assert owner_is_gone(r, dead)
    assert not owner_is_gone(r, alive)


def test_recovery_limit_sends_job_to_dead(r: redis.Redis) -> None:
    """A job recovered more than max_recoveries times goes to the dead set."""
    raw = job(MARK, ["x"], jid_of(7))
    recovery = make_recovery(r, max_recoveries=2)

    for expected in (1, 2):
        leave_behind(r, GHOST, raw)
        recovery.recover_dead()
        assert r.lrange("queue:default", 0, -1) == [raw]
        assert r.get(f"pyqueue:recoveries:{jid_of(7)}") == str(expected)
        r.delete("queue:default")

    leave_behind(r, GHOST, raw)
    recovery.recover_dead()

    assert r.llen("queue:default") == 0
    assert r.exists(f"pyqueue:working:{ME}") == 0
    members = r.zrange("dead", 0, -1, withscores=True)
    assert len(members) == 1
    entry = json.loads(members[0][0])
    assert members[0][1] == NOW
    assert entry["jid"] == jid_of(7)
    assert entry["args"] == ["x"]
    assert entry["error_class"] == "RecoveryLimitExceeded"
    assert "recovered from a dead process 3 times" in entry["error_message"]
    assert "max_recoveries (2)" in entry["error_message"]
    assert entry["failed_at"] == NOW


def test_recovery_limit_respects_dead_false(r: redis.Redis) -> None:
    raw = job(MARK, [], jid_of(8), dead=False)
    r.set(f"pyqueue:recoveries:{jid_of(8)}", 3)
    leave_behind(r, GHOST, raw)

    make_recovery(r).recover_dead()

    assert r.zcard("dead") == 0
    assert r.llen("queue:default") == 0
    assert r.exists(f"pyqueue:working:{ME}") == 0


@pytest.fixture
def deaths() -> Iterator[list[tuple[Payload, BaseException]]]:
    seen: list[tuple[Payload, BaseException]] = []

    def handler(payload: Payload, exc: BaseException) -> None:
        seen.append((payload, exc))

    death_handlers.append(handler)
    yield seen
    death_handlers.remove(handler)


def test_recovery_limit_runs_death_handlers(
    r: redis.Redis, deaths: list[tuple[Payload, BaseException]]
) -> None:
    r.set(f"pyqueue:recoveries:{jid_of(9)}", 3)
    leave_behind(r, GHOST, job(MARK, [], jid_of(9)))

    make_recovery(r).recover_dead()

    assert len(deaths) == 1
    assert deaths[0][0]["jid"] == jid_of(9)
    assert isinstance(deaths[0][1], RecoveryLimitExceeded)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("not json {", "not a valid job"),
        ('{"class":"X","args":[],"jid":"a1"}', "names no queue"),
    ],
)
def test_unrecoverable_job_goes_to_dead(
    r: redis.Redis, caplog: pytest.LogCaptureFixture, raw: str, error: str
) -> None:
    leave_behind(r, GHOST, raw)

    with caplog.at_level(logging.ERROR, logger="pyqueue.recovery"):
        make_recovery(r).recover_dead()

    assert r.zcard("dead") == 1
    assert r.exists(f"pyqueue:working:{ME}", f"pyqueue:working:{GHOST}") == 0
    assert error in caplog.text


def test_invalid_json_kept_byte_for_byte(r: redis.Redis) -> None:
    leave_behind(r, GHOST, "not json {")

    make_recovery(r).recover_dead()

    assert r.zrange("dead", 0, -1) == ["not json {"]


def test_recovery_logs_jid_and_queue(r: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    leave_behind(r, GHOST, job(MARK, [], jid_of(5), queue="low"))

    with caplog.at_level(logging.WARNING, logger="pyqueue.recovery"):
        make_recovery(r).recover_dead()

    (record,) = caplog.records
    message = record.getMessage()
    assert GHOST in message
    assert "queue low" in message
    assert "recovery 1 of at most 3" in message


def test_large_list_recovered_in_batches(r: redis.Redis) -> None:
    raws = [job(MARK, [], jid_of(i)) for i in range(250)]
    leave_behind(r, GHOST, *raws)

    assert make_recovery(r).recover_dead() == 250

    # The oldest job (the first pushed to the working list) is fetched first.
    assert r.lrange("queue:default", 0, -1) == raws[::-1]
    assert r.exists(f"pyqueue:working:{GHOST}") == 0


def test_service_takes_lock_once_a_minute(r: redis.Redis) -> None:
    leave_behind(r, GHOST, job(MARK, [], jid_of(1)))
    checks: list[int] = []
    service = RecoveryService(make_recovery(r), orphan_check=lambda: checks.append(1))

    assert service.run_once() == 1
    leave_behind(r, GHOST, job(MARK, [], jid_of(2)))
    assert service.run_once() == 0

    assert checks == [1, 1]
    assert r.get("pyqueue:recovery_lock") == ME
    assert 0 < r.ttl("pyqueue:recovery_lock") <= 60
    assert r.llen(f"pyqueue:working:{GHOST}") == 1
