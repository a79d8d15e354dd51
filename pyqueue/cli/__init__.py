"""The ``pyqueue`` command: a click group whose subcommands load on first use.

Each command group lives in its own module and is imported only when it runs,
so ``pyqueue enqueue`` does not pay for the worker's or the dashboard's imports.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from pyqueue import __version__

# Command name -> "module:attribute". A module that fails to import hides its
# command from --help instead of breaking every other command.
COMMANDS: dict[str, str] = {
    "run": "pyqueue.cli.run:run",
    "enqueue": "pyqueue.cli.enqueue:enqueue",
    "cron": "pyqueue.cli.cron:cron",
    "stats": "pyqueue.cli.admin:stats",
    "queues": "pyqueue.cli.admin:queues",
    "jobs": "pyqueue.cli.admin:jobs",
    "retries": "pyqueue.cli.admin:retries",
    "scheduled": "pyqueue.cli.admin:scheduled",
    "dead": "pyqueue.cli.admin:dead",
    "processes": "pyqueue.cli.admin:processes",
    "workers": "pyqueue.cli.admin:workers",
    "health": "pyqueue.cli.admin:health",
    "metrics": "pyqueue.cli.metrics:metrics",
    "web": "pyqueue.cli.web:web",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if self.get_command(ctx, name) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attribute = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None
            raise
        command: Any = getattr(module, attribute, None)
        return command if isinstance(command, click.Command) else None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="pyqueue")
def main() -> None:
    """Background jobs on Sidekiq's Redis layout."""
