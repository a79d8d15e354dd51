"""The operators' web dashboard: a WSGI application over the data API.

Mount it in any WSGI host, or serve it alone with ``pyqueue web``::

    from pyqueue.web import create_app
    dashboard = create_app("redis://localhost:6379/0", username="ops", password="...")

It renders HTML on the server, reads and acts through pyqueue.api and
pyqueue.cron_store and contains no business logic of its own. See
docs/dashboard.md.
"""

from __future__ import annotations

from pyqueue.web.app import Dashboard, Options, create_app

__all__ = ["Dashboard", "Options", "create_app"]
