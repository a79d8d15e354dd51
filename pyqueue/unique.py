"""Unique jobs: at most one copy of a job queued or running, guarded by a lock in Redis.

A job opts in with the ``unique`` option (a lock type) and may set
``unique_ttl``, ``unique_key`` and ``on_conflict``. The push path
(``pyqueue.controls.push``) computes the job's digest from its class, queue
and arguments (or ``unique_key(*args)``) and stores it in the payload. The
lock is the key ``pyqueue:unique:<digest>``, written with ``SET NX PX``, and
its value is the jid of the holder. Every release is a compare-and-delete on
that jid, so a job never removes a lock that a newer copy holds.

| lock type       | taken                 | released                                    |
|-----------------|-----------------------|---------------------------------------------|
| until_executed  | at push               | after the job succeeds, or when it dies     |
| until_executing | at push               | just before the job runs                    |
| while_executing | when the job starts   | when it ends, whatever the outcome          |
| until_expired   | at push               | only by its TTL                             |

Every lock has a TTL (``unique_ttl``, default one hour, plus the delay of a
scheduled job), so a lock left by a crashed process ends by itself. That
makes uniqueness best effort: a job waiting longer than its TTL (in its
queue or in the retry set) no longer blocks a duplicate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

from pyqueue import keys
from pyqueue.config import Settings
from pyqueue.errors import ArgumentError, PyQueueError
from pyqueue.payload import Payload, new_jid

if TYPE_CHECKING:
    from pyqueue.client import Client

logger = logging.getLogger(__name__)

UNTIL_EXECUTED = "until_executed"
UNTIL_EXECUTING = "until_executing"
WHILE_EXECUTING = "while_executing"
UNTIL_EXPIRED = "until_expired"
LOCK_TYPES = (UNTIL_EXECUTED, UNTIL_EXECUTING, WHILE_EXECUTING, UNTIL_EXPIRED)

LOG = "log"
REJECT = "reject"
REPLACE = "replace"
RESCHEDULE = "reschedule"
STRATEGIES = (LOG, REJECT, REPLACE, RESCHEDULE)

DEFAULT_TTL = 3600.0

# Payload fields. They avoid the names of Sidekiq Enterprise ("unique_for") and
# of the sidekiq-unique-jobs gem ("lock", "lock_digest", "on_conflict"), whose
# Ruby middleware would otherwise act on pyqueue's jobs.
FIELD_LOCK = "unique_lock"
FIELD_DIGEST = "unique_digest"
FIELD_TTL = "unique_ttl"
FIELD_ON_CONFLICT = "unique_on_conflict"
FIELD_RESCHEDULES = "unique_reschedules"

ACQUIRE_SCRIPT = """
-- Take a unique lock, or keep it when the same jid already holds it.
-- KEYS[1]: the lock key; ARGV[1]: the jid; ARGV[2]: TTL in ms
-- Returns the jid holding the lock afterwards: ARGV[1] when taken or kept.
local holder = redis.call("GET", KEYS[1])
if not holder then
  redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
  return ARGV[1]
end
if holder == ARGV[1] then
  redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return holder
"""

RELEASE_SCRIPT = """
-- Delete a unique lock only if the given jid holds it.
-- KEYS[1]: the lock key; ARGV[1]: the jid
-- Returns 1 when the lock was deleted, 0 when another jid or nobody holds it.
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
"""

REPLACE_SCRIPT = """
-- Delete the waiting job that holds a unique lock and hand the lock to a new jid.
-- KEYS[1]: the lock key; KEYS[2]: the queue LIST; KEYS[3]: schedule; KEYS[4]: retry
-- ARGV[1]: the holder's jid; ARGV[2]: the new jid; ARGV[3]: the lock TTL in ms
-- Returns "replaced" when the holder's job was deleted and the lock moved,
-- "changed" when the lock no longer holds ARGV[1], and "running" when the
-- holder's job is in none of the three keys (it runs, or it is gone).
if redis.call("GET", KEYS[1]) ~= ARGV[1] then
  return "changed"
end
local needle = '"jid":"' .. ARGV[1] .. '"'
local function is_holder(member)
  if not string.find(member, needle, 1, true) then
    return false
  end
  local ok, job = pcall(cjson.decode, member)
  return ok and type(job) == "table" and job["jid"] == ARGV[1]
end
local function take(key, is_list)
  local chunk, start = 500, 0
  while true do
    local members
    if is_list then
      members = redis.call("LRANGE", key, start, start + chunk - 1)
    else
      members = redis.call("ZRANGE", key, start, start + chunk - 1)
    end
    for _, member in ipairs(members) do
      if is_holder(member) then
        if is_list then redis.call("LREM", key, 1, member) else redis.call("ZREM", key, member) end
        return true
      end
    end
    if #members < chunk then return false end
    start = start + chunk
  end
end
if take(KEYS[2], true) or take(KEYS[3], false) or take(KEYS[4], false) then
  redis.call("SET", KEYS[1], ARGV[2], "PX", ARGV[3])
  return "replaced"
end
return "running"
"""


class UniqueConflict(PyQueueError):
    """The error recorded on a job rejected to the dead set because a copy holds its lock."""


@dataclasses.dataclass(frozen=True)
class UniqueOptions:
    """A job's validated unique options."""

    lock: str
    ttl: float
    on_conflict: str
    key: Callable[..., Any] | None = None


def resolve_options(
    unique: Any,
    ttl: Any = None,
    key: Any = None,
    on_conflict: Any = None,
) -> UniqueOptions | None:
    """Validate the unique options; return None when ``unique`` is off (None or False).

    ``unique=True`` means until_executed. ``on_conflict`` defaults to
    reschedule for while_executing and to log otherwise. Raises
    ArgumentError with a message that names the invalid option.
    """
    if unique is None or unique is False:
        return None
    lock = UNTIL_EXECUTED if unique is True else unique
    if lock not in LOCK_TYPES:
        raise ArgumentError(f"unique is {unique!r}; use True or one of {', '.join(LOCK_TYPES)}")
    seconds = DEFAULT_TTL if ttl is None else ttl
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        raise ArgumentError(f"unique_ttl is {ttl!r}; it must be a number of seconds greater than 0")
    if key is not None and not callable(key):
        raise ArgumentError(f"unique_key is {key!r}; it must be a function of the job's arguments")
    strategy = on_conflict or (RESCHEDULE if lock == WHILE_EXECUTING else LOG)
    _check_strategy(lock, strategy)
    return UniqueOptions(lock, float(seconds), strategy, key)


def _check_strategy(lock: str, strategy: Any) -> None:
    if strategy not in STRATEGIES:
        raise ArgumentError(f"on_conflict is {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if strategy == REPLACE and lock == WHILE_EXECUTING:
        raise ArgumentError(
            "on_conflict replace needs a lock taken at push time; with while_executing "
            "use reschedule, log or reject"
        )
    if strategy == RESCHEDULE and lock != WHILE_EXECUTING:
        raise ArgumentError(
            f"on_conflict reschedule applies when a job starts, so it needs unique "
            f"while_executing, not {lock}; use log, reject or replace"
        )


def digest(class_name: str, queue: str, args: list[Any], key: Callable[..., Any] | None) -> str:
    """Return the SHA-256 hex digest of the job's identity.

    The identity is the class, the queue and either the args or
    ``key(*args)``, encoded as JSON with sorted keys, so the order of keys
    in a dict argument does not matter. Raises ArgumentError when the key
    function fails or returns a value JSON cannot encode.
    """
    identity: Any = args
    if key is not None:
        try:
            identity = key(*args)
        except Exception as exc:
            raise ArgumentError(
                f"unique_key of {class_name} raised {type(exc).__name__}: {exc}; "
                "it must accept the job's arguments"
            ) from exc
    try:
        text = json.dumps(
            [class_name, queue, identity], sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
    except (TypeError, ValueError) as exc:
        raise ArgumentError(
            f"the unique identity of {class_name} cannot be encoded as JSON ({exc}); "
            "make unique_key return a string, number or list"
        ) from exc
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def acquire(conn: redis.Redis, lock_digest: str, jid: str, ttl: float) -> str:
    """Take the lock for ``jid`` (or keep it when ``jid`` holds it); return the holder's jid."""
    script = conn.register_script(ACQUIRE_SCRIPT)
    return _text(script(keys=[keys.unique_lock(lock_digest)], args=[jid, _ms(ttl)]))


def release(conn: redis.Redis, lock_digest: str, jid: str) -> bool:
    """Delete the lock if ``jid`` holds it; return True when it did."""
    script = conn.register_script(RELEASE_SCRIPT)
    return bool(script(keys=[keys.unique_lock(lock_digest)], args=[jid]))


def holder(conn: redis.Redis, lock_digest: str) -> str | None:
    """Return the jid holding the lock, or None when it is free."""
    value = conn.get(keys.unique_lock(lock_digest))
    return None if value is None else _text(value)


def replace(
    conn: redis.Redis, lock_digest: str, queue: str, current: str, jid: str, ttl: float
) -> str:
    """Delete ``current``'s waiting job and give its lock to ``jid``: see REPLACE_SCRIPT."""
    script = conn.register_script(REPLACE_SCRIPT)
    lock_keys = [keys.unique_lock(lock_digest), keys.queue(queue), keys.SCHEDULE, keys.RETRY]
    return _text(script(keys=lock_keys, args=[current, jid, _ms(ttl)]))


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)


def _text(value: Any) -> str:
    # A connection made without decode_responses returns bytes.
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def stamp(item: dict[str, Any], options: UniqueOptions, class_name: str, queue: str) -> str:
    """Write the unique fields into a job hash being pushed; return its digest."""
    args = item.get("args")
    lock_digest = digest(class_name, queue, args if isinstance(args, list) else [], options.key)
    item.setdefault("jid", new_jid())
    item[FIELD_LOCK] = options.lock
    item[FIELD_DIGEST] = lock_digest
    item[FIELD_TTL] = options.ttl
    item[FIELD_ON_CONFLICT] = options.on_conflict
    return lock_digest


def push_locked(
    client: Client, item: dict[str, Any], options: UniqueOptions, queue: str, delay: float
) -> str | None:
    """Take the push-time lock of a stamped job hash, then push it, or apply on_conflict.

    ``delay`` is the seconds until a scheduled job runs; the lock lasts that
    long plus ``options.ttl``. Returns the jid, or None when the job was not
    pushed (a conflict, or a client middleware veto).
    """
    jid = str(item["jid"])
    lock_digest = str(item[FIELD_DIGEST])
    ttl = options.ttl + max(delay, 0.0)
    conn = client.redis
    for _ in range(3):
        current = acquire(conn, lock_digest, jid, ttl)
        if current == jid:
            return _push_holding(client, item, lock_digest, jid)
        if options.on_conflict != REPLACE:
            _conflict_at_push(client, item, options, current)
            return None
        outcome = replace(conn, lock_digest, queue, current, jid, ttl)
        if outcome == "replaced":
            logger.info(
                "replaced waiting jid=%s with jid=%s (unique lock %s)", current, jid, lock_digest
            )
            return _push_holding(client, item, lock_digest, jid)
        if outcome == "running":
            _conflict_at_push(client, item, options, current)
            return None
        # "changed": the holder finished or was replaced meanwhile, so try again.
    _conflict_at_push(client, item, options, holder(conn, lock_digest) or "?")
    return None


def _push_holding(client: Client, item: dict[str, Any], lock_digest: str, jid: str) -> str | None:
    try:
        pushed = client.push(item)
    except BaseException:
        release_quietly(client.redis, lock_digest, jid)
        raise
    if pushed is None:
        # A client middleware vetoed the job, so it must not keep the lock.
        release_quietly(client.redis, lock_digest, jid)
    return pushed


def _conflict_at_push(
    client: Client, item: dict[str, Any], options: UniqueOptions, current: str
) -> None:
    class_name = getattr(item.get("class"), "job_name", item.get("class"))
    if options.on_conflict == REJECT:
        reject(client.redis, client.timestamp_mode, item, current)
        return
    logger.info(
        "not pushed: a copy holds its unique lock (holder jid=%s) class=%s jid=%s digest=%s",
        current,
        class_name,
        item.get("jid"),
        item.get(FIELD_DIGEST),
    )


def reject(
    conn: redis.Redis,
    timestamp_mode: str,
    item: dict[str, Any],
    current: str,
    settings: Settings | None = None,
) -> None:
    """Put a job that lost a unique conflict in the dead set, with the error fields set.

    The dead set is trimmed by ``settings``, or by the default settings
    (10,000 jobs, six months) in a pushing process that has none.
    """
    from pyqueue.client import normalize
    from pyqueue.payload import dumps, timestamp
    from pyqueue.retry import kill

    job = normalize({k: v for k, v in item.items() if k != "at"}, timestamp_mode)
    job.pop("enqueued_at", None)
    error = UniqueConflict(f"job jid={current} holds the unique lock of this job")
    job["error_message"] = str(error)
    job["error_class"] = type(error).__name__
    job["failed_at"] = timestamp(timestamp_mode)
    kill(conn, dumps(job), settings or Settings())
    logger.warning(
        "rejected to the dead set: a copy holds its unique lock (holder jid=%s) class=%s jid=%s",
        current,
        job.get("class"),
        job.get("jid"),
    )


def held_lock(payload: Payload) -> tuple[str, str, str] | None:
    """Return (lock type, digest, jid) of a payload with a unique lock, or None."""
    lock = payload.get(FIELD_LOCK)
    lock_digest = payload.get(FIELD_DIGEST)
    jid = payload.get("jid")
    if lock not in LOCK_TYPES or not isinstance(lock_digest, str) or not isinstance(jid, str):
        return None
    return str(lock), lock_digest, jid


def release_for(conn: redis.Redis, payload: Payload) -> bool:
    """Release the lock a job that will not run again may hold (none for until_expired).

    Returns True when a lock was deleted. Redis errors are logged, not
    raised: the lock then ends with its TTL.
    """
    lock_info = held_lock(payload)
    if lock_info is None or lock_info[0] == UNTIL_EXPIRED:
        return False
    return release_quietly(conn, lock_info[1], lock_info[2])


def release_after_recovery(conn: redis.Redis, payload: Payload) -> bool:
    """Release the while_executing lock of a job pushed back from a dead process's list.

    The dead process held the lock while it ran the job, so copies of the job
    would otherwise wait for the TTL. The recovered job takes the lock again
    when it runs. Other lock types are kept: they guard the job until it runs.
    """
    lock_info = held_lock(payload)
    if lock_info is None or lock_info[0] != WHILE_EXECUTING:
        return False
    return release_quietly(conn, lock_info[1], lock_info[2])


def release_quietly(conn: redis.Redis, lock_digest: str, jid: str) -> bool:
    """Release like ``release``, but log a Redis error instead of raising it (the TTL ends it)."""
    try:
        return release(conn, lock_digest, jid)
    except redis.RedisError as exc:
        logger.error(
            "could not release unique lock %s of jid=%s, it ends with its TTL: %s",
            lock_digest,
            jid,
            exc,
        )
        return False


_connection: redis.Redis | None = None


def use_connection(conn: redis.Redis) -> None:
    """Set the connection that ``release_on_death`` uses (the worker's own)."""
    global _connection
    _connection = conn


def release_on_death(payload: Payload, exc: BaseException) -> None:
    """Death handler: release the lock of a job whose retries are exhausted.

    It also runs for a failed job with ``retry: false``. pyqueue.controls
    adds it to ``pyqueue.retry.death_handlers`` when a worker starts.
    """
    from pyqueue.client import default_client

    conn = _connection if _connection is not None else default_client().redis
    if release_for(conn, payload):
        logger.info("released unique lock of jid=%s after its death", payload.get("jid"))
