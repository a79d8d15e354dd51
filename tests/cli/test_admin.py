"""The admin commands end to end: CliRunner against the private redis-server."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result

from pyqueue.cli import main
from pyqueue.client import Client
from tests.api.helpers import (
    BAD_DEAD_ENTRIES,
    BAD_QUEUE_ENTRY,
    BAD_RETRY_ENTRIES,
    encoded,
    failed_job,
    job,
    write_bad_entries,
    write_process,
)
from tests.fixtures.redis_server import free_port

IDENTITY = "web-1:77:0123456789ab"


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


def run_json(*args: str) -> Any:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_stats_text_and_json(r: redis.Redis) -> None:
    r.mset({"stat:processed": 9, "stat:failed": 4})
    today = dt.datetime.now(dt.UTC).date().isoformat()
    r.set(f"stat:processed:{today}", 3)
    Client(redis=r).push({"class": "EchoJob", "args": [], "queue": "mail"})
    result = run("stats")
    assert result.exit_code == 0
    assert "processed  9" in result.stdout
    assert "enqueued   1" in result.stdout
    document = run_json("stats", "--days", "2")
    assert document["processed"] == 9
    assert document["failed"] == 4
    assert document["queues"] == {"mail": 1}
    assert document["problems"] == []
    assert document["history"]["processed"][today] == 3
    assert len(document["history"]["failed"]) == 2
    assert set(document) == {
        "processed",
        "failed",
        "enqueued",
        "scheduled_size",
        "retry_size",
        "dead_size",
        "processes_size",
        "workers_size",
        "default_queue_latency",
        "queues",
        "problems",
        "history",
    }


def test_queues_and_jobs(r: redis.Redis) -> None:
    client = Client(redis=r)
    jids = [client.push({"class": "EchoJob", "args": [i]}) for i in range(5)]
    result = run("queues")
    assert result.exit_code == 0
    assert "default  5" in result.stdout
    assert run_json("queues")["queues"][0]["name"] == "default"

    page = run_json("jobs", "default", "--limit", "2", "--offset", "1", "--oldest-first")
    assert [j["jid"] for j in page["jobs"]] == jids[1:3]
    assert page["total"] == 5
    assert set(page) == {"queue", "jobs", "total", "offset", "newest_first", "problems"}
    text = run("jobs", "default", "--limit", "1")
    assert text.exit_code == 0
    assert str(jids[-1]) in text.stdout
    assert "1 of 5 jobs from position 0" in text.stdout


def test_jobs_unknown_queue(r: redis.Redis) -> None:
    result = run("jobs", "nope")
    assert result.exit_code == 1
    assert "no queue named 'nope'" in result.stderr


def test_bad_entries_shown_exit_zero(r: redis.Redis) -> None:
    """Every malformed entry is listed (flagged) by the CLI, which exits 0."""
    write_bad_entries(r)
    for command, raws in (("retries", BAD_RETRY_ENTRIES), ("dead", BAD_DEAD_ENTRIES)):
        result = run(command)
        assert result.exit_code == 0, result.output
        assert "2 of 2 entries" in result.stdout
        document = run_json(command)
        assert {e["job"]["raw"] for e in document["entries"]} == set(raws)
        assert all(e["job"]["problems"] for e in document["entries"])
    assert "{not json" in run("dead").stdout
    jobs = run("jobs", "default")
    assert jobs.exit_code == 0
    assert "args is string, not an array" in jobs.stdout
    assert run_json("jobs", "default")["jobs"][0]["raw"] == BAD_QUEUE_ENTRY
    assert run("queues").exit_code == 0
    assert run("stats").exit_code == 0


def test_bad_entries_deleted_by_entry_id(r: redis.Redis) -> None:
    write_bad_entries(r)
    for command, key in (("retries", "retry"), ("dead", "dead")):
        for entry in run_json(command)["entries"]:
            before = r.zcard(key)
            result = run(command, "delete", entry["entry_id"], "--yes")
            assert result.exit_code == 0, result.output
            assert r.zcard(key) == before - 1
            assert r.zscore(key, entry["job"]["raw"]) is None


def test_show_text_and_json(r: redis.Redis) -> None:
    r.zadd("retry", {encoded(failed_job("show1", error_message="it broke")): 1_800_000_000.0})
    result = run("retries", "show", "show1")
    assert result.exit_code == 0
    assert "RuntimeError: it broke" in result.stdout
    assert "entry id     1800000000.0-show1" in result.stdout
    document = run_json("retries", "show", "1800000000.0-show1")
    assert document["entry_id"] == "1800000000.0-show1"
    assert document["set_name"] == "retry"
    assert document["score"] == 1_800_000_000.0
    assert document["job"]["error_message"] == "it broke"
    assert document["job"]["retry_count"] == 2


def test_show_not_found_and_ambiguous(r: redis.Redis) -> None:
    r.zadd("retry", {encoded(failed_job("dup")): 1.0, encoded(failed_job("dup", args=[9])): 2.0})
    missing = run("retries", "show", "nope")
    assert missing.exit_code == 1
    assert "no entry 'nope' in retry" in missing.stderr
    ambiguous = run("retries", "delete", "dup", "--yes")
    assert ambiguous.exit_code == 1
    assert "matches 2 entries" in ambiguous.stderr
    assert r.zcard("retry") == 2


def test_delete_asks_for_confirmation(r: redis.Redis) -> None:
    r.zadd("retry", {encoded(failed_job("c1")): 1.0})
    declined = run("retries", "delete", "c1", input="n\n")
    assert declined.exit_code == 1
    assert "Delete 1.0-c1 from retry?" in declined.stdout
    assert r.zcard("retry") == 1
    accepted = run("retries", "delete", "c1", input="y\n")
    assert accepted.exit_code == 0
    assert "deleted 1.0-c1" in accepted.stdout
    assert r.zcard("retry") == 0


def test_retry_does_not_ask(r: redis.Redis) -> None:
    r.zadd("retry", {encoded(failed_job("rt1", queue="mail")): 1.0})
    result = run("retries", "retry", "rt1")
    assert result.exit_code == 0
    assert "retried 1.0-rt1" in result.stdout
    pushed = json.loads(str(r.lindex("queue:mail", 0)))
    assert pushed["retry_count"] == 1
    again = run("retries", "retry", "rt1")
    assert again.exit_code == 1


def test_retry_bad_entry_fails(r: redis.Redis) -> None:
    write_bad_entries(r)
    result = run("retries", "retry", "b18r00000000000000000001")
    assert result.exit_code == 1
    assert "cannot be queued: job args must be a list" in result.stderr
    assert r.zcard("retry") == 2


def test_kill_and_kill_all(r: redis.Redis) -> None:
    r.zadd("retry", {encoded(failed_job(f"k{i}")): float(i) for i in range(3)})
    assert run("retries", "kill", "k0", input="y\n").exit_code == 0
    assert r.zcard("dead") == 1
    declined = run("retries", "kill-all", input="n\n")
    assert declined.exit_code == 1
    assert r.zcard("retry") == 2
    result = run("retries", "kill-all", "--yes")
    assert result.exit_code == 0
    assert "killed 2 entries" in result.stdout
    assert (r.zcard("retry"), r.zcard("dead")) == (0, 3)


def test_dead_has_no_kill(r: redis.Redis) -> None:
    result = run("dead", "kill", "x")
    assert result.exit_code == 2
    assert "No such command 'kill'" in result.output


def test_retry_all_and_clear(r: redis.Redis) -> None:
    r.zadd("dead", {encoded(failed_job(f"d{i}")): float(i) for i in range(3)})
    result = run("dead", "retry-all", input="y\n")
    assert result.exit_code == 0
    assert "Retry all 3 entries of dead?" in result.stdout
    assert "retried 3 entries" in result.stdout
    assert r.llen("queue:default") == 3
    r.zadd("dead", {encoded(failed_job("x")): 1.0})
    assert run("dead", "clear", input="n\n").exit_code == 1
    assert r.zcard("dead") == 1
    cleared = run("dead", "clear", "-y")
    assert cleared.exit_code == 0
    assert "deleted 1 entry" in cleared.stdout
    assert r.exists("dead") == 0


def test_retry_all_with_bad_entries_exits_one(r: redis.Redis) -> None:
    write_bad_entries(r)
    r.zadd("retry", {encoded(failed_job("good")): 5.0})
    result = run("retries", "retry-all", "--yes")
    assert result.exit_code == 1
    assert "retried 1 entry" in result.stdout
    assert result.stderr.count("skipped:") == 2


def test_scheduled_retry_adds_to_queue(r: redis.Redis) -> None:
    r.zadd("schedule", {encoded(job("s1", queue="later")): 1.0})
    result = run("scheduled", "retry", "s1")
    assert result.exit_code == 0
    pushed = json.loads(str(r.lindex("queue:later", 0)))
    assert "retry_count" not in pushed
    r.zadd("schedule", {encoded(job(f"s{i}")): float(i) for i in range(2, 4)})
    assert run("scheduled", "retry-all", "-y").exit_code == 0
    assert r.llen("queue:default") == 2


def test_list_options(r: redis.Redis) -> None:
    r.zadd("retry", {encoded(failed_job(f"l{i}")): float(i) for i in range(5)})
    r.zadd("retry", {encoded(failed_job("other", **{"class": "OtherJob"})): 9.0})
    newest = run_json("retries", "list", "--limit", "2")
    assert [e["job"]["jid"] for e in newest["entries"]] == ["other", "l4"]
    assert newest["total"] == 6
    assert set(newest) == {"set", "total", "offset", "entries", "problems"}
    oldest = run_json("retries", "--limit", "2", "--offset", "1", "--oldest-first")
    assert [e["job"]["jid"] for e in oldest["entries"]] == ["l1", "l2"]
    only = run_json("retries", "--class", "OtherJob")
    assert [e["job"]["jid"] for e in only["entries"]] == ["other"]
    assert only["total"] == 1


def test_wrong_key_type_listed_with_warning(r: redis.Redis) -> None:
    r.set("retry", "oops")
    result = run("retries")
    assert result.exit_code == 0
    assert "warning: key 'retry' is a string" in result.stderr
    assert run_json("retries")["problems"]


def test_processes_and_workers(r: redis.Redis) -> None:
    entry = {"queue": "default", "payload": encoded(job("busy1")), "run_at": 1_700_000_000}
    write_process(r, IDENTITY, busy=1, work={"t7": entry})
    listing = run("processes")
    assert listing.exit_code == 0
    assert IDENTITY in listing.stdout
    assert "1/5" in listing.stdout
    document = run_json("processes", "list")
    assert document["processes"][0]["identity"] == IDENTITY
    assert document["processes"][0]["concurrency"] == 5
    workers = run_json("workers")["workers"]
    assert [(w["process"], w["tid"], w["job"]["jid"]) for w in workers] == [
        (IDENTITY, "t7", "busy1")
    ]
    assert "busy1" in run("workers").stdout


def test_processes_quiet_and_stop(r: redis.Redis) -> None:
    write_process(r, IDENTITY)
    assert run("processes", "quiet", IDENTITY).exit_code == 0
    assert r.lrange(f"{IDENTITY}-signals", 0, -1) == ["TSTP"]
    assert run("processes", "stop", IDENTITY, input="n\n").exit_code == 1
    assert r.llen(f"{IDENTITY}-signals") == 1
    assert run("processes", "stop", IDENTITY, input="y\n").exit_code == 0
    assert r.lrange(f"{IDENTITY}-signals", 0, -1) == ["TERM", "TSTP"]
    missing = run("processes", "quiet", "gone:1:000000000000")
    assert missing.exit_code == 1
    assert "no live process" in missing.stderr


def test_processes_cleanup(r: redis.Redis) -> None:
    write_process(r, IDENTITY)
    r.sadd("processes", "gone:1:000000000000")
    result = run("processes", "cleanup")
    assert result.exit_code == 0
    assert "removed 1 expired process" in result.stdout
    assert r.smembers("processes") == {IDENTITY}


def test_redis_unreachable_exit_three(redis_url: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    for args in (["stats"], ["retries"], ["health"], ["processes", "quiet", "x"]):
        result = run(*args, "--redis-url", url)
        assert result.exit_code == 3, (args, result.output)
        assert "cannot reach Redis" in result.stderr


def test_group_redis_url_used_by_subcommand(
    r: redis.Redis, redis_url: str, monkeypatch: Any
) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    r.zadd("retry", {encoded(failed_job("g1")): 1.0})
    result = run("retries", "--redis-url", redis_url, "show", "g1")
    assert result.exit_code == 0, result.output


# Health: every check failing alone, all of them together, and the OK case.


def healthy_cluster(r: redis.Redis) -> None:
    write_process(r, IDENTITY)
    Client(redis=r).push({"class": "EchoJob", "args": []})
    today = dt.datetime.now(dt.UTC).date().isoformat()
    r.mset({f"stat:processed:{today}": 100, f"stat:failed:{today}": 5})


LIMITS = ("--max-enqueued", "10", "--max-failure-rate", "0.1", "--max-latency", "60")


def test_health_ok(r: redis.Redis) -> None:
    healthy_cluster(r)
    result = run("health", *LIMITS)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "OK"
    document = run_json("health", *LIMITS)
    assert document["ok"] is True
    assert [c["name"] for c in document["checks"]] == [
        "processes",
        "enqueued",
        "failure_rate",
        "latency",
        "memory",
    ]
    assert set(document["checks"][0]) == {"name", "ok", "value", "limit", "message"}


def test_health_no_process(r: redis.Redis) -> None:
    result = run("health")
    assert result.exit_code == 1
    assert "FAILED: 1 of 2 checks" in result.stdout
    assert "fail  processes: 0 live processes, below the minimum of 1" in result.stdout


def test_health_min_processes(r: redis.Redis) -> None:
    healthy_cluster(r)
    assert run("health", "--min-processes", "2").exit_code == 1
    assert run("health", "--min-processes", "0").exit_code == 0


def test_health_enqueued(r: redis.Redis) -> None:
    healthy_cluster(r)
    result = run("health", *LIMITS, "--max-enqueued", "0")
    assert result.exit_code == 1
    assert "fail  enqueued: 1 job enqueued, above the limit of 0" in result.stdout
    assert result.stdout.count("fail  ") == 1


def test_health_failure_rate(r: redis.Redis) -> None:
    healthy_cluster(r)
    result = run("health", *LIMITS, "--max-failure-rate", "0.04")
    assert result.exit_code == 1
    assert "fail  failure_rate: 5 of 100 jobs failed today (5.0%)" in result.stdout
    assert result.stdout.count("fail  ") == 1


def test_health_latency(r: redis.Redis) -> None:
    healthy_cluster(r)
    r.rpush("queue:slow", encoded(job("old", queue="slow", enqueued_at=time.time() - 600)))
    r.sadd("queues", "slow")
    result = run("health", *LIMITS)
    assert result.exit_code == 1
    assert "fail  latency: oldest job waits 600" in result.stdout
    assert "in queue 'slow'" in result.stdout
    assert result.stdout.count("fail  ") == 1


@pytest.fixture
def maxmemory(r: redis.Redis) -> Any:
    """Set maxmemory to 1.5 x the memory in use, and remove the limit afterwards."""
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory", int(used * 1.5))
    try:
        yield
    finally:
        r.config_set("maxmemory", 0)


def test_health_memory(r: redis.Redis, maxmemory: Any) -> None:
    healthy_cluster(r)
    assert run("health", *LIMITS).exit_code == 0
    result = run("health", *LIMITS, "--memory-threshold", "0.3")
    assert result.exit_code == 1
    assert "fail  memory:" in result.stdout
    assert "of maxmemory used" in result.stdout
    assert result.stdout.count("fail  ") == 1


def test_health_all_failing(r: redis.Redis, maxmemory: Any) -> None:
    today = dt.datetime.now(dt.UTC).date().isoformat()
    r.mset({f"stat:processed:{today}": 10, f"stat:failed:{today}": 10})
    r.rpush("queue:default", encoded(job("old", enqueued_at=time.time() - 600)))
    r.sadd("queues", "default")
    result = run("health", *LIMITS, "--max-enqueued", "0", "--memory-threshold", "0.3")
    assert result.exit_code == 1
    assert "FAILED: 5 of 5 checks" in result.stdout
    document = json.loads(
        run("health", *LIMITS, "--max-enqueued", "0", "--memory-threshold", "0.3", "--json").stdout
    )
    assert document["ok"] is False
    assert [c["ok"] for c in document["checks"]] == [False] * 5


def test_health_rejects_bad_limits(r: redis.Redis) -> None:
    assert run("health", "--max-failure-rate", "1.5").exit_code == 2
    assert run("health", "--memory-threshold", "0").exit_code == 2
    assert run("health", "--min-processes", "-1").exit_code == 2


def test_invalid_utf8_listed_and_deleted(r: redis.Redis, redis_url: str) -> None:
    raw_client = redis.Redis.from_url(redis_url)
    raw_client.zadd("dead", {b"\xfe\xff": 1.0, b'{"class":"A","args":["\\ud800"],"jid":"u1"}': 2.0})
    listing = run("dead")
    assert listing.exit_code == 0, listing.output
    assert "\ufffd\ufffd" in listing.stdout
    entries = run_json("dead")["entries"]
    assert len(entries) == 2
    for entry in entries:
        assert run("dead", "delete", entry["entry_id"], "--yes").exit_code == 0
    assert raw_client.zcard("dead") == 0
