"""The email app's SendGrid rate limit: the setting and the mailer's use of it."""

from __future__ import annotations

import pytest
import redis

from app_jobs.mailer import OutgoingEmail, SendGridMailer, sendgrid_limiter
from app_jobs.settings import AppSettings, load_settings, parse_rate_limit
from pyqueue import ratelimit
from pyqueue.errors import ConfigError
from tests.controls.helpers import unreachable_redis
from tests.fixtures.fake_sendgrid import API_KEY, FakeSendGrid

EMAIL = OutgoingEmail(1, 1, 1, "ann@example.org", None, "Hello", "", "Hi")


def settings_for(url: str, rate: str = "") -> AppSettings:
    return AppSettings(sendgrid_api_key=API_KEY, sendgrid_host=url, sendgrid_rate_limit=rate)


def test_rate_limit_setting_read() -> None:
    settings = load_settings({"APP_JOBS_SENDGRID_RATE_LIMIT": "600/60"})
    assert settings.sendgrid_rate == (600, 60.0)
    assert load_settings({}).sendgrid_rate is None
    assert parse_rate_limit(" 10/0.5 ") == (10, 0.5)


@pytest.mark.parametrize("value", ["600", "0/60", "10/0", "ten/60", "10/-1", "/60"])
def test_rate_limit_setting_invalid(value: str) -> None:
    with pytest.raises(ConfigError, match="APP_JOBS_SENDGRID_RATE_LIMIT is"):
        load_settings({"APP_JOBS_SENDGRID_RATE_LIMIT": value})


def test_limiter_from_settings() -> None:
    assert sendgrid_limiter(AppSettings()) is None
    limiter = sendgrid_limiter(AppSettings(sendgrid_rate_limit="600/60"))
    assert limiter is not None
    assert limiter.key == "pyqueue:ratelimit:window:sendgrid"
    assert limiter.limit == 600
    assert limiter.per == 60.0
    assert limiter.wait_timeout == 60.0


def test_mailer_over_limit_not_sent(fake_sendgrid: FakeSendGrid, r: redis.Redis) -> None:
    limiter = ratelimit.window("sendgrid-test", 2, per=60, redis=r)
    mailer = SendGridMailer(settings_for(fake_sendgrid.url), limiter=limiter)
    assert mailer.send(EMAIL).outcome == "sent"
    assert mailer.send(EMAIL).outcome == "sent"

    result = mailer.send(EMAIL)
    assert result.outcome == "retry"
    assert result.error is not None
    assert "rate limiter 'sendgrid-test'" in result.error
    assert result.retry_at is not None
    assert len(fake_sendgrid.requests) == 2


def test_mailer_waits_for_slot(fake_sendgrid: FakeSendGrid, r: redis.Redis) -> None:
    limiter = ratelimit.window("sendgrid-test", 1, per=0.3, redis=r, wait_timeout=0.3)
    mailer = SendGridMailer(settings_for(fake_sendgrid.url), limiter=limiter)
    assert mailer.send(EMAIL).outcome == "sent"
    assert mailer.send(EMAIL).outcome == "sent"
    assert len(fake_sendgrid.requests) == 2


def test_mailer_uses_setting(fake_sendgrid: FakeSendGrid, r: redis.Redis) -> None:
    """The limiter built from the setting counts in the default client's Redis."""
    mailer = SendGridMailer(settings_for(fake_sendgrid.url, rate="5/60"))
    assert mailer.send(EMAIL).outcome == "sent"
    assert r.zcard("pyqueue:ratelimit:window:sendgrid") == 1


def test_mailer_redis_down_retries(fake_sendgrid: FakeSendGrid) -> None:
    unreachable = unreachable_redis()
    limiter = ratelimit.window("sendgrid-test", 5, per=60, redis=unreachable)
    mailer = SendGridMailer(settings_for(fake_sendgrid.url), limiter=limiter)
    result = mailer.send(EMAIL)
    assert result.outcome == "retry"
    assert result.error is not None
    assert "could not reach Redis" in result.error
    assert fake_sendgrid.requests == []
    unreachable.close()
