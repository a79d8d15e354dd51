"""RetryHandler: Sidekiq 7's decision tree, the error fields and the backoff."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import redis

from pyqueue import Client, Job, events
from pyqueue.config import Settings
from pyqueue.errors import Shutdown
from pyqueue.payload import Payload
from pyqueue.retry import (
    MESSAGE_ERROR,
    RetryHandler,
    death_handlers,
    decode_backtrace,
)
from pyqueue.scheduled import Poller
from tests.retry.conftest import FakeClock, FixedRand


class AlwaysFailJob(Job, name="RetrySuite::AlwaysFailJob"):
    retry = 2
    exhausted: ClassVar[list[Payload]] = []

    def perform(self, *args: Any) -> None:
        raise RuntimeError("always fails")

    @classmethod
    def retries_exhausted(cls, payload: Payload, exc: BaseException) -> str | None:
        cls.exhausted.append(payload)
        return None


class HookJob(Job, name="RetrySuite::HookJob"):
    """A job whose retry_in and retries_exhausted results each test sets."""

    delay: ClassVar[Any] = None
    on_exhausted: ClassVar[str | None] = None
    exhausted: ClassVar[list[Payload]] = []

    def perform(self, *args: Any) -> None:
        raise RuntimeError("hook job fails")

    @classmethod
    def retry_in(cls, count: int, exc: BaseException, payload: Payload) -> Any:
        if isinstance(cls.delay, Exception):
            raise cls.delay
        return cls.delay

    @classmethod
    def retries_exhausted(cls, payload: Payload, exc: BaseException) -> str | None:
        cls.exhausted.append(payload)
        return cls.on_exhausted


class ArgumentError(Exception):
    """Stand-in for the Ruby exception of the same name in the recorded Sidekiq traffic."""


class InteropError(Exception):
    """Stand-in for the Ruby exception of the same name in the recorded Sidekiq traffic."""


@pytest.fixture(autouse=True)
def reset_hooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[Payload, BaseException]]]:
    AlwaysFailJob.exhausted.clear()
    HookJob.exhausted.clear()
    monkeypatch.setattr(HookJob, "delay", None)
    monkeypatch.setattr(HookJob, "on_exhausted", None)
    calls: list[tuple[Payload, BaseException]] = []

    def record(payload: Payload, exc: BaseException) -> None:
        calls.append((payload, exc))

    death_handlers.append(record)
    try:
        yield calls
    finally:
        death_handlers.remove(record)


@pytest.fixture
def deaths(reset_hooks: list[tuple[Payload, BaseException]]) -> list[tuple[Payload, BaseException]]:
    """Calls received by the death handlers, as (payload, exception) pairs."""
    return reset_hooks


@pytest.fixture
def handler(r: redis.Redis, clock: FakeClock, rand: FixedRand) -> RetryHandler:
    return RetryHandler(r, Settings(), clock=clock, rand=rand)


def raised(exc: BaseException) -> BaseException:
    """Return ``exc`` after raising it, so that it carries a traceback."""
    try:
        raise exc
    except BaseException as caught:
        return caught


def job_json(**fields: Any) -> str:
    payload: dict[str, Any] = {
        "class": "AlwaysFailJob",
        "args": [1],
        "queue": "default",
        "retry": True,
        "jid": "b14a00000000000000000001",
        "created_at": 1796414336.1382055,
        "enqueued_at": 1796414336.1383708,
    }
    payload.update(fields)
    return json.dumps(payload, separators=(",", ":"))


def fail(
    handler: RetryHandler,
    raw: str,
    job_class: type[Job] | None = AlwaysFailJob,
    exc: BaseException | None = None,
    queue: str = "default",
) -> str:
    error = exc if exc is not None else raised(RuntimeError("boom"))
    return handler.handle_failure(raw, json.loads(raw), queue, error, job_class)


def entries(r: redis.Redis, key: str) -> list[tuple[dict[str, Any], float]]:
    return [(json.loads(member), score) for member, score in r.zrange(key, 0, -1, withscores=True)]


def only_entry(r: redis.Redis, key: str) -> tuple[dict[str, Any], float]:
    found = entries(r, key)
    assert len(found) == 1, f"expected one entry in {key}, found {found}"
    return found[0]


def test_retry_two_runs_three_times(
    r: redis.Redis, handler: RetryHandler, clock: FakeClock, rand: FixedRand
) -> None:
    """A job allowed two retries runs three times, then lands in the dead set once."""
    client = Client(redis=r)
    poller = Poller(r, Settings(), client, clock=clock, rand=rand)
    client.push(
        {
            "class": "AlwaysFailJob",
            "args": [1],
            "queue": "default",
            "retry": 2,
            "jid": "b14a00000000000000000001",
        }
    )
    executions = 0

    def run_next() -> str:
        nonlocal executions
        raw = r.rpop("queue:default")
        assert isinstance(raw, str)
        executions += 1
        return fail(handler, raw)

    first_failure = clock.now
    assert run_next() == events.RETRIED
    job, _ = only_entry(r, "retry")
    assert job["retry_count"] == 0
    assert job["retry"] == 2
    assert job["error_class"] == "RuntimeError"
    assert job["error_message"] == "boom"
    assert job["failed_at"] == first_failure
    assert "retried_at" not in job

    clock.advance(100)
    assert poller.poll_once() == 1
    assert run_next() == events.RETRIED
    job, _ = only_entry(r, "retry")
    assert job["retry_count"] == 1
    assert job["retried_at"] == clock.now
    assert job["failed_at"] == first_failure
    assert job["retry"] == 2

    clock.advance(100)
    assert poller.poll_once() == 1
    assert run_next() == events.DEAD
    assert r.zcard("retry") == 0
    dead, _ = only_entry(r, "dead")
    assert dead["retry_count"] == 2
    assert dead["jid"] == "b14a00000000000000000001"
    assert len(AlwaysFailJob.exhausted) == 1
    assert r.llen("queue:default") == 0
    assert executions == 3


def test_retry_zero_goes_to_dead(
    r: redis.Redis, handler: RetryHandler, deaths: list[tuple[Payload, BaseException]]
) -> None:
    assert fail(handler, job_json(retry=0)) == events.DEAD
    assert r.zcard("retry") == 0
    dead, _ = only_entry(r, "dead")
    assert dead["retry_count"] == 0
    assert len(AlwaysFailJob.exhausted) == 1
    assert len(deaths) == 1


@pytest.mark.parametrize("retry", [False, None])
def test_retry_false_writes_nothing(
    r: redis.Redis,
    handler: RetryHandler,
    deaths: list[tuple[Payload, BaseException]],
    retry: bool | None,
) -> None:
    assert fail(handler, job_json(retry=retry), job_class=None) == events.DISCARDED
    assert r.zcard("retry") == 0
    assert r.zcard("dead") == 0
    assert len(deaths) == 1
    assert deaths[0][0]["jid"] == "b14a00000000000000000001"
    assert AlwaysFailJob.exhausted == []


def test_missing_retry_uses_class_option(r: redis.Redis, handler: RetryHandler) -> None:
    raw = json.dumps({"class": "AlwaysFailJob", "args": [], "queue": "default", "jid": "j1"})
    assert fail(handler, raw) == events.RETRIED
    job, _ = only_entry(r, "retry")
    assert job["retry"] == 2


def test_missing_retry_without_class_discards(r: redis.Redis, handler: RetryHandler) -> None:
    """An unresolved class has no options, so a payload without retry is dropped."""
    raw = json.dumps({"class": "Missing", "args": [], "queue": "default", "jid": "j1"})
    assert fail(handler, raw, job_class=None) == events.DISCARDED
    assert r.zcard("retry") == 0
    assert r.zcard("dead") == 0


def test_unknown_class_retries_from_payload(r: redis.Redis, handler: RetryHandler) -> None:
    assert fail(handler, job_json(retry=True), job_class=None) == events.RETRIED
    job, _ = only_entry(r, "retry")
    assert job["retry_count"] == 0


def test_default_backoff_first_retry(
    r: redis.Redis, handler: RetryHandler, clock: FakeClock, rand: FixedRand
) -> None:
    for rand.value, expected in ((0.0, 15), (0.5, 20), (0.9999, 24)):
        r.delete("retry")
        assert fail(handler, job_json()) == events.RETRIED
        job, score = only_entry(r, "retry")
        assert score - job["failed_at"] == pytest.approx(expected, abs=1e-3)


def test_default_backoff_second_retry(
    r: redis.Redis, handler: RetryHandler, clock: FakeClock, rand: FixedRand
) -> None:
    for rand.value, expected in ((0.0, 16), (0.9999, 34)):
        r.delete("retry")
        raw = job_json(retry_count=0, failed_at=clock.now - 20)
        assert fail(handler, raw) == events.RETRIED
        job, score = only_entry(r, "retry")
        assert score - job["retried_at"] == pytest.approx(expected, abs=1e-3)


def test_default_backoff_ranges_random(r: redis.Redis, clock: FakeClock) -> None:
    """With a real random source the first delay stays in [15, 25) and the second in [16, 35)."""
    handler = RetryHandler(r, Settings(), clock=clock, rand=random.Random(7).random)
    for _ in range(100):
        fail(handler, job_json(jid="first"))
        fail(handler, job_json(jid="second", retry_count=0, failed_at=clock.now))
        (first, first_score), (second, second_score) = sorted(
            entries(r, "retry"), key=lambda entry: entry[0]["jid"]
        )
        assert 15 <= first_score - first["failed_at"] < 25
        assert 16 <= second_score - second["retried_at"] < 35
        r.delete("retry")


def test_retry_in_delay_plus_jitter(
    r: redis.Redis, handler: RetryHandler, clock: FakeClock, rand: FixedRand
) -> None:
    HookJob.delay = 30
    rand.value = 0.5
    raw = job_json(retry_count=1, failed_at=clock.now - 100)
    assert fail(handler, raw, job_class=HookJob) == events.RETRIED
    _, score = only_entry(r, "retry")
    # count is 2, so the jitter is 5 * (2 + 1).
    assert score - clock.now == pytest.approx(30 + 15, abs=1e-3)


def test_retry_in_float_truncated(r: redis.Redis, handler: RetryHandler, clock: FakeClock) -> None:
    HookJob.delay = 2.9
    assert fail(handler, job_json(), job_class=HookJob) == events.RETRIED
    _, score = only_entry(r, "retry")
    assert score - clock.now == pytest.approx(2, abs=1e-3)


@pytest.mark.parametrize("result", [None, 0, -5, True, "later", [1], ValueError("hook broke")])
def test_retry_in_fallback_to_default(
    r: redis.Redis, handler: RetryHandler, clock: FakeClock, result: Any
) -> None:
    HookJob.delay = result
    assert fail(handler, job_json(), job_class=HookJob) == events.RETRIED
    _, score = only_entry(r, "retry")
    assert score - clock.now == pytest.approx(15, abs=1e-3)


def test_retry_in_kill_goes_to_dead(
    r: redis.Redis, handler: RetryHandler, deaths: list[tuple[Payload, BaseException]]
) -> None:
    HookJob.delay = "kill"
    assert fail(handler, job_json(), job_class=HookJob) == events.DEAD
    assert r.zcard("retry") == 0
    dead, _ = only_entry(r, "dead")
    assert dead["retry_count"] == 0
    assert len(HookJob.exhausted) == 1
    assert len(deaths) == 1


def test_retry_in_discard_drops_job(
    r: redis.Redis, handler: RetryHandler, deaths: list[tuple[Payload, BaseException]]
) -> None:
    HookJob.delay = "discard"
    assert fail(handler, job_json(), job_class=HookJob) == events.DISCARDED
    assert r.zcard("retry") == 0
    assert r.zcard("dead") == 0
    assert HookJob.exhausted == []
    assert deaths == []


def test_exhausted_hook_discard_skips_dead(
    r: redis.Redis, handler: RetryHandler, deaths: list[tuple[Payload, BaseException]]
) -> None:
    HookJob.on_exhausted = "discard"
    assert fail(handler, job_json(retry=0), job_class=HookJob) == events.DISCARDED
    assert r.zcard("dead") == 0
    assert len(HookJob.exhausted) == 1
    assert deaths == []


def test_exhausted_hook_error_still_kills(r: redis.Redis, handler: RetryHandler) -> None:
    class BrokenHookJob(Job, name="RetrySuite::BrokenHookJob"):
        @classmethod
        def retries_exhausted(cls, payload: Payload, exc: BaseException) -> str | None:
            raise ValueError("hook broke")

    assert fail(handler, job_json(retry=0), job_class=BrokenHookJob) == events.DEAD
    assert r.zcard("dead") == 1


def test_death_handler_error_ignored(r: redis.Redis, handler: RetryHandler) -> None:
    def broken(payload: Payload, exc: BaseException) -> None:
        raise ValueError("handler broke")

    death_handlers.insert(0, broken)
    try:
        assert fail(handler, job_json(retry=0)) == events.DEAD
    finally:
        death_handlers.remove(broken)
    assert r.zcard("dead") == 1


def test_death_handler_gets_exception(
    handler: RetryHandler, deaths: list[tuple[Payload, BaseException]]
) -> None:
    error = raised(KeyError("missing"))
    fail(handler, job_json(retry=0), exc=error)
    payload, exc = deaths[0]
    assert exc is error
    assert payload["error_class"] == "KeyError"


def test_dead_false_skips_dead_set(
    r: redis.Redis, handler: RetryHandler, deaths: list[tuple[Payload, BaseException]]
) -> None:
    assert fail(handler, job_json(retry=0, dead=False)) == events.DISCARDED
    assert r.zcard("dead") == 0
    assert r.zcard("retry") == 0
    assert len(AlwaysFailJob.exhausted) == 1
    assert len(deaths) == 1


def test_retry_queue_rewrites_queue(r: redis.Redis, handler: RetryHandler) -> None:
    fail(handler, job_json(retry_queue="slow"), queue="default")
    job, _ = only_entry(r, "retry")
    assert job["queue"] == "slow"


def test_fetched_queue_overrides_payload(r: redis.Redis, handler: RetryHandler) -> None:
    fail(handler, job_json(queue="default"), queue="critical")
    job, _ = only_entry(r, "retry")
    assert job["queue"] == "critical"


def test_retry_true_uses_max_retries(r: redis.Redis, clock: FakeClock) -> None:
    handler = RetryHandler(r, Settings(max_retries=3), clock=clock)
    assert fail(handler, job_json(retry_count=1, failed_at=clock.now)) == events.RETRIED
    assert fail(handler, job_json(retry_count=2, failed_at=clock.now)) == events.DEAD
    assert only_entry(r, "dead")[0]["retry_count"] == 3


def test_retry_true_default_is_25(r: redis.Redis, handler: RetryHandler, clock: FakeClock) -> None:
    assert fail(handler, job_json(retry_count=23, failed_at=clock.now)) == events.RETRIED
    assert fail(handler, job_json(retry_count=24, failed_at=clock.now)) == events.DEAD


def test_retry_for_window_exhausted(
    r: redis.Redis, handler: RetryHandler, clock: FakeClock
) -> None:
    raw = job_json(retry_count=0, failed_at=clock.now - 100, retry_for=60)
    assert fail(handler, raw) == events.DEAD
    assert r.zcard("retry") == 0


def test_retry_for_reads_millis(r: redis.Redis, handler: RetryHandler, clock: FakeClock) -> None:
    """An integer failed_at, as Sidekiq 8 writes it, is milliseconds."""
    failed_at = int((clock.now - 100) * 1000)
    assert fail(handler, job_json(retry_count=0, failed_at=failed_at, retry_for=60)) == events.DEAD
    failed_at = int((clock.now - 10) * 1000)
    assert fail(handler, job_json(retry_count=0, failed_at=failed_at, retry_for=60)) == (
        events.RETRIED
    )


def test_retry_for_window_open(r: redis.Redis, handler: RetryHandler, clock: FakeClock) -> None:
    raw = job_json(retry_count=0, failed_at=clock.now - 100, retry_for=3600)
    assert fail(handler, raw) == events.RETRIED


def test_retry_for_checked_on_first_failure(r: redis.Redis, handler: RetryHandler) -> None:
    """failed_at is set to now on the first failure, so the window is still open."""
    assert fail(handler, job_json(retry_for=1)) == events.RETRIED


def test_int_millis_timestamps(r: redis.Redis, clock: FakeClock) -> None:
    handler = RetryHandler(r, Settings(timestamp_mode="int_millis"), clock=clock)
    fail(handler, job_json())
    job, _ = only_entry(r, "retry")
    assert job["failed_at"] == int(clock.now * 1000)
    r.delete("retry")
    fail(handler, job_json(retry_count=0, failed_at=job["failed_at"]))
    job, _ = only_entry(r, "retry")
    assert job["retried_at"] == int(clock.now * 1000)


def test_middleware_edits_discarded(r: redis.Redis, handler: RetryHandler) -> None:
    raw = job_json()
    edited = json.loads(raw)
    edited["args"] = ["changed by middleware"]
    edited["extra"] = True
    handler.handle_failure(raw, edited, "default", raised(RuntimeError("x")), AlwaysFailJob)
    job, _ = only_entry(r, "retry")
    assert job["args"] == [1]
    assert "extra" not in job


def test_unknown_fields_kept_in_order(r: redis.Redis, handler: RetryHandler) -> None:
    extra = {
        "bid": "batch-1",
        "cattr": {"user": 7},
        "tags": ["a"],
        "wrapped": "MyActiveJob",
        "lock_until": 12,
    }
    raw = job_json(**extra)
    fail(handler, raw)
    member = r.zrange("retry", 0, -1)[0]
    job = json.loads(member)
    for field, value in extra.items():
        assert job[field] == value
    assert list(job)[: len(json.loads(raw))] == list(json.loads(raw))


def test_field_order_second_failure(r: redis.Redis, handler: RetryHandler) -> None:
    """retried_at is appended, and the other fields keep the places the first failure gave them."""
    fail(handler, job_json(backtrace=5))
    first = r.zrange("retry", 0, -1)[0]
    r.delete("retry")
    fail(handler, first)
    job, _ = only_entry(r, "retry")
    assert list(job)[-6:] == [
        "error_message",
        "error_class",
        "failed_at",
        "retry_count",
        "error_backtrace",
        "retried_at",
    ]


def test_error_message_cut(r: redis.Redis, handler: RetryHandler) -> None:
    fail(handler, job_json(), exc=raised(RuntimeError("x" * 12_000)))
    job, _ = only_entry(r, "retry")
    assert job["error_message"] == "x" * 10_000


def test_error_message_made_valid_utf8(r: redis.Redis, handler: RetryHandler) -> None:
    message = b"bad \xff bytes".decode("utf-8", "surrogateescape") + " and \ud800"
    fail(handler, job_json(), exc=raised(RuntimeError(message)))
    member = r.zrange("retry", 0, -1)[0]
    member.encode("utf-8")
    assert json.loads(member)["error_message"] == "bad \ufffd bytes and \ufffd"


def test_error_message_that_raises(r: redis.Redis, handler: RetryHandler) -> None:
    class UnprintableError(Exception):
        def __str__(self) -> str:
            raise ValueError("cannot print")

    fail(handler, job_json(), exc=raised(UnprintableError()))
    job, _ = only_entry(r, "retry")
    assert job["error_message"] == MESSAGE_ERROR
    assert job["error_class"] == "UnprintableError"


def explode() -> None:
    fail_deeper()


def fail_deeper() -> None:
    raise RuntimeError("deep")


def exploded() -> BaseException:
    try:
        explode()
    except RuntimeError as exc:
        return exc
    raise AssertionError("explode() did not raise")


def test_backtrace_true_all_lines(r: redis.Redis, handler: RetryHandler) -> None:
    fail(handler, job_json(backtrace=True), exc=exploded())
    job, _ = only_entry(r, "retry")
    assert "\n" not in job["error_backtrace"]
    lines = decode_backtrace(job["error_backtrace"])
    assert len(lines) == 3
    assert lines[0].endswith(":in `fail_deeper'")
    assert lines[1].endswith(":in `explode'")
    assert lines[2].endswith(":in `exploded'")
    path, line, _ = lines[0].split(":", 2)
    assert path.endswith("test_retry.py")
    assert line.isdigit()


@pytest.mark.parametrize(("option", "count"), [(2, 2), (1, 1), (0, 0), ("2", 2), (-1, 2)])
def test_backtrace_line_limit(
    r: redis.Redis, handler: RetryHandler, option: Any, count: int
) -> None:
    """Any value but false and null is set, and N keeps the first N lines, as Ruby's [0...N]."""
    fail(handler, job_json(backtrace=option), exc=exploded())
    job, _ = only_entry(r, "retry")
    assert len(decode_backtrace(job["error_backtrace"])) == count


@pytest.mark.parametrize("option", [False, None])
def test_backtrace_off(r: redis.Redis, handler: RetryHandler, option: bool | None) -> None:
    fail(handler, job_json(backtrace=option), exc=exploded())
    job, _ = only_entry(r, "retry")
    assert "error_backtrace" not in job


def test_shutdown_requeues(r: redis.Redis, handler: RetryHandler) -> None:
    assert fail(handler, job_json(retry=0), exc=Shutdown()) == events.REQUEUED
    assert r.zcard("retry") == 0
    assert r.zcard("dead") == 0
    assert AlwaysFailJob.exhausted == []


def test_shutdown_cause_requeues(r: redis.Redis, handler: RetryHandler) -> None:
    """An error caused, two links down, by the shutdown signal is not a job failure."""
    try:
        try:
            try:
                raise Shutdown()
            except Shutdown as stop:
                raise OSError("connection closed") from stop
        except OSError as closed:
            raise RuntimeError("job interrupted") from closed
    except RuntimeError as exc:
        error = exc
    assert fail(handler, job_json(retry=0), exc=error) == events.REQUEUED
    assert r.zcard("retry") == 0
    assert r.zcard("dead") == 0


def test_shutdown_in_context_requeues(r: redis.Redis, handler: RetryHandler) -> None:
    """An error raised while a Shutdown was being handled counts as the shutdown."""
    try:
        try:
            raise Shutdown()
        except Shutdown:
            raise OSError("socket closed during shutdown") from None
    except OSError as exc:
        error = exc
    # "from None" hides the context from tracebacks but keeps it in __context__.
    assert fail(handler, job_json(), exc=error) == events.REQUEUED
    assert r.zcard("retry") == 0


def test_exception_cycle_not_shutdown(r: redis.Redis, handler: RetryHandler) -> None:
    first = RuntimeError("first")
    second = RuntimeError("second")
    first.__cause__ = second
    second.__cause__ = first
    assert fail(handler, job_json(), exc=first) == events.RETRIED


def test_capture_first_failure_bytes(r: redis.Redis) -> None:
    """A first failure writes the same member, byte for byte, as Sidekiq 6.4.1 did."""
    raw = (
        '{"retry":1,"queue":"default","args":["exhaust-me"],"class":"FailFastJob",'
        '"jid":"7368a5a72c4095ab46dc5f93","created_at":1796414342.4425538,'
        '"enqueued_at":1796414342.4427323}'
    )
    expected = raw[:-1] + (
        ',"error_message":"fail-fast [\\"exhaust-me\\"]","error_class":"ArgumentError",'
        '"failed_at":1796414342.4439955,"retry_count":0}'
    )
    HookJob.delay = 1
    clock = FakeClock(1796414342.4439955)
    handler = RetryHandler(r, Settings(), clock=clock, rand=FixedRand(0.6))
    error = raised(ArgumentError('fail-fast ["exhaust-me"]'))
    assert fail(handler, raw, job_class=HookJob, exc=error) == events.RETRIED
    [(member, score)] = r.zrange("retry", 0, -1, withscores=True)
    assert member == expected
    assert score == pytest.approx(clock.now + 1 + 6, abs=1e-6)


def test_capture_exhausted_bytes(r: redis.Redis) -> None:
    """The second failure of a retry-1 job writes Sidekiq 6.4.1's dead member byte for byte."""
    raw = (
        '{"retry":1,"queue":"default","args":["exhaust-me"],"class":"FailFastJob",'
        '"jid":"7368a5a72c4095ab46dc5f93","created_at":1796414342.4425538,'
        '"enqueued_at":1796414350.3772726,"error_message":"fail-fast [\\"exhaust-me\\"]",'
        '"error_class":"ArgumentError","failed_at":1796414342.4439955,"retry_count":0}'
    )
    expected = raw.replace('"retry_count":0}', '"retry_count":1,"retried_at":1796414350.3787146}')
    handler = RetryHandler(r, Settings(), clock=FakeClock(1796414350.3787146))
    error = raised(ArgumentError('fail-fast ["exhaust-me"]'))
    assert fail(handler, raw, job_class=HookJob, exc=error) == events.DEAD
    assert r.zrange("dead", 0, -1) == [expected]


def test_capture_retry_zero_bytes(r: redis.Redis) -> None:
    raw = (
        '{"retry":0,"queue":"default","args":["dead-on-arrival"],"class":"DieNowJob",'
        '"jid":"1b564de4f33e8f149d45b82b","created_at":1796414350.853035,'
        '"enqueued_at":1796414350.8532066}'
    )
    expected = raw[:-1] + (
        ',"error_message":"die now","error_class":"InteropError",'
        '"failed_at":1796414350.8544405,"retry_count":0}'
    )
    handler = RetryHandler(r, Settings(), clock=FakeClock(1796414350.8544405))
    assert fail(handler, raw, job_class=None, exc=raised(InteropError("die now"))) == events.DEAD
    assert r.zrange("dead", 0, -1) == [expected]
