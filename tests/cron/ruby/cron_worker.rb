# frozen_string_literal: true

# Ruby Sidekiq with sidekiq-cron 1.8 for pyqueue's cron interop tests: the
# shared interop jobs (INTEROP_JOBS_RB), then sidekiq-cron polling every
# CRON_POLL_INTERVAL seconds on average, with no schedule file of its own.
#
# sidekiq-cron reads both options when it is required, so they are set first.

require ENV.fetch("INTEROP_JOBS_RB")

Sidekiq.options[:cron_poll_interval] = Float(ENV.fetch("CRON_POLL_INTERVAL", "2"))
# A path that never exists: the test saves every cron job itself.
Sidekiq.options[:cron_schedule_file] = File.join(__dir__, "no-schedule-file.yml")

require "sidekiq-cron"
