"""``pyqueue run`` as a subprocess, for tests where it shares Redis with Ruby.

The worker loads tests/interop/jobs.py. Heartbeat and poller intervals are
shortened through the environment, so the Web UI and the other side see its
state within about a second.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.fixtures.ruby import wait_for_identity

ROOT = Path(__file__).resolve().parents[2]
PYQUEUE = Path(sys.executable).with_name("pyqueue")
RUN_MODULE = ROOT / "pyqueue" / "cli" / "run.py"

# Settings for a test worker: a beat and a scheduled poll about every second.
FAST_SETTINGS = {
    "PYQUEUE_HEARTBEAT_INTERVAL": "1",
    "PYQUEUE_POLL_INTERVAL_AVERAGE": "1",
}


def require_pyqueue_run() -> None:
    if not RUN_MODULE.exists() or not PYQUEUE.exists():
        pytest.fail(
            f"`pyqueue run` is missing ({RUN_MODULE} or {PYQUEUE} not found); "
            "these tests need the worker command, so install the package with "
            "`.venv/bin/pip install -e .` once pyqueue/cli/run.py exists"
        )


class PyqueueRun:
    """One ``pyqueue run -r tests.interop.jobs`` process."""

    def __init__(
        self,
        redis_url: str,
        queues: Sequence[str],
        workdir: Path,
        concurrency: int = 5,
        timeout: int = 2,
        env: dict[str, str] | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.queues = list(queues)
        self.workdir = workdir
        self.concurrency = concurrency
        self.timeout = timeout
        self.env = dict(os.environ, REDIS_URL=redis_url, PYTHONPATH=str(ROOT), **FAST_SETTINGS)
        self.env.update(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.identity = ""
        self.log_path = workdir / "pyqueue.log"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the pyqueue worker has not been started"
        return self.process.pid

    def command(self) -> list[str]:
        command = [str(PYQUEUE), "run", "-r", "tests.interop.jobs"]
        command += ["-c", str(self.concurrency), "-t", str(self.timeout), "-g", "pyqueue-interop"]
        for queue in self.queues:
            command += ["-q", queue]
        return command

    def start(self) -> PyqueueRun:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.identity = self._wait_for_identity()
        return self

    def _wait_for_identity(self) -> str:
        assert self.process is not None
        return wait_for_identity(self.redis_url, self.process, "pyqueue run", self.log, self.stop)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int | None:
        """Send TERM, wait for the graceful stop, KILL after it; return the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=self.timeout + 10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode
