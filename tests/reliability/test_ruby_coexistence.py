"""Reliable fetch beside Ruby Sidekiq 6.4 on one Redis: neither side disturbs the other."""

from __future__ import annotations

import json

import pytest
import redis

from tests.fixtures.ruby import RubyFactory, ruby_push, wait_for_records
from tests.reliability import jobs
from tests.reliability.support import MARK, jid_of, job
from tests.worker.conftest import LaunchFactory, wait_for

pytestmark = pytest.mark.ruby

RUBY_VIEW = """
require "sidekiq/api"
Sidekiq::Client.push("class" => "RecordArgsJob", "args" => ["from ruby"], "queue" => "ruby")
workers = Sidekiq::Workers.new.map { |_process, _thread, work| work["payload"]["jid"] }
puts JSON.generate(
  queues: Sidekiq::Queue.all.map(&:name).sort,
  enqueued: Sidekiq::Stats.new.enqueued,
  processes: Sidekiq::ProcessSet.new.map { |process| process["identity"] }.sort,
  running_jids: workers.sort
)
"""


def test_ruby_sees_no_working_lists(
    r: redis.Redis, redis_url: str, launch: LaunchFactory, ruby_sidekiq: RubyFactory
) -> None:
    """Ruby's API lists the queues and the running job, and never a working list."""
    ruby = ruby_sidekiq(("ruby",))
    raw = job(MARK, [30], jid_of(1), queue="python")
    r.sadd("queues", "python")
    r.lpush("queue:python", raw)
    launcher = launch(queues=["python"], timeout=0.5)
    wait_for(lambda: r.sismember(jobs.STARTED, jid_of(1)))
    assert r.lrange(f"pyqueue:working:{launcher.identity}", 0, -1) == [raw]
    # One beat after the job started publishes it in the busy work hash.
    wait_for(lambda: r.hlen(f"{launcher.identity}:workers") == 1, timeout=3)

    view = json.loads(ruby_push(redis_url, RUBY_VIEW).strip().splitlines()[-1])

    assert view["queues"] == ["python", "ruby"]
    assert view["enqueued"] in (0, 1)
    assert view["processes"] == sorted([launcher.identity, ruby.identity])
    assert view["running_jids"] == [jid_of(1)]
    records = wait_for_records(r, 1, side="ruby")
    assert records[0]["args"] == ["from ruby"]
    assert not any(key.startswith("pyqueue:") for key in r.smembers("queues"))
