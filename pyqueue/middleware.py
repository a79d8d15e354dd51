"""Client and server middleware chains.

A client middleware runs in the process that pushes a job, before the payload
is written; returning None vetoes the push. A server middleware runs in the
worker thread around ``perform``; it calls ``call_next()`` to go on, or returns
without calling it to skip the job (which then counts as done).

    def client_mw(payload, queue, call_next):
        payload.setdefault("tags", []).append("web")
        return call_next(payload)

    def server_mw(job, payload, queue, call_next):
        with some_context(job.jid):
            call_next()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pyqueue.payload import Payload

if TYPE_CHECKING:
    from pyqueue.job import Job


class ClientMiddleware(Protocol):
    def __call__(
        self,
        payload: Payload,
        queue: str,
        call_next: Callable[[Payload], Payload | None],
    ) -> Payload | None: ...


class ServerMiddleware(Protocol):
    def __call__(
        self,
        job: Job,
        payload: Payload,
        queue: str,
        call_next: Callable[[], None],
    ) -> None: ...


M = TypeVar("M")


class Chain(Generic[M]):
    """An ordered list of middleware; the first entry is the outermost."""

    def __init__(self, entries: list[M] | None = None) -> None:
        self.entries: list[M] = list(entries or [])

    def add(self, middleware: M) -> None:
        """Append ``middleware`` (innermost position); adding it twice is a no-op."""
        if middleware not in self.entries:
            self.entries.append(middleware)

    def prepend(self, middleware: M) -> None:
        """Insert ``middleware`` in the outermost position."""
        self.remove(middleware)
        self.entries.insert(0, middleware)

    def remove(self, middleware: M) -> None:
        if middleware in self.entries:
            self.entries.remove(middleware)

    def clear(self) -> None:
        self.entries.clear()

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Any:
        return iter(self.entries)


class ClientChain(Chain[ClientMiddleware]):
    def invoke(self, payload: Payload, queue: str) -> Payload | None:
        """Run the chain; return the payload to write, or None when vetoed."""
        if not self.entries:
            return payload
        return self._call(0, payload, queue)

    def _call(self, index: int, payload: Payload, queue: str) -> Payload | None:
        if index == len(self.entries):
            return payload
        middleware = self.entries[index]
        return middleware(payload, queue, lambda p: self._call(index + 1, p, queue))


class ServerChain(Chain[ServerMiddleware]):
    def invoke(self, job: Job, payload: Payload, queue: str, perform: Callable[[], None]) -> None:
        """Run the chain around ``perform``."""
        if not self.entries:
            perform()
            return
        self._call(0, job, payload, queue, perform)

    def _call(
        self, index: int, job: Job, payload: Payload, queue: str, perform: Callable[[], None]
    ) -> None:
        if index == len(self.entries):
            perform()
            return
        middleware = self.entries[index]
        middleware(job, payload, queue, lambda: self._call(index + 1, job, payload, queue, perform))
