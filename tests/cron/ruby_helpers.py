"""A Ruby Sidekiq 6.4 worker with sidekiq-cron 1.8 polling, for the cron interop tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tests.fixtures.ruby import JOBS_RB, RubySidekiq, ruby_push

CRON_WORKER_RB = Path(__file__).resolve().parent / "ruby" / "cron_worker.rb"


class RubyCronSidekiq(RubySidekiq):
    """``sidekiq -r cron_worker.rb``: the interop worker plus sidekiq-cron's poller.

    ``cron_poll_interval`` is sidekiq-cron's average wait in seconds. The
    scheduled poller's average is set too, which also drops Sidekiq's 10 s
    initial wait before the first cron poll (leaving 0-5 s). TZ is UTC so that
    fugit and pyqueue read zone-less lines in the same zone.
    """

    def __init__(
        self,
        redis_url: str,
        queues: Sequence[str],
        workdir: Path,
        cron_poll_interval: float = 2.0,
    ) -> None:
        env = {
            "INTEROP_JOBS_RB": str(JOBS_RB),
            "CRON_POLL_INTERVAL": str(cron_poll_interval),
            "INTEROP_POLL_INTERVAL": str(cron_poll_interval),
            "TZ": "UTC",
        }
        super().__init__(redis_url, queues, workdir, tag="cron-interop", env=env)

    def command(self) -> list[str]:
        command = super().command()
        command[command.index(str(JOBS_RB))] = str(CRON_WORKER_RB)
        return command


def ruby_cron(redis_url: str, script: str) -> str:
    """Run ``script`` with sidekiq-cron's Job API loaded; return its standard output."""
    return ruby_push(redis_url, f'require "sidekiq/cron/job"\n{script}')
