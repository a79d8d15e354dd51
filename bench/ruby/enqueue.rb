# frozen_string_literal: true

# Time Sidekiq's client: `ruby bench/ruby/enqueue.rb single|bulk COUNT`.
# single calls BenchNoop.perform_async COUNT times; bulk sends one
# Sidekiq::Client.push_bulk of COUNT jobs. Prints the elapsed seconds.

require_relative "jobs"

mode, count = ARGV.fetch(0), Integer(ARGV.fetch(1))
# Connect before the clock starts, as the Python side does.
Sidekiq.redis(&:ping)
started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
case mode
when "single"
  count.times { BenchNoop.perform_async }
when "bulk"
  Sidekiq::Client.push_bulk("class" => BenchNoop, "args" => Array.new(count) { [] })
else
  abort "mode must be single or bulk, got #{mode}"
end
puts Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
