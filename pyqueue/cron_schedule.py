"""Cron lines as sidekiq-cron stores them, evaluated in a time zone.

The cron poller needs a line's latest tick before a moment (``last_tick``),
and listings need its next run. croniter does the calendar
arithmetic on wall-clock times, and this module maps those wall-clock times to
instants so that a daylight-saving change neither adds nor drops a run:

- Spring forward: wall times that the clock skips fire once, at the instant
  the clock jumps (the Vixie cron convention). A daily ``30 2 * * *`` in New
  York fires at 03:00 EDT on that day.
- Fall back: a wall time that occurs twice fires only at its first occurrence,
  unless the hour field is a wildcard (``*`` or ``*/n``). Such lines follow
  elapsed time, so ``0 * * * *`` fires at 01:00 EDT and again at 01:00 EST.

fugit 1.5 (sidekiq-cron 1.8) differs on both days: it skips a run whose time
falls in the skipped hour and runs a fixed time twice on the fall-back day.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
from collections.abc import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from pyqueue.errors import PyQueueError

NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# Ticks are enqueue markers shared with Ruby: the ZSET member must be spelled
# exactly like this, or Ruby and Python would both enqueue the same tick.
TICK_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# sidekiq-cron's format for last_enqueue_time and the jid history.
RUBY_TIME_FORMAT = "%Y-%m-%d %H:%M:%S %z"

# Upper bound on croniter steps for one lookup. A lookup that starts before a
# repeated hour walks through that hour. For a line firing every second that
# is at most 7,200 steps, because the largest DST shift in use is 2 hours.
MAX_STEPS = 20_000

_LINE_HELP = (
    "write 5 fields (minute hour day month weekday), 6 with seconds first, "
    "or a name such as @hourly, optionally followed by a time zone such as America/New_York"
)


class CronLineError(PyQueueError, ValueError):
    """Raised when a cron line cannot be parsed; the message names the line."""


@dataclasses.dataclass(frozen=True)
class CronLine:
    """A parsed cron line: the croniter expression, its zone and its DST rule."""

    text: str
    expression: str
    zone: ZoneInfo
    with_seconds: bool
    hour_wildcard: bool

    def last_tick(self, now: float) -> int | None:
        """Return the latest run at or before ``floor(now) - 1 s``, in epoch seconds.

        This is fugit's ``previous_time``: at 12:00:00.9 the last tick of
        ``0 12 * * *`` is yesterday's; from 12:00:01 on it is today's.
        None when the line never matched.
        """
        return self.previous_before(math.floor(now))

    def next_run(self, now: float) -> int | None:
        """Return the earliest run after ``now``, in epoch seconds, or None if there is none."""
        return self.next_after(math.floor(now))

    def next_runs(self, now: float, count: int) -> list[int]:
        """Return up to ``count`` runs after ``now``, oldest first."""
        runs: list[int] = []
        moment: int | None = math.floor(now)
        while moment is not None and len(runs) < count:
            moment = self.next_after(moment)
            if moment is not None:
                runs.append(moment)
        return runs

    def previous_runs(self, now: float, count: int) -> list[int]:
        """Return up to ``count`` runs strictly before ``now``, newest first."""
        runs: list[int] = []
        moment: int | None = math.ceil(now)
        while moment is not None and len(runs) < count:
            moment = self.previous_before(moment)
            if moment is not None:
                runs.append(moment)
        return runs

    def next_after(self, moment: int) -> int | None:
        """Return the earliest run strictly after ``moment`` (epoch seconds)."""
        wall = self._wall(moment)
        # Inside a repeated hour, runs at earlier wall times of that hour may
        # still lie ahead (their second occurrence), so start before the hour.
        start = wall - self._repeat_length(wall)
        found: int | None = None
        for candidate_wall in self._walk(start, forward=True):
            later = [instant for instant in self._instants(candidate_wall) if instant > moment]
            if later:
                found = min([*later, *([found] if found is not None else [])])
            if found is not None and not self._repeated(candidate_wall):
                break
        return found

    def previous_before(self, moment: int) -> int | None:
        """Return the latest run strictly before ``moment`` (epoch seconds)."""
        wall = self._wall(moment)
        # Inside a repeated hour, runs at later wall times of that hour may
        # already be past (their first occurrence), so start after the hour.
        start = wall + self._repeat_length(wall)
        found: int | None = None
        for candidate_wall in self._walk(start, forward=False):
            earlier = [instant for instant in self._instants(candidate_wall) if instant < moment]
            if earlier:
                found = max([*earlier, *([found] if found is not None else [])])
            if found is not None and not self._repeated(candidate_wall):
                break
        return found

    def _wall(self, moment: int) -> dt.datetime:
        """Return the naive wall-clock time of an instant in this line's zone."""
        return dt.datetime.fromtimestamp(moment, self.zone).replace(tzinfo=None)

    def _walk(self, start: dt.datetime, forward: bool) -> Iterator[dt.datetime]:
        """Yield up to MAX_STEPS matching wall times after (or before) ``start``.

        croniter runs on the wall times labelled as UTC, where no DST exists,
        so its results are pure calendar arithmetic.
        """
        walker = croniter(
            self.expression,
            start.replace(tzinfo=dt.UTC),
            ret_type=dt.datetime,
            second_at_beginning=self.with_seconds,
        )
        step = walker.get_next if forward else walker.get_prev
        for _ in range(MAX_STEPS):
            try:
                value = step()
            except CroniterBadDateError:
                # croniter found no match within its search window (e.g. 30 February).
                return
            assert isinstance(value, dt.datetime)
            yield value.replace(tzinfo=None)

    def _instants(self, wall: dt.datetime) -> list[int]:
        """Return the instants at which a matching wall time fires (usually one)."""
        first = wall.replace(tzinfo=self.zone, fold=0)
        second = wall.replace(tzinfo=self.zone, fold=1)
        if first.utcoffset() == second.utcoffset():
            return [int(first.timestamp())]
        if self._exists(wall):
            # A repeated wall time: fold 0 is the first occurrence.
            if self.hour_wildcard:
                return [int(first.timestamp()), int(second.timestamp())]
            return [int(first.timestamp())]
        # A skipped wall time: fold 1 maps it before the jump and fold 0 after
        # it, so the jump lies in between.
        return [self._jump_instant(int(second.timestamp()), int(first.timestamp()))]

    def _exists(self, wall: dt.datetime) -> bool:
        instant = wall.replace(tzinfo=self.zone).timestamp()
        return self._wall(int(instant)) == wall

    def _repeated(self, wall: dt.datetime) -> bool:
        return self._repeat_length(wall) > dt.timedelta(0)

    def _repeat_length(self, wall: dt.datetime) -> dt.timedelta:
        """Return how long the clock is turned back when ``wall`` occurs twice, else 0."""
        first = wall.replace(tzinfo=self.zone, fold=0).utcoffset()
        second = wall.replace(tzinfo=self.zone, fold=1).utcoffset()
        if first is None or second is None or first <= second or not self._exists(wall):
            return dt.timedelta(0)
        return first - second

    def _jump_instant(self, before: int, after: int) -> int:
        """Return the first instant in (before, after] with the offset in force at ``after``."""
        target = dt.datetime.fromtimestamp(after, self.zone).utcoffset()
        low, high = before, after
        while high - low > 1:
            middle = (low + high) // 2
            if dt.datetime.fromtimestamp(middle, self.zone).utcoffset() == target:
                high = middle
            else:
                low = middle
        return high


def parse_line(text: str, default_zone: str = "UTC") -> CronLine:
    """Parse a sidekiq-cron line; ``default_zone`` applies when it names no zone.

    Raises CronLineError naming the line when it cannot be parsed.
    """
    return _parse_cached(text, default_zone)


@functools.lru_cache(maxsize=1024)
def _parse_cached(text: str, default_zone: str) -> CronLine:
    tokens = text.split()
    zone_name = default_zone
    if len(tokens) > 1 and _is_zone_name(tokens[-1]):
        zone_name = tokens.pop()
    zone = _zone(zone_name, text)
    if len(tokens) == 1 and tokens[0].lower() in NICKNAMES:
        tokens = NICKNAMES[tokens[0].lower()].split()
    if len(tokens) not in (5, 6):
        raise CronLineError(f"cron line {text!r} has {len(tokens)} fields; {_LINE_HELP}")
    with_seconds = len(tokens) == 6
    expression = " ".join(tokens)
    try:
        valid = croniter.is_valid(expression, second_at_beginning=with_seconds)
    except CroniterBadCronError:
        valid = False
    if not valid:
        raise CronLineError(f"cron line {text!r} is not a valid cron expression; {_LINE_HELP}")
    hour_field = tokens[2] if with_seconds else tokens[1]
    return CronLine(
        text=text,
        expression=expression,
        zone=zone,
        with_seconds=with_seconds,
        hour_wildcard=hour_field.startswith("*"),
    )


def _is_zone_name(token: str) -> bool:
    """Return True for an IANA zone name such as ``UTC`` or ``Europe/Paris``.

    No cron field value is a zone name: month and weekday names (JAN, MON)
    are not in the zone database.
    """
    if not any(char.isalpha() for char in token) or any(char in "*,?#" for char in token):
        return False
    try:
        ZoneInfo(token)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


@functools.lru_cache(maxsize=256)
def _zone(name: str, text: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronLineError(
            f"time zone {name!r} of cron line {text!r} is unknown; use an IANA name such as "
            "UTC or America/New_York (setting cron_timezone for lines without a zone)"
        ) from None


def format_tick(tick: float) -> str:
    """Return the enqueue-marker member of a tick, e.g. ``2024-05-06T15:00:00Z``."""
    return dt.datetime.fromtimestamp(int(tick), dt.UTC).strftime(TICK_FORMAT)


def format_ruby_time(moment: float) -> str:
    """Return ``moment`` as sidekiq-cron writes times, e.g. ``2024-05-06 15:00:01 +0000``."""
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime(RUBY_TIME_FORMAT)


def parse_ruby_time(text: str | None) -> float | None:
    """Read a ``last_enqueue_time`` in any form Ruby writes; None when empty or invalid.

    Accepted: ``2024-05-05 09:00:00 +0000`` (sidekiq-cron), ``2024-05-05
    09:00:00 UTC`` (Ruby's Time#to_s), ISO 8601 with ``Z`` or an offset, and
    fractional seconds in any of them. A time without a zone is UTC.
    """
    if not text or not text.strip():
        return None
    value = text.strip()
    for suffix in (" UTC", " GMT", "Z"):
        if value.endswith(suffix):
            value = value[: -len(suffix)] + "+00:00"
            break
    # Python before 3.12 reads "+0000" only with a colon.
    if len(value) > 5 and value[-5] in "+-" and value[-4:].isdigit():
        value = f"{value[:-2]}:{value[-2:]}"
    try:
        moment = dt.datetime.fromisoformat(value.replace(" +", "+").replace(" -", "-"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()
