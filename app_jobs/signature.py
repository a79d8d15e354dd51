"""Verification of SendGrid's Signed Event Webhook, run on the raw request body.

SendGrid signs ``timestamp_header_bytes + raw_body`` with ECDSA on P-256 and
SHA-256 and sends the DER signature base64-encoded. The webhook receiver calls
``SignatureVerifier.verify`` before it parses any JSON: verifying a re-encoded
body fails, because whitespace, key order and escaping change the bytes.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Iterable, Mapping

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pyqueue.errors import ConfigError

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

# SendGrid retries a failed post for up to 24 h after the event. It is not
# documented whether a retry is signed again with a new timestamp, so the
# default maximum age covers the whole retry window plus an hour of margin.
# Replays inside the window are harmless because events are de-duplicated.
DEFAULT_MAX_AGE = 25 * 3600
DEFAULT_MAX_FUTURE = 300

# Unix seconds need 11 digits until the year 5138; the bound leaves room for zero
# padding and keeps int() away from huge digit strings.
_MAX_TIMESTAMP_DIGITS = 20
# A DER P-256 signature is at most 72 bytes (96 base64 characters).
_MAX_SIGNATURE_CHARS = 200

_ALGORITHM = ec.ECDSA(hashes.SHA256())


class SignatureError(Exception):
    """Raised when a post's signature headers are missing, malformed, stale or do not verify.

    ``reason`` is a short fixed phrase that is safe to log and to return to the client.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """Load one P-256 public key from base64 DER, as SendGrid shows it, or from PEM.

    Whitespace and line breaks anywhere in ``text`` are removed first, because
    keys pasted into environment variables often carry them. Raises ConfigError.
    """
    compact = "".join(text.split())
    try:
        if compact.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(_rewrap_pem(compact))
        else:
            key = serialization.load_der_public_key(base64.b64decode(compact, validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            f"webhook public key {_key_hint(compact)} cannot be loaded ({exc}); set "
            "APP_JOBS_WEBHOOK_PUBLIC_KEYS to the base64 key that SendGrid shows under "
            "Mail Settings > Signed Event Webhook"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ConfigError(
            f"webhook public key {_key_hint(compact)} is not an ECDSA P-256 key; "
            "SendGrid signs event webhooks with P-256, so copy its key again"
        )
    return key


def load_public_keys(texts: Iterable[str]) -> list[ec.EllipticCurvePublicKey]:
    """Load every non-blank key of ``texts``; raise ConfigError on the first invalid one."""
    return [load_public_key(text) for text in texts if text.strip()]


def _rewrap_pem(compact: str) -> bytes:
    # Removing whitespace also joined the armor lines to the base64 body; put
    # the line breaks back so that the PEM loader accepts it.
    body = compact.replace("-----BEGINPUBLICKEY-----", "").replace("-----ENDPUBLICKEY-----", "")
    return f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n".encode()


def _key_hint(compact: str) -> str:
    # Public keys are not secret, but a short tail is enough to tell which one is wrong.
    return f"ending in ...{compact[-8:]!r}" if len(compact) > 8 else repr(compact)


class SignatureVerifier:
    """Verifier of a post's two signature headers against one or more public keys.

    Several keys are accepted so that a key can be rotated without losing
    posts, and so that several SendGrid webhooks (each with its own key) can
    post to one receiver. ``max_age`` and ``max_future`` are in seconds;
    ``clock`` returns the current Unix time and is injectable for tests.
    """

    def __init__(
        self,
        public_keys: Iterable[ec.EllipticCurvePublicKey | str],
        *,
        max_age: float = DEFAULT_MAX_AGE,
        max_future: float = DEFAULT_MAX_FUTURE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.public_keys = [
            load_public_key(key) if isinstance(key, str) else key for key in public_keys
        ]
        self.max_age = max_age
        self.max_future = max_future
        self.clock = clock

    def verify_headers(self, headers: Mapping[str, str], body: bytes) -> None:
        """Verify ``body`` with the signature headers found case-insensitively in ``headers``."""
        lowered = {name.lower(): value for name, value in headers.items()}
        self.verify(
            lowered.get(SIGNATURE_HEADER.lower()), lowered.get(TIMESTAMP_HEADER.lower()), body
        )

    def verify(self, signature: str | None, timestamp: str | None, body: bytes) -> None:
        """Raise SignatureError unless ``signature`` signs ``timestamp + body`` and is fresh."""
        if not self.public_keys:
            raise SignatureError("no webhook public key is configured")
        if not signature or not timestamp:
            raise SignatureError("signature or timestamp header missing")
        self._check_timestamp(timestamp)
        der = _decode_signature(signature)
        message = timestamp.encode("ascii") + body
        for key in self.public_keys:
            try:
                key.verify(der, message, _ALGORITHM)
                return
            except InvalidSignature:
                continue
        raise SignatureError("signature does not match any configured public key")

    def _check_timestamp(self, timestamp: str) -> None:
        # str.isdigit accepts non-ASCII digits such as "²", which int() rejects.
        if not (timestamp.isascii() and timestamp.isdigit()):
            raise SignatureError("timestamp header is not a number of seconds")
        if len(timestamp) > _MAX_TIMESTAMP_DIGITS:
            raise SignatureError("timestamp header is too long")
        age = self.clock() - int(timestamp)
        if age > self.max_age:
            raise SignatureError("timestamp is too old")
        if -age > self.max_future:
            raise SignatureError("timestamp is in the future")


def _decode_signature(signature: str) -> bytes:
    if len(signature) > _MAX_SIGNATURE_CHARS:
        raise SignatureError("signature header is too long")
    try:
        return base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("signature header is not valid base64") from exc
