"""Retries end to end: the processor runs a failing job, the poller brings it back."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
import redis

from pyqueue import Client, Job
from pyqueue.config import Settings
from pyqueue.fetch import BasicFetch
from pyqueue.middleware import ServerChain
from pyqueue.payload import Payload
from pyqueue.processor import Processor, ProcessorContext
from pyqueue.retry import RetryHandler
from pyqueue.scheduled import Poller
from pyqueue.stats import Counters, WorkState
from tests.retry.conftest import FakeClock, FixedRand


class CountedFailJob(Job, name="RetrySuite::CountedFailJob"):
    retry = 2
    runs: ClassVar[int] = 0
    exhausted: ClassVar[list[Payload]] = []

    def perform(self, *args: Any) -> None:
        type(self).runs += 1
        raise RuntimeError(f"failure {type(self).runs}")

    @classmethod
    def retries_exhausted(cls, payload: Payload, exc: BaseException) -> str | None:
        cls.exhausted.append(payload)
        return None


class RunningOwner:
    """Manager stand-in that never quiets."""

    quieting = False

    def processor_stopped(self, processor: Processor) -> None:
        raise AssertionError("the processor stopped although nothing quieted it")

    def processor_died(self, processor: Processor, exc: BaseException) -> None:
        raise AssertionError(f"the processor died: {exc!r}")


@pytest.fixture(autouse=True)
def reset_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CountedFailJob, "runs", 0)
    monkeypatch.setattr(CountedFailJob, "exhausted", [])


def make_processor(r: redis.Redis, clock: FakeClock, rand: FixedRand) -> Processor:
    context = ProcessorContext(
        fetcher=BasicFetch(r, [("default", 0)]),
        retry=RetryHandler(r, Settings(), clock=clock, rand=rand),
        counters=Counters(),
        work=WorkState(),
        middleware=ServerChain(),
        sleep=lambda seconds: None,
    )
    return Processor(RunningOwner(), context, "test-processor")


def retry_entry(r: redis.Redis) -> dict[str, Any]:
    members = r.zrange("retry", 0, -1)
    assert len(members) == 1, f"expected one retry entry, found {members}"
    entry: dict[str, Any] = json.loads(members[0])
    return entry


def test_retry_two_end_to_end(r: redis.Redis, clock: FakeClock, rand: FixedRand) -> None:
    """retry: 2 gives three runs, then one dead entry with retry_count 2."""
    processor = make_processor(r, clock, rand)
    poller = Poller(r, Settings(), Client(redis=r), clock=clock, rand=rand)
    jid = CountedFailJob.set(jid="b14a00000000000000000001").perform_async(1)

    processor.process_one()
    first = retry_entry(r)
    assert first["retry_count"] == 0
    assert first["retry"] == 2
    assert first["error_class"] == "RuntimeError"
    assert first["error_message"] == "failure 1"
    assert first["failed_at"] == clock.now
    assert "retried_at" not in first

    clock.advance(60)
    assert poller.poll_once() == 1
    processor.process_one()
    second = retry_entry(r)
    assert second["retry_count"] == 1
    assert second["retried_at"] == clock.now
    assert second["failed_at"] == first["failed_at"]

    clock.advance(60)
    assert poller.poll_once() == 1
    processor.process_one()
    assert r.zcard("retry") == 0
    [dead] = [json.loads(member) for member in r.zrange("dead", 0, -1)]
    assert dead["jid"] == jid
    assert dead["retry_count"] == 2
    assert dead["error_message"] == "failure 3"

    assert CountedFailJob.runs == 3
    assert len(CountedFailJob.exhausted) == 1
    assert processor.context.counters.pending() == (3, 3)
    assert r.llen("queue:default") == 0


@pytest.mark.parametrize(("retry", "dead_entries"), [(0, 1), (False, 0)])
def test_retry_zero_or_false_end_to_end(
    r: redis.Redis, clock: FakeClock, rand: FixedRand, retry: int | bool, dead_entries: int
) -> None:
    """retry: 0 runs once, then goes to the dead set. retry: false runs once and leaves no trace."""
    processor = make_processor(r, clock, rand)
    CountedFailJob.set(retry=retry).perform_async(1)
    processor.process_one()
    assert CountedFailJob.runs == 1
    assert r.zcard("retry") == 0
    assert r.zcard("dead") == dead_entries
    assert processor.context.counters.pending() == (1, 1)


def test_unknown_class_goes_to_retry(r: redis.Redis, clock: FakeClock, rand: FixedRand) -> None:
    """A class no process registered follows the retry path instead of looping on its queue."""
    processor = make_processor(r, clock, rand)
    Client(redis=r).push({"class": "NoSuchJob", "args": [], "retry": True})
    processor.process_one()
    entry = retry_entry(r)
    assert entry["error_class"] == "UnknownJobClass"
    assert "NoSuchJob" in entry["error_message"]
    assert r.llen("queue:default") == 0


def test_invalid_json_goes_dead(r: redis.Redis, clock: FakeClock, rand: FixedRand) -> None:
    processor = make_processor(r, clock, rand)
    r.lpush("queue:default", "{not json")
    processor.process_one()
    assert r.zrange("dead", 0, -1) == ["{not json"]
    assert processor.context.counters.pending() == (0, 0)
