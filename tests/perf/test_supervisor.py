"""``pyqueue run --processes N``: children with their own identities, restarts, signals."""

from __future__ import annotations

import json
import os
import signal

import redis

from pyqueue.client import Client
from pyqueue.config import Settings, build
from pyqueue.supervisor import child_settings_line, restart_delay
from tests.perf.conftest import (
    SupervisorFactory,
    alive,
    process_state,
    registered_pids,
    wait_for,
)


def all_quiet(r: redis.Redis, count: int) -> bool:
    """Return True when ``count`` processes are registered and every one is quiet."""
    flags = [r.hget(identity, "quiet") for identity in r.smembers("processes")]
    return len(flags) == count and all(flag == "true" for flag in flags)


def test_children_run_jobs_and_stop_on_term(
    supervisor: SupervisorFactory, r: redis.Redis, redis_url: str
) -> None:
    handle = supervisor("-c", "3")
    pids = handle.wait_for_children(r, 2)
    Client(redis_url).push_bulk({"class": "PerfSuite::Noop", "args": [[] for _ in range(200)]})
    wait_for(lambda: r.llen("queue:default") == 0)

    handle.signal(signal.SIGTERM)
    code = handle.process.wait(15)

    assert code == 0
    assert len(set(pids)) == 2
    assert not any(alive(pid) for pid in pids)
    assert r.scard("processes") == 0
    assert r.get("stat:processed") == "200"


def test_killed_child_is_restarted(supervisor: SupervisorFactory, r: redis.Redis) -> None:
    handle = supervisor()
    first, second = handle.wait_for_children(r, 2)

    os.kill(first, signal.SIGKILL)
    new_pid = handle.wait_for_new_child({first, second})
    wait_for(lambda: new_pid in registered_pids(r))

    assert sorted(handle.children()) == sorted([second, new_pid])
    assert "was killed by SIGKILL" in handle.output()


def test_tstp_quiets_every_child(supervisor: SupervisorFactory, r: redis.Redis) -> None:
    handle = supervisor()
    handle.wait_for_children(r, 2)

    handle.signal(signal.SIGTSTP)

    assert wait_for(lambda: all_quiet(r, 2))


def test_children_stop_when_supervisor_dies(supervisor: SupervisorFactory, r: redis.Redis) -> None:
    handle = supervisor()
    pids = handle.wait_for_children(r, 2)

    handle.signal(signal.SIGKILL)
    handle.process.wait(5)

    wait_for(lambda: not any(alive(pid) for pid in pids))
    assert r.scard("processes") == 0


def test_child_settings_round_trip() -> None:
    settings = build(
        {
            "processes": 3,
            "concurrency": 7,
            "queues": [["critical", 3], ["default", 1]],
            "labels": ["a", "b"],
            "metrics_port": 9999,
        }
    )

    values = json.loads(child_settings_line(settings))
    child = build(values)

    assert child.processes == 1
    assert child.concurrency == 7
    assert child.queues == (("critical", 3), ("default", 1))
    assert child.labels == ("a", "b")
    assert child.metrics_port == 9999
    assert child.poll_interval_average is None
    assert "poll_interval_average" not in values
    assert child == Settings(**{**settings.__dict__, "processes": 1})


def test_restart_delay_grows_and_caps() -> None:
    assert restart_delay(0) == 0.0
    assert restart_delay(1) == 1.0
    assert restart_delay(2) == 2.0
    assert restart_delay(5) == 16.0
    assert restart_delay(20) == 30.0


def test_tstp_during_child_start_quiets(supervisor: SupervisorFactory, r: redis.Redis) -> None:
    """A TSTP that arrives while the children still import must neither stop nor miss them."""
    handle = supervisor()
    pids = wait_for(lambda: handle.children() if len(handle.children()) == 2 else None)

    handle.signal(signal.SIGTSTP)
    handle.wait_for_children(r, 2)

    assert wait_for(lambda: all_quiet(r, 2))
    assert "T" not in {process_state(pid) for pid in pids}
