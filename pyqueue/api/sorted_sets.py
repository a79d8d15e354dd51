"""The scheduled, retry and dead sets: paged reads, search and the operator's actions.

Each set is a ZSET of job payloads scored by epoch seconds (run time for
``schedule`` and ``retry``, time of death for ``dead``). Entries are removed by
their exact raw member, because a re-encoded payload may differ in its bytes.
Several entries may share one score; Sidekiq's own removal path creates such
ties, so nothing here assumes that scores are unique.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, cast

import redis
from redis.exceptions import ResponseError

from pyqueue import keys
from pyqueue.api.base import (
    NOT_UTF8,
    ZSET,
    AmbiguousReference,
    NotFound,
    connection,
    execute_reads,
    is_wrong_type,
    key_type_error,
    text,
    wrong_type_message,
)
from pyqueue.api.records import JobRecord, read_job
from pyqueue.client import Client, normalize
from pyqueue.config import Settings
from pyqueue.errors import ArgumentError, PayloadError

DEFAULT_PAGE_SIZE = 25
WINDOW = 100
SCAN_COUNT = 1000

# An entry id is "<score>-<jid>" as in Sidekiq's Web UI, or
# "<score>-sha256:<digest>" for an entry without a readable jid.
DIGEST_PREFIX = "sha256:"
DIGEST_LENGTH = 16
_ENTRY_ID = re.compile(r"^(-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)-(.+)$")
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


@dataclasses.dataclass(frozen=True)
class SortedEntry:
    """One member of a sorted set: the job and its score (epoch seconds)."""

    set_name: str
    score: float
    job: JobRecord

    @property
    def raw(self) -> str:
        return self.job.raw

    @property
    def jid(self) -> str | None:
        return self.job.jid

    @property
    def entry_id(self) -> str:
        """Return ``<score>-<jid>``, or ``<score>-sha256:<digest>`` when the jid is unreadable."""
        return f"{self.score!r}-{self.job.jid or digest(self.raw)}"


@dataclasses.dataclass(frozen=True)
class EntryPage:
    """A window of a set: ``total`` is the set size when the page was read."""

    set_name: str
    entries: tuple[SortedEntry, ...]
    total: int
    offset: int
    newest_first: bool
    problems: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class BulkResult:
    """Outcome of a set-wide action: entries handled and the ones left in place, with why."""

    done: int
    skipped: tuple[str, ...]


def digest(raw: str) -> str:
    """Return the short content hash that names an entry without a jid."""
    # surrogateescape restores the original bytes of a member that is not valid UTF-8.
    data = raw.encode("utf-8", "surrogateescape")
    return DIGEST_PREFIX + hashlib.sha256(data).hexdigest()[:DIGEST_LENGTH]


class SortedSet:
    """Reads and actions shared by ScheduledSet, RetrySet and DeadSet.

    ``settings`` supplies the timestamp mode for re-pushed jobs and the dead
    set limits (``dead_max_jobs``, ``dead_timeout_in_seconds``).
    """

    key: ClassVar[str]

    def __init__(self, redis: redis.Redis | None = None, settings: Settings | None = None) -> None:
        self.redis = connection(redis)
        self.settings = settings if settings is not None else Settings()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @property
    def name(self) -> str:
        return self.key

    def size(self) -> int:
        """Return the number of entries; raise KeyTypeError if the key is no sorted set."""
        try:
            return int(self.redis.zcard(self.key))
        except ResponseError as exc:
            raise self._translate(exc) from None

    def page(
        self, offset: int = 0, count: int = DEFAULT_PAGE_SIZE, newest_first: bool = True
    ) -> EntryPage:
        """Read ``count`` entries by rank from ``offset``, highest score first by default.

        One ZCARD and one ZRANGE/ZREVRANGE by rank, O(log N + count), so the
        cost grows with the page and barely with the set. Bad data goes to
        problems.
        """
        if offset < 0 or count < 1:
            raise ValueError(f"page needs offset >= 0 and count >= 1, got {offset} and {count}")
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.key)
        pipe.zrange(self.key, offset, offset + count - 1, desc=newest_first, withscores=True)
        replies = execute_reads(pipe)
        if replies is None:
            return EntryPage(self.key, (), 0, offset, newest_first, (NOT_UTF8,))
        size, items = replies
        if is_wrong_type(size) or is_wrong_type(items):
            problem = wrong_type_message(self.redis, self.key, ZSET)
            return EntryPage(self.key, (), 0, offset, newest_first, (problem,))
        entries = tuple(self._entry(member, score) for member, score in _pairs(items))
        return EntryPage(self.key, entries, int(size), offset, newest_first, ())

    def entries(self, newest_first: bool = True, window: int = WINDOW) -> Iterator[SortedEntry]:
        """Yield every entry, ``window`` per ZRANGE; raise KeyTypeError for a wrong key type.

        Entries added or removed meanwhile shift the ranks, so one may be
        yielded twice or skipped.
        """
        offset = 0
        while True:
            page = self.page(offset, window, newest_first)
            if page.problems:
                raise key_type_error(self.redis, self.key, ZSET)
            yield from page.entries
            if len(page.entries) < window:
                return
            offset += window

    def find_job(self, jid: str) -> SortedEntry | None:
        """Return the first entry whose jid is ``jid``, or None."""
        found = self.find_jobs(jid)
        return found[0] if found else None

    def find_jobs(self, jid: str) -> list[SortedEntry]:
        """Return every entry whose jid is ``jid``, lowest score first.

        ZSCAN with ``MATCH *<jid>*`` lets Redis skip non-matching members;
        each candidate is then decoded and its jid compared exactly.
        """
        found = [entry for entry in self._scan(jid) if entry.jid == jid]
        return sorted(found, key=lambda entry: entry.score)

    def filter_class(self, name: str) -> list[SortedEntry]:
        """Return the entries whose class or display class is ``name``, lowest score first.

        The scan matches ``"<name>"`` anywhere in the member, not only after
        ``"class":``. That also finds ActiveJob's ``wrapped`` and JSON written
        with spaces. The decoded fields then decide.
        """
        candidates = self._scan(f'"{name}"')
        found = [e for e in candidates if name in (e.job.job_class, e.job.display_class)]
        return sorted(found, key=lambda entry: entry.score)

    def search(self, substring: str) -> list[SortedEntry]:
        """Return the entries whose raw member contains ``substring`` (case-sensitive)."""
        return sorted(self._scan(substring), key=lambda entry: entry.score)

    def lookup(self, reference: str) -> list[SortedEntry]:
        """Return the entries named by an entry id (``<score>-<jid>``) or by a bare jid.

        An entry id costs one ZRANGE BYSCORE; a jid costs a ZSCAN of the set.
        """
        match = _ENTRY_ID.match(reference)
        if match is not None:
            found = self._at_score(float(match.group(1)), match.group(2))
            if found:
                return found
        return self.find_jobs(reference)

    def delete(self, entry: SortedEntry | str) -> bool:
        """Remove the entry by its exact raw member; False if it was already gone."""
        return self._remove(_raw(entry))

    def add_to_queue(self, entry: SortedEntry) -> bool:
        """Push the job to its queue as it is; False if another caller took the entry first."""
        return self._move_to_queue(entry, consume_retry=False)

    def retry(self, entry: SortedEntry) -> bool:
        """Push the job to its queue now, without using up one of its retries.

        ``retry_count`` goes down by one, so the failure handler's next +1
        leaves it where it was. False if another caller took the entry first.
        """
        return self._move_to_queue(entry, consume_retry=True)

    def retry_all(self) -> BulkResult:
        """Retry every entry; entries that cannot be pushed stay and are listed as skipped."""
        return self._each(self.retry)

    def add_all_to_queue(self) -> BulkResult:
        """Push every entry to its queue as it is; unpushable entries stay and are listed."""
        return self._each(self.add_to_queue)

    def clear(self) -> int:
        """Delete the whole set; return how many entries it had.

        A key of the wrong type is deleted too, which is how an operator fixes it.
        """
        pipe = self.redis.pipeline(transaction=True)
        pipe.zcard(self.key)
        pipe.unlink(self.key)
        size = pipe.execute(raise_on_error=False)[0]
        return 0 if isinstance(size, Exception) else int(size)

    def _move_to_queue(self, entry: SortedEntry, consume_retry: bool) -> bool:
        payload = pushable(entry)
        if consume_retry:
            count = payload.get("retry_count")
            if isinstance(count, int) and not isinstance(count, bool):
                payload["retry_count"] = count - 1
        # Removing first means two operators acting on one entry push it only
        # once. NOTE: a crash between the ZREM and the push loses the job, a
        # risk Sidekiq's Web UI takes as well.
        if not self._remove(entry.raw):
            return False
        self._client().push(payload)
        return True

    def _client(self) -> Client:
        return Client(redis=self.redis, timestamp_mode=self.settings.timestamp_mode)

    def _each(self, action: Callable[[SortedEntry], bool]) -> BulkResult:
        """Apply ``action`` to every entry present at the start, oldest score first.

        The count is fixed at the start so that jobs that fail again and come
        back to the set while this runs are not handled twice.
        """
        remaining = self.size()
        offset = 0
        done = 0
        skipped: list[str] = []
        while remaining > 0:
            page = self.page(offset, min(WINDOW, remaining), newest_first=False)
            if not page.entries:
                break
            for entry in page.entries:
                remaining -= 1
                try:
                    if action(entry):
                        done += 1
                except PayloadError as exc:
                    skipped.append(str(exc))
                    offset += 1
        return BulkResult(done, tuple(skipped))

    def _remove(self, raw: str) -> bool:
        try:
            return int(self.redis.zrem(self.key, raw)) > 0
        except ResponseError as exc:
            raise self._translate(exc) from None

    def _scan(self, substring: str) -> list[SortedEntry]:
        pattern = f"*{glob_escape(substring)}*"
        try:
            pairs = list(self.redis.zscan_iter(self.key, match=pattern, count=SCAN_COUNT))
        except ResponseError as exc:
            raise self._translate(exc) from None
        return [self._entry(member, score) for member, score in pairs]

    def _at_score(self, score: float, name: str) -> list[SortedEntry]:
        try:
            items = self.redis.zrange(self.key, score, score, byscore=True, withscores=True)
        except ResponseError as exc:
            raise self._translate(exc) from None
        entries = [self._entry(member, found) for member, found in _pairs(items)]
        return [e for e in entries if name in (e.jid, digest(e.raw))]

    def _entry(self, member: Any, score: Any) -> SortedEntry:
        return SortedEntry(self.key, float(score), read_job(text(member) or ""))

    def _translate(self, exc: ResponseError) -> Exception:
        if is_wrong_type(exc):
            return key_type_error(self.redis, self.key, ZSET)
        return exc


class KillableSet(SortedSet):
    """A set whose entries can be moved to the dead set."""

    def kill(self, entry: SortedEntry) -> bool:
        """Move the entry to the dead set (trimmed as Ruby trims it); False if it was gone."""
        from pyqueue.retry import kill

        if not self._remove(entry.raw):
            return False
        kill(self.redis, entry.raw, self.settings)
        return True

    def kill_all(self) -> BulkResult:
        """Move every entry to the dead set."""
        return self._each(self.kill)


class ScheduledSet(KillableSet):
    """Jobs pushed with a run time in the future (``schedule``)."""

    key = keys.SCHEDULE


class RetrySet(KillableSet):
    """Failed jobs waiting for their next attempt (``retry``)."""

    key = keys.RETRY


class DeadSet(SortedSet):
    """Jobs that used up their retries or could not be read (``dead``, the morgue)."""

    key = keys.DEAD


def pushable(entry: SortedEntry) -> dict[str, Any]:
    """Return a copy of the entry's payload that the client can push.

    Raises PayloadError naming the entry when the payload is unreadable or
    would be rejected by the client (class missing, args not a list ...),
    before anything is removed from Redis.
    """
    if entry.job.parsed is None:
        reason = "; ".join(entry.job.problems)
        raise PayloadError(
            f"entry {entry.entry_id} of {entry.set_name} cannot be queued: {reason}; "
            "delete it instead"
        )
    payload = dict(entry.job.parsed)
    # "at" would send the job back to the schedule instead of running it now.
    payload.pop("at", None)
    try:
        normalize(payload)
    except ArgumentError as exc:
        raise PayloadError(
            f"entry {entry.entry_id} of {entry.set_name} cannot be queued: {exc}; delete it instead"
        ) from None
    return payload


def find_entry(sorted_set: SortedSet, reference: str) -> SortedEntry:
    """Return the single entry named by ``reference`` (an entry id or a jid).

    Raises NotFound when nothing matches and
    AmbiguousReference when a jid matches several entries (the message lists
    their entry ids).
    """
    found = sorted_set.lookup(reference)
    if not found:
        raise NotFound(f"no entry {reference!r} in {sorted_set.key}; list the set to see the ids")
    if len(found) > 1:
        ids = ", ".join(entry.entry_id for entry in found)
        raise AmbiguousReference(
            f"{reference!r} matches {len(found)} entries in {sorted_set.key} ({ids}); "
            "name one by its entry id"
        )
    return found[0]


def glob_escape(value: str) -> str:
    """Escape the glob characters of ``value`` for a SCAN ``MATCH`` pattern."""
    return _GLOB_SPECIAL.sub(r"\\\1", value)


def _raw(entry: SortedEntry | str) -> str:
    return entry.raw if isinstance(entry, SortedEntry) else entry


def _pairs(items: Any) -> list[tuple[Any, Any]]:
    return cast(list[tuple[Any, Any]], items)
