"""Reliable fetch: each running job keeps a copy in its process's working list.

A processor thread fetches through ``ReliableFetch`` like through
``BasicFetch``. The job moves atomically from ``queue:<name>`` to
``pyqueue:working:<identity>`` (LMOVE, Redis 6.2 or newer), stays there while
it runs and leaves on acknowledgement. When the process dies, the copy stays
behind, and ``pyqueue.recovery`` in the next process pushes it back to its
queue. The working lists are not in ``queues``, so Sidekiq's Web UI, its API
and Ruby workers sharing the database never see them.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

import redis

from pyqueue import keys
from pyqueue.connection import FETCH_TIMEOUT
from pyqueue.fetch import ERROR_PAUSE, FetchGate, UnitOfWork, queue_order
from pyqueue.outage import OutageLog
from pyqueue.payload import loads

logger = logging.getLogger(__name__)

RELIABLE_FETCH_SCRIPT = """
-- Move the oldest job of the first non-empty queue into this process's working list.
-- KEYS[1]: the working list, pyqueue:working:<identity>
-- KEYS[2]: the SET of identities that may own a working list
-- KEYS[3..n]: the queue:<name> lists, in the order to try them
-- ARGV[1]: the identity of this process
-- Returns: {queue key, job string}, or nil when every queue is empty.
-- The identity is indexed even when nothing moves, so that a thread's later
-- BLMOVE never fills a list that recovery cannot find.
redis.call("SADD", KEYS[2], ARGV[1])
for i = 3, #KEYS do
  local job = redis.call("LMOVE", KEYS[i], KEYS[1], "RIGHT", "LEFT")
  if job then
    return {KEYS[i], job}
  end
end
return nil
"""

PUSH_BACK_SCRIPT = """
-- Move one job from a working list to the tail of a queue, where it is fetched next.
-- KEYS[1]: the working list
-- KEYS[2]: the queue:<name> list
-- ARGV[1]: the job string
-- Returns: 1 when the job moved, 0 when the working list no longer holds it
-- (recovery pushed it back already, and a second push would run it twice).
if redis.call("LREM", KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
redis.call("RPUSH", KEYS[2], ARGV[1])
return 1
"""

FORGET_SCRIPT = """
-- Remove an identity from the working index once its working list is empty.
-- KEYS[1]: the working list
-- KEYS[2]: the SET of identities that may own a working list
-- ARGV[1]: the identity
-- Returns: 1 when the identity was removed, 0 when its list still contains jobs.
if redis.call("LLEN", KEYS[1]) > 0 then
  return 0
end
redis.call("SREM", KEYS[2], ARGV[1])
return 1
"""


class ReliableFetch:
    """Fetch that keeps each running job in this process's working list until acknowledged.

    While work waits, one script call tries the queues with non-blocking
    LMOVE, in the configured order (strict) or in a weighted shuffle. When
    every queue is empty the thread blocks with BLMOVE, which serves one list
    only, so idle threads spread over the queues: each blocks on the queue
    with the fewest threads already blocked on it. With at least as many idle
    threads as queues, every queue has one, and a new job starts at once.
    NOTE: with fewer idle threads (or fetch-gate slots) than queues, a job on
    a queue that no thread waits on starts at the next script call, up to 2 s
    later.

    The fetcher counts the fetched jobs that are still running (held) and the
    acknowledgements that failed during an outage, so that a copy in the
    working list that no thread runs can be distinguished from a running job.
    """

    def __init__(
        self,
        conn: redis.Redis,
        queues: Sequence[tuple[str, int]],
        identity: str,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        blocking_limit: int | None = None,
    ) -> None:
        self.redis = conn
        self.queues = tuple(queues)
        self.identity = identity
        self.working_key = keys.working(identity)
        self.strict = all(weight == 0 for _, weight in self.queues)
        self._names = queue_order(self.queues)
        self._positions = {name: index for index, name in enumerate(self._names)}
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._gate = FetchGate(blocking_limit)
        self._fetch_script = conn.register_script(RELIABLE_FETCH_SCRIPT)
        self._push_back_script = conn.register_script(PUSH_BACK_SCRIPT)
        self._forget_script = conn.register_script(FORGET_SCRIPT)
        self.outage = OutageLog(logger, "Redis")
        self._lock = threading.Lock()
        self._blocked: Counter[str] = Counter()
        self._thread_slots = threading.local()
        self._threads_seen = 0
        self._held: Counter[str] = Counter()
        self._unacknowledged: Counter[str] = Counter()
        self._suspects: Counter[str] = Counter()

    def queue_keys(self) -> list[str]:
        """Return the ``queue:<name>`` keys in the order the next script call tries them."""
        names = self._names if self.strict else queue_order(self.queues, self._rng)
        return [keys.queue(name) for name in names]

    def retrieve_work(self) -> UnitOfWork | None:
        # Blocks for at most FETCH_TIMEOUT (2 s) when idle, so a stop is noticed
        # quickly, and an idle thread sends one script call and one BLMOVE (with
        # its SADD) per 2 s instead of spinning.
        try:
            self.flush_acknowledgements()
            unit = self._take_waiting() or self._wait_for_job()
        except redis.RedisError as exc:
            self.outage.failed(exc)
            self._sleep(ERROR_PAUSE)
            return None
        self.outage.recovered()
        return unit

    def _take_waiting(self) -> UnitOfWork | None:
        result = self._fetch_script(
            keys=[self.working_key, keys.WORKING_INDEX, *self.queue_keys()],
            args=[self.identity],
        )
        if not result:
            return None
        key, raw = result
        return self._hold(keys.queue_name(str(key)), str(raw))

    def _wait_for_job(self) -> UnitOfWork | None:
        with self._gate.slot(FETCH_TIMEOUT) as admitted:
            if not admitted:
                return None
            name = self._pick_blocking_queue()
            try:
                pipe = self.redis.pipeline(transaction=False)
                pipe.blmove(keys.queue(name), self.working_key, FETCH_TIMEOUT, "RIGHT", "LEFT")
                # Indexes the list again in case a stop emptied and unindexed it
                # while this thread was blocked; Redis runs it after the move.
                pipe.sadd(keys.WORKING_INDEX, self.identity)
                raw, _ = pipe.execute()
            finally:
                with self._lock:
                    self._blocked[name] -= 1
        if raw is None:
            return None
        return self._hold(name, str(raw))

    def _pick_blocking_queue(self) -> str:
        """Return the queue with the fewest blocked threads; ties go to this thread's own slot."""
        slot: int | None = getattr(self._thread_slots, "index", None)
        with self._lock:
            if slot is None:
                slot = self._threads_seen
                self._threads_seen += 1
                self._thread_slots.index = slot
            count = len(self._names)
            start = slot % count
            name = min(
                self._names,
                key=lambda n: (self._blocked[n], (self._positions[n] - start) % count),
            )
            self._blocked[name] += 1
        return name

    def _hold(self, queue: str, raw: str) -> UnitOfWork:
        with self._lock:
            self._held[raw] += 1
        return UnitOfWork(queue, raw, self)

    def _release(self, raw: str) -> None:
        with self._lock:
            if self._held[raw] > 1:
                self._held[raw] -= 1
            else:
                self._held.pop(raw, None)

    def acknowledge(self, unit: UnitOfWork) -> None:
        """Remove the finished job from the working list (``LREM working 1 <raw>``).

        On a Redis error the removal is kept in memory and retried before the
        next fetch, so the finished job does not run again after a recovery.
        """
        try:
            self.redis.lrem(self.working_key, 1, unit.raw)
        except redis.RedisError as exc:
            self.outage.failed(exc)
            with self._lock:
                self._unacknowledged[unit.raw] += 1
        finally:
            self._release(unit.raw)

    def flush_acknowledgements(self) -> None:
        """Retry the removals that failed; raise RedisError if Redis still fails."""
        with self._lock:
            pending = list(self._unacknowledged.elements())
            self._unacknowledged.clear()
        if not pending:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for raw in pending:
                pipe.lrem(self.working_key, 1, raw)
            pipe.execute()
        except redis.RedisError:
            with self._lock:
                self._unacknowledged.update(pending)
            raise

    def requeue(self, unit: UnitOfWork) -> None:
        self.bulk_requeue([unit])

    def bulk_requeue(self, units: Sequence[UnitOfWork]) -> None:
        """Move each job from the working list to the tail of its queue, in one MULTI.

        A job that the working list no longer contains is not pushed again. On a
        Redis error nothing is raised, because nothing is lost: the jobs stay
        in the working list, are not marked requeued, and ``drain()``, the
        orphan check or a later recovery pushes them back.
        """
        if not units:
            return
        try:
            pipe = self.redis.pipeline(transaction=True)
            for unit in units:
                self._push_back_script(
                    keys=[self.working_key, keys.queue(unit.queue)], args=[unit.raw], client=pipe
                )
            pipe.execute()
        except redis.RedisError as exc:
            self.outage.failed(exc)
            for unit in units:
                self._release(unit.raw)
                logger.error(
                    "could not push a job back to queue %s (%s); it stays in %s "
                    "until it is recovered jid=%s",
                    unit.queue,
                    exc,
                    self.working_key,
                    _payload_field(unit.raw, "jid"),
                )
            return
        for unit in units:
            unit.requeued = True
            self._release(unit.raw)

    def reclaim_orphans(self) -> int:
        """Push back jobs that sit in the working list while no thread runs them.

        Such a copy is left when a fetch moved a job but its reply was lost
        (a timeout or a dropped connection, after which redis-py retries the
        fetch and moves another job). A copy counts as orphaned only when two
        calls in a row find it unheld, so call this about once a minute: a
        fetch reply still on its way is then never taken for an orphan.
        Returns how many jobs moved; raises RedisError.
        """
        listed = Counter(str(raw) for raw in self.redis.lrange(self.working_key, 0, -1))
        with self._lock:
            unheld = listed - self._held - self._unacknowledged
            orphans = unheld & self._suspects
            self._suspects = unheld - orphans
        moved = self._push_back_all(list(orphans.elements()))
        if moved:
            logger.warning(
                "pushed %d orphaned jobs from %s back to their queues", moved, self.working_key
            )
        return moved

    def drain(self) -> None:
        """Push back every job left in the working list, at the end of a graceful stop.

        The manager has already pushed back the running jobs, so what is left
        was fetched after the stop began, or is an orphan. Each job goes to the
        tail of its queue and is fetched next. A Redis error is logged: the
        jobs then stay and are recovered once this process is gone.
        """
        try:
            self.flush_acknowledgements()
            raws = [str(raw) for raw in self.redis.lrange(self.working_key, 0, -1)]
            moved = self._push_back_all(raws)
            self._forget_script(keys=[self.working_key, keys.WORKING_INDEX], args=[self.identity])
        except redis.RedisError as exc:
            logger.error(
                "could not empty %s at stop (%s); its jobs are recovered once this "
                "process's heartbeat is gone",
                self.working_key,
                exc,
            )
            return
        if moved:
            logger.info("pushed %d jobs from %s back to their queues", moved, self.working_key)

    def _push_back_all(self, raws: Sequence[str]) -> int:
        """Push each job back to the queue its payload names; return how many moved.

        LRANGE lists the newest job first, and pushing in that order leaves the
        oldest at the tail, where it is fetched first. A job whose payload
        names no queue stays for recovery, which moves it to the dead set.
        """
        moved = 0
        for raw in raws:
            queue = _payload_field(raw, "queue")
            if not isinstance(queue, str) or not queue:
                logger.error("a job in %s names no queue; left for recovery", self.working_key)
                continue
            moved += int(
                self._push_back_script(keys=[self.working_key, keys.queue(queue)], args=[raw])
            )
        return moved


def _payload_field(raw: str, name: str) -> object:
    """Return one field of a job string, or None when it is not a JSON object."""
    try:
        job = loads(raw)
    except ValueError:
        return None
    return job.get(name) if isinstance(job, dict) else None
