"""last_enqueue_time in every form Ruby writes it, and the forms pyqueue writes."""

from __future__ import annotations

import pytest

from pyqueue.cron_schedule import format_ruby_time, parse_ruby_time
from tests.cron.helpers import utc

NINE = utc("2024-05-05T09:00:00Z")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-05 09:00:00 +0000", NINE),
        ("2024-05-05T09:00:00Z", NINE),
        ("2024-05-05 09:00:00 UTC", NINE),
        ("2024-05-05 09:00:00.123456 +0000", NINE + 0.123456),
        ("2024-05-05T09:00:00.5Z", NINE + 0.5),
        ("2024-05-05T11:00:00+02:00", NINE),
        ("2024-05-05 04:00:00 -0500", NINE),
        ("2024-05-05 09:00:00", NINE),
        ("  2024-05-05 09:00:00 +0000  ", NINE),
    ],
)
def test_ruby_time_formats_read(text: str, expected: float) -> None:
    assert parse_ruby_time(text) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("text", ["", "   ", "garbage", None, "2024-13-45 99:00:00 +0000"])
def test_unreadable_times_none(text: str | None) -> None:
    assert parse_ruby_time(text) is None


def test_ruby_time_written() -> None:
    assert format_ruby_time(NINE + 5.7) == "2024-05-05 09:00:05 +0000"
    assert parse_ruby_time(format_ruby_time(NINE)) == NINE
