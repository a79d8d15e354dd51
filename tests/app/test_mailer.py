"""The mailer against the local fake SendGrid: request body and response classification."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from app_jobs.mailer import (
    ConsoleMailer,
    FileMailer,
    OutgoingEmail,
    SendGridConfigError,
    SendGridMailer,
    build_mailer,
    error_message,
    message_body,
)
from app_jobs.settings import AppSettings, load_settings
from pyqueue.errors import ConfigError
from tests.fixtures.fake_sendgrid import (
    API_KEY,
    FakeSendGrid,
    Reply,
    dropped,
    error,
    rate_limited,
    slow,
)
from tests.fixtures.redis_server import free_port

EMAIL = OutgoingEmail(
    delivery_id=41,
    attempt=2,
    scheduled_email_id=7,
    to_email="ann@example.org",
    to_name="Ann Lee",
    subject="Welcome",
    html="<p>Hello</p>",
    text="Hello",
)


def settings_for(url: str, **overrides: object) -> AppSettings:
    values: dict[str, object] = {
        "sendgrid_api_key": API_KEY,
        "sendgrid_host": url,
        "sendgrid_timeout": 1.0,
    }
    values.update(overrides)
    return AppSettings(**values)  # type: ignore[arg-type]


def test_body_shape() -> None:
    body = message_body(EMAIL, AppSettings(from_email="team@example.com", sandbox_mode=True))
    assert body["personalizations"] == [
        {
            "to": [{"email": "ann@example.org", "name": "Ann Lee"}],
            "custom_args": {
                "app_delivery_id": "41",
                "app_attempt": "2",
                "app_scheduled_email_id": "7",
            },
        }
    ]
    assert body["from"] == {"email": "team@example.com", "name": "Event Team"}
    assert body["subject"] == "Welcome"
    assert [part["type"] for part in body["content"]] == ["text/plain", "text/html"]
    assert body["mail_settings"] == {"sandbox_mode": {"enable": True}}


def test_body_skips_empty_content() -> None:
    email = OutgoingEmail(1, 1, 1, "a@example.org", None, "Subject", "", "")
    body = message_body(email, AppSettings())
    assert body["content"] == [{"type": "text/plain", "value": "Subject"}]
    assert body["personalizations"][0]["to"] == [{"email": "a@example.org"}]


def test_accepted_202(fake_sendgrid: FakeSendGrid) -> None:
    result = SendGridMailer(settings_for(fake_sendgrid.url)).send(EMAIL)
    assert result.outcome == "sent"
    assert result.status_code == 202
    [request] = fake_sendgrid.requests
    assert result.message_id == request.message_id
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.body == message_body(EMAIL, settings_for(fake_sendgrid.url))


def test_sandbox_200_without_message_id(fake_sendgrid: FakeSendGrid) -> None:
    fake_sendgrid.script(Reply(status=200, message_id=False))
    result = SendGridMailer(settings_for(fake_sendgrid.url)).send(EMAIL)
    assert result.outcome == "sent"
    assert result.message_id is None


@pytest.mark.parametrize("status", [400, 413])
def test_permanent_errors_fail(fake_sendgrid: FakeSendGrid, status: int) -> None:
    fake_sendgrid.script(error(status, "The from address does not match", field="from.email"))
    result = SendGridMailer(settings_for(fake_sendgrid.url)).send(EMAIL)
    assert result.outcome == "failed"
    assert result.status_code == status
    assert result.error == (
        f"SendGrid responded with HTTP {status}: The from address does not match (field from.email)"
    )


@pytest.mark.parametrize("status", [401, 403, 404])
def test_config_errors_raise(fake_sendgrid: FakeSendGrid, status: int) -> None:
    fake_sendgrid.script(error(status, f"access denied {API_KEY}"))
    with pytest.raises(SendGridConfigError) as caught:
        SendGridMailer(settings_for(fake_sendgrid.url)).send(EMAIL)
    assert caught.value.status_code == status
    assert API_KEY not in str(caught.value)
    assert "[api key]" in caught.value.message


def test_wrong_key_is_config_error(fake_sendgrid: FakeSendGrid) -> None:
    mailer = SendGridMailer(settings_for(fake_sendgrid.url, sendgrid_api_key="SG.wrong"))
    with pytest.raises(SendGridConfigError, match="HTTP 401"):
        mailer.send(EMAIL)


def test_rate_limit_retries_at_reset(fake_sendgrid: FakeSendGrid) -> None:
    reset = int(time.time()) + 120
    fake_sendgrid.script(rate_limited(reset))
    result = SendGridMailer(settings_for(fake_sendgrid.url)).send(EMAIL)
    assert result.outcome == "retry"
    assert result.status_code == 429
    assert result.retry_at == reset


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_retry(fake_sendgrid: FakeSendGrid, status: int) -> None:
    fake_sendgrid.script(Reply(status=status))
    result = SendGridMailer(settings_for(fake_sendgrid.url)).send(EMAIL)
    assert result.outcome == "retry"
    assert result.status_code == status


def test_timeout_retries(fake_sendgrid: FakeSendGrid) -> None:
    fake_sendgrid.script(slow(1.5))
    result = SendGridMailer(settings_for(fake_sendgrid.url, sendgrid_timeout=0.3)).send(EMAIL)
    assert result.outcome == "retry"
    assert result.error is not None
    assert "timed out" in result.error


def test_dropped_connection_retries(fake_sendgrid: FakeSendGrid) -> None:
    fake_sendgrid.script(dropped())
    result = SendGridMailer(settings_for(fake_sendgrid.url)).send(EMAIL)
    assert result.outcome == "retry"
    assert fake_sendgrid.count() == 1


def test_connection_refused_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = SendGridMailer(settings_for(url)).send(EMAIL)
    assert result.outcome == "retry"
    assert result.error is not None
    assert "URLError" in result.error


def test_error_message_shapes() -> None:
    assert error_message(b"") == "no error message"
    assert error_message(b"", "Bad Gateway") == "Bad Gateway"
    assert error_message(b"<html>oops</html>") == "<html>oops</html>"
    body = json.dumps({"errors": [{"message": "a", "field": None}, {"message": "b"}]})
    assert error_message(body.encode()) == "a; b"


def test_missing_key_is_config_error() -> None:
    with pytest.raises(ConfigError, match="SENDGRID_API_KEY"):
        SendGridMailer(AppSettings(sendgrid_api_key=""))


def test_console_backend_prints_summary() -> None:
    stream = io.StringIO()
    result = ConsoleMailer(stream).send(EMAIL)
    assert result.outcome == "sent"
    assert result.message_id is not None
    assert "delivery=41 attempt=2" in stream.getvalue()


def test_file_backend_writes_json(tmp_path: Path) -> None:
    settings = AppSettings(email_backend="file", email_file_dir=str(tmp_path))
    mailer = build_mailer(settings)
    assert isinstance(mailer, FileMailer)
    result = mailer.send(EMAIL)
    written = json.loads((tmp_path / "delivery-41-attempt-2.json").read_text())
    assert written["message_id"] == result.message_id
    assert written["personalizations"][0]["custom_args"]["app_delivery_id"] == "41"


def test_settings_from_environment() -> None:
    settings = load_settings(
        {
            "EMAIL_BACKEND": "console",
            "APP_JOBS_SANDBOX_MODE": "yes",
            "APP_JOBS_WEBHOOK_PUBLIC_KEYS": "AAA B,\n CCC",
            "PORT": "9000",
            "PYQUEUE_CONCURRENCY": "10",
            "APP_JOBS_STUCK_SENDING_POLICY": "resend",
        }
    )
    assert settings.email_backend == "console"
    assert settings.sandbox_mode is True
    assert settings.webhook_public_keys == ("AAAB", "CCC")
    assert settings.web_port == 9000
    assert settings.pool_size == 12
    assert settings.stuck_sending_policy == "resend"
    assert isinstance(build_mailer(settings), ConsoleMailer)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("APP_JOBS_EMAIL_BACKEND", "smtp", "APP_JOBS_EMAIL_BACKEND is 'smtp'"),
        ("APP_JOBS_STUCK_SENDING_POLICY", "skip", "APP_JOBS_STUCK_SENDING_POLICY is 'skip'"),
        ("APP_JOBS_SANDBOX_MODE", "maybe", "APP_JOBS_SANDBOX_MODE is 'maybe'"),
        ("APP_JOBS_SENDGRID_TIMEOUT", "0", "APP_JOBS_SENDGRID_TIMEOUT is 0.0"),
        ("PORT", "http", "PORT is 'http'"),
    ],
)
def test_invalid_settings(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_settings({variable: value})


def test_settings_repr_hides_key() -> None:
    assert API_KEY not in repr(AppSettings(sendgrid_api_key=API_KEY))
