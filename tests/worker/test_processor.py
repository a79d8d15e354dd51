"""The processor run synchronously on one job at a time against the private Redis."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from pyqueue import events
from pyqueue.errors import Shutdown
from pyqueue.fetch import BasicFetch
from pyqueue.job import Job
from pyqueue.log import TextFormatter
from pyqueue.manager import interrupt
from pyqueue.middleware import ServerChain
from pyqueue.payload import Payload
from pyqueue.processor import Processor, ProcessorContext
from pyqueue.retry import RetryHandler
from pyqueue.stats import Counters, WorkState
from tests.worker import jobs
from tests.worker.conftest import make_settings, payload

RECORD = "WorkerSuite::RecordJob"
JID = "a" * 24


class ShutdownJob(Job, name="WorkerSuite::ShutdownJob"):
    def perform(self) -> None:
        raise Shutdown()


class Owner:
    """A manager stand-in: the test decides when the process is quieting."""

    def __init__(self) -> None:
        self.quieting = False
        self.died: list[BaseException] = []

    def processor_stopped(self, processor: Processor) -> None:
        return None

    def processor_died(self, processor: Processor, exc: BaseException) -> None:
        self.died.append(exc)


class Harness:
    def __init__(self, conn: redis.Redis, redis_url: str) -> None:
        self.redis = conn
        self.owner = Owner()
        self.sleeps: list[float] = []
        settings = make_settings(redis_url)
        self.context = ProcessorContext(
            fetcher=BasicFetch(conn, settings.queues),
            retry=RetryHandler(conn, settings),
            counters=Counters(),
            work=WorkState(),
            middleware=ServerChain(),
            sleep=self.sleeps.append,
        )
        self.processor = Processor(self.owner, self.context, "test-processor")
        self.processor.tid = "tid1"

    def push(self, raw: str, queue: str = "default") -> None:
        self.redis.lpush(f"queue:{queue}", raw)

    def run_one(self, raw: str) -> None:
        self.push(raw)
        self.processor.process_one()


@pytest.fixture
def harness(r: redis.Redis, redis_url: str) -> Iterator[Harness]:
    jobs.reset()
    yield Harness(r, redis_url)
    jobs.reset()


def only_member(conn: redis.Redis, key: str) -> dict[str, Any]:
    members = conn.zrange(key, 0, -1)
    assert len(members) == 1, members
    value = json.loads(members[0])
    assert isinstance(value, dict)
    return value


def test_success_runs_counts_and_empties_queue(harness: Harness) -> None:
    harness.run_one(payload(RECORD, [1, "two", {"x": None}], JID))

    assert jobs.performed == [("default", JID, [1, "two", {"x": None}])]
    assert harness.context.counters.pending() == (1, 0)
    assert harness.redis.llen("queue:default") == 0
    assert harness.redis.zcard("retry") == 0
    assert len(harness.context.work) == 0
    assert harness.processor.current is None


@pytest.mark.parametrize(
    "raw",
    [
        payload("RemovedJob", [1], "b20a00000000000000000001"),
        payload(
            "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper",
            [{"job_class": "NightlyJob", "arguments": []}],
            "b20b00000000000000000001",
            wrapped="NightlyJob",
        ),
        payload("app.jobs.missing_module.EchoJob", [1], "b20c00000000000000000001"),
    ],
)
def test_unknown_class_goes_to_retry_once(harness: Harness, raw: str) -> None:
    harness.run_one(raw)

    entry = only_member(harness.redis, "retry")
    assert entry["jid"] == json.loads(raw)["jid"]
    assert entry["retry_count"] == 0
    assert entry["error_class"] == "UnknownJobClass"
    assert "no job is registered" in entry["error_message"]
    assert harness.context.counters.pending() == (1, 1)
    assert harness.redis.llen("queue:default") == 0
    assert harness.owner.died == []


def test_unknown_class_without_retry_logs_error(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    raw = payload("RemovedJob", [1], JID, retry=False)
    with caplog.at_level(logging.INFO, logger="pyqueue.processor"):
        harness.run_one(raw)

    failures = [rec for rec in caplog.records if rec.getMessage().startswith("fail")]
    assert len(failures) == 1
    assert failures[0].levelno == logging.ERROR
    assert "UnknownJobClass" in failures[0].getMessage()
    assert harness.redis.zcard("retry") == 0
    assert harness.redis.zcard("dead") == 0
    assert harness.context.counters.pending() == (1, 1)


@pytest.mark.parametrize("raw", ["{not json", "[1,2]", '"just a string"', "null"])
def test_invalid_payload_goes_to_dead_uncounted(harness: Harness, raw: str) -> None:
    harness.run_one(raw)

    assert harness.redis.zrange("dead", 0, -1) == [raw]
    assert harness.redis.zcard("retry") == 0
    assert harness.redis.llen("queue:default") == 0
    assert harness.context.counters.pending() == (0, 0)


def test_args_not_a_list_goes_to_retry(harness: Harness) -> None:
    raw = payload(RECORD, '{"id":null,"type":"tag"}', "b18q00000000000000000001")
    harness.run_one(raw)

    entry = only_member(harness.redis, "retry")
    assert entry["error_class"] == "PayloadError"
    assert "args must be a list" in entry["error_message"]
    assert entry["args"] == '{"id":null,"type":"tag"}'
    assert jobs.performed == []
    assert harness.context.counters.pending() == (1, 1)


def test_job_after_quiet_is_pushed_back(harness: Harness) -> None:
    first = payload(RECORD, [1], "1" * 24)
    second = payload(RECORD, [2], "2" * 24)
    harness.push(first)
    harness.push(second)
    harness.owner.quieting = True

    harness.processor.process_one()

    assert jobs.performed == []
    assert harness.redis.lrange("queue:default", 0, -1) == [second, first]
    assert harness.context.counters.pending() == (0, 0)


def test_middleware_runs_in_order_around_perform(harness: Harness) -> None:
    calls: list[str] = []

    def outer(job: Job, item: Payload, queue: str, call_next: Callable[[], None]) -> None:
        calls.append(f"outer:{job.jid}:{queue}:{item['class']}")
        call_next()
        calls.append("outer done")

    def inner(job: Job, item: Payload, queue: str, call_next: Callable[[], None]) -> None:
        calls.append(f"inner:{len(jobs.performed)}")
        call_next()
        calls.append(f"inner done:{len(jobs.performed)}")

    harness.context.middleware.add(outer)
    harness.context.middleware.add(inner)
    harness.run_one(payload(RECORD, [7], JID))

    assert calls == [f"outer:{JID}:default:{RECORD}", "inner:0", "inner done:1", "outer done"]


def test_middleware_may_skip_the_job(harness: Harness) -> None:
    def skip(job: Job, item: Payload, queue: str, call_next: Callable[[], None]) -> None:
        return None

    harness.context.middleware.add(skip)
    harness.run_one(payload(RECORD, [7], JID))

    assert jobs.performed == []
    assert harness.context.counters.pending() == (1, 0)
    assert harness.redis.zcard("retry") == 0


def test_middleware_edits_do_not_reach_retry(harness: Harness) -> None:
    def edit(job: Job, item: Payload, queue: str, call_next: Callable[[], None]) -> None:
        item["args"] = ["edited"]
        item["extra"] = True
        call_next()

    harness.context.middleware.add(edit)
    harness.run_one(payload("WorkerSuite::FailJob", [1], JID, retry=True))

    entry = only_member(harness.redis, "retry")
    assert entry["args"] == [1]
    assert "extra" not in entry
    assert jobs.performed == [("default", JID, ["edited"])]


def test_log_lines_carry_job_context(harness: Harness) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    processor_logger = logging.getLogger("pyqueue.processor")
    processor_logger.addHandler(handler)
    level = processor_logger.level
    processor_logger.setLevel(logging.INFO)
    try:
        harness.run_one(payload(RECORD, [1], JID))
        harness.run_one(payload("WorkerSuite::FailJob", [2], "f" * 24, retry=False))
    finally:
        processor_logger.removeHandler(handler)
        processor_logger.setLevel(level)

    lines = stream.getvalue().splitlines()
    context = f"jid={JID} queue=default class={RECORD}"
    assert lines[0].endswith(f"{context} INFO: start")
    assert f"{context} elapsed=" in lines[1]
    assert lines[1].endswith(" INFO: done")
    assert lines[2].endswith("queue=default class=WorkerSuite::FailJob INFO: start")
    assert "elapsed=" in lines[3]
    assert " ERROR: fail (discarded): RuntimeError: FailJob always fails" in lines[3]
    assert "Traceback" in lines[4]
    assert "[1]" not in stream.getvalue()


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def job_started(self, queue: str, job_class: str) -> None:
        self.calls.append(("started", queue, job_class))

    def job_finished(self, queue: str, job_class: str, elapsed: float, outcome: str) -> None:
        assert elapsed >= 0
        self.calls.append(("finished", queue, job_class, outcome))


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    observer = Recorder()
    events.subscribe(observer)
    yield observer
    events.unsubscribe(observer)


def test_events_report_outcomes(harness: Harness, recorder: Recorder) -> None:
    harness.run_one(payload(RECORD, [1], JID))
    harness.run_one(payload("WorkerSuite::FailJob", [1], JID, retry=True))
    harness.run_one(payload("WorkerSuite::FailJob", [1], JID, retry=0))
    harness.run_one(payload("WorkerSuite::FailJob", [1], JID, retry=False))

    finished = [call for call in recorder.calls if call[0] == "finished"]
    assert [call[3] for call in finished] == [
        events.DONE,
        events.RETRIED,
        events.DEAD,
        events.DISCARDED,
    ]
    assert recorder.calls[0] == ("started", "default", RECORD)
    assert harness.context.counters.pending() == (4, 3)


def test_failed_failure_recording_pushes_job_back(harness: Harness) -> None:
    class BrokenRetry:
        def handle_failure(self, *args: Any) -> str:
            raise redis.ConnectionError("retry set unreachable")

        def send_to_dead_raw(self, raw: str, error: str) -> None:
            raise redis.ConnectionError("dead set unreachable")

    harness.context.retry = BrokenRetry()  # type: ignore[assignment]
    raw = payload("WorkerSuite::FailJob", [1], JID)
    harness.run_one(raw)

    assert harness.redis.lrange("queue:default", 0, -1) == [raw]
    assert harness.sleeps == [1.0]
    assert harness.context.counters.pending() == (1, 1)

    harness.redis.delete("queue:default")
    harness.run_one("{broken")
    assert harness.redis.lrange("queue:default", 0, -1) == ["{broken"]
    assert harness.sleeps == [1.0, 1.0]


def test_shutdown_raised_by_job_pushes_it_back(harness: Harness) -> None:
    raw = payload("WorkerSuite::ShutdownJob", [], JID)
    harness.run_one(raw)

    assert harness.redis.lrange("queue:default", 0, -1) == [raw]
    assert harness.context.counters.pending() == (0, 0)
    assert harness.redis.zcard("retry") == 0


def test_job_taken_by_manager_is_not_counted(harness: Harness) -> None:
    pushed_back = []

    def take(job: Job, item: Payload, queue: str, call_next: Callable[[], None]) -> None:
        pushed_back.append(harness.processor.take_for_requeue())
        call_next()
        raise RuntimeError("fails after the manager took it")

    harness.context.middleware.add(take)
    harness.run_one(payload(RECORD, [1], JID))

    assert pushed_back[0] is not None
    assert pushed_back[0].raw == payload(RECORD, [1], JID)
    assert harness.context.counters.pending() == (0, 0)
    assert harness.redis.zcard("retry") == 0
    assert len(harness.context.work) == 0


def test_sidekiq_8_payload_keeps_fields(harness: Harness) -> None:
    """Integer-millisecond timestamps and unknown fields pass through a failure unchanged."""
    extra = {
        "created_at": 1796414329874,
        "enqueued_at": 1796414329875,
        "bid": "b-123",
        "cattr": {"tenant": 7},
        "tags": ["mail"],
    }
    harness.run_one(payload(RECORD, [1], JID, **extra))
    assert jobs.performed == [("default", JID, [1])]

    harness.run_one(payload("WorkerSuite::FailJob", [2], "f" * 24, **extra))
    entry = only_member(harness.redis, "retry")
    for field, value in extra.items():
        assert entry[field] == value, field
    assert isinstance(entry["failed_at"], float)


class IdleFetcher:
    """Returns no job after a short pause, like BRPOP on empty queues."""

    def retrieve_work(self) -> None:
        time.sleep(0.005)
        return None


def test_late_shutdown_ends_thread_cleanly(harness: Harness) -> None:
    """A Shutdown that lands outside any job still ends the thread without an error."""
    stopped: list[Processor] = []
    harness.owner.processor_stopped = stopped.append  # type: ignore[method-assign]
    harness.context.fetcher = IdleFetcher()  # type: ignore[assignment]
    processor = Processor(harness.owner, harness.context, "idle-processor")
    processor.start()

    interrupt(processor.thread)
    processor.thread.join(timeout=5)

    assert not processor.thread.is_alive()
    assert stopped == [processor]
    assert harness.owner.died == []
