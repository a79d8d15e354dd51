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
from pyqueue.connection import FETCH_TIMEOUT, DirectScript
from pyqueue.fetch import ERROR_PAUSE, FetchGate, JobBuffer, UnitOfWork, queue_order
from pyqueue.flusher import DelayedFlusher
from pyqueue.outage import OutageLog
from pyqueue.payload import loads

logger = logging.getLogger(__name__)

RELIABLE_FETCH_SCRIPT = """
-- Acknowledge finished jobs, then move the oldest jobs of the first non-empty
-- queue into this process's working list.
-- KEYS[1]: the working list, pyqueue:working:<identity>
-- KEYS[2]: the SET of identities that may own a working list
-- KEYS[3..n]: the queue:<name> lists, in the order to try them
-- ARGV[1]: the identity of this process
-- ARGV[2]: the most jobs to move
-- ARGV[3..m]: finished jobs, each removed once from the working list
-- Returns: {queue key, {job, ...}} with the oldest job first, or false when
-- every queue is empty. The identity is indexed even when nothing moves, so
-- that a thread's later BLMOVE never fills a list that recovery cannot find.
for i = 3, #ARGV do
  redis.call("LREM", KEYS[1], -1, ARGV[i])
end
redis.call("SADD", KEYS[2], ARGV[1])
local limit = tonumber(ARGV[2])
for i = 3, #KEYS do
  local jobs = {}
  for n = 1, limit do
    local job = redis.call("LMOVE", KEYS[i], KEYS[1], "RIGHT", "LEFT")
    if not job then
      break
    end
    jobs[n] = job
  end
  if #jobs > 0 then
    return {KEYS[i], jobs}
  end
end
return false
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


# Seconds a finished job's acknowledgement waits for a fetch to carry it before
# the flusher sends it alone. A process killed within this time after a job
# finished may run that job again after recovery, as it may a running job.
ACK_DELAY = 0.5


class ReliableFetch:
    """Fetch that keeps each running job in this process's working list until acknowledged.

    While work waits, one script call moves up to ``batch_size`` jobs of the
    first non-empty queue, in the configured order (strict) or in a weighted
    shuffle, into the working list. The calling thread runs the first job; the
    others wait in a buffer that the process's threads take from without a
    round trip. Buffered jobs are in the working list like running ones, so a
    process that is killed loses none of them. As with basic fetch's batches,
    a job that arrives in a higher queue waits until the buffered jobs of a
    lower queue have started.

    When every queue is empty the thread blocks with BLMOVE, which serves one
    list only, so idle threads spread over the queues: each blocks on the
    queue with the fewest threads already blocked on it. With at least as many
    idle threads as queues, every queue has one, and a new job starts at once.
    NOTE: with fewer idle threads (or fetch-gate slots) than queues, a job on
    a queue that no thread waits on starts at the next script call, up to 2 s
    later.

    Acknowledgements wait in memory and ride on the next script call of any
    thread, so a busy process removes finished jobs without a round trip of
    their own. A flusher thread sends those still waiting after ``ack_delay``
    seconds, when every thread is busy with buffered or long jobs.

    The fetcher counts the fetched jobs that are running or buffered (held)
    and the acknowledgements not yet sent, so that a copy in the working list
    that no thread runs can be distinguished from a job in progress.
    """

    def __init__(
        self,
        conn: redis.Redis,
        queues: Sequence[tuple[str, int]],
        identity: str,
        *,
        batch_size: int = 1,
        ack_delay: float = ACK_DELAY,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        blocking_limit: int | None = None,
    ) -> None:
        self.redis = conn
        self.queues = tuple(queues)
        self.identity = identity
        self.working_key = keys.working(identity)
        self.batch_size = max(1, batch_size)
        self.strict = all(weight == 0 for _, weight in self.queues)
        self._names = queue_order(self.queues)
        self._positions = {name: index for index, name in enumerate(self._names)}
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._gate = FetchGate(blocking_limit)
        self._fetch_script = DirectScript(conn, RELIABLE_FETCH_SCRIPT)
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
        # Every buffered job is in the working list too.
        self._buffer = JobBuffer()
        # Lets one thread at a time call the script; the others wait for its jobs.
        self._batch_lock = threading.Lock()
        self._flusher = DelayedFlusher(self._flush_waiting, ack_delay, "pyqueue-acknowledge")

    def queue_keys(self) -> list[str]:
        """Return the ``queue:<name>`` keys in the order the next script call tries them."""
        names = self._names if self.strict else queue_order(self.queues, self._rng)
        return [keys.queue(name) for name in names]

    def buffered(self) -> int:
        """Return the number of fetched jobs waiting for a thread."""
        return len(self._buffer)

    def retrieve_work(self) -> UnitOfWork | None:
        # Blocks for at most FETCH_TIMEOUT (2 s) when idle, so a stop is noticed
        # quickly, and an idle thread sends one script call and one BLMOVE (with
        # its SADD) per 2 s instead of spinning.
        unit = self._buffer.take()
        if unit is not None:
            return unit
        try:
            unit = self._take_waiting() or self._wait_for_job()
        except redis.RedisError as exc:
            self.outage.failed(exc)
            self._sleep(ERROR_PAUSE)
            return None
        self.outage.recovered()
        return unit

    def _take_waiting(self) -> UnitOfWork | None:
        with self._batch_lock:
            # Another thread may have filled the buffer while this one waited.
            return self._buffer.take() or self._fetch_batch()

    def _fetch_batch(self) -> UnitOfWork | None:
        """Send the waiting acknowledgements and move a batch; return its first job."""
        acknowledged = self._take_acknowledgements()
        try:
            result = self._fetch_script(
                keys=[self.working_key, keys.WORKING_INDEX, *self.queue_keys()],
                args=[self.identity, self.batch_size, *acknowledged],
            )
        except redis.RedisError:
            self._restore_acknowledgements(acknowledged)
            raise
        if not result:
            return None
        key, raws = result
        first, *rest = self._hold(keys.queue_name(str(key)), [str(raw) for raw in raws])
        rest = self._buffer.add(rest)
        if rest:
            # The process is stopping: the extra jobs go back, newest first,
            # so that the oldest ends up at the tail and is fetched first.
            self.bulk_requeue(rest[::-1])
        return first

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
        (unit,) = self._hold(name, [str(raw)])
        return unit

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

    def _hold(self, queue: str, raws: Sequence[str]) -> list[UnitOfWork]:
        with self._lock:
            self._held.update(raws)
        return [UnitOfWork(queue, raw, self) for raw in raws]

    def _release(self, raw: str) -> None:
        with self._lock:
            self._release_held(raw)

    def _release_held(self, raw: str) -> None:
        # The caller holds self._lock.
        if self._held[raw] > 1:
            self._held[raw] -= 1
        else:
            self._held.pop(raw, None)

    def acknowledge(self, unit: UnitOfWork) -> None:
        """Mark the finished job for removal from the working list.

        The removal (``LREM working -1 <raw>``) rides on the next script call,
        or the flusher sends it within ``ack_delay`` seconds. Until then the
        job counts as unacknowledged, so the orphan check leaves it alone.
        """
        with self._lock:
            self._unacknowledged[unit.raw] += 1
            self._release_held(unit.raw)
        self._flusher.wake()

    def flush_acknowledgements(self) -> None:
        """Send the waiting acknowledgements in one pipeline; raise RedisError if Redis fails.

        On a failure they stay in memory and go with a later call, so a
        finished job does not run again after a recovery.
        """
        pending = self._take_acknowledgements()
        if not pending:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for raw in pending:
                pipe.lrem(self.working_key, -1, raw)
            pipe.execute()
        except redis.RedisError:
            self._restore_acknowledgements(pending)
            raise

    def _take_acknowledgements(self) -> list[str]:
        with self._lock:
            pending = list(self._unacknowledged.elements())
            self._unacknowledged.clear()
        return pending

    def _restore_acknowledgements(self, pending: Sequence[str]) -> None:
        if pending:
            with self._lock:
                self._unacknowledged.update(pending)
            self._flusher.wake()

    def _flush_waiting(self) -> None:
        # Runs on the flusher thread once the delay has let a fetch carry them first.
        try:
            self.flush_acknowledgements()
        except redis.RedisError as exc:
            self.outage.failed(exc)
            self._flusher.wake()
            return
        self.outage.recovered()

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
        is buffered, was fetched after the stop began, or is an orphan. Each
        job goes to the tail of its queue and is fetched next. A Redis error
        is logged: the jobs then stay and are recovered once this process is
        gone.
        """
        self._flusher.stop()
        self._clear_buffer()
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

    def _clear_buffer(self) -> None:
        """Stop buffering and forget the buffered jobs; they stay in the working list."""
        units = self._buffer.close()
        with self._lock:
            for unit in units:
                self._release_held(unit.raw)

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
