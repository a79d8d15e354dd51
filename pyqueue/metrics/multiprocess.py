"""Metrics for a supervisor of several worker processes on one host.

prometheus-client's multiprocess mode: every process writes its values to
memory-mapped files named after its pid in one directory, and the
supervisor's endpoint adds the files up. Counter and histogram files stay
after a child exits, so totals never go down. The busy and concurrency
gauges use the "livesum" mode, and ``child_exited`` deletes the exited
child's gauge files so that it no longer counts.

The supervisor calls, in this order:

    prepare_multiprocess_dir(path)     # before it starts any child
    start_host_metrics(settings)       # serves the host's /metrics (server.py)
    child_exited(pid)                  # each time it reaps a child
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client import values

ENV = "PROMETHEUS_MULTIPROC_DIR"

# The files prometheus-client writes: counter_<pid>.db, gauge_livesum_<pid>.db, ...
_VALUE_FILE = re.compile(r"^(counter|histogram|summary|gauge_[a-z]+)_\d+\.db$")


def directory() -> Path | None:
    """Return the multiprocess directory of this process, or None in single-process mode."""
    path = os.environ.get(ENV)
    return Path(path) if path else None


def prepare_multiprocess_dir(path: str | Path) -> Path:
    """Create or empty the shared metrics directory and switch this process to it.

    Deletes the value files that a previous run left behind, and only files
    named as prometheus-client names them. Sets PROMETHEUS_MULTIPROC_DIR so
    that children inherit it. Metrics created from now on, in this process and
    in children forked from it, write to the directory. Call it before
    starting any child.
    """
    folder = Path(path)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for file in folder.iterdir():
        if _VALUE_FILE.match(file.name):
            file.unlink(missing_ok=True)
    os.environ[ENV] = str(folder)
    # prometheus-client picks its value class when it is first imported, before
    # the variable was set. Without this switch a forked child would keep its
    # values in memory, where the supervisor cannot read them.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return folder


def child_exited(pid: int) -> None:
    """Drop the gauges of a child that has exited, however it ended.

    Its counters and histograms stay in the totals.
    """
    folder = directory()
    if folder is None:
        return
    prometheus_multiprocess.mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]
