"""Recovery: push the jobs of dead processes back to their queues.

With reliable fetch, a process that dies (SIGKILL, out of memory, power loss)
leaves its running jobs in its working list ``pyqueue:working:<identity>``.
Recovery finds the working lists whose owner is gone, moves each job back to
the tail of the queue that its payload names, and counts how often each job
was recovered. A job recovered more than ``max_recoveries`` times probably
kills its process, so it goes to the dead set instead of running again.

The launcher runs ``Recovery.recover_dead()`` once at start, before its
processors fetch, and ``RecoveryService`` repeats it about every 60 s under
the ``pyqueue:recovery_lock`` lock, so that one process of the cluster runs
it per minute. Processes with basic fetch run it too, so that working lists
left from reliable fetch are not forgotten.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from pyqueue import keys
from pyqueue.config import Settings
from pyqueue.errors import PayloadError, PyQueueError
from pyqueue.heartbeat import hostname
from pyqueue.log import job_context
from pyqueue.outage import OutageLog
from pyqueue.payload import Payload, decode, dumps, timestamp
from pyqueue.reliable_fetch import PUSH_BACK_SCRIPT
from pyqueue.unique import release_after_recovery

logger = logging.getLogger(__name__)

RECOVERY_INTERVAL = 60.0
RECOVERY_LOCK_SECONDS = 60
# Jobs moved per script call. Redis runs nothing else while a script runs, so
# a long working list is moved in batches.
CLAIM_BATCH = 100
# A poison job kills its process within minutes of each recovery, so a day
# is ample to reach max_recoveries, and the counters of healthy jobs expire.
RECOVERY_COUNT_TTL = 24 * 3600

CLAIM_SCRIPT = """
-- Move jobs from a dead process's working list into the recovering process's list.
-- KEYS[1]: the working list of the dead process
-- KEYS[2]: the working list of the recovering process
-- KEYS[3]: the SET of identities that may own a working list
-- ARGV[1]: the identity of the dead process
-- ARGV[2]: the identity of the recovering process
-- ARGV[3]: the maximum number of jobs to move
-- Returns: the moved jobs, newest first. The dead identity leaves the SET once
-- its list is empty. Two processes recovering at once never move a job twice.
local moved = {}
for i = 1, tonumber(ARGV[3]) do
  local job = redis.call("LMOVE", KEYS[1], KEYS[2], "LEFT", "LEFT")
  if not job then
    break
  end
  moved[#moved + 1] = job
end
if #moved > 0 then
  redis.call("SADD", KEYS[3], ARGV[2])
end
if redis.call("LLEN", KEYS[1]) == 0 then
  redis.call("SREM", KEYS[3], ARGV[1])
end
return moved
"""

BURY_SCRIPT = """
-- Move one job from a working list to the dead set, trimmed as Sidekiq trims it.
-- KEYS[1]: the working list
-- KEYS[2]: the dead set
-- ARGV[1]: the job string in the working list
-- ARGV[2]: the dead-set member to add ("" to drop the job instead)
-- ARGV[3]: now, epoch seconds (the member's score)
-- ARGV[4]: members scored before this time are removed
-- ARGV[5]: the dead set keeps its newest ARGV[5] - 1 members
-- Returns: 1 when the job moved, 0 when the working list no longer holds it.
if redis.call("LREM", KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
if ARGV[2] ~= "" then
  redis.call("ZADD", KEYS[2], ARGV[3], ARGV[2])
  redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", ARGV[4])
  redis.call("ZREMRANGEBYRANK", KEYS[2], 0, -tonumber(ARGV[5]))
end
return 1
"""


class RecoveryLimitExceeded(PyQueueError):
    """A job was recovered from dead processes more than ``max_recoveries`` times."""


def owner_is_gone(conn: redis.Redis, identity: str) -> bool:
    """Return True when the process ``identity`` no longer runs.

    A process is gone when it left ``processes`` (a graceful stop) or its
    heartbeat hash expired (60 s after its last beat). On the host it ran
    on, a process whose pid no longer runs, or is now this process's own pid
    (a restarted container), is gone at once, without waiting for the hash
    to expire.
    """
    pipe = conn.pipeline(transaction=False)
    pipe.sismember(keys.PROCESSES, identity)
    pipe.hget(identity, "info")
    member, info = pipe.execute()
    if not member or info is None:
        return True
    return died_on_this_host(identity)


def died_on_this_host(identity: str) -> bool:
    """Return True when ``identity`` names a process of this host that is not running.

    NOTE: this assumes that a hostname (or DYNO) names one pid namespace.
    Two containers that share a hostname but not their pids would see each
    other as gone and recover each other's running jobs, which then run twice.
    """
    parts = identity.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != hostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    # kill(pid, 0) still succeeds for a killed child that its parent has not reaped.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[-1].split()
    return bool(fields) and fields[0] == "Z"


class Recovery:
    """Moves the jobs of dead processes back to their queues, or to the dead set.

    ``identity`` is this process's; its own working list is the staging area
    of each recovered job, so that a crash during recovery loses nothing.
    ``clock`` returns epoch seconds.
    """

    def __init__(
        self,
        conn: redis.Redis,
        settings: Settings,
        identity: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = conn
        self.settings = settings
        self.identity = identity
        self.working_key = keys.working(identity)
        self.clock = clock
        self._claim = conn.register_script(CLAIM_SCRIPT)
        self._push_back = conn.register_script(PUSH_BACK_SCRIPT)
        self._bury = conn.register_script(BURY_SCRIPT)

    def recover_dead(self) -> int:
        """Recover the working list of every process that is gone; return the jobs handled.

        Raises RedisError; jobs moved so far are safe in this process's list.
        """
        handled = 0
        for member in sorted(self.redis.smembers(keys.WORKING_INDEX)):
            identity = str(member)
            if identity == self.identity or not owner_is_gone(self.redis, identity):
                continue
            handled += self.recover_process(identity)
        return handled

    def recover_process(self, dead: str) -> int:
        """Recover every job in the working list of the process ``dead``; return how many.

        The jobs are claimed newest first and each is pushed to the tail of
        its queue, so the oldest ends up at the tail and runs first again.
        """
        handled = 0
        while True:
            moved = self._claim(
                keys=[keys.working(dead), self.working_key, keys.WORKING_INDEX],
                args=[dead, self.identity, CLAIM_BATCH],
            )
            for raw in moved:
                self._recover_job(str(raw), dead)
            handled += len(moved)
            if len(moved) < CLAIM_BATCH:
                return handled

    def _recover_job(self, raw: str, dead: str) -> None:
        try:
            job = decode(raw)
        except PayloadError as exc:
            self._move_to_dead(raw, raw)
            logger.error(
                "a job in the working list of dead process %s is not a valid job, "
                "moved it to the dead set: %s",
                dead,
                exc,
            )
            return
        queue = job.get("queue")
        with job_context(jid=job.get("jid"), queue=queue, **{"class": job.get("class")}):
            if not isinstance(queue, str) or not queue:
                self._give_up(raw, job, PayloadError(f"job names no queue, got {queue!r}"))
                return
            count = self._count_recovery(raw, job)
            if count > self.settings.max_recoveries:
                error = RecoveryLimitExceeded(
                    f"job was recovered from a dead process {count} times, more than "
                    f"max_recoveries ({self.settings.max_recoveries}); it probably "
                    "kills its process"
                )
                self._give_up(raw, job, error)
                return
            self._push_back(keys=[self.working_key, keys.queue(queue)], args=[raw])
            # The dead process held the job's while_executing lock, so copies of
            # the job would wait for its TTL; the job takes it again when it runs.
            release_after_recovery(self.redis, job)
            logger.warning(
                "recovered from dead process %s: pushed back to queue %s "
                "(recovery %d of at most %d)",
                dead,
                queue,
                count,
                self.settings.max_recoveries,
            )

    def _count_recovery(self, raw: str, job: Payload) -> int:
        jid = job.get("jid")
        # A payload without a jid is counted under a hash of its exact string.
        name = jid if isinstance(jid, str) and jid else hashlib.sha1(raw.encode()).hexdigest()
        pipe = self.redis.pipeline(transaction=True)
        pipe.incr(keys.recoveries(name))
        pipe.expire(keys.recoveries(name), RECOVERY_COUNT_TTL)
        count, _ = pipe.execute()
        return int(count)

    def _give_up(self, raw: str, job: Payload, error: PyQueueError) -> None:
        """Move the job to the dead set with ``error`` in its fields, or drop it if dead: false."""
        entry = dict(job)
        entry["error_message"] = str(error)
        entry["error_class"] = type(error).__name__
        entry.setdefault("failed_at", timestamp(self.settings.timestamp_mode, self.clock()))
        # As after exhausted retries: dead: false drops the job instead.
        if job.get("dead") is False:
            self._move_to_dead(raw, "")
            logger.error("dropped, because the job sets dead: false: %s", error)
        else:
            self._move_to_dead(raw, dumps(entry))
            logger.error("moved to the dead set: %s", error)
        _run_death_handlers(entry, error)

    def _move_to_dead(self, raw: str, member: str) -> None:
        now = self.clock()
        self._bury(
            keys=[self.working_key, keys.DEAD],
            args=[
                raw,
                member,
                repr(now),
                repr(now - self.settings.dead_timeout_in_seconds),
                self.settings.dead_max_jobs,
            ],
        )


def _run_death_handlers(job: Payload, exc: BaseException) -> None:
    # The same handlers that run after exhausted retries, looked up at call
    # time because job modules register them after import.
    from pyqueue.retry import death_handlers

    for handler in list(death_handlers):
        try:
            handler(job, exc)
        except Exception:
            logger.exception("death handler %r raised jid=%s", handler, job.get("jid"))


class RecoveryService:
    """Runs recovery about every ``interval`` seconds on the ``pyqueue-recovery`` thread.

    Each round first runs ``orphan_check`` (reliable fetch's check of this
    process's own working list), then recovers dead processes if this process
    takes ``pyqueue:recovery_lock`` (SET NX EX 60). The lock is left to
    expire, so the cluster runs one recovery per minute however many
    processes it has.
    """

    def __init__(
        self,
        recovery: Recovery,
        *,
        orphan_check: Callable[[], Any] | None = None,
        interval: float = RECOVERY_INTERVAL,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.recovery = recovery
        self.orphan_check = orphan_check
        self.interval = interval
        self.rand = rand
        self.outage = OutageLog(logger, "Redis")
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="pyqueue-recovery", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def run_once(self) -> int:
        """Run one round; return the jobs recovered from dead processes. Raises RedisError."""
        if self.orphan_check is not None:
            self.orphan_check()
        conn = self.recovery.redis
        if not conn.set(
            keys.RECOVERY_LOCK, self.recovery.identity, nx=True, ex=RECOVERY_LOCK_SECONDS
        ):
            return 0
        return self.recovery.recover_dead()

    def _run(self) -> None:
        # The jitter keeps processes started together from trying the lock together.
        while not self._stopping.wait(self.interval * (0.9 + 0.2 * self.rand())):
            try:
                self.run_once()
            except redis.RedisError as exc:
                self.outage.failed(exc)
                continue
            except Exception:
                logger.exception("recovery round failed, trying again next round")
                continue
            self.outage.recovered()
