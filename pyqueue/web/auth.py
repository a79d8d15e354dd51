"""Access control of the dashboard: HTTP basic auth, a callable of the host app, or both.

A host app that has its own login passes ``auth``, a callable that gets the
WSGI environ and returns True to let the request in. ``pyqueue web`` uses basic
auth with the username and password from its flags or environment.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable
from typing import Any

AuthCallable = Callable[[dict[str, Any]], bool]

REALM = "pyqueue"


class Access:
    """Decides for each request whether it may go on; see ``denied``."""

    def __init__(
        self,
        auth: AuthCallable | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError(
                "basic auth needs both a username and a password; pass both or neither"
            )
        if username is not None and (not username or not password):
            raise ValueError("basic auth needs a non-empty username and password")
        if username is not None and ":" in username:
            raise ValueError(f"the username {username!r} contains ':', which basic auth forbids")
        self.auth = auth
        self.credentials = None if username is None or password is None else (username, password)

    @property
    def open(self) -> bool:
        """True when neither basic auth nor a callable guards the dashboard."""
        return self.auth is None and self.credentials is None

    def denied(self, environ: dict[str, Any]) -> int | None:
        """Return None to let the request in, else 401 (ask for credentials) or 403."""
        if self.credentials is not None and not self._basic_ok(environ):
            return 401
        if self.auth is not None and not self.auth(environ):
            return 403
        return None

    @staticmethod
    def challenge() -> tuple[str, str]:
        return "WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'

    def _basic_ok(self, environ: dict[str, Any]) -> bool:
        assert self.credentials is not None
        sent = read_basic(str(environ.get("HTTP_AUTHORIZATION", "")))
        if sent is None:
            return False
        username, password = self.credentials
        # Compare both parts in constant time, and always both, so timing reveals neither.
        user_ok = hmac.compare_digest(sent[0].encode(), username.encode())
        password_ok = hmac.compare_digest(sent[1].encode(), password.encode())
        return user_ok and password_ok


def read_basic(header: str) -> tuple[str, str] | None:
    """Return (username, password) from an Authorization header, or None if it is not basic."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    return (username, password) if colon else None
