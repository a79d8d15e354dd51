"""The webhook receiver as SendGrid meets it: signatures, limits, JSON, Redis, health."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from waitress import create_server

from app_jobs.mailer import CONFIG_ERROR_KEY
from app_jobs.settings import AppSettings
from app_jobs.webhooks import (
    CHUNK_EVENTS,
    WEBHOOK_PATH,
    WebhookApp,
    create_app,
)
from tests.fixtures.redis_server import free_port
from tests.fixtures.sendgrid_events import KeyPair, WSGIClient, event, new_key_pair, signed_headers

QUEUE_KEY = "queue:email_webhooks"
EVENTS = [
    event("delivered", 1714986102, email="user@example.com", sg_event_id="E2"),
    event("open", 1714986105, email="user@example.com", sg_event_id="E3"),
]


def settings_for(
    redis_url: str, keys: tuple[str, ...], database_url: str = "", **overrides: Any
) -> AppSettings:
    return AppSettings(
        redis_url=redis_url,
        database_url=database_url or "postgresql://127.0.0.1:1/none",
        webhook_public_keys=keys,
        **overrides,
    )


@pytest.fixture
def client(redis_url: str, webhook_keys: KeyPair) -> WSGIClient:
    return WSGIClient(create_app(settings_for(redis_url, (webhook_keys.public_b64,))))


def queued_jobs(r: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in reversed(r.lrange(QUEUE_KEY, 0, -1))]


def test_signed_post_enqueues_batch(
    client: WSGIClient, webhook_keys: KeyPair, r: redis.Redis
) -> None:
    response = client.post_events(EVENTS, webhook_keys.private_key)

    assert response.status == 200
    assert response.json()["events"] == 2
    jobs = queued_jobs(r)
    assert len(jobs) == 1
    assert jobs[0]["class"] == "EmailDeliveryProcessorJob"
    assert jobs[0]["queue"] == "email_webhooks"
    assert jobs[0]["retry"] == 3
    assert jobs[0]["args"] == [EVENTS]
    assert r.sismember("queues", "email_webhooks")


def test_large_batch_split_into_jobs(
    client: WSGIClient, webhook_keys: KeyPair, r: redis.Redis
) -> None:
    events = [event("open", 1714986105 + i, sg_event_id=f"E{i}") for i in range(1200)]

    response = client.post_events(events, webhook_keys.private_key)

    assert response.status == 200
    assert response.json()["jobs"] == 3
    chunks = [job["args"][0] for job in queued_jobs(r)]
    assert [len(chunk) for chunk in chunks] == [CHUNK_EVENTS, CHUNK_EVENTS, 200]
    assert [e for chunk in chunks for e in chunk] == events


def test_empty_batch_accepted(client: WSGIClient, webhook_keys: KeyPair, r: redis.Redis) -> None:
    response = client.post_events([], webhook_keys.private_key)

    assert response.status == 200
    assert r.llen(QUEUE_KEY) == 0


def test_second_key_verifies(redis_url: str, webhook_keys: KeyPair, r: redis.Redis) -> None:
    new = new_key_pair()
    keys = (webhook_keys.public_b64, new.public_b64)
    client = WSGIClient(create_app(settings_for(redis_url, keys)))

    assert client.post_events(EVENTS, new.private_key).status == 200
    assert client.post_events(EVENTS, webhook_keys.private_key).status == 200
    assert r.llen(QUEUE_KEY) == 2


@pytest.mark.parametrize(
    "case", ["wrong key", "changed body", "stale", "future", "unsigned", "garbage signature"]
)
def test_rejected_signature_enqueues_nothing(
    client: WSGIClient, webhook_keys: KeyPair, r: redis.Redis, case: str
) -> None:
    body = json.dumps(EVENTS).encode()
    now = int(time.time())
    headers = signed_headers(webhook_keys.private_key, body, now)
    if case == "wrong key":
        headers = signed_headers(new_key_pair().private_key, body, now)
    elif case == "changed body":
        body = body.replace(b"E3", b"E4")
    elif case == "stale":
        headers = signed_headers(webhook_keys.private_key, body, now - 90_000 - 60)
    elif case == "future":
        headers = signed_headers(webhook_keys.private_key, body, now + 300 + 60)
    elif case == "unsigned":
        headers = {}
    else:
        headers["X-Twilio-Email-Event-Webhook-Signature"] = "bm90IGEgc2lnbmF0dXJl"

    response = client.request("POST", WEBHOOK_PATH, body, headers)

    assert response.status == 403
    assert r.llen(QUEUE_KEY) == 0


def test_timestamp_at_age_limit_accepted(
    client: WSGIClient, webhook_keys: KeyPair, r: redis.Redis
) -> None:
    response = client.post_events(
        EVENTS, webhook_keys.private_key, timestamp=int(time.time()) - 89_990
    )

    assert response.status == 200
    assert r.llen(QUEUE_KEY) == 1


def test_unsigned_allowed_by_setting(redis_url: str, webhook_keys: KeyPair, r: redis.Redis) -> None:
    settings = settings_for(redis_url, (webhook_keys.public_b64,), webhook_allow_unsigned=True)
    client = WSGIClient(create_app(settings))

    assert client.post_events(EVENTS, None).status == 200
    assert client.post_events(EVENTS, new_key_pair().private_key).status == 403
    assert r.llen(QUEUE_KEY) == 1


def test_unsigned_allowed_without_keys(redis_url: str, r: redis.Redis) -> None:
    client = WSGIClient(create_app(settings_for(redis_url, (), webhook_allow_unsigned=True)))

    assert client.post_events(EVENTS, None).status == 200
    assert client.post_events(EVENTS, new_key_pair().private_key).status == 200
    assert r.llen(QUEUE_KEY) == 2


def test_no_keys_rejects_everything(redis_url: str, webhook_keys: KeyPair, r: redis.Redis) -> None:
    client = WSGIClient(create_app(settings_for(redis_url, ())))

    response = client.post_events(EVENTS, webhook_keys.private_key)

    assert response.status == 403
    assert "no webhook public key" in response.json()["error"]
    assert r.llen(QUEUE_KEY) == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'[{"event": "open"', "not valid JSON"),
        (b"", "not valid JSON"),
        (b'[{"timestamp": NaN}]', "not valid JSON"),
        (b"[\xff]", "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
        (b'{"event": "open"}', "JSON array"),
        (b'"events"', "JSON array"),
        (b'[{"event": "open"}, 5]', "JSON array"),
        (b"[[]]", "JSON array"),
    ],
)
def test_malformed_body_rejected(
    client: WSGIClient, webhook_keys: KeyPair, r: redis.Redis, body: bytes, message: str
) -> None:
    headers = signed_headers(webhook_keys.private_key, body)

    response = client.request("POST", WEBHOOK_PATH, body, headers)

    assert response.status == 400
    assert message in response.json()["error"]
    assert r.llen(QUEUE_KEY) == 0


class ExplodingStream(io.BytesIO):
    """A request body that fails the test if the app reads it."""

    def read(self, size: int | None = -1) -> bytes:
        raise AssertionError("the body was read although Content-Length is over the limit")


def test_content_length_over_limit(redis_url: str, webhook_keys: KeyPair, r: redis.Redis) -> None:
    settings = settings_for(redis_url, (webhook_keys.public_b64,), webhook_max_bytes=1000)
    client = WSGIClient(create_app(settings))

    response = client.request(
        "POST",
        WEBHOOK_PATH,
        environ={"CONTENT_LENGTH": "1001", "wsgi.input": ExplodingStream()},
    )

    assert response.status == 413
    assert r.llen(QUEUE_KEY) == 0


def test_limit_admits_exact_size(redis_url: str, webhook_keys: KeyPair, r: redis.Redis) -> None:
    body = json.dumps(EVENTS).encode()
    settings = settings_for(redis_url, (webhook_keys.public_b64,), webhook_max_bytes=len(body))
    client = WSGIClient(create_app(settings))

    response = client.request(
        "POST", WEBHOOK_PATH, body, signed_headers(webhook_keys.private_key, body)
    )

    assert response.status == 200


def test_unsized_body_over_limit(redis_url: str, webhook_keys: KeyPair, r: redis.Redis) -> None:
    """A chunked body that the server ends is read only up to the limit plus one byte."""
    settings = settings_for(redis_url, (webhook_keys.public_b64,), webhook_max_bytes=1000)
    client = WSGIClient(create_app(settings))
    body = b"[" + b" " * 5000 + b"]"

    response = client.request(
        "POST",
        WEBHOOK_PATH,
        body,
        signed_headers(webhook_keys.private_key, body),
        content_length=False,
        environ={"wsgi.input_terminated": True},
    )

    assert response.status == 413
    assert r.llen(QUEUE_KEY) == 0


def test_unsized_body_within_limit(
    client: WSGIClient, webhook_keys: KeyPair, r: redis.Redis
) -> None:
    body = json.dumps(EVENTS).encode()

    response = client.request(
        "POST",
        WEBHOOK_PATH,
        body,
        signed_headers(webhook_keys.private_key, body),
        content_length=False,
        environ={"wsgi.input_terminated": True},
    )

    assert response.status == 200
    assert r.llen(QUEUE_KEY) == 1


def test_unsized_body_needs_terminated_input(client: WSGIClient, webhook_keys: KeyPair) -> None:
    response = client.request("POST", WEBHOOK_PATH, b"[]", content_length=False)

    assert response.status == 411


@pytest.mark.parametrize("length", ["abc", "-5", "1e3"])
def test_invalid_content_length(client: WSGIClient, length: str) -> None:
    response = client.request("POST", WEBHOOK_PATH, b"[]", environ={"CONTENT_LENGTH": length})

    assert response.status == 400


def test_body_shorter_than_content_length(client: WSGIClient) -> None:
    response = client.request("POST", WEBHOOK_PATH, b"[]", environ={"CONTENT_LENGTH": "10"})

    assert response.status == 400
    assert "shorter" in response.json()["error"]


def test_redis_down_returns_503(webhook_keys: KeyPair, caplog: pytest.LogCaptureFixture) -> None:
    """With nothing listening on the Redis port, SendGrid gets a 503 and posts again later."""
    closed = f"redis://127.0.0.1:{free_port()}/0"
    client = WSGIClient(create_app(settings_for(closed, (webhook_keys.public_b64,))))

    with caplog.at_level(logging.INFO, logger="app_jobs.webhooks"):
        first = client.post_events(EVENTS, webhook_keys.private_key)
        second = client.post_events(EVENTS, webhook_keys.private_key)

    assert first.status == 503
    assert second.status == 503
    assert caplog.text.count("Redis is unavailable") == 1


def test_redis_recovery_logged(webhook_keys: KeyPair, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def flaky(chunks: list[list[dict[str, Any]]]) -> None:
        calls.append(len(chunks))
        if len(calls) == 1:
            raise redis.ConnectionError("connection refused")

    settings = settings_for("redis://127.0.0.1:1/0", (webhook_keys.public_b64,))
    client = WSGIClient(create_app(settings, enqueue=flaky, checks={}))

    with caplog.at_level(logging.INFO, logger="app_jobs.webhooks"):
        statuses = [client.post_events(EVENTS, webhook_keys.private_key).status for _ in range(3)]

    assert statuses == [503, 200, 200]
    assert caplog.text.count("Redis is available again") == 1


def test_unknown_path_and_method(client: WSGIClient) -> None:
    assert client.request("POST", "/api/v1/webhooks/other", b"[]").status == 404
    assert client.request("GET", "/", b"").status == 404

    get_webhook = client.request("GET", WEBHOOK_PATH)
    assert get_webhook.status == 405
    assert get_webhook.headers["Allow"] == "POST"

    post_health = client.request("POST", "/health", b"[]")
    assert post_health.status == 405
    assert post_health.headers["Allow"] == "GET, HEAD"


def test_trailing_slash_accepted(client: WSGIClient, webhook_keys: KeyPair) -> None:
    response = client.post_events(EVENTS, webhook_keys.private_key, path=WEBHOOK_PATH + "/")

    assert response.status == 200


def test_request_id_echoed(client: WSGIClient) -> None:
    given = client.request("GET", "/health-nope", headers={"X-Request-Id": "abc-123"})
    odd = client.request("GET", "/health-nope", headers={"X-Request-Id": "bad id\n"})

    assert given.headers["X-Request-Id"] == "abc-123"
    assert given.json()["request_id"] == "abc-123"
    assert odd.headers["X-Request-Id"] != "bad id\n"
    assert len(odd.headers["X-Request-Id"]) == 32


def test_logs_contain_counts_not_addresses(
    client: WSGIClient, webhook_keys: KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        client.post_events(EVENTS, webhook_keys.private_key)
        client.post_events(EVENTS, new_key_pair().private_key)
        client.request("POST", WEBHOOK_PATH, b'[{"email": "user@example.com"', {})

    assert "events=2" in caplog.text
    assert "status=403" in caplog.text
    assert "example.com" not in caplog.text
    assert "E3" not in caplog.text


def test_health_reports_dependencies(
    redis_url: str, database_url: str, webhook_keys: KeyPair, r: redis.Redis
) -> None:
    client = WSGIClient(create_app(settings_for(redis_url, (), database_url)))

    healthy = client.request("GET", "/health")
    r.set(CONFIG_ERROR_KEY, json.dumps({"status": 401, "message": "bad key"}))
    flagged = client.request("GET", "/health")
    head = client.request("HEAD", "/health")

    assert healthy.status == 200
    assert healthy.json()["checks"] == {"redis": "ok", "postgres": "ok", "sendgrid": "ok"}
    assert flagged.status == 200
    assert flagged.json()["checks"]["sendgrid"] == "config_error (HTTP 401)"
    assert head.status == 200
    assert head.body == b""


def test_health_unavailable(redis_url: str, webhook_keys: KeyPair) -> None:
    closed_pg = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    no_pg = WSGIClient(create_app(settings_for(redis_url, (), closed_pg)))
    closed_redis = f"redis://127.0.0.1:{free_port()}/0"
    no_redis = WSGIClient(create_app(settings_for(closed_redis, (), closed_pg)))

    first = no_pg.request("GET", "/health")
    second = no_redis.request("GET", "/health")

    assert first.status == 503
    assert first.json()["checks"]["postgres"] == "unavailable"
    assert first.json()["checks"]["redis"] == "ok"
    assert second.status == 503
    assert second.json()["checks"]["redis"] == "unavailable"


@pytest.fixture
def served(redis_url: str, webhook_keys: KeyPair) -> Iterator[str]:
    """The receiver behind waitress on a free loopback port; yields its base URL."""
    app: WebhookApp = create_app(settings_for(redis_url, (webhook_keys.public_b64,)))
    server = create_server(
        app, host="127.0.0.1", port=0, threads=2, asyncore_loop_timeout=0.05, asyncore_use_poll=True
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.close()
        thread.join(5)


def test_served_by_waitress(served: str, webhook_keys: KeyPair, r: redis.Redis) -> None:
    """Over real HTTP the signature still covers the exact bytes, trailing newline included."""
    body = json.dumps(EVENTS, indent=2).encode() + b"\r\n"
    request = urllib.request.Request(
        served + WEBHOOK_PATH,
        data=body,
        headers={
            **signed_headers(webhook_keys.private_key, body),
            "Content-Type": "application/json",
        },
    )

    with urllib.request.urlopen(request, timeout=10) as response:
        status = response.status
    tampered = urllib.request.Request(
        served + WEBHOOK_PATH, data=body.rstrip(), headers=dict(request.headers)
    )
    with pytest.raises(urllib.error.HTTPError) as rejected:
        urllib.request.urlopen(tampered, timeout=10)
    rejected.value.close()

    assert status == 200
    assert rejected.value.code == 403
    assert queued_jobs(r)[0]["args"] == [EVENTS]
