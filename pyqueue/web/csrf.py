"""CSRF protection for the dashboard's forms: a signed double-submit token.

A browser sends basic-auth credentials and cookies with any request to the
dashboard, also one that a form on another site submits. So every POST must
carry a token that only a page of the dashboard can know: the cookie contains a
random nonce, and each form contains HMAC-SHA256(secret, nonce). Another site
can neither read the cookie nor compute the HMAC without the secret, and it
cannot plant a working nonce either, because the form token must match it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from pyqueue.web.http import Request

COOKIE = "pyqueue_csrf"
FIELD = "csrf_token"
NONCE_BYTES = 32
_NONCE = re.compile(r"^[A-Za-z0-9_-]{43}$")


class CsrfGuard:
    """Issues and checks tokens with ``secret``.

    Every process that serves one dashboard must share the secret, or a
    form rendered by one process is rejected by another.
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError(f"the CSRF secret has {len(secret)} bytes; use at least 16")
        self._secret = secret

    def nonce(self, request: Request) -> tuple[str, bool]:
        """Return the request's nonce and True when it is new and must be set as a cookie."""
        current = request.cookie(COOKIE)
        if current is not None and _NONCE.match(current):
            return current, False
        return _encode(secrets.token_bytes(NONCE_BYTES)), True

    def token(self, nonce: str) -> str:
        """Return the form token that belongs to ``nonce``."""
        digest = hmac.new(self._secret, nonce.encode("ascii"), hashlib.sha256).digest()
        return _encode(digest)

    def check(self, request: Request) -> bool:
        """True when the POST carries the cookie and the form token that matches it."""
        nonce = request.cookie(COOKIE)
        sent = request.field(FIELD)
        if nonce is None or not _NONCE.match(nonce) or not sent:
            return False
        return hmac.compare_digest(self.token(nonce).encode("ascii"), sent.encode("utf-8"))

    def cookie_header(self, nonce: str, request: Request) -> tuple[str, str]:
        """Return the Set-Cookie header for ``nonce``, scoped to the dashboard's path."""
        parts = [
            f"{COOKIE}={nonce}",
            f"Path={request.base or '/'}",
            "HttpOnly",
            "SameSite=Strict",
        ]
        if request.secure:
            parts.append("Secure")
        return "Set-Cookie", "; ".join(parts)


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
