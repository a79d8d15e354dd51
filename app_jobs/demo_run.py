"""The state of one ``bin/demo`` run and the child processes it starts and stops.

Children run in their own session, so that Ctrl-C in the terminal reaches
only the demo. The demo then stops them by pid in reverse order: the worker
first, while the receiver, Redis and PostgreSQL it depends on still run.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import click
import redis

from app_jobs import demo_data
from app_jobs.demo_servers import Servers, stop_process
from pyqueue import keys

# The worker's stop waits up to its `timeout` setting (25 s) for running jobs.
WORKER_STOP_TIMEOUT = 35.0
OTHER_STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.2


class DemoError(Exception):
    """Raised when a step of the demo fails; the message names the step and what to try."""


@dataclasses.dataclass(frozen=True)
class Options:
    """The command-line choices of one run."""

    once: bool
    backend: str
    sandbox: bool
    embedded_only: bool
    state_dir: Path
    web_port: int
    timeout: float
    interval: float


@dataclasses.dataclass
class Child:
    """A process the demo started, with the log file that takes its output."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path


@dataclasses.dataclass
class Run:
    """Everything one demo run has set up, for the later steps."""

    options: Options
    servers: Servers
    seed: demo_data.Seed
    web_url: str
    email_dir: Path
    redis: redis.Redis
    children: list[Child] = dataclasses.field(default_factory=list)
    # Filled in once the signed events are posted: delivery id -> status to reach.
    expected: dict[int, str] = dataclasses.field(default_factory=dict)

    def child(self, name: str) -> Child:
        return next(child for child in self.children if child.name == name)


def say(message: str) -> None:
    click.echo(f"demo: {message}")


def console_script(name: str, module: str) -> list[str]:
    """Return the command of a console script of this venv, or ``python -c`` when not installed."""
    script = Path(sys.executable).parent / name
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", f"from {module} import main; main()"]


def start_child(run: Run, name: str, command: list[str], env: dict[str, str]) -> Child:
    """Start ``command`` with its output in <state dir>/logs/<name>.log (emptied first)."""
    # NOTE: children run in their own session, so a demo killed with SIGKILL leaves
    # them running; the next run does not look for them.
    log_path = run.options.state_dir / "logs" / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    child = Child(name, process, log_path)
    run.children.append(child)
    return child


def stop_children(children: list[Child]) -> None:
    """Stop the children by pid, the last started first (the worker before the receiver)."""
    for child in reversed(children):
        if child.process.poll() is None:
            say(f"stopping {child.name} (pid {child.process.pid})")
        timeout = WORKER_STOP_TIMEOUT if child.name == "worker" else OTHER_STOP_TIMEOUT
        stop_process(child.process, timeout)


def check_children(run: Run) -> None:
    """Raise DemoError with the end of its log when a child has exited."""
    for child in run.children:
        code = child.process.poll()
        if code is not None:
            log_tail = child.log_path.read_text(errors="replace")[-2000:]
            raise DemoError(
                f"{child.name} exited with code {code}; its log {child.log_path} ends with:\n"
                f"{log_tail}"
            )


def wait_until(check: Callable[[], bool], description: str, run: Run) -> None:
    """Poll ``check`` until it passes; raise DemoError when a child exits or time runs out."""
    deadline = time.monotonic() + run.options.timeout
    while time.monotonic() < deadline:
        check_children(run)
        if check():
            return
        time.sleep(POLL_INTERVAL)
    raise DemoError(f"timed out after {run.options.timeout:.0f} s waiting for {description}")


def health_ok(base_url: str) -> bool:
    """Return True when GET /health of the receiver returns 200."""
    try:
        with urllib.request.urlopen(base_url + "/health", timeout=2) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def worker_registered(client: redis.Redis, pid: int) -> bool:
    """Return True once a process with ``pid`` is in Redis's ``processes`` set."""
    for identity in client.smembers(keys.PROCESSES):
        info = client.hget(str(identity), "info")
        if info and json.loads(str(info)).get("pid") == pid:
            return True
    return False


def hide_password(url: str) -> str:
    """Return ``url`` with its password, if any, replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
