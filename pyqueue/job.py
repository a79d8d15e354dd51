"""Job classes, their options and the registry that maps a payload's class name to code.

    class EmailSenderWorker(pyqueue.Job):
        queue = "email_delivery"
        retry = 2

        def perform(self, batch_size):
            ...

    EmailSenderWorker.perform_async(100)
    EmailSenderWorker.set(queue="critical").perform_in(60, 100)

The registered name defaults to the bare class name, as Ruby writes it in
``class``; ``class Report(Job, name="Reports::Daily")`` overrides it. A
payload's class name is only ever looked up in the registry: no module named
in a payload is imported.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from pyqueue import controls
from pyqueue.client import Client, default_client, scheduled_time
from pyqueue.errors import JobDefinitionError, UnknownJobClass
from pyqueue.payload import Payload

_registry: dict[str, type[Job]] = {}
_registry_lock = threading.Lock()

# Return values of a retry_in hook besides a delay in seconds.
KILL = "kill"
DISCARD = "discard"


class Job:
    """Base class of a job. Override ``perform``; declare options as class attributes.

    Options (copied into every payload at push time, as Sidekiq does):
    ``queue`` (default "default"), ``retry`` (True = 25 retries, an int N = at
    most N retries, 0 = straight to the dead set, False = no retry and no dead
    set), ``backtrace`` (True or a line count), ``dead`` (False skips the dead
    set), ``retry_queue``, ``retry_for`` (seconds) and ``tags``.

    Job controls (see pyqueue.controls): ``unique`` (True or a lock type),
    ``unique_ttl`` (seconds, default 3600), ``unique_key`` (a function of the
    args), ``on_conflict``, ``timeout`` (seconds a run may take) and
    ``expires_in`` (seconds after which an unstarted job is dropped).
    """

    job_name: ClassVar[str] = "Job"
    queue: ClassVar[str] = "default"
    retry: ClassVar[bool | int] = True
    backtrace: ClassVar[bool | int | None] = None
    dead: ClassVar[bool | None] = None
    retry_queue: ClassVar[str | None] = None
    retry_for: ClassVar[int | None] = None
    tags: ClassVar[list[str] | None] = None
    unique: ClassVar[bool | str | None] = None
    unique_ttl: ClassVar[int | float | None] = None
    unique_key: ClassVar[Callable[..., Any] | None] = None
    on_conflict: ClassVar[str | None] = None
    timeout: ClassVar[int | float | None] = None
    expires_in: ClassVar[int | float | None] = None

    jid: str
    payload: Payload

    def __init_subclass__(cls, name: str | None = None, abstract: bool = False, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if abstract:
            return
        cls.job_name = name or cls.__name__
        _validate_options(cls)
        register(cls)

    def __init__(self, jid: str = "", payload: Payload | None = None) -> None:
        self.jid = jid
        self.payload = payload if payload is not None else {}

    def perform(self, *args: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define perform()")

    @classmethod
    def job_options(cls) -> dict[str, Any]:
        """Return the option fields that go into each payload (unset ones left out)."""
        options: dict[str, Any] = {"retry": cls.retry, "queue": cls.queue}
        for field in ("backtrace", "retry_queue", "dead", "tags", "retry_for"):
            value = getattr(cls, field)
            if value is not None:
                options[field] = list(value) if field == "tags" else value
        return options

    @classmethod
    def retry_in(cls, count: int, exc: BaseException, payload: Payload) -> int | float | str | None:
        """Return the delay in seconds before retry ``count``, or "kill" / "discard".

        None (the default) uses Sidekiq's backoff, ``count**4 + 15`` plus jitter.
        """
        return None

    @classmethod
    def retries_exhausted(cls, payload: Payload, exc: BaseException) -> str | None:
        """Run once when the job has no retries left; return "discard" to skip the dead set."""
        return None

    @classmethod
    def set(cls, **options: Any) -> JobSetter:
        """Return a copy of this job with options changed for the next push."""
        return JobSetter(cls, options)

    @classmethod
    def perform_async(cls, *args: Any) -> str | None:
        """Push the job to its queue; return its jid (None if middleware vetoed it)."""
        return JobSetter(cls, {}).perform_async(*args)

    @classmethod
    def perform_in(cls, interval: float | dt.timedelta, *args: Any) -> str | None:
        """Push the job to run after ``interval`` seconds (or a timedelta)."""
        return JobSetter(cls, {}).perform_in(interval, *args)

    @classmethod
    def perform_at(cls, when: float | dt.datetime, *args: Any) -> str | None:
        """Push the job to run at ``when``: a datetime or epoch seconds.

        A naive datetime is read as local time, as ``datetime.timestamp`` does.
        """
        return JobSetter(cls, {}).perform_at(when, *args)

    @classmethod
    def perform_bulk(cls, args_list: list[list[Any]], batch_size: int = 1000) -> list[str | None]:
        """Push one job per argument list in pipelined batches; return the jids."""
        return JobSetter(cls, {}).perform_bulk(args_list, batch_size)


class JobSetter:
    """A job with per-push options, made by ``Job.set(...)`` or ``foreign(...)``.

    ``job`` is a Job class or, for a class that only another process (such as
    a Ruby app) defines, its name as a string. ``client`` picks the Client;
    by default the process-wide one.
    """

    def __init__(self, job: type[Job] | str, options: dict[str, Any]) -> None:
        self.job = job
        self.options = dict(options)

    def set(self, **options: Any) -> JobSetter:
        return JobSetter(self.job, {**self.options, **options})

    def perform_async(self, *args: Any) -> str | None:
        return controls.push(self._client(), self._item(list(args)))

    def perform_in(self, interval: float | dt.timedelta, *args: Any) -> str | None:
        seconds = interval.total_seconds() if isinstance(interval, dt.timedelta) else interval
        return self._perform_scheduled(scheduled_time(float(seconds)), list(args))

    def perform_at(self, when: float | dt.datetime, *args: Any) -> str | None:
        epoch = when.timestamp() if isinstance(when, dt.datetime) else float(when)
        return self._perform_scheduled(scheduled_time(epoch), list(args))

    def perform_bulk(self, args_list: list[list[Any]], batch_size: int = 1000) -> list[str | None]:
        item = self._item(args_list, class_first=True)
        item["batch_size"] = batch_size
        return controls.push_bulk(self._client(), item)

    def _perform_scheduled(self, at: float, args: list[Any]) -> str | None:
        item = self._item(args, class_first=True)
        # As in Sidekiq, a time already passed goes straight to the queue.
        if at > time.time():
            item["at"] = at
        return controls.push(self._client(), item)

    def _item(self, args: Any, *, class_first: bool = False) -> dict[str, Any]:
        # Sidekiq writes "args" before "class" for perform_async and after it
        # for perform_in, perform_at and perform_bulk; the captures show both.
        options = {k: v for k, v in self.options.items() if k != "client"}
        if class_first:
            return {**options, "class": self.job, "args": args}
        return {**options, "args": args, "class": self.job}

    def _client(self) -> Client:
        client = self.options.get("client")
        return client if isinstance(client, Client) else default_client()


def foreign(name: str, **options: Any) -> JobSetter:
    """Return a pushable reference to a job class defined elsewhere (e.g. in Ruby).

    ``foreign("HardJob", queue="critical", retry=3).perform_async(1)``. Options
    such as ``backtrace`` or ``retry_queue`` reach a Ruby worker only through
    the payload, so declare them here.
    """
    return JobSetter(name, options)


class FunctionJob(Job, abstract=True):
    """A Job made from a plain function by the ``job`` decorator."""

    function: ClassVar[Callable[..., Any]]

    def perform(self, *args: Any) -> None:
        type(self).function(*args)


def job(func: Callable[..., Any] | None = None, *, name: str | None = None, **options: Any) -> Any:
    """Turn a function into a job: ``@job`` or ``@job(queue="critical", retry=3)``.

    The decorated name stays callable as a plain function and gains
    ``perform_async``, ``perform_in``, ``perform_at``, ``perform_bulk``, ``set``
    and ``job_class``.
    """

    def wrap(function: Callable[..., Any]) -> Any:
        attrs: dict[str, Any] = {"function": staticmethod(function), **options}
        attrs["__module__"] = function.__module__
        attrs["__qualname__"] = function.__qualname__
        job_class = type(function.__name__, (FunctionJob,), attrs, name=name)

        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            return function(*args, **kwargs)

        for verb in ("perform_async", "perform_in", "perform_at", "perform_bulk", "set"):
            setattr(call, verb, getattr(job_class, verb))
        call.job_class = job_class  # type: ignore[attr-defined]
        return call

    return wrap(func) if func is not None else wrap


_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "queue": (str,),
    "retry": (bool, int),
    "backtrace": (bool, int, type(None)),
    "dead": (bool, type(None)),
    "retry_queue": (str, type(None)),
    "retry_for": (int, type(None)),
    "tags": (list, type(None)),
}


def _validate_options(cls: type[Job]) -> None:
    for field, types in _OPTION_TYPES.items():
        value = getattr(cls, field)
        if not isinstance(value, types):
            allowed = " or ".join(t.__name__ for t in types)
            raise JobDefinitionError(
                f"{cls.__qualname__}.{field} is {value!r}; it must be {allowed}"
            )
    if not cls.queue:
        raise JobDefinitionError(f"{cls.__qualname__}.queue must be a non-empty string")
    controls.check_class_options(cls)


def register(cls: type[Job]) -> None:
    """Add ``cls`` under ``cls.job_name``; a second class with that name is an error.

    Re-registering the same module and qualified name (a module imported
    twice, as in a reload) replaces the entry instead.
    """
    with _registry_lock:
        existing = _registry.get(cls.job_name)
        if existing is not None and _origin(existing) != _origin(cls):
            raise JobDefinitionError(
                f"two jobs are named {cls.job_name!r}: {_origin(existing)} and {_origin(cls)}; "
                "rename one, or pass name=... to give it another registered name"
            )
        _registry[cls.job_name] = cls


def unregister(name: str) -> None:
    """Remove a registered job name (for tests that define throwaway jobs)."""
    with _registry_lock:
        _registry.pop(name, None)


def lookup(name: Any) -> type[Job]:
    """Return the job registered as ``name``; raise UnknownJobClass otherwise."""
    cls = _registry.get(name) if isinstance(name, str) else None
    if cls is None:
        raise UnknownJobClass(
            f"no job is registered as {name!r}; import the module that defines it "
            "(pyqueue run -r MODULE) or check the class name in the payload"
        )
    return cls


def registered() -> dict[str, type[Job]]:
    """Return a copy of the registry: name to job class."""
    with _registry_lock:
        return dict(_registry)


def _origin(cls: type[Job]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
