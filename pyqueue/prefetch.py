"""Basic fetch that takes several jobs per round trip while a queue has work.

A round trip to Redis per job costs a Python worker about as much CPU as a
no-op job itself, and every socket wait hands the GIL to another thread.
``PrefetchFetch`` therefore pops up to ``batch_size`` jobs with one script
call while the last fetch found work, keeps the extra jobs in a buffer
shared by the process's threads, and hands them out before the next call
to Redis. When the script finds nothing, the thread falls back to basic
fetch's blocking BRPOP, so an idle process still sends one command per
thread every 2 s and a new job starts as soon as BRPOP returns it.

What changes against plain basic fetch:

- Jobs in the buffer have left Redis without having started. A process that
  is killed loses them together with its running jobs. A graceful stop
  pushes them back to the tail of their queues in their order (``drain``).
- Order between queues is kept per batch. The script takes jobs from the first
  non-empty queue in the fetch order, so a job that arrives in a higher
  queue waits until the buffered jobs of a lower queue have started.

Reliable fetch keeps each fetched job in a working list, so it does not use
this buffer.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import redis

from pyqueue import keys
from pyqueue.connection import DirectScript
from pyqueue.fetch import BasicFetch, JobBuffer, UnitOfWork

# Jobs per round trip at most: enough to cut the round trips per job by an
# order of magnitude, few enough that a crash loses little.
MAX_BATCH = 10

# KEYS: the queue keys in fetch order. ARGV[1]: the maximum number of jobs.
# Returns {key, {job, ...}} for the first non-empty queue, or false when all
# are empty. RPOP with a count needs Redis 6.2, which pyqueue requires.
POP_BATCH = """
for _, key in ipairs(KEYS) do
  local jobs = redis.call('RPOP', key, ARGV[1])
  if jobs then
    return {key, jobs}
  end
end
return false
"""


def batch_size_for(concurrency: int) -> int:
    """Return the jobs per round trip for ``concurrency`` threads: one per thread, at most 10."""
    return max(1, min(concurrency, MAX_BATCH))


class PrefetchFetch(BasicFetch):
    """Basic fetch with a process-wide buffer of up to ``batch_size - 1`` jobs.

    One thread at a time fetches a batch, and only when the buffer is empty,
    which keeps the buffer within that size. Other keyword arguments go to
    BasicFetch.
    """

    def __init__(
        self,
        conn: redis.Redis,
        queues: Sequence[tuple[str, int]],
        *,
        batch_size: int = MAX_BATCH,
        **options: Any,
    ) -> None:
        super().__init__(conn, queues, **options)
        self.batch_size = batch_size
        self._script = DirectScript(conn, POP_BATCH)
        self._buffer = JobBuffer()
        # Lets one thread at a time fetch a batch; the others wait for its jobs.
        self._batch_lock = threading.Lock()
        # True while the last fetch found a job: only then is a batch worth a call.
        self._queue_busy = False

    def buffered(self) -> int:
        """Return the number of fetched jobs waiting in the buffer."""
        return len(self._buffer)

    def retrieve_work(self) -> UnitOfWork | None:
        unit = self._buffer.take()
        if unit is not None:
            return unit
        if self._queue_busy and self.batch_size > 1:
            with self._batch_lock:
                # Another thread may have filled the buffer while this one waited.
                unit = self._buffer.take() or self._retrieve_batch()
            if unit is not None:
                return unit
            self._queue_busy = False
        unit = super().retrieve_work()
        if unit is not None:
            self._queue_busy = True
        return unit

    def _retrieve_batch(self) -> UnitOfWork | None:
        try:
            result = self._script(keys=self.queue_keys(), args=[self.batch_size])
        except redis.RedisError as exc:
            # The blocking fetch that follows fails too and pauses, outside the batch lock.
            self.outage.failed(exc)
            return None
        self.outage.recovered()
        if not result:
            return None
        key, raws = result
        queue = keys.queue_name(str(key))
        units = [UnitOfWork(queue, str(raw), self) for raw in raws]
        extra = self._buffer.add(units[1:])
        if extra:
            # The process is stopping: these jobs go straight back.
            self.bulk_requeue(list(reversed(extra)))
        return units[0]

    def drain(self) -> None:
        """Push the buffered jobs back to the tail of their queues, next to be fetched.

        Called once the processors have stopped. The buffer keeps jobs in the
        order they left the tail, so they go back in reverse, and the first
        one ends up at the tail again. Raises a redis error when the push
        fails, and the jobs are then lost, as running jobs are.
        """
        units = self._buffer.close()
        if units:
            self.bulk_requeue(list(reversed(units)))
        super().drain()
