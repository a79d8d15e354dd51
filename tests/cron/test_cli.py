"""``pyqueue cron`` commands against the private Redis server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result

from pyqueue.cli import main
from pyqueue.cli.common import EXIT_FAILURE
from pyqueue.cron import CronJob, CronStore
from tests.cron.helpers import make_settings, queued

SCHEDULE = """
report:
  cron: "0 15 * * *"
  class: ReportJob
  queue: reports
tick:
  cron: "* * * * *"
  class: TickJob
  status: disabled
"""


def invoke(redis_url: str, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, ["cron", *args, "--redis-url", redis_url], input=stdin)


@pytest.fixture
def loaded(redis_url: str, tmp_path: Path) -> str:
    path = tmp_path / "schedule.yml"
    path.write_text(SCHEDULE, encoding="utf-8")
    result = invoke(redis_url, "load", str(path))
    assert result.exit_code == 0, result.output
    assert result.output.split() == ["report", "tick"]
    return redis_url


def test_list_table(loaded: str) -> None:
    result = invoke(loaded, "list")

    assert result.exit_code == 0, result.output
    header, report, tick = result.output.splitlines()
    assert header.split() == [
        "NAME",
        "STATUS",
        "CRON",
        "CLASS",
        "QUEUE",
        "LAST",
        "RUN",
        "NEXT",
        "RUN",
    ]
    assert report.split()[:2] == ["report", "enabled"]
    assert "0 15 * * *" in report
    assert "ReportJob" in report
    assert "reports" in report
    assert tick.split()[:2] == ["tick", "disabled"]


def test_list_json(loaded: str, r: redis.Redis) -> None:
    r.hset("cron_job:report", "last_enqueue_time", "2024-05-06 15:00:01 +0000")

    result = invoke(loaded, "list", "--json")

    assert result.exit_code == 0, result.output
    records = json.loads(result.output)
    assert [record["name"] for record in records] == ["report", "tick"]
    report = records[0]
    assert report["status"] == "enabled"
    assert report["cron"] == "0 15 * * *"
    assert report["class"] == "ReportJob"
    assert report["queue"] == "reports"
    assert report["last_run"] == "2024-05-06T15:00:01Z"
    assert report["next_run"].endswith("T15:00:00Z")


def test_list_empty(redis_url: str) -> None:
    result = invoke(redis_url, "list")

    assert result.exit_code == 0
    assert result.output.strip() == "no cron jobs"


def test_enable_disable(loaded: str, r: redis.Redis) -> None:
    disabled = invoke(loaded, "disable", "report")
    enabled = invoke(loaded, "enable", "tick")

    assert disabled.exit_code == 0
    assert enabled.exit_code == 0
    assert r.hget("cron_job:report", "status") == "disabled"
    assert r.hget("cron_job:tick", "status") == "enabled"


def test_run_prints_jid(loaded: str, r: redis.Redis) -> None:
    result = invoke(loaded, "run", "report")

    assert result.exit_code == 0, result.output
    [payload] = queued(r, "reports")
    assert payload["jid"] == result.output.strip()
    assert payload["class"] == "ReportJob"


def test_delete_asks_first(loaded: str, r: redis.Redis) -> None:
    declined = invoke(loaded, "delete", "report", stdin="n\n")
    exists_after_no = r.exists("cron_job:report")
    confirmed = invoke(loaded, "delete", "report", stdin="y\n")

    assert declined.exit_code == 1
    assert exists_after_no == 1
    assert confirmed.exit_code == 0
    assert r.exists("cron_job:report") == 0


def test_delete_yes(loaded: str, r: redis.Redis) -> None:
    result = invoke(loaded, "delete", "tick", "--yes")

    assert result.exit_code == 0
    assert r.smembers("cron_jobs") == {"cron_job:report"}


@pytest.mark.parametrize("command", ["enable", "disable", "run", "delete"])
def test_unknown_name_fails(redis_url: str, command: str) -> None:
    result = CliRunner().invoke(main, ["cron", command, "nosuch", "--redis-url", redis_url])

    assert result.exit_code == EXIT_FAILURE
    assert "no cron job is named 'nosuch'" in result.output


def test_load_invalid_file(redis_url: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text('bad: {cron: "61 * * * *", class: A}', encoding="utf-8")

    result = invoke(redis_url, "load", str(path))

    assert result.exit_code != 0
    assert "61 * * * *" in result.output


def test_config_selects_layout(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    config_file = tmp_path / "pyqueue.yml"
    config_file.write_text("cron_layout: v2\ncron_namespace: mail\n", encoding="utf-8")
    store = CronStore(r, make_settings(cron_layout="v2", cron_namespace="mail"))
    store.save(CronJob(name="digest", cron="0 9 * * *", klass="DigestJob"))

    with_config = invoke(redis_url, "list", "--json", "-C", str(config_file))
    without = invoke(redis_url, "list", "--json")

    assert [record["name"] for record in json.loads(with_config.output)] == ["digest"]
    assert json.loads(without.output) == []
