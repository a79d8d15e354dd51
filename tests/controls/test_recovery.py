"""A while_executing job recovered from a killed worker runs again under its own lock."""

from __future__ import annotations

from pathlib import Path

import redis

from pyqueue import keys
from tests.controls import jobs
from tests.controls.conftest import Worker
from tests.worker.conftest import wait_for

QUEUE = "controls_recovery"


def test_killed_holder_job_runs_again(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    first = Worker(redis_url, tmp_path / "first.log", queue=QUEUE)
    second: Worker | None = None
    try:
        jid = jobs.RecoveredSerialJob.set(queue=QUEUE).perform_async("rec")
        wait_for(lambda: jobs.runs("rec") == 1, timeout=15)
        lock = r.keys("pyqueue:unique:*")
        assert len(lock) == 1
        assert r.get(lock[0]) == jid
        first.kill()

        # Reliable fetch left the job in the dead worker's working list. The
        # next worker pushes it back at start, and the job takes its own lock again.
        second = Worker(redis_url, tmp_path / "second.log", queue=QUEUE)
        wait_for(lambda: r.lrange(jobs.SPANS, 0, -1) == [jid], timeout=20)
        assert jobs.runs("rec") == 2
        wait_for(lambda: not r.keys("pyqueue:unique:*"), timeout=5)
        assert r.zcard(keys.SCHEDULE) == 0
    finally:
        first.kill()
        if second is not None:
            second.terminate()
            second.wait()
