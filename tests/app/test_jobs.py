"""Job options and the worker configuration files of the email app."""

from __future__ import annotations

from pathlib import Path

import pytest

from app_jobs import jobs
from pyqueue import config
from pyqueue.cron import read_schedule_file
from pyqueue.job import lookup

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("name", "queue", "retry"),
    [
        ("EmailSenderWorker", "email_delivery", 2),
        ("EmailRetryJob", "email_delivery", 2),
        ("EmailRetryScannerJob", "email_delivery", 2),
        ("EmailDeliveryProcessorJob", "email_webhooks", 3),
    ],
)
def test_job_options(name: str, queue: str, retry: int) -> None:
    job = lookup(name)
    assert job.queue == queue
    assert job.retry == retry
    assert job.__module__.startswith("app_jobs.")
    assert getattr(jobs, name) is job


def test_pyqueue_config_file() -> None:
    settings = config.load(ROOT / "config" / "pyqueue.yml", environ={})
    assert settings.queue_names == ["email_delivery", "email_webhooks", "default"]
    assert settings.require == ("app_jobs.jobs",)
    assert settings.schedule_file == "config/schedule.yml"


def test_schedule_file() -> None:
    entries = {job.name: job for job, _ in read_schedule_file(ROOT / "config" / "schedule.yml")}
    assert set(entries) == {"email_sender_worker", "email_retry_scanner_job"}
    sender = entries["email_sender_worker"]
    assert (sender.cron, sender.klass, sender.queue) == (
        "*/5 * * * *",
        "EmailSenderWorker",
        "email_delivery",
    )
    scanner = entries["email_retry_scanner_job"]
    assert (scanner.cron, scanner.klass, scanner.queue) == (
        "*/30 * * * *",
        "EmailRetryScannerJob",
        "email_delivery",
    )
