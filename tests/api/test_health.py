"""check_health as a library call: limits validation and report shape."""

from __future__ import annotations

import pytest
import redis

from pyqueue.api import HealthLimits, check_health
from tests.api.helpers import write_process


@pytest.mark.parametrize(
    "limits",
    [
        {"max_failure_rate": -0.1},
        {"max_failure_rate": 1.1},
        {"memory_threshold": 0.0},
        {"memory_threshold": 1.5},
        {"max_enqueued": -1},
        {"max_latency": -1.0},
        {"min_processes": -1},
    ],
)
def test_limits_out_of_range(limits: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        HealthLimits(**limits)  # type: ignore[arg-type]


def test_report_lists_enabled_checks(r: redis.Redis) -> None:
    write_process(r, "a:1:aaaaaaaaaaaa")
    report = check_health(r, HealthLimits(memory_threshold=None))
    assert report.ok
    assert [check.name for check in report.checks] == ["processes"]
    assert report.failures == ()


def test_failure_rate_without_executions(r: redis.Redis) -> None:
    write_process(r, "a:1:aaaaaaaaaaaa")
    report = check_health(r, HealthLimits(max_failure_rate=0.0))
    rate = report.checks[1]
    assert rate.ok
    assert rate.value == 0.0
    assert rate.message == "0 of 0 jobs failed today (0.0%)"


def test_latency_without_queues(r: redis.Redis) -> None:
    report = check_health(r, HealthLimits(max_latency=1.0, min_processes=0))
    assert report.ok
    assert report.checks[1].message == "no queues"
