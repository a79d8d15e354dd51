"""A worker process: the heartbeat, the processor threads and the pollers.

``Launcher.run()`` is what ``pyqueue run`` calls. It starts

- the heartbeat thread (process registry, busy work, stats, remote signals),
- the manager with ``concurrency`` processor threads,
- the scheduled poller (``retry`` and ``schedule`` sets),
- the cron poller (sidekiq-cron jobs; every process runs one, as with
  sidekiq-cron, and the ZADD of each tick keeps a job from running twice),
- recovery of the jobs that dead processes left in their working lists
  (once at start, before the first fetch, then about every minute),
- the metrics endpoint when ``metrics_port`` is set,

and blocks until a stop is requested. Signals: TERM and INT stop
gracefully within ``timeout`` seconds, a second TERM or INT stops at once
(running jobs are still pushed back), TSTP quiets the process and TTIN logs
the stack of every thread. The Web UI sends the same signals through
``<identity>-signals``; the heartbeat delivers them to ``handle_signal``.
"""

from __future__ import annotations

import logging
import queue
import signal
import sys
import threading
import time
import traceback
from types import FrameType
from typing import Any, Protocol

import redis

from pyqueue import __version__, controls
from pyqueue.client import Client, default_client
from pyqueue.config import Settings
from pyqueue.connection import check_server_version, create_redis
from pyqueue.errors import ConfigError
from pyqueue.fetch import build_fetcher
from pyqueue.heartbeat import Heartbeat, make_identity
from pyqueue.manager import Manager
from pyqueue.middleware import ServerChain
from pyqueue.processor import ProcessorContext, server_middleware
from pyqueue.recovery import Recovery, RecoveryService
from pyqueue.stats import Counters, WorkState

logger = logging.getLogger(__name__)

_OS_SIGNALS = ("SIGTERM", "SIGINT", "SIGTSTP", "SIGTTIN")

# Launchers of this process that started and have not stopped, oldest first.
# A worker process runs one; tests may run several side by side.
_running: list[Launcher] = []


def current_settings() -> Settings | None:
    """Return the effective settings of the worker running in this process, or None.

    Job code can size its own resources from them, for example a database
    pool from ``concurrency``, whether the value came from a flag, the config
    file or the environment. None outside a worker, before ``start()`` and
    after ``stop()``. With several launchers in one process, the one started
    last that is still running wins.
    """
    running = _running[-1:]
    return running[0].settings if running else None


class Service(Protocol):
    """A background component with its own thread: the pollers."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Launcher:
    """One worker process. Build it from Settings, then call ``run()``, or
    ``start()`` and later ``stop()`` when embedding it (tests do).

    ``conn`` replaces the Redis client built from ``settings.redis_url``;
    ``middleware`` replaces the process-wide ``pyqueue.processor.server_middleware``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        conn: redis.Redis | None = None,
        middleware: ServerChain | None = None,
        identity: str | None = None,
    ) -> None:
        from pyqueue.retry import RetryHandler

        self.settings = settings
        self.concurrency = settings.concurrency
        self._owns_redis = conn is None
        self.redis = conn or create_redis(settings.redis_url, pool_size=settings.pool_size)
        self.identity = identity or make_identity()
        self.counters = Counters()
        self.work = WorkState()
        # The pollers push through a client that shares this process's pool and
        # runs the client middleware that job modules registered.
        self.client = Client(
            redis=self.redis,
            middleware=default_client().middleware,
            timestamp_mode=settings.timestamp_mode,
        )
        context = ProcessorContext(
            fetcher=build_fetcher(settings, self.redis, self.identity),
            retry=RetryHandler(self.redis, settings),
            counters=self.counters,
            work=self.work,
            # Job controls (unique locks, expiry, time limits, rate-limit reschedules)
            # run around the process-wide chain, or around the one passed in.
            middleware=controls.server_chain(
                self.redis, settings, middleware if middleware is not None else server_middleware
            ),
        )
        self.manager = Manager(context, settings.concurrency)
        self.recovery = Recovery(self.redis, settings, self.identity)
        self.heartbeat = Heartbeat(
            self.redis,
            settings,
            self.identity,
            self.counters,
            self.work,
            is_quiet=lambda: self.manager.quieting,
            on_signal=self.handle_signal,
        )
        self.services: list[Service] = []
        self._metrics: Any = None
        self._stop_requested = threading.Event()
        self._stop_signals = 0
        self._signal_queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._quiet_lock = threading.Lock()
        self._threads_started = False
        self._stopped = False

    def busy_count(self) -> int:
        """Return the number of jobs running now."""
        return self.manager.busy_count()

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested.is_set()

    def start(self) -> None:
        """Check Redis, then start every component. Raises RedisVersionError, redis errors."""
        check_server_version(self.redis)
        self.services = self._build_services()
        # Metrics first: a missing metrics module then fails the start before
        # any thread runs.
        self._start_metrics()
        logger.info(
            "pyqueue %s starting as %s: concurrency %d, queues %s",
            __version__,
            self.identity,
            self.settings.concurrency,
            ", ".join(f"{name}:{weight}" for name, weight in self.settings.queues),
        )
        self._threads_started = True
        _set_running(self)
        self.heartbeat.start()
        self._recover_dead_processes()
        self.manager.start()
        for service in self.services:
            service.start()

    def run(self, install_signals: bool = True) -> int:
        """Start, block until a stop is requested, stop; return the exit code 0.

        ``install_signals`` needs the main thread; pass False elsewhere and
        stop the process through ``request_stop()`` or the signals list.
        """
        previous = self._install_signal_handlers() if install_signals else {}
        try:
            self.start()
            while not self._stop_requested.is_set():
                try:
                    name = self._signal_queue.get(timeout=0.5)
                except queue.Empty:
                    continue
                self.handle_signal(name)
        finally:
            self.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return 0

    def quiet(self) -> None:
        """Stop fetching jobs and stop the pollers; running jobs go on. Idempotent."""
        with self._quiet_lock:
            if self.manager.quieting:
                return
            self.manager.quiet()
            for service in self.services:
                _stop_quietly(service)
        self.heartbeat.beat_soon()

    def stop(self) -> None:
        """Quiet, wait up to ``settings.timeout`` s for running jobs, push back the rest.

        Then flush the stats and remove this process from Redis. Idempotent.
        """
        if self._stopped:
            return
        self._stopped = True
        self._stop_requested.set()
        if self._threads_started:
            deadline = time.monotonic() + self.settings.timeout
            logger.info("stopping: waiting up to %s s for running jobs", self.settings.timeout)
            self.quiet()
            self.manager.stop(deadline)
            self.manager.context.fetcher.drain()
            self.heartbeat.stop()
        if self._metrics is not None and hasattr(self._metrics, "stop"):
            self._metrics.stop()
        if self._owns_redis:
            self.redis.connection_pool.disconnect()
        _clear_running(self)
        if self._threads_started:
            logger.info("stopped")

    def request_stop(self) -> None:
        """Ask ``run()`` to stop; a second request ends the wait for running jobs now."""
        if self._stop_requested.is_set():
            logger.info("second stop request: pushing running jobs back now")
            self.manager.stop_now()
            return
        self._stop_requested.set()

    def handle_signal(self, name: str) -> None:
        """Act on a signal name: TERM/INT stop, TSTP quiets, TTIN/INFO log thread stacks."""
        if name in ("TERM", "INT"):
            self.request_stop()
        elif name == "TSTP":
            self.quiet()
        elif name in ("TTIN", "INFO"):
            log_thread_stacks()

    def _build_services(self) -> list[Service]:
        from pyqueue.scheduled import Poller

        orphan_check = getattr(self.manager.context.fetcher, "reclaim_orphans", None)
        services: list[Service] = [
            Poller(self.redis, self.settings, self.client),
            RecoveryService(self.recovery, orphan_check=orphan_check),
        ]
        if self.settings.schedule_file or self.settings.cron_poll_interval > 0:
            from pyqueue.cron import CronPoller, load_schedule_file

            if self.settings.schedule_file:
                load_schedule_file(self.redis, self.settings, self.settings.schedule_file)
            if self.settings.cron_poll_interval > 0:
                services.append(CronPoller(self.redis, self.settings, self.client))
        return services

    def _recover_dead_processes(self) -> None:
        # Before the first fetch, so that the jobs of a process that was killed
        # are back at the tail of their queues and run first.
        try:
            recovered = self.recovery.recover_dead()
        except redis.RedisError as exc:
            logger.error("recovery at start failed, it runs again within a minute: %s", exc)
            return
        if recovered:
            logger.info("recovered %d jobs from the working lists of dead processes", recovered)

    def _start_metrics(self) -> None:
        if self.settings.metrics_port is None:
            return
        try:
            from pyqueue.metrics import start_process_metrics
        except ImportError as exc:
            raise ConfigError(
                f"setting metrics_port is {self.settings.metrics_port}, but metrics are not "
                f"available in this installation ({exc}); unset metrics_port"
            ) from exc
        self._metrics = start_process_metrics(self.settings, self)

    def _install_signal_handlers(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        for name in _OS_SIGNALS:
            signum = getattr(signal, name, None)
            if signum is not None:
                previous[signum] = signal.signal(signum, self._on_os_signal)
        return previous

    def _on_os_signal(self, signum: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of the main thread, which may hold any lock:
        # only a reentrant queue put and plain attribute writes are safe here.
        name = signal.Signals(signum).name.removeprefix("SIG")
        if name in ("TERM", "INT"):
            self._stop_signals += 1
            if self._stop_signals > 1 or self._stop_requested.is_set():
                self.manager.stop_now()
        self._signal_queue.put(name)


def _set_running(launcher: Launcher) -> None:
    _running.append(launcher)


def _clear_running(launcher: Launcher) -> None:
    if launcher in _running:
        _running.remove(launcher)


def _stop_quietly(service: Service) -> None:
    try:
        service.stop()
    except Exception:
        logger.exception("stopping %s failed", type(service).__name__)


def log_thread_stacks() -> None:
    """Log the current stack of every thread at WARNING, so the default log level shows it."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        stack = "".join(traceback.format_stack(frame))
        logger.warning("thread %s (%s):\n%s", names.get(ident, "?"), ident, stack.rstrip())
