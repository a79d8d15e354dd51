"""The heartbeat: how a process shows itself to Sidekiq's Web UI and API.

Every ``settings.heartbeat_interval`` seconds (10 by default) one thread
1. flushes the processed and failed counters to ``stat:*``;
2. rewrites ``<identity>:work`` (and ``<identity>:workers``, which Sidekiq
   6.4.1 and older read) with the running jobs, expiring in 60 s;
3. measures the Redis round trip with PING;
4. writes the process hash (info, busy, beat, quiet, rss, rtt_us,
   concurrency), adds the identity to ``processes`` and pops one remote
   signal from ``<identity>-signals``, in one MULTI;
5. removes processes whose hash has expired from ``processes`` (at most once
   a minute in the whole cluster, guarded by the ``process_cleanup`` lock).

When the heartbeat stops, the hashes expire within 60 s; ``stop()`` also
removes the identity from ``processes`` and deletes the work hashes at once.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

from pyqueue import __version__, keys, stats
from pyqueue.config import Settings
from pyqueue.outage import OutageLog
from pyqueue.payload import dumps

logger = logging.getLogger(__name__)

# Signals the Web UI and API push; Sidekiq 8 adds INFO as another name for TTIN.
SIGNALS = ("TSTP", "TERM", "TTIN", "INFO")


def hostname() -> str:
    """Return the ``DYNO`` environment variable (as on Heroku), else the system hostname."""
    return os.environ.get("DYNO") or socket.gethostname()


def make_identity(host: str | None = None) -> str:
    """Return a new process identity ``host:pid:nonce`` with a 12-hex-digit nonce."""
    return f"{host or hostname()}:{os.getpid()}:{secrets.token_hex(6)}"


def rss_kb() -> int:
    """Return the resident set size of this process in kilobytes (0 if unknown)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    try:
        import resource
    except ImportError:
        return 0
    # Outside Linux: the peak, not the current size, but the best the stdlib offers.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def process_info(settings: Settings, identity: str, started_at: float) -> dict[str, Any]:
    """Return the ``info`` object of the process hash, in Sidekiq 7's fields."""
    return {
        "hostname": identity.rsplit(":", 2)[0],
        "started_at": started_at,
        "pid": os.getpid(),
        "tag": settings.tag,
        "concurrency": settings.concurrency,
        "queues": settings.queue_names,
        "labels": list(settings.labels),
        "identity": identity,
        # One object per capsule; the Web UI compares weight > 0, so ints only.
        "weights": [{name: int(weight) for name, weight in settings.queues}],
        "version": __version__,
        "embedded": False,
    }


class Heartbeat:
    """Publishes a process to Redis from its own thread.

    ``is_quiet`` returns whether the process is quiet; ``on_signal`` gets each
    remote signal name popped from the signals list (TSTP, TERM, TTIN, INFO).
    """

    def __init__(
        self,
        conn: redis.Redis,
        settings: Settings,
        identity: str,
        counters: stats.Counters,
        work: stats.WorkState,
        *,
        is_quiet: Callable[[], bool],
        on_signal: Callable[[str], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = conn
        self.settings = settings
        self.identity = identity
        self.counters = counters
        self.work = work
        self.is_quiet = is_quiet
        self.on_signal = on_signal
        self.clock = clock
        self.info_json = dumps(process_info(settings, identity, clock()))
        self.outage = OutageLog(logger, "Redis")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pyqueue-heartbeat", daemon=True)

    def start(self) -> None:
        """Beat once in the calling thread, then every interval on the heartbeat thread."""
        # started_at is the time of the first beat, as in Sidekiq.
        self.info_json = dumps(process_info(self.settings, self.identity, self.clock()))
        # The first beat registers the process before its processors fetch:
        # recovery in other processes takes a working list without a live
        # heartbeat for the list of a dead process.
        self.beat()
        self._thread.start()

    def beat_soon(self) -> None:
        """Beat now instead of at the end of the interval (after quiet, for example)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop beating, flush the counters and remove this process from Redis."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.settings.heartbeat_interval + 10)
        self.clear()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.settings.heartbeat_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.beat()

    def beat(self) -> None:
        """Send one heartbeat; a Redis error is logged once per outage and skipped."""
        try:
            stats.flush(self.redis, self.counters, self.clock)
            self._write_work()
            rtt_us = self._round_trip_us()
            existed, signal = self._write_process(rtt_us)
            self._cleanup()
        except redis.RedisError as exc:
            self.outage.failed(exc)
            return
        self.outage.recovered()
        if not existed:
            # The first beat, or the hash expired during an outage.
            logger.info("registered process %s", self.identity)
        if signal:
            self._dispatch(signal)

    def clear(self) -> None:
        """Flush the counters, then remove the identity and work hashes (best effort)."""
        try:
            stats.flush(self.redis, self.counters, self.clock)
        except redis.RedisError as exc:
            processed, failed = self.counters.pending()
            logger.warning(
                "could not write the last stats (%d processed, %d failed): %s",
                processed,
                failed,
                exc,
            )
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.srem(keys.PROCESSES, self.identity)
            pipe.unlink(*self._work_keys())
            pipe.execute()
        except redis.RedisError as exc:
            logger.warning("could not deregister process %s: %s", self.identity, exc)

    def _work_keys(self) -> list[str]:
        names = [keys.work(self.identity)]
        if self.settings.legacy_workers_key:
            names.append(keys.legacy_workers(self.identity))
        return names

    def _write_work(self) -> None:
        entries: dict[FieldT, EncodableT] = {
            tid: entry.encode() for tid, entry in self.work.snapshot().items()
        }
        pipe = self.redis.pipeline(transaction=True)
        for key in self._work_keys():
            pipe.unlink(key)
            if entries:
                pipe.hset(key, mapping=entries)
                pipe.expire(key, keys.PROCESS_TTL)
        pipe.execute()

    def _round_trip_us(self) -> int:
        started = time.perf_counter()
        self.redis.ping()
        return int((time.perf_counter() - started) * 1_000_000)

    def _write_process(self, rtt_us: int) -> tuple[bool, str | None]:
        """Write the process hash; return whether it existed before and a popped signal."""
        fields: dict[FieldT, EncodableT] = {
            "info": self.info_json,
            "busy": len(self.work),
            "beat": self.clock(),
            "rtt_us": rtt_us,
            "quiet": "true" if self.is_quiet() else "false",
            "rss": rss_kb(),
            # Sidekiq 8.1.2 and newer read concurrency from here; older readers ignore it.
            "concurrency": self.settings.concurrency,
        }
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(keys.PROCESSES, self.identity)
        pipe.exists(self.identity)
        pipe.hset(self.identity, mapping=fields)
        pipe.expire(self.identity, keys.PROCESS_TTL)
        pipe.rpop(keys.signals(self.identity))
        _, exists, _, _, signal = pipe.execute()
        return bool(exists), (str(signal) if signal is not None else None)

    def _cleanup(self) -> None:
        from pyqueue.scheduled import cleanup_processes

        cleanup_processes(self.redis)

    def _dispatch(self, signal: str) -> None:
        if signal not in SIGNALS:
            logger.warning("ignored unknown remote signal %r for %s", signal, self.identity)
            return
        logger.info("received remote signal %s", signal)
        try:
            self.on_signal(signal)
        except Exception:
            logger.exception("handling remote signal %s failed", signal)
