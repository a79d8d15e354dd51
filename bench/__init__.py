"""The benchmark of pyqueue beside Ruby Sidekiq and Python job queues; run ``python -m bench``."""
