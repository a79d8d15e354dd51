"""Fixtures of the dashboard tests: an app on the private Redis and a WSGI client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from pyqueue.config import Settings
from pyqueue.web import Dashboard, create_app
from tests.web import demo
from tests.web.client import Client

AppFactory = Callable[..., Dashboard]


@pytest.fixture
def make_app(redis_url: str) -> Iterator[AppFactory]:
    """Build dashboards on the private Redis with the demo clock; close their pools after."""
    apps: list[Dashboard] = []

    def build(**options: Any) -> Dashboard:
        options.setdefault("clock", lambda: demo.NOW)
        # Killing a job trims dead entries older than the timeout by the wall clock, and
        # the demo data is dated 2024, so the tests keep it for twenty years.
        options.setdefault("settings", Settings(dead_timeout_in_seconds=20 * 365 * 86_400))
        app = create_app(redis_url, **options)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.redis.close()
        app.redis.connection_pool.disconnect()


@pytest.fixture
def seeded(r: redis.Redis) -> redis.Redis:
    """The private Redis with the demo data, bad entries included."""
    demo.seed(r)
    return r


@pytest.fixture
def client(make_app: AppFactory, seeded: redis.Redis) -> Client:
    return Client(make_app())
