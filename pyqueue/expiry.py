"""Expiring jobs: a job that has not started by its ``expires_at`` is dropped unrun.

The ``expires_in`` option (seconds) becomes the payload field ``expires_at``
(epoch seconds) when the job is pushed. The time counts from the job's run
time: a job scheduled two hours ahead with ``expires_in`` of one hour expires
three hours after the push. The job controls middleware checks the field
before every attempt, retries included, and drops an expired job: it counts
it in ``pyqueue:stat:expired``, logs one line and does not run it.

Ruby Sidekiq ignores the field, so a Ruby worker runs an expired job.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import redis

from pyqueue import keys
from pyqueue.payload import Payload

logger = logging.getLogger(__name__)

FIELD = "expires_at"


def expires_at(expires_in: float, at: float | None = None, now: float | None = None) -> float:
    """Return the epoch seconds at which a job pushed now (or scheduled for ``at``) expires."""
    start = time.time() if now is None else now
    if at is not None and at > start:
        start = at
    return start + expires_in


def expiry_time(payload: Payload) -> float | None:
    """Return the payload's ``expires_at`` in epoch seconds, or None when it has none.

    Only a JSON number counts. A JSON integer is read as seconds too, unlike
    Sidekiq 8's millisecond timestamps, because this field is pyqueue's own
    and always means seconds.
    """
    value: Any = payload.get(FIELD)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        logger.warning(
            "expires_at is %r, which is not a number of epoch seconds; running the job anyway",
            value,
        )
        return None
    return float(value)


def is_expired(payload: Payload, now: float) -> bool:
    """Return True when the payload has an ``expires_at`` at or before ``now``."""
    moment = expiry_time(payload)
    return moment is not None and moment <= now


def record_expired(conn: redis.Redis, payload: Payload, now: float) -> None:
    """Count a dropped job in ``pyqueue:stat:expired`` and log it.

    The log context set by the processor adds the jid, class and queue.
    A Redis error is logged and not raised, because the job is dropped either way.
    """
    late = now - (expiry_time(payload) or now)
    logger.info("expired %.3f s ago, dropped without running", late)
    try:
        conn.incr(keys.STAT_EXPIRED)
    except redis.RedisError as exc:
        logger.error("could not count an expired job in %s: %s", keys.STAT_EXPIRED, exc)
