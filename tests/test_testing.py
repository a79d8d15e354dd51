"""pyqueue.testing: fake and inline modes, drain helpers and the pytest fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
import redis

from pyqueue import Job, job, testing, testing_plugin
from pyqueue.errors import ArgumentError, UnknownJobClass
from pyqueue.job import foreign
from pyqueue.payload import Payload

performed: list[tuple[str, str, list[Any]]] = []


class ModeRecorder(Job):
    queue = "reports"

    def perform(self, *args: Any) -> None:
        performed.append(("ModeRecorder", self.jid, list(args)))


class ModeFanOut(Job):
    """Pushes one ModeRecorder per argument, so drain must also run what a job pushes."""

    def perform(self, *values: Any) -> None:
        performed.append(("ModeFanOut", self.jid, list(values)))
        for value in values:
            ModeRecorder.perform_async(value)


class ModeFailure(Job):
    def perform(self, message: str) -> None:
        raise RuntimeError(message)


class ModePayloadReader(Job):
    def perform(self) -> None:
        performed.append(("ModePayloadReader", self.jid, [self.payload["queue"]]))


@job(queue="mail")
def mode_mailer(address_id: int) -> None:
    performed.append(("mode_mailer", "", [address_id]))


@pytest.fixture(autouse=True)
def reset_testing() -> Iterator[None]:
    performed.clear()
    testing.disable()
    testing.clear()
    yield
    testing.disable()
    testing.clear()
    testing.server_middleware.clear()


def test_fake_collects_by_class_and_queue(r: redis.Redis) -> None:
    with testing.fake():
        first = ModeRecorder.perform_async(1)
        mode_mailer.perform_async(2)
        ModeRecorder.set(queue="critical").perform_async(3)
        foreign("RubyOnlyJob").perform_async("x")

    assert [p["args"] for p in testing.jobs(ModeRecorder)] == [[1], [3]]
    assert [p["args"] for p in testing.jobs("ModeRecorder", queue="reports")] == [[1]]
    assert [p["args"] for p in testing.jobs(mode_mailer)] == [[2]]
    assert [p["class"] for p in testing.jobs(queue="critical")] == ["ModeRecorder"]
    assert [p["class"] for p in testing.jobs("RubyOnlyJob")] == ["RubyOnlyJob"]
    assert len(testing.jobs()) == 4
    assert testing.jobs(ModeRecorder)[0]["jid"] == first
    assert sorted(testing.queues()) == ["critical", "default", "mail", "reports"]
    assert r.dbsize() == 0
    assert performed == []


def test_fake_payload_fields_match_redis_push() -> None:
    with testing.fake():
        ModeRecorder.perform_async(1)
        ModeRecorder.perform_in(3600, 2)

    now_job, scheduled_job = testing.jobs(ModeRecorder)
    assert list(now_job) == [
        "retry",
        "queue",
        "args",
        "class",
        "jid",
        "created_at",
        "enqueued_at",
    ]
    assert "enqueued_at" not in scheduled_job
    assert isinstance(scheduled_job["at"], float)
    assert scheduled_job["at"] > now_job["created_at"] + 3000


def test_fake_stores_json_round_trip() -> None:
    nested = {"a": [1, 2.0, None], "big": 2**100}
    with testing.fake():
        ModeRecorder.perform_async(nested, -0.0, 1e20)
    nested["a"].append("changed after the push")

    (payload,) = testing.jobs(ModeRecorder)
    assert payload["args"] == [{"a": [1, 2.0, None], "big": 2**100}, -0.0, 1e20]
    assert isinstance(payload["args"][0]["a"][1], float)
    assert repr(payload["args"][1]) == "-0.0"

    payload["args"].clear()
    assert testing.jobs(ModeRecorder)[0]["args"] != []


def test_fake_still_rejects_invalid_args() -> None:
    with testing.fake(), pytest.raises(ArgumentError, match=r"args\[0\]"):
        ModeRecorder.perform_async({1, 2})
    assert testing.jobs() == []


def test_fake_collects_bulk_push() -> None:
    with testing.fake():
        jids = ModeRecorder.perform_bulk([[1], [2], [3]])

    collected = testing.jobs(ModeRecorder)
    assert [p["jid"] for p in collected] == jids
    assert len({p["created_at"] for p in collected}) == 1


def test_drain_runs_pushed_jobs_too() -> None:
    with testing.fake():
        ModeFanOut.perform_async("a", "b")
        mode_mailer.perform_async(9)
        assert testing.drain() == 4

    assert [(name, args) for name, _, args in performed] == [
        ("ModeFanOut", ["a", "b"]),
        ("mode_mailer", [9]),
        ("ModeRecorder", ["a"]),
        ("ModeRecorder", ["b"]),
    ]
    assert testing.jobs() == []


def test_drain_one_class_leaves_others() -> None:
    with testing.fake():
        ModeRecorder.perform_async(1)
        mode_mailer.perform_async(2)
        ModeRecorder.perform_in(60, 3)
        assert testing.drain(ModeRecorder) == 2

    assert [args for _, _, args in performed] == [[1], [3]]
    assert [p["class"] for p in testing.jobs()] == ["mode_mailer"]


def test_drain_sets_jid_and_payload() -> None:
    with testing.fake():
        jid = ModePayloadReader.set(queue="side").perform_async()
        testing.drain()
    assert performed == [("ModePayloadReader", jid, ["side"])]


def test_drain_error_removes_job() -> None:
    with testing.fake():
        ModeFailure.perform_async("first")
        ModeRecorder.perform_async(1)
        with pytest.raises(RuntimeError, match="first"):
            testing.drain()

    assert [p["class"] for p in testing.jobs()] == ["ModeRecorder"]


def test_drain_unknown_class_raises() -> None:
    with testing.fake():
        foreign("NoSuchPythonJob").perform_async()
        with pytest.raises(UnknownJobClass, match="NoSuchPythonJob"):
            testing.drain()


def test_perform_one_runs_oldest() -> None:
    with testing.fake():
        ModeRecorder.perform_async("old")
        ModeRecorder.perform_async("new")
        payload = testing.perform_one(ModeRecorder)

    assert payload["args"] == ["old"]
    assert [args for _, _, args in performed] == [["old"]]
    assert [p["args"] for p in testing.jobs(ModeRecorder)] == [["new"]]


def test_perform_one_without_job_raises() -> None:
    with pytest.raises(testing.EmptyQueueError, match="ModeRecorder"):
        testing.perform_one(ModeRecorder)


def test_clear_by_class_and_all() -> None:
    with testing.fake():
        ModeRecorder.perform_async(1)
        mode_mailer.perform_async(2)
    assert testing.clear(mode_mailer) == 1
    assert [p["class"] for p in testing.jobs()] == ["ModeRecorder"]
    assert testing.clear() == 1
    assert testing.jobs() == []


def test_inline_runs_at_push(r: redis.Redis) -> None:
    with testing.inline():
        jid = ModeRecorder.perform_async({"k": [1.0]})
        ModeRecorder.perform_in(3600, "scheduled")
        ModeRecorder.perform_bulk([["b1"], ["b2"]])

    assert performed[0] == ("ModeRecorder", jid, [{"k": [1.0]}])
    assert isinstance(performed[0][2][0]["k"][0], float)
    assert [args for _, _, args in performed[1:]] == [["scheduled"], ["b1"], ["b2"]]
    assert r.dbsize() == 0
    assert testing.jobs() == []


def test_inline_runs_nested_pushes() -> None:
    with testing.inline():
        ModeFanOut.perform_async("x")
    assert [name for name, _, _ in performed] == ["ModeFanOut", "ModeRecorder"]


def test_inline_error_propagates() -> None:
    with testing.inline(), pytest.raises(RuntimeError, match="inline boom"):
        ModeFailure.perform_async("inline boom")


def test_disabled_pushes_to_redis(r: redis.Redis) -> None:
    with testing.fake():
        pass
    assert testing.mode() == "disabled"
    ModeRecorder.perform_async(1)
    assert r.llen("queue:reports") == 1
    assert performed == []


def test_context_managers_restore_mode() -> None:
    testing.set_mode("inline")
    with testing.fake():
        assert testing.mode() == "fake"
        with testing.inline():
            assert testing.mode() == "inline"
        assert testing.mode() == "fake"
    assert testing.mode() == "inline"


def test_set_mode_rejects_unknown_name() -> None:
    with pytest.raises(ValueError, match="'sometimes'"):
        testing.set_mode("sometimes")
    assert testing.mode() == "disabled"


def test_server_middleware_runs_when_added() -> None:
    seen: list[tuple[str, str]] = []

    def tag_queue(job: Job, payload: Payload, queue: str, call_next: Callable[[], None]) -> None:
        seen.append((job.jid, queue))
        call_next()

    with testing.inline():
        ModeRecorder.perform_async("no middleware")
        testing.server_middleware.add(tag_queue)
        jid = ModeRecorder.perform_async("with middleware")

    assert seen == [(jid, "reports")]
    assert len(performed) == 2


def test_fake_fixture_collects(pyqueue_fake: ModuleType) -> None:
    assert pyqueue_fake is testing
    assert testing.mode() == "fake"
    ModeRecorder.perform_async(1)
    assert len(pyqueue_fake.jobs(ModeRecorder)) == 1


def test_inline_fixture_runs(pyqueue_inline: ModuleType) -> None:
    assert testing.mode() == "inline"
    ModeRecorder.perform_async(2)
    assert [args for _, _, args in performed] == [[2]]


def test_fixture_teardown_resets_state() -> None:
    def stay_quiet(job: Job, payload: Payload, queue: str, call_next: Callable[[], None]) -> None:
        call_next()

    fixture = testing_plugin._use_mode("fake")
    next(fixture)
    ModeRecorder.perform_async(1)
    testing.server_middleware.add(stay_quiet)
    fixture.close()

    assert testing.mode() == "disabled"
    assert testing.jobs() == []
    assert len(testing.server_middleware) == 0


def test_plugin_registered_by_entry_point(request: pytest.FixtureRequest) -> None:
    plugin = request.config.pluginmanager.get_plugin("pyqueue")
    assert plugin is testing_plugin
