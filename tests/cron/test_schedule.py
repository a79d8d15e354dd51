"""Cron lines: parsing, zones, the previous-tick boundary, DST days and the day OR rule."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from pyqueue.cron_schedule import CronLineError, format_tick, parse_line
from tests.cron.helpers import iso, utc

NEW_YORK = ZoneInfo("America/New_York")
WINNIPEG = ZoneInfo("America/Winnipeg")


def local(zone: ZoneInfo, *fields: int) -> float:
    return dt.datetime(*fields, tzinfo=zone).timestamp()


def test_spring_forward_next_runs() -> None:
    """A 06:00 New York job keeps 06:00 local across the change: 11:00Z, then 10:00Z."""
    line = parse_line("0 6 * * * America/New_York")

    runs = [iso(run) for run in line.next_runs(local(NEW_YORK, 2024, 3, 8, 0, 0), 4)]

    assert runs == [
        "2024-03-08T11:00:00Z",
        "2024-03-09T11:00:00Z",
        "2024-03-10T10:00:00Z",
        "2024-03-11T10:00:00Z",
    ]
    assert "2024-03-10T09:00:00Z" not in runs


def test_spring_forward_previous_runs() -> None:
    line = parse_line("0 6 * * * America/New_York")

    runs = [iso(run) for run in line.previous_runs(local(NEW_YORK, 2024, 3, 12, 0, 0), 3)]

    assert runs == ["2024-03-11T10:00:00Z", "2024-03-10T10:00:00Z", "2024-03-09T11:00:00Z"]


def test_skipped_time_runs_after_jump() -> None:
    """02:15 does not exist on 2021-03-14 in Winnipeg; the run comes at 03:00 CDT."""
    line = parse_line("15 2 * * 0 America/Winnipeg")

    first, second = line.next_runs(local(WINNIPEG, 2021, 3, 8, 8, 15), 2)

    assert utc("2021-03-14T08:00:00Z") <= first <= utc("2021-03-14T08:15:00Z")
    assert iso(second) == "2021-03-21T07:15:00Z"
    assert line.previous_before(second) == first


def test_skipped_hour_fires_once() -> None:
    """Four wall times of the skipped hour give one run, at the jump."""
    line = parse_line("*/15 2 * * * America/New_York")

    runs = line.next_runs(utc("2024-03-10T00:00:00Z"), 3)

    assert [iso(run) for run in runs] == [
        "2024-03-10T07:00:00Z",
        "2024-03-11T06:00:00Z",
        "2024-03-11T06:15:00Z",
    ]


def test_fall_back_fixed_time_once() -> None:
    """01:30 happens twice on 2024-11-03 in New York; a fixed-time job runs at the first."""
    line = parse_line("30 1 * * * America/New_York")

    runs = [iso(run) for run in line.next_runs(utc("2024-11-02T12:00:00Z"), 3)]
    previous = [iso(run) for run in line.previous_runs(utc("2024-11-04T12:00:00Z"), 3)]

    assert runs == ["2024-11-03T05:30:00Z", "2024-11-04T06:30:00Z", "2024-11-05T06:30:00Z"]
    assert previous == ["2024-11-04T06:30:00Z", "2024-11-03T05:30:00Z", "2024-11-02T05:30:00Z"]


def test_fall_back_last_tick_in_repeat() -> None:
    """During the repeated hour the last tick is still the first 01:30, not yesterday's."""
    line = parse_line("30 1 * * * America/New_York")

    tick = line.last_tick(utc("2024-11-03T06:10:00Z"))  # 01:10 EST, the second pass

    assert tick is not None
    assert iso(tick) == "2024-11-03T05:30:00Z"


def test_fall_back_hourly_follows_elapsed_time() -> None:
    """An hourly job runs every real hour, so also at 01:00 EST after 01:00 EDT."""
    line = parse_line("0 * * * * America/New_York")

    runs = [iso(run) for run in line.next_runs(utc("2024-11-03T04:30:00Z"), 4)]

    assert runs == [
        "2024-11-03T05:00:00Z",
        "2024-11-03T06:00:00Z",
        "2024-11-03T07:00:00Z",
        "2024-11-03T08:00:00Z",
    ]
    assert len(line.next_runs(local(NEW_YORK, 2024, 11, 3, 0, 0) - 1, 26)) == 26
    day = [
        run
        for run in line.next_runs(local(NEW_YORK, 2024, 11, 3, 0, 0) - 1, 30)
        if run < local(NEW_YORK, 2024, 11, 4, 0, 0)
    ]
    assert len(day) == 25


def test_day_fields_or_rule() -> None:
    """Day of month 1 and Monday both restricted: either one matches (May 2024)."""
    line = parse_line("0 9 1 * 1")

    runs = [iso(run) for run in line.next_runs(utc("2024-04-30T12:00:00Z"), 5)]

    assert runs == [
        "2024-05-01T09:00:00Z",
        "2024-05-06T09:00:00Z",
        "2024-05-13T09:00:00Z",
        "2024-05-20T09:00:00Z",
        "2024-05-27T09:00:00Z",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0 9 1 * *", ["2024-05-01T09:00:00Z", "2024-06-01T09:00:00Z"]),
        ("0 9 * * 1", ["2024-05-06T09:00:00Z", "2024-05-13T09:00:00Z"]),
    ],
)
def test_day_fields_one_restricted(text: str, expected: list[str]) -> None:
    line = parse_line(text)

    assert [iso(run) for run in line.next_runs(utc("2024-04-30T12:00:00Z"), 2)] == expected


def test_last_tick_boundary() -> None:
    """A tick counts from one second after it, as fugit's previous_time does."""
    line = parse_line("0 12 * * *")

    assert line.last_tick(utc("2024-05-06T12:00:00Z") + 0.999) == utc("2024-05-05T12:00:00Z")
    assert line.last_tick(utc("2024-05-06T12:00:01Z")) == utc("2024-05-06T12:00:00Z")


def test_seconds_field_first() -> None:
    line = parse_line("*/10 * * * * *")

    assert line.with_seconds
    assert line.last_tick(utc("2024-05-06T12:00:25Z") + 0.5) == utc("2024-05-06T12:00:20Z")
    assert line.next_run(utc("2024-05-06T12:00:25Z")) == utc("2024-05-06T12:00:30Z")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@hourly", "2024-05-06T12:00:00Z"),
        ("@daily", "2024-05-06T00:00:00Z"),
        ("@daily America/New_York", "2024-05-06T04:00:00Z"),
        ("@weekly", "2024-05-05T00:00:00Z"),
        ("@monthly", "2024-05-01T00:00:00Z"),
        ("@yearly", "2024-01-01T00:00:00Z"),
    ],
)
def test_nicknames(text: str, expected: str) -> None:
    tick = parse_line(text).last_tick(utc("2024-05-06T12:30:00Z"))

    assert tick is not None
    assert iso(tick) == expected


def test_trailing_zone() -> None:
    """09:00 New York is 13:00Z in May (EDT)."""
    tick = parse_line("0 9 * * * America/New_York").last_tick(utc("2024-05-06T14:00:00Z"))

    assert tick is not None
    assert iso(tick) == "2024-05-06T13:00:00Z"


def test_default_zone_setting() -> None:
    with_default = parse_line("0 9 * * *", "America/New_York")
    with_utc = parse_line("0 9 * * *")
    explicit = parse_line("0 9 * * * UTC", "America/New_York")
    now = utc("2024-05-06T14:00:00Z")

    assert with_default.last_tick(now) == utc("2024-05-06T13:00:00Z")
    assert with_utc.last_tick(now) == utc("2024-05-06T09:00:00Z")
    assert explicit.last_tick(now) == utc("2024-05-06T09:00:00Z")


def test_seconds_line_with_zone() -> None:
    line = parse_line("30 0 9 * * * Europe/Paris")

    assert line.with_seconds
    assert line.last_tick(utc("2024-05-06T08:00:00Z")) == utc("2024-05-06T07:00:30Z")


@pytest.mark.parametrize(
    "text",
    [
        "61 * * * *",
        "* * * *",
        "every 30 minutes",
        "0 9 * * * Mars/Olympus_Mons",
        "1 2 3 4 5 6 7",
        "",
        "@reboot",
    ],
)
def test_invalid_lines_rejected(text: str) -> None:
    with pytest.raises(CronLineError) as raised:
        parse_line(text)

    assert repr(text) in str(raised.value)


def test_unknown_default_zone_rejected() -> None:
    with pytest.raises(CronLineError, match="cron_timezone"):
        parse_line("0 9 * * *", "Nowhere/City")


def test_tick_member_format() -> None:
    assert format_tick(1715007600.0) == "2024-05-06T15:00:00Z"
    assert format_tick(1714986000) == "2024-05-06T09:00:00Z"


def _reference_runs(text: str, zone: ZoneInfo, start: float, end: float) -> list[int]:
    """Scan every UTC minute of [start, end) and apply the DST rules by brute force.

    A minute fires when its wall time matches, except on the second pass of a
    repeated wall time when the line's hour field is not a wildcard. The first
    minute after a jump also fires when one of the skipped wall times matched.
    """
    expression = text.split()
    hour_wildcard = expression[1].startswith("*")
    runs: list[int] = []
    previous_wall = dt.datetime.fromtimestamp(start - 60, zone).replace(tzinfo=None)
    for moment in range(int(start), int(end), 60):
        aware = dt.datetime.fromtimestamp(moment, zone)
        wall = aware.replace(tzinfo=None)
        # fromtimestamp sets fold=1 only on the second pass of a repeated wall time.
        repeated_pass = aware.fold == 1
        fires = croniter.match(text, wall) and not (repeated_pass and not hour_wildcard)
        skipped = previous_wall + dt.timedelta(minutes=1)
        while not fires and skipped < wall:
            fires = croniter.match(text, skipped)
            skipped += dt.timedelta(minutes=1)
        if fires:
            runs.append(moment)
        previous_wall = wall
    return runs


@pytest.mark.parametrize(
    ("zone_name", "day"),
    [
        ("America/New_York", "2024-03-10"),
        ("America/New_York", "2024-11-03"),
        ("Australia/Lord_Howe", "2024-10-06"),
        ("Australia/Lord_Howe", "2024-04-07"),
    ],
)
@pytest.mark.parametrize("text", ["30 2 * * *", "0 * * * *", "*/20 1-3 * * *", "45 1 * * *"])
def test_dst_days_match_reference(zone_name: str, day: str, text: str) -> None:
    """next and previous agree with a minute-by-minute scan over a DST change day."""
    zone = ZoneInfo(zone_name)
    start = dt.datetime.fromisoformat(day).replace(tzinfo=zone).timestamp()
    end = start + 86_400
    line = parse_line(f"{text} {zone_name}")

    expected = _reference_runs(text, zone, start, end)
    forward = [run for run in line.next_runs(start - 1, 40) if run < end]
    backward = [run for run in line.previous_runs(end, 40) if run >= start]

    assert forward == expected
    assert sorted(backward) == expected
