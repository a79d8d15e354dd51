"""The data API on retries and dead jobs that real Ruby Sidekiq 6.4.1 wrote."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from pyqueue.api import DeadSet, RetrySet, SortedEntry, SortedSet
from tests.fixtures.ruby import RubyFactory, ruby_push

pytestmark = pytest.mark.ruby

PUSH_SCRIPT = """
retrying = Sidekiq::Client.push("class" => "AlwaysFailJob", "args" => [1, "one"],
                                "retry" => 3, "backtrace" => true)
dying = Sidekiq::Client.push("class" => "AlwaysFailJob", "args" => [2], "retry" => 0,
                             "backtrace" => true)
puts JSON.generate([retrying, dying])
"""

DEAD_SET_SCRIPT = """
require "sidekiq/api"
jid = __JID__
dead = Sidekiq::DeadSet.new
entry = dead.find_job(jid)
puts JSON.generate(
  size: dead.size,
  retry_size: Sidekiq::RetrySet.new.size,
  klass: entry&.klass,
  error_class: entry && entry["error_class"],
  backtrace_lines: entry ? entry.error_backtrace.size : nil
)
"""


def wait_for(
    sorted_set: SortedSet, jid: str, check: Callable[[SortedEntry], bool] = lambda _: True
) -> SortedEntry:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        entry = sorted_set.find_job(jid)
        if entry is not None and check(entry):
            return entry
        time.sleep(0.1)
    raise AssertionError(f"{jid} did not reach {sorted_set.key} within 30 s")


def ruby_dead_set(redis_url: str, jid: str) -> dict[str, Any]:
    script = DEAD_SET_SCRIPT.replace("__JID__", json.dumps(jid))
    result = json.loads(ruby_push(redis_url, script))
    assert isinstance(result, dict)
    return result


def test_ruby_retry_and_dead_entries(
    r: redis.Redis, redis_url: str, ruby_sidekiq: RubyFactory
) -> None:
    """Ruby writes a retry and a dead entry; the API reads, retries and kills them."""
    ruby_sidekiq(("default",))
    retrying_jid, dying_jid = json.loads(ruby_push(redis_url, PUSH_SCRIPT))
    retries, dead = RetrySet(r), DeadSet(r)

    retry_entry = wait_for(retries, retrying_jid)
    job = retry_entry.job
    assert job.problems == ()
    assert (job.job_class, job.display_args, job.queue) == ("AlwaysFailJob", (1, "one"), "default")
    assert job.error_class == "InteropError"
    assert job.error_message == 'boom from AlwaysFailJob args=[1,"one"]'
    assert job.retry_count == 0
    assert job.failed_at is not None and abs(job.failed_at - time.time()) < 60
    # Sidekiq 6 writes the backtrace as MIME base64, with newlines.
    assert "\n" in job.get("error_backtrace")
    assert job.error_backtrace is not None
    assert any("jobs.rb" in line for line in job.error_backtrace)

    dead_entry = wait_for(dead, dying_jid)
    assert dead_entry.job.problems == ()
    assert dead_entry.job.retry_count == 0
    assert dead_entry.job.retried_at is None
    assert dead_entry.job.error_backtrace

    # Retry the dead job: Ruby runs it again, and since retry_count went to -1
    # first, the new failure leaves it at 0 with retried_at set.
    assert dead.retry(dead_entry) is True
    rerun = wait_for(dead, dying_jid, lambda entry: entry.job.retried_at is not None)
    assert rerun.job.retry_count == 0
    assert rerun.job.error_class == "InteropError"

    # Kill the retry entry: Ruby's DeadSet must find and read it.
    assert retries.kill(retry_entry) is True
    seen = ruby_dead_set(redis_url, retrying_jid)
    assert seen == {
        "size": 2,
        "retry_size": 0,
        "klass": "AlwaysFailJob",
        "error_class": "InteropError",
        "backtrace_lines": len(job.error_backtrace),
    }
