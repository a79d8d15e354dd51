# frozen_string_literal: true

# Ruby Sidekiq side of the benchmark, loaded with `sidekiq -r bench/ruby/jobs.rb`
# and by bench/ruby/enqueue.rb. The classes match bench/jobs.py: BenchNoop does
# nothing, BenchMark stores the time it started under the key in its argument,
# and BenchLatency appends its enqueue-to-start delay in seconds to a list.
#
# Environment: REDIS_URL, the benchmark's private server.

require "sidekiq"

# redis-rb 4.8 prints a deprecation warning on every pipelined call otherwise.
Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)

Sidekiq.configure_server do |config|
  config.redis = { url: ENV.fetch("REDIS_URL") }
end

Sidekiq.configure_client do |config|
  config.redis = { url: ENV.fetch("REDIS_URL") }
end

class BenchNoop
  include Sidekiq::Worker

  def perform; end
end

class BenchMark
  include Sidekiq::Worker

  def perform(key)
    Sidekiq.redis { |conn| conn.set(key, Time.now.to_f.to_s) }
  end
end

class BenchLatency
  include Sidekiq::Worker

  def perform(enqueued)
    delay = Time.now.to_f - enqueued
    Sidekiq.redis { |conn| conn.rpush("bench:latency", delay.to_s) }
  end
end
