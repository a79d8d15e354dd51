"""The process hash, busy work, stats flush, remote signals and process cleanup."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pyqueue import __version__, stats
from pyqueue.heartbeat import Heartbeat, make_identity, process_info
from tests.fixtures.redis_server import free_port
from tests.worker.conftest import LaunchFactory, make_settings, payload, wait_for

# The info object Sidekiq 6.4.1 wrote in the captured heartbeat, plus the
# fields Sidekiq 7 added.
CAPTURED_INFO = json.loads(
    '{"hostname":"vm","started_at":1796414323.238888,"pid":27665,"tag":"interop",'
    '"concurrency":2,"queues":["default","email_delivery","critical"],"labels":[],'
    '"identity":"vm:27665:14d87631518e"}'
)
SIDEKIQ7_FIELDS = {"weights": list, "version": str, "embedded": bool}


class Signals:
    def __init__(self) -> None:
        self.received: list[str] = []
        self.quiet = False

    def __call__(self, name: str) -> None:
        self.received.append(name)


@pytest.fixture
def signals() -> Signals:
    return Signals()


def build(
    conn: redis.Redis, redis_url: str, signals: Signals, **overrides: Any
) -> tuple[Heartbeat, stats.Counters, stats.WorkState]:
    settings = make_settings(
        redis_url,
        concurrency=2,
        tag="interop",
        queues=["default", "email_delivery", "critical"],
        **overrides,
    )
    counters = stats.Counters()
    work = stats.WorkState()
    heartbeat = Heartbeat(
        conn,
        settings,
        make_identity("vm"),
        counters,
        work,
        is_quiet=lambda: signals.quiet,
        on_signal=signals,
    )
    return heartbeat, counters, work


@pytest.fixture
def beat_parts(
    r: redis.Redis, redis_url: str, signals: Signals
) -> Iterator[tuple[Heartbeat, stats.Counters, stats.WorkState]]:
    yield build(r, redis_url, signals)


def test_identity_is_host_pid_nonce(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DYNO", raising=False)
    identity = make_identity()
    assert re.fullmatch(
        rf"{re.escape(socket.gethostname())}:{os.getpid()}:[0-9a-f]{{12}}", identity
    )
    assert make_identity() != identity

    monkeypatch.setenv("DYNO", "worker.1")
    assert make_identity().startswith(f"worker.1:{os.getpid()}:")


def test_info_has_sidekiq_fields_and_types(redis_url: str) -> None:
    settings = make_settings(redis_url, queues=[["critical", 3], ["default", 1]], labels=["a"])
    info = process_info(settings, "vm:1:abcdefabcdef", 1796414323.5)

    for field, value in CAPTURED_INFO.items():
        assert type(info[field]) is type(value), field
    for field, kind in SIDEKIQ7_FIELDS.items():
        assert isinstance(info[field], kind), field
    assert info["hostname"] == "vm"
    assert info["queues"] == ["critical", "default"]
    assert info["weights"] == [{"critical": 3, "default": 1}]
    assert info["labels"] == ["a"]
    assert info["version"] == __version__
    assert info["embedded"] is False


def test_beat_writes_process_hash(r: redis.Redis, beat_parts: Any) -> None:
    heartbeat, _, _ = beat_parts
    heartbeat.beat()
    identity = heartbeat.identity

    assert r.smembers("processes") == {identity}
    fields = r.hgetall(identity)
    assert set(fields) == {"info", "busy", "beat", "quiet", "rss", "rtt_us", "concurrency"}
    info = json.loads(fields["info"])
    assert list(info)[:8] == list(CAPTURED_INFO)
    assert info["identity"] == identity
    assert info["concurrency"] == 2
    assert info["tag"] == "interop"
    assert fields["busy"] == "0"
    assert fields["quiet"] == "false"
    assert fields["concurrency"] == "2"
    assert re.fullmatch(r"\d+\.\d+", fields["beat"])
    assert abs(float(fields["beat"]) - dt.datetime.now().timestamp()) < 5
    assert int(fields["rss"]) > 1000
    assert int(fields["rtt_us"]) >= 0
    assert 0 < r.ttl(identity) <= 60


def test_quiet_flag_is_written(r: redis.Redis, beat_parts: Any, signals: Signals) -> None:
    heartbeat, _, _ = beat_parts
    signals.quiet = True
    heartbeat.beat()
    assert r.hget(heartbeat.identity, "quiet") == "true"


def test_running_job_appears_in_work_hashes(r: redis.Redis, beat_parts: Any) -> None:
    heartbeat, _, work = beat_parts
    raw = payload("SleepJob", [12.0], "604d2924d1846f17aa6db5ed")
    work.register("kzp", "default", raw, run_at=1796414363.9)
    heartbeat.beat()

    for key in (f"{heartbeat.identity}:work", f"{heartbeat.identity}:workers"):
        entry = json.loads(r.hget(key, "kzp") or "null")
        assert entry == {"queue": "default", "payload": raw, "run_at": 1796414363}
        assert 0 < r.ttl(key) <= 60
    assert r.hget(heartbeat.identity, "busy") == "1"

    work.unregister("kzp")
    heartbeat.beat()
    assert r.exists(f"{heartbeat.identity}:work", f"{heartbeat.identity}:workers") == 0
    assert r.hget(heartbeat.identity, "busy") == "0"


def test_legacy_workers_key_can_be_turned_off(
    r: redis.Redis, redis_url: str, signals: Signals
) -> None:
    heartbeat, _, work = build(r, redis_url, signals, legacy_workers_key=False)
    work.register("kzp", "default", "{}")
    heartbeat.beat()
    assert r.exists(f"{heartbeat.identity}:work") == 1
    assert r.exists(f"{heartbeat.identity}:workers") == 0


def test_stats_flush_writes_totals_and_daily_keys(r: redis.Redis, beat_parts: Any) -> None:
    heartbeat, counters, _ = beat_parts
    for failed in (False, False, True):
        counters.record(failed=failed)
    heartbeat.beat()

    day = dt.datetime.now(dt.UTC).date().isoformat()
    assert r.get("stat:processed") == "3"
    assert r.get("stat:failed") == "1"
    assert r.get(f"stat:processed:{day}") == "3"
    assert r.get(f"stat:failed:{day}") == "1"
    for key in (f"stat:processed:{day}", f"stat:failed:{day}"):
        assert 157_679_000 < r.ttl(key) <= 157_680_000
    assert r.ttl("stat:processed") == -1
    assert counters.pending() == (0, 0)


def test_stats_flush_skipped_when_zero(r: redis.Redis, beat_parts: Any) -> None:
    heartbeat, _, _ = beat_parts
    r.config_resetstat()
    heartbeat.beat()
    assert r.keys("stat:*") == []
    assert "cmdstat_incrby" not in r.info("commandstats")


def test_failed_flush_keeps_counts() -> None:
    unreachable = redis.Redis(port=free_port(), decode_responses=True, retry=Retry(NoBackoff(), 0))
    counters = stats.Counters()
    counters.record(failed=True)
    counters.record(failed=False)

    with pytest.raises(redis.ConnectionError):
        stats.flush(unreachable, counters)

    assert counters.pending() == (2, 1)


def test_signal_popped_one_per_beat(r: redis.Redis, beat_parts: Any, signals: Signals) -> None:
    heartbeat, _, _ = beat_parts
    key = f"{heartbeat.identity}-signals"
    r.lpush(key, "TSTP", "BOGUS", "TTIN")

    heartbeat.beat()
    assert signals.received == ["TSTP"]
    heartbeat.beat()
    heartbeat.beat()
    assert signals.received == ["TSTP", "TTIN"]
    assert r.llen(key) == 0


def test_cleanup_removes_expired_processes(r: redis.Redis, beat_parts: Any) -> None:
    heartbeat, _, _ = beat_parts
    r.sadd("processes", "ghost:1:000000000000", "alive:2:000000000000")
    r.hset("alive:2:000000000000", "info", "{}")

    heartbeat.beat()

    assert r.smembers("processes") == {heartbeat.identity, "alive:2:000000000000"}
    assert 0 < r.ttl("process_cleanup") <= 60


def test_stop_flushes_and_deregisters(r: redis.Redis, beat_parts: Any) -> None:
    heartbeat, counters, work = beat_parts
    work.register("kzp", "default", "{}")
    heartbeat.start()
    wait_for(lambda: r.sismember("processes", heartbeat.identity))
    counters.record(failed=False)

    heartbeat.stop()

    assert not r.sismember("processes", heartbeat.identity)
    assert r.exists(f"{heartbeat.identity}:work", f"{heartbeat.identity}:workers") == 0
    assert r.get("stat:processed") == "1"
    # The process hash is left to expire, as Sidekiq does.
    assert r.exists(heartbeat.identity) == 1


def test_running_job_visible_in_live_worker(r: redis.Redis, launch: LaunchFactory) -> None:
    raw = payload("WorkerSuite::SliceSleepJob", [30], "c" * 24)
    r.lpush("queue:default", raw)
    launcher = launch(concurrency=2)

    work_key = f"{launcher.identity}:work"
    wait_for(lambda: r.hlen(work_key) == 1)
    entry = json.loads(next(iter(r.hvals(work_key))))
    assert entry["payload"] == raw
    assert entry["queue"] == "default"
    assert isinstance(entry["run_at"], int)
    assert r.hvals(f"{launcher.identity}:workers") == r.hvals(work_key)
    assert r.hget(launcher.identity, "busy") == "1"
