"""``pyqueue run``: start a worker process.

The command only parses flags, builds Settings (flags > PYQUEUE_* environment
> config file > defaults), imports the job modules and hands over to
``pyqueue.launcher.Launcher``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import click

from pyqueue import config
from pyqueue.cli.common import EXIT_IMPORT, EXIT_REDIS, fail, handle_errors, redis_url_option
from pyqueue.client import configure_client
from pyqueue.errors import RedisVersionError
from pyqueue.log import setup


@click.command()
@click.option(
    "-c",
    "--concurrency",
    metavar="N",
    default=None,
    help="Number of processor threads (default 5).",
)
@click.option(
    "-q",
    "--queue",
    "queues",
    multiple=True,
    metavar="NAME[,WEIGHT]",
    help="Queue to fetch from, repeatable. Without weights the order is strict; "
    "with weights a queue is tried first in proportion to its weight (default: default).",
)
@click.option(
    "-t",
    "--timeout",
    metavar="SECONDS",
    default=None,
    help="Seconds that a stop waits for running jobs before pushing them back (default 25).",
)
@click.option("-g", "--tag", default=None, help="Tag shown with the process in the Web UI.")
@click.option(
    "-C",
    "--config",
    "config_file",
    metavar="FILE",
    default=None,
    help="YAML config file (also PYQUEUE_CONFIG).",
)
@click.option(
    "-r",
    "--require",
    multiple=True,
    metavar="MODULE|FILE",
    help="Job module (dotted name) or Python file to import at start, repeatable.",
)
@click.option("--label", "labels", multiple=True, help="Label shown with the process, repeatable.")
@click.option(
    "--schedule",
    "schedule_file",
    metavar="FILE",
    default=None,
    help="sidekiq-cron schedule YAML to load at start.",
)
@click.option(
    "--metrics-port",
    metavar="PORT",
    default=None,
    help="Serve Prometheus metrics of this process on this TCP port (default: off).",
)
@click.option("--log-level", default=None, help="debug, info, warning or error (default info).")
@click.option("--log-format", default=None, help="text or json (default text).")
@click.option(
    "-e",
    "--environment",
    default=None,
    help="Environment name; picks that section of the config file (default development).",
)
@click.option(
    "--fetch",
    default=None,
    help="Fetch strategy: reliable (default; a killed process's jobs are recovered) "
    "or basic (Sidekiq's BRPOP; they are lost).",
)
@click.option(
    "--processes",
    metavar="N",
    default=None,
    help="Worker processes, each with --concurrency threads, under one supervisor "
    "that restarts a crashed one and passes signals on (default 1).",
)
@redis_url_option
@handle_errors
def run(config_file: str | None, environment: str | None, **options: Any) -> None:
    """Run jobs from Redis queues until TERM or INT.

    TERM or INT stops gracefully: no new jobs are fetched, running jobs get
    --timeout seconds, and jobs still running then go back to their queues.
    A second TERM or INT stops at once. TSTP stops fetching (quiet) and TTIN
    logs every thread's stack.

        pyqueue run -r myapp.jobs -q critical,3 -q default,1 -c 10
    """
    settings = load_settings(config_file, environment, options)
    setup(settings.log_level, settings.log_format)
    for target in settings.require:
        import_job_module(target)

    if settings.processes > 1:
        run_supervisor(settings)
        return

    from pyqueue.launcher import Launcher

    launcher = Launcher(settings)
    # Jobs that push other jobs write to the same Redis as this worker.
    configure_client(launcher.client)
    try:
        sys.exit(launcher.run())
    except RedisVersionError as exc:
        fail(str(exc), EXIT_REDIS)


def run_supervisor(settings: config.Settings) -> None:
    """Run ``settings.processes`` worker processes under a supervisor; exit when it stops."""
    from pyqueue.supervisor import Supervisor

    try:
        sys.exit(Supervisor(settings).run())
    except RedisVersionError as exc:
        fail(str(exc), EXIT_REDIS)


def load_settings(
    config_file: str | None, environment: str | None, options: dict[str, Any]
) -> config.Settings:
    """Build Settings from the flags given; raise ConfigError naming an invalid setting."""
    # Every option is named after its setting, so the flags map over directly.
    flags = {**options, "environment": environment}
    return config.load(config_file, flags)


def import_job_module(target: str) -> None:
    """Import a job module by dotted name or file path; exit with code 4 if that fails."""
    # Like `python -m`, resolve dotted names from the current directory first.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if target.endswith(".py") or os.sep in target:
            _import_file(Path(target))
        else:
            importlib.import_module(target)
    except Exception as exc:
        fail(
            f"cannot import job module {target!r}: {type(exc).__name__}: {exc}; "
            "check the -r / require setting and that the module imports on its own",
            EXIT_IMPORT,
        )


def _import_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{str(path)!r} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
