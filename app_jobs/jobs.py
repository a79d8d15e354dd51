"""The email app's jobs. ``pyqueue run -r app_jobs.jobs`` loads every one of them.

Each job only loads rows by id and calls a plain function, so tests call
the functions directly and the jobs stay thin:

- EmailSenderWorker (cron every 5 min): sender.run_sender
- EmailRetryJob(delivery_id, attempt): retry_policy.retry_delivery
- EmailRetryScannerJob (cron every 30 min): scanner.scan
- EmailDeliveryProcessorJob (webhook batches): app_jobs.webhook_jobs
"""

from __future__ import annotations

import threading

from app_jobs import db, retry_policy, scanner, sender
from app_jobs.dispatch import SendContext
from app_jobs.mailer import build_mailer
from app_jobs.settings import get_settings
from app_jobs.webhook_jobs import EmailDeliveryProcessorJob  # noqa: F401
from pyqueue.client import default_client
from pyqueue.job import Job

_context: SendContext | None = None
_context_lock = threading.Lock()


def app_context() -> SendContext:
    """Return the process-wide context: settings from the environment, the pool, the mailer."""
    global _context
    if _context is None:
        with _context_lock:
            if _context is None:
                settings = get_settings()
                _context = SendContext(
                    settings=settings,
                    pool=db.get_pool(),
                    mailer=build_mailer(settings),
                    redis=default_client().redis,
                )
    return _context


def use_context(context: SendContext | None) -> None:
    """Replace the process-wide context (None builds a new one on next use); for tests."""
    global _context
    with _context_lock:
        _context = context


class EmailSenderWorker(Job):
    """Send every due scheduled email; overlapping runs never send one twice."""

    queue = "email_delivery"
    retry = 2

    def perform(self) -> None:
        sender.run_sender(app_context())


class EmailRetryJob(Job):
    """Send the next attempt of a delivery that soft-bounced on ``attempt``."""

    queue = "email_delivery"
    retry = 2

    def perform(self, delivery_id: int, attempt: int) -> None:
        retry_policy.retry_delivery(app_context(), int(delivery_id), int(attempt))


class EmailRetryScannerJob(Job):
    """Enqueue overdue retries and settle deliveries stuck in ``sending``."""

    queue = "email_delivery"
    retry = 2

    def perform(self) -> None:
        scanner.scan(app_context())
