"""Test modes for applications built on pyqueue, like Ruby's ``Sidekiq::Testing``.

- ``fake``: every push is collected in memory instead of Redis. ``jobs()``
  lists the collected payloads, ``drain()`` runs them (and the jobs they push)
  and ``perform_one()`` runs the oldest one of a class.
- ``inline``: every push runs the job at once in the caller's thread, also a
  scheduled one, and its exception propagates to the caller.
- ``disabled`` (the default): pushes go to Redis.

Each payload goes through a JSON round trip first, so a job receives
its arguments exactly as a worker does after reading them back from Redis.

    from pyqueue import testing

    with testing.fake():
        SendReport.perform_async(7)
        assert [job["args"] for job in testing.jobs(SendReport)] == [[7]]
        testing.drain()

Server middleware does not run around jobs performed here unless it is added
to ``testing.server_middleware``. The pytest fixtures ``pyqueue_fake`` and
``pyqueue_inline`` live in ``pyqueue.testing_plugin``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from pyqueue import client
from pyqueue.errors import PyQueueError
from pyqueue.job import lookup
from pyqueue.middleware import ServerChain
from pyqueue.payload import Payload, dumps, loads

MODES = ("fake", "inline", "disabled")

server_middleware = ServerChain()
"""Server middleware run around jobs performed by ``drain``, ``perform_one`` and inline mode."""


class EmptyQueueError(PyQueueError):
    """Raised by ``perform_one`` when no collected job matches."""


_lock = threading.RLock()
_collected: list[Payload] = []
_mode = "disabled"


def mode() -> str:
    """Return the current mode: "fake", "inline" or "disabled"."""
    return _mode


def set_mode(new_mode: str) -> None:
    """Switch every push in this process to ``new_mode`` ("fake", "inline" or "disabled").

    Collected jobs stay until ``clear()``. Raises ValueError for another mode name.
    """
    global _mode
    if new_mode not in MODES:
        raise ValueError(f"testing mode {new_mode!r} is invalid; choose one of {', '.join(MODES)}")
    hooks = {"fake": _collect, "inline": _run_inline, "disabled": None}
    with _lock:
        _mode = new_mode
        client._push_hook = hooks[new_mode]


def disable() -> None:
    """Send pushes to Redis again."""
    set_mode("disabled")


@contextlib.contextmanager
def fake() -> Iterator[None]:
    """Collect pushes in memory inside the block; restore the previous mode after it."""
    with _mode_block("fake"):
        yield


@contextlib.contextmanager
def inline() -> Iterator[None]:
    """Run pushed jobs at once inside the block; restore the previous mode after it."""
    with _mode_block("inline"):
        yield


@contextlib.contextmanager
def _mode_block(new_mode: str) -> Iterator[None]:
    previous = _mode
    set_mode(new_mode)
    try:
        yield
    finally:
        set_mode(previous)


def jobs(cls_or_name: Any = None, queue: str | None = None) -> list[Payload]:
    """Return the collected payloads, oldest first, optionally of one class and one queue.

    ``cls_or_name`` is a Job class, a function decorated with ``@job`` or a
    registered class name. Scheduled jobs keep their run time in ``at``.
    The payloads are copies, so editing them changes nothing.
    """
    name = _class_name(cls_or_name)
    with _lock:
        selected = [p for p in _collected if _matches(p, name, queue)]
    return [loads(dumps(payload)) for payload in selected]


def queues() -> dict[str, list[Payload]]:
    """Return the collected payloads grouped by queue name, oldest first."""
    grouped: dict[str, list[Payload]] = {}
    for payload in jobs():
        grouped.setdefault(str(payload["queue"]), []).append(payload)
    return grouped


def clear(cls_or_name: Any = None, queue: str | None = None) -> int:
    """Drop the collected jobs (of one class and one queue when given); return how many."""
    name = _class_name(cls_or_name)
    with _lock:
        remaining = [p for p in _collected if not _matches(p, name, queue)]
        dropped = len(_collected) - len(remaining)
        _collected[:] = remaining
    return dropped


def drain(cls_or_name: Any = None, queue: str | None = None) -> int:
    """Run collected jobs, oldest first, until none (of that class and queue) is left.

    Jobs pushed while draining are collected (in fake mode) and run in the same
    drain when they match. A job's exception propagates after the job has been
    removed, as in Sidekiq. Returns the number of jobs run.
    """
    name = _class_name(cls_or_name)
    count = 0
    while (payload := _take_oldest(name, queue)) is not None:
        perform(payload)
        count += 1
    return count


def perform_one(cls_or_name: Any = None, queue: str | None = None) -> Payload:
    """Remove and run the oldest collected job (of that class and queue); return its payload.

    Raises EmptyQueueError when no collected job matches.
    """
    name = _class_name(cls_or_name)
    payload = _take_oldest(name, queue)
    if payload is None:
        raise EmptyQueueError(
            f"no collected job of class {name or 'any'} in queue {queue or 'any'} to perform; "
            "push one in fake mode first"
        )
    perform(payload)
    return payload


def perform(payload: Payload) -> None:
    """Run one payload as a worker would: look up the class, set jid and payload, call perform.

    Raises UnknownJobClass when no job is registered under the payload's class.
    """
    job_class = lookup(payload["class"])
    job = job_class(jid=str(payload["jid"]), payload=payload)
    args = payload["args"]
    server_middleware.invoke(job, payload, str(payload["queue"]), lambda: job.perform(*args))


def _collect(payloads: list[Payload]) -> None:
    copies = [loads(dumps(payload)) for payload in payloads]
    with _lock:
        _collected.extend(copies)


def _run_inline(payloads: list[Payload]) -> None:
    for payload in payloads:
        perform(loads(dumps(payload)))


def _take_oldest(name: str | None, queue: str | None) -> Payload | None:
    with _lock:
        for index, payload in enumerate(_collected):
            if _matches(payload, name, queue):
                return _collected.pop(index)
    return None


def _matches(payload: Payload, name: str | None, queue: str | None) -> bool:
    if name is not None and payload.get("class") != name:
        return False
    return queue is None or payload.get("queue") == queue


def _class_name(cls_or_name: Any) -> str | None:
    if cls_or_name is None or isinstance(cls_or_name, str):
        return cls_or_name
    target = getattr(cls_or_name, "job_class", cls_or_name)
    name = getattr(target, "job_name", None)
    if not isinstance(name, str):
        raise TypeError(
            f"{cls_or_name!r} is not a job; pass a Job subclass, an @job function or a class name"
        )
    return name
