"""Every Redis key name pyqueue reads or writes.

Sidekiq 7 and sidekiq-cron own most of these names; a Ruby process sharing the
database reads them, so they must not change. Keys of pyqueue's own start with
``pyqueue:`` so that they never collide with a Sidekiq or Sidekiq Pro key.
"""

from __future__ import annotations

import datetime as dt

QUEUES = "queues"  # SET of queue names (without the "queue:" prefix)
SCHEDULE = "schedule"  # ZSET payload -> run time (epoch seconds)
RETRY = "retry"  # ZSET payload -> next attempt (epoch seconds)
DEAD = "dead"  # ZSET payload -> time of death (epoch seconds)
PROCESSES = "processes"  # SET of process identities
PROCESS_CLEANUP = "process_cleanup"  # STRING lock, NX EX 60
STAT_PROCESSED = "stat:processed"
STAT_FAILED = "stat:failed"

# Daily stat keys live five years, as Sidekiq's do.
STAT_DAILY_TTL = 157_680_000
# Process hashes, work hashes and signal lists expire when the heartbeat stops.
PROCESS_TTL = 60

QUEUE_PREFIX = "queue:"

# sidekiq-cron. Layout "v1" (1.x): SET cron_jobs, HASH cron_job:<name>. Layout "v2"
# (2.x): SET cron_jobs:<namespace>, HASH cron_job:<namespace>:<name>. The index
# SET holds hash key names; each hash key has ":enqueued" (ZSET of ticks already
# enqueued) and ":jid_history" (LIST) beside it.
CRON_JOBS = "cron_jobs"

# pyqueue's own keys.
CRON_LOADED = "pyqueue:cron:loaded"  # SET of cron job names loaded from pyqueue's schedule file
WORKING_PREFIX = "pyqueue:working:"  # LIST per process for reliable fetch
WORKING_INDEX = "pyqueue:working_index"  # SET of identities that may own a working list
RECOVERY_LOCK = "pyqueue:recovery_lock"  # STRING lock, NX EX 60, for the periodic recovery
RECOVERIES_PREFIX = "pyqueue:recoveries:"  # STRING per jid: times recovered from a dead process


def queue(name: str) -> str:
    """Return the LIST key of queue ``name``."""
    return QUEUE_PREFIX + name


def queue_name(key: str) -> str:
    """Return the queue name of a ``queue:<name>`` key."""
    return key[len(QUEUE_PREFIX) :] if key.startswith(QUEUE_PREFIX) else key


def stat_daily(stat: str, day: dt.date) -> str:
    """Return the daily counter key, e.g. ``stat:processed:2026-12-04`` (UTC date)."""
    return f"stat:{stat}:{day.isoformat()}"


def work(identity: str) -> str:
    """Return the busy-work HASH of a process (Sidekiq 6.4.2 and newer)."""
    return f"{identity}:work"


def legacy_workers(identity: str) -> str:
    """Return the busy-work HASH name that Sidekiq 6.4.1 and older read."""
    return f"{identity}:workers"


def signals(identity: str) -> str:
    """Return the LIST that the Web UI and API push TSTP / TERM / TTIN to."""
    return f"{identity}-signals"


def working(identity: str) -> str:
    """Return the reliable-fetch working LIST of a process."""
    return WORKING_PREFIX + identity


def recoveries(jid: str) -> str:
    """Return the counter of how often the job ``jid`` was recovered from a dead process."""
    return RECOVERIES_PREFIX + jid


def cron_index(namespace: str | None = None) -> str:
    """Return the cron index SET: ``cron_jobs``, or ``cron_jobs:<namespace>`` (v2)."""
    return CRON_JOBS if namespace is None else f"{CRON_JOBS}:{namespace}"


def cron_job(name: str, namespace: str | None = None) -> str:
    """Return a cron job's HASH: ``cron_job:<name>``, or ``cron_job:<namespace>:<name>`` (v2)."""
    return f"cron_job:{name}" if namespace is None else f"cron_job:{namespace}:{name}"


# Job controls (pyqueue.unique, pyqueue.ratelimit, pyqueue.expiry).
UNIQUE_PREFIX = "pyqueue:unique:"  # STRING per unique digest: the jid holding the lock, with a TTL
RATE_LIMIT_PREFIX = "pyqueue:ratelimit:"  # ZSET per limiter: "<kind>:<name>"
STAT_EXPIRED = "pyqueue:stat:expired"  # count of expired jobs dropped without running


def unique_lock(digest: str) -> str:
    """Return the unique lock STRING of a job digest."""
    return UNIQUE_PREFIX + digest


def rate_limiter(kind: str, name: str) -> str:
    """Return a rate limiter's ZSET, e.g. ``pyqueue:ratelimit:window:sendgrid``."""
    return f"{RATE_LIMIT_PREFIX}{kind}:{name}"
