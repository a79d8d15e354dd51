"""Shared fixtures. Each real server lives in its own plugin under tests/fixtures."""

pytest_plugins = [
    "tests.fixtures.redis_server",
    "tests.fixtures.ruby",
    "tests.fixtures.postgres",
    "tests.fixtures.fake_sendgrid",
    "tests.fixtures.sendgrid_events",
]
