"""The tolerant payload reader: every odd payload is read, flagged and kept verbatim."""

from __future__ import annotations

import base64
import json
import zlib

import pytest

from pyqueue.api.records import ENCRYPTED_ARGUMENT, read_job
from pyqueue.payload import dumps
from pyqueue.retry import encode_backtrace


def test_read_job_plain_payload() -> None:
    raw = dumps(
        {
            "retry": True,
            "queue": "mail",
            "args": [1, "two"],
            "class": "Mailer",
            "jid": "a" * 24,
            "created_at": 1_700_000_000.5,
            "enqueued_at": 1_700_000_010.25,
            "tags": ["x"],
        }
    )
    record = read_job(raw, in_queue=True)
    assert record.ok
    assert record.raw == raw
    assert record.jid == "a" * 24
    assert record.job_class == "Mailer"
    assert record.display_class == "Mailer"
    assert record.display_args == (1, "two")
    assert record.queue == "mail"
    assert record.created_at == 1_700_000_000.5
    assert record.enqueued_at == 1_700_000_010.25
    assert record.tags == ("x",)
    assert record.latency(now=1_700_000_020.25) == 10.0
    assert record.get("retry") is True
    assert not record.has_error


def test_read_job_not_json() -> None:
    record = read_job("{not json")
    assert record.parsed is None
    assert record.display_args == ("{not json",)
    assert record.jid is None
    assert record.display_class is None
    assert len(record.problems) == 1
    assert "not valid JSON" in record.problems[0]
    assert record.get("class") is None


@pytest.mark.parametrize(
    ("raw", "kind"), [("[1,2]", "array"), ('"text"', "string"), ("3", "number")]
)
def test_read_job_json_not_object(raw: str, kind: str) -> None:
    record = read_job(raw)
    assert record.parsed is None
    assert record.problems == (f"payload is a JSON {kind}, not an object",)
    assert record.display_args == (raw,)


def test_read_job_args_string() -> None:
    raw = '{"class":"EchoJob","args":"{\\"id\\":null}","queue":"default","jid":"j1"}'
    record = read_job(raw)
    assert record.args == '{"id":null}'
    assert record.display_args == ('{"id":null}',)
    assert record.problems == ("args is string, not an array",)


def test_read_job_args_object() -> None:
    record = read_job('{"class":"EchoJob","args":{"id":1},"jid":"j2"}')
    assert record.display_args == ({"id": 1},)
    assert record.problems == ("args is object, not an array",)


def test_read_job_args_missing() -> None:
    record = read_job('{"class":"EchoJob","jid":"j3"}')
    assert record.display_args == ()
    assert record.problems == ("args is missing",)


def test_read_job_class_and_jid_null() -> None:
    record = read_job('{"class":null,"args":[],"jid":null}')
    assert record.job_class is None
    assert record.display_class is None
    assert record.jid is None
    assert "class is null, not a non-empty string" in record.problems
    assert "jid is null, not a non-empty string" in record.problems
    assert len(record.problems) == 2


def test_read_job_class_missing_and_empty() -> None:
    assert read_job('{"args":[],"jid":"j"}').problems == ("class is missing",)
    assert read_job('{"class":"","args":[],"jid":"j"}').problems == (
        'class is "", not a non-empty string',
    )


def test_read_job_float_seconds_and_int_millis() -> None:
    record = read_job(
        dumps({"class": "A", "args": [], "jid": "j", "enqueued_at": 1_700_000_000_123})
    )
    assert record.ok
    assert record.enqueued_at == pytest.approx(1_700_000_000.123)
    assert record.created_at == record.enqueued_at


def test_read_job_integer_seconds_flagged() -> None:
    record = read_job(dumps({"class": "A", "args": [], "jid": "j", "failed_at": 1_714_985_990}))
    assert record.failed_at == 1_714_985_990.0
    assert len(record.problems) == 1
    assert record.problems[0].startswith("failed_at is the integer 1714985990")


def test_read_job_string_timestamp() -> None:
    record = read_job(dumps({"class": "A", "args": [], "jid": "j", "enqueued_at": "1714985990.5"}))
    assert record.enqueued_at == 1_714_985_990.5
    assert record.problems == ("enqueued_at is a string, read as epoch seconds; write a float",)


def test_read_job_unreadable_timestamp() -> None:
    record = read_job(dumps({"class": "A", "args": [], "jid": "j", "created_at": "yesterday"}))
    assert record.created_at is None
    assert record.problems == ("created_at is string 'yesterday', not a time",)
    assert record.latency(now=5.0) == 0.0


def test_read_job_missing_enqueued_at() -> None:
    raw = dumps({"class": "A", "args": [], "jid": "j", "created_at": 100.0})
    assert read_job(raw).ok
    queued = read_job(raw, in_queue=True)
    assert queued.problems == ("enqueued_at is missing, so the queue latency reads as 0",)
    # Like Sidekiq 8, latency then falls back to created_at.
    assert queued.latency(now=110.0) == 10.0


def test_read_job_backtrace_strict_and_mime() -> None:
    lines = ["app.rb:1:in `perform'", "sidekiq.rb:2:in `run'"]
    strict = encode_backtrace(lines)
    mime = base64.encodebytes(zlib.compress(json.dumps(lines).encode())).decode()
    assert "\n" in mime
    for encoded in (strict, mime):
        record = read_job(dumps({"class": "A", "args": [], "jid": "j", "error_backtrace": encoded}))
        assert record.ok
        assert record.error_backtrace == tuple(lines)


@pytest.mark.parametrize("value", ["%%%not base64", base64.b64encode(b"not zlib").decode(), 12])
def test_read_job_backtrace_malformed(value: object) -> None:
    record = read_job(dumps({"class": "A", "args": [], "jid": "j", "error_backtrace": value}))
    assert record.error_backtrace is None
    assert len(record.problems) == 1
    assert "error_backtrace" in record.problems[0]


def test_read_job_error_fields() -> None:
    record = read_job(
        dumps(
            {
                "class": "A",
                "args": [],
                "jid": "j",
                "retry_count": 2,
                "error_class": "RuntimeError",
                "error_message": "boom",
                "failed_at": 1.5,
                "retried_at": 2.5,
            }
        )
    )
    assert record.has_error
    assert (record.retry_count, record.error_class, record.error_message) == (
        2,
        "RuntimeError",
        "boom",
    )
    assert (record.failed_at, record.retried_at) == (1.5, 2.5)


def test_read_job_bad_retry_count_and_tags() -> None:
    record = read_job(
        dumps({"class": "A", "args": [], "jid": "j", "retry_count": "2", "tags": "x"})
    )
    assert record.retry_count is None
    assert record.tags == ()
    assert "retry_count is string, not an integer" in record.problems
    assert "tags is string, not an array of strings" in record.problems


def test_read_job_active_job_unwrapped() -> None:
    raw = dumps(
        {
            "class": "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper",
            "wrapped": "SignupMailer",
            "args": [{"job_class": "SignupMailer", "arguments": [42, "welcome"]}],
            "jid": "j",
        }
    )
    record = read_job(raw)
    assert record.ok
    assert record.job_class == "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper"
    assert record.display_class == "SignupMailer"
    assert record.display_args == (42, "welcome")


def test_read_job_display_class_and_encrypt() -> None:
    raw = dumps(
        {"class": "A", "display_class": "Shown", "args": [1, "secret"], "jid": "j", "encrypt": True}
    )
    record = read_job(raw)
    assert record.display_class == "Shown"
    assert record.display_args == (1, ENCRYPTED_ARGUMENT)
    assert record.args == [1, "secret"]


def test_read_job_deep_nesting_and_huge_numbers() -> None:
    deep = read_job("[" * 100_000 + "]" * 100_000)
    assert deep.parsed is None
    assert "not valid JSON" in deep.problems[0]
    huge = read_job('{"class":"A","args":[],"jid":"j","enqueued_at":' + "9" * 400 + "}")
    assert huge.enqueued_at is None
    assert "too large for a time" in huge.problems[0]
