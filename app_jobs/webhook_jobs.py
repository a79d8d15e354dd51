"""The job that applies one batch of SendGrid events posted to the webhook receiver.

The receiver only verifies and enqueues, so it responds to SendGrid within
milliseconds. This job does the database work on the worker.
"""

from __future__ import annotations

import logging
from typing import Any

from app_jobs import db
from app_jobs.delivery_store import process_events
from pyqueue.job import Job

log = logging.getLogger(__name__)


class EmailDeliveryProcessorJob(Job):
    """Store and apply a list of event objects; running it again changes nothing.

    Each event is recorded once in ``webhook_events`` and only a newly
    recorded event changes its delivery, so a retried job, a re-posted batch
    and a batch split across jobs all give the same result.
    """

    queue = "email_webhooks"
    retry = 3

    def perform(self, events: list[dict[str, Any]]) -> None:
        if not isinstance(events, list):
            raise TypeError(
                f"{type(self).__name__} takes a list of event objects, got {type(events).__name__}"
            )
        with db.get_pool().connection() as conn:
            result = process_events(conn, events)
        log.info(
            "events received=%d stored=%d duplicates=%d unknown_delivery=%d unknown_type=%d "
            "other_attempt=%d soft_bounces=%d not_objects=%d",
            result.received,
            result.stored,
            result.duplicates,
            result.unknown_delivery,
            result.unknown_type,
            result.other_attempt,
            result.soft_bounces,
            result.not_objects,
        )
