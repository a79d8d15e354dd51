"""Several worker processes on one host: what ``pyqueue run --processes N`` runs.

One Python process runs jobs on one core at a time, because of the GIL. The
supervisor starts N child processes, and each child is a complete worker
(its own Launcher, identity, heartbeat and Redis pool) that reads its
settings as one JSON line on its standard input. The supervisor

- restarts a child that exits while the supervisor is neither stopping nor
  quiet: at once after a stable run, with a growing delay (1 s up to 30 s)
  after quick repeated exits;
- passes TERM, INT, TSTP and TTIN on to every child. A second TERM or INT
  reaches the children as their second one, which ends their wait for
  running jobs, and children still alive ``timeout`` + 10 s after the
  first TERM are killed;
- serves one metrics endpoint for the host when ``metrics_port`` is set,
  through prometheus-client's multiprocess mode (pyqueue.metrics).

Children are new interpreters rather than forks, so no lock, thread or
socket of the supervisor leaks into them. They run in their own session, so
that a Ctrl-C in a terminal reaches only the supervisor, which passes it on
once.

The supervisor passes a signal on as its name, one line on the child's
standard input, rather than as an OS signal. A child that is still starting
would be stopped by the default action of TSTP or TTIN, while a line waits
in the pipe until the child reads it. A child stops as after TERM when its
standard input closes, which happens when the supervisor dies, even from
SIGKILL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from pyqueue import config
from pyqueue.config import Settings
from pyqueue.connection import check_server_version, create_redis

logger = logging.getLogger(__name__)

# Signals passed on to every child; the launcher handles each of them.
FORWARDED = ("TERM", "INT", "TSTP", "TTIN")
# A child that ran at least this long before it exited is restarted at once.
STABLE_AFTER = 30.0
RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
# Seconds past the stop timeout that a child gets to push back its jobs and exit.
KILL_GRACE = 10.0
# How often the main loop checks for exited children, in seconds.
POLL_INTERVAL = 0.1

CHILD_BOOT = "from pyqueue.supervisor import child_main; child_main()"


def child_settings_line(settings: Settings) -> str:
    """Encode the settings that a child runs with as one JSON line.

    A child runs one process, so ``processes`` becomes 1. Unset (None) values
    are left out, so that the child's validation gives them their defaults.
    """
    values = dataclasses.asdict(dataclasses.replace(settings, processes=1))
    return json.dumps({k: v for k, v in values.items() if v is not None}) + "\n"


@dataclass
class Child:
    """One worker slot of the supervisor and the process that fills it now."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_exits: int = 0
    restart_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    """Runs ``settings.processes`` worker processes until TERM or INT.

    ``child_command`` replaces the interpreter command that starts a child
    (tests use it); the settings line is written to its standard input.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        child_command: Sequence[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.child_command = list(child_command or [sys.executable, "-c", CHILD_BOOT])
        self.clock = clock
        self.children = [Child(index) for index in range(1, settings.processes + 1)]
        self.stopping = False
        self.quiet = False
        self._stop_deadline = 0.0
        self._signals: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._metrics_server: Any = None
        self._metrics_dir: Path | None = None

    def run(self, install_signals: bool = True) -> int:
        """Start the children, supervise them until they all stopped; return 0.

        Raises RedisVersionError or a redis error when Redis is unusable, and
        ConfigError when the metrics port cannot be bound, before any child starts.
        """
        previous = self._install_signal_handlers() if install_signals else {}
        try:
            self.start()
            while not self._all_stopped():
                self._wait_for_signal()
                self._reap()
                self._restart_due()
                self._kill_after_deadline()
        finally:
            self._kill_all()
            self._stop_metrics()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        logger.info("supervisor stopped")
        return 0

    def start(self) -> None:
        """Check Redis, start the host metrics endpoint, then every child."""
        conn = create_redis(self.settings.redis_url, pool_size=1)
        try:
            check_server_version(conn)
        finally:
            conn.connection_pool.disconnect()
        self._start_metrics()
        logger.info(
            "supervisor pid %d starting %d worker processes of %d threads",
            os.getpid(),
            len(self.children),
            self.settings.concurrency,
        )
        for child in self.children:
            self._spawn(child)

    def handle_signal(self, name: str) -> None:
        """Pass a signal name on to every child; TERM and INT also stop, TSTP also quiets."""
        if name in ("TERM", "INT"):
            if not self.stopping:
                self.stopping = True
                self._stop_deadline = self.clock() + self.settings.timeout + KILL_GRACE
                logger.info("stopping: passing %s on to the worker processes", name)
        elif name == "TSTP":
            self.quiet = True
            logger.info("quiet: passing TSTP on; exited worker processes are not restarted")
        self._forward(name)

    def child_pids(self) -> list[int]:
        """Return the pids of the children alive now."""
        return [child.process.pid for child in self.children if child.process and child.alive()]

    def _spawn(self, child: Child) -> None:
        process = subprocess.Popen(
            self.child_command,
            stdin=subprocess.PIPE,
            env={**os.environ, "PYQUEUE_WORKER_INDEX": str(child.index)},
            start_new_session=True,
        )
        assert process.stdin is not None
        # The pipe stays open for the child's life, so that its end of file
        # reaches the child only when the supervisor is gone.
        process.stdin.write(child_settings_line(self.settings).encode())
        process.stdin.flush()
        child.process = process
        child.started_at = self.clock()
        child.restart_at = None
        logger.info("started worker process %d as pid %d", child.index, process.pid)

    def _reap(self) -> None:
        for child in self.children:
            process = child.process
            if process is None or process.poll() is None:
                continue
            self._child_exited(child, process)

    def _child_exited(self, child: Child, process: subprocess.Popen[bytes]) -> None:
        child.process = None
        _close_stdin(process)
        self._drop_child_metrics(process.pid)
        status = _describe_exit(process.returncode)
        if self.stopping:
            logger.info("worker process %d (pid %d) %s", child.index, process.pid, status)
            return
        if self.quiet:
            logger.warning(
                "worker process %d (pid %d) %s; not restarted while quiet",
                child.index,
                process.pid,
                status,
            )
            return
        lived = self.clock() - child.started_at
        child.quick_exits = child.quick_exits + 1 if lived < STABLE_AFTER else 0
        delay = restart_delay(child.quick_exits)
        child.restart_at = self.clock() + delay
        logger.error(
            "worker process %d (pid %d) %s after %.1f s; restarting it in %.0f s",
            child.index,
            process.pid,
            status,
            lived,
            delay,
        )

    def _restart_due(self) -> None:
        if self.stopping or self.quiet:
            return
        now = self.clock()
        for child in self.children:
            if child.process is None and child.restart_at is not None and now >= child.restart_at:
                self._spawn(child)

    def _all_stopped(self) -> bool:
        return self.stopping and all(child.process is None for child in self.children)

    def _wait_for_signal(self) -> None:
        try:
            name = self._signals.get(timeout=POLL_INTERVAL)
        except queue.Empty:
            return
        self.handle_signal(name)

    def _forward(self, name: str) -> None:
        for child in self.children:
            if child.alive() and child.process is not None:
                _tell(child.process, name)

    def _kill_after_deadline(self) -> None:
        if self.stopping and self.clock() >= self._stop_deadline:
            self._kill_all()

    def _kill_all(self) -> None:
        """SIGKILL the children still alive and reap them; used past the stop deadline."""
        for child in self.children:
            process = child.process
            if process is None:
                continue
            if process.poll() is None:
                logger.error(
                    "worker process %d (pid %d) did not stop in time; killing it",
                    child.index,
                    process.pid,
                )
                _send(process, signal.SIGKILL)
                process.wait()
            self.stopping = True
            self._child_exited(child, process)

    def _start_metrics(self) -> None:
        if self.settings.metrics_port is None:
            return
        from pyqueue.metrics import multiprocess, prepare_multiprocess_dir, start_host_metrics

        folder = multiprocess.directory()
        if folder is None:
            folder = Path(tempfile.mkdtemp(prefix="pyqueue-metrics-"))
            self._metrics_dir = folder
        prepare_multiprocess_dir(folder)
        self._metrics_server = start_host_metrics(self.settings)

    def _drop_child_metrics(self, pid: int) -> None:
        if self._metrics_server is None:
            return
        from pyqueue.metrics import child_exited

        child_exited(pid)

    def _stop_metrics(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.stop()
            self._metrics_server = None
        if self._metrics_dir is not None:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
            self._metrics_dir = None

    def _install_signal_handlers(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        for name in FORWARDED:
            signum = signal.Signals["SIG" + name]
            previous[signum] = signal.signal(signum, self._on_os_signal)
        return previous

    def _on_os_signal(self, signum: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of the main thread: only queue the name.
        self._signals.put(signal.Signals(signum).name.removeprefix("SIG"))


def restart_delay(quick_exits: int) -> float:
    """Return the seconds to wait before a restart after ``quick_exits`` quick exits in a row."""
    if quick_exits <= 0:
        return 0.0
    return float(min(MAX_RESTART_DELAY, RESTART_DELAY * 2 ** (quick_exits - 1)))


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


def _send(process: subprocess.Popen[bytes], signum: int) -> None:
    # A child may exit between the check and the signal, and the next reap collects it.
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signum)


def _tell(process: subprocess.Popen[bytes], name: str) -> None:
    """Write a signal name as one line to the child's standard input."""
    if process.stdin is None:
        return
    # A child that exited has closed its end, and the next reap collects it.
    with contextlib.suppress(OSError):
        process.stdin.write(f"{name}\n".encode())
        process.stdin.flush()


def _close_stdin(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()


def child_main() -> None:
    """Run one supervised worker: read the settings line from stdin, then run a Launcher.

    Exits with the codes of ``pyqueue run``.
    """
    from pyqueue.cli.common import handle_errors

    handle_errors(_run_child)()


def _run_child() -> None:
    from pyqueue.cli.common import EXIT_REDIS, fail
    from pyqueue.cli.run import import_job_module
    from pyqueue.client import configure_client
    from pyqueue.errors import RedisVersionError
    from pyqueue.launcher import Launcher
    from pyqueue.log import setup

    settings = config.build(json.loads(_read_line(0)))
    setup(settings.log_level, settings.log_format)
    for target in settings.require:
        import_job_module(target)
    launcher = Launcher(settings)
    configure_client(launcher.client)
    watcher = threading.Thread(
        target=_follow_supervisor,
        args=(launcher,),
        name="pyqueue-supervisor-watch",
        daemon=True,
    )
    watcher.start()
    try:
        sys.exit(launcher.run())
    except RedisVersionError as exc:
        fail(str(exc), EXIT_REDIS)


def _read_line(fd: int) -> bytes:
    # Byte by byte, so that nothing after the line is read ahead into a buffer.
    line = bytearray()
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        line += chunk
    return bytes(line)


def _follow_supervisor(launcher: Any) -> None:
    """Pass each signal name that the supervisor writes on to ``launcher``; stop at end of file.

    End of file comes when the supervisor closed the pipe or died, and the
    child then stops as after a TERM. It reads with os.read, because a daemon
    thread blocked inside a buffered reader makes the interpreter abort at exit.
    """
    pending = b""
    while True:
        try:
            chunk = os.read(0, 4096)
        except OSError:
            return
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            name = line.decode("ascii", "replace").strip()
            if name in FORWARDED:
                launcher.handle_signal(name)
            elif name:
                logger.warning("ignored unknown signal name %r from the supervisor", name)
    logger.warning("the supervisor is gone; stopping")
    launcher.request_stop()
