"""Signed Event Webhook verification: raw bytes, freshness, key rotation, key loading."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sendgrid.helpers.eventwebhook import EventWebhook

from app_jobs.signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    SignatureVerifier,
    load_public_key,
    load_public_keys,
)
from pyqueue.errors import ConfigError
from tests.fixtures.sendgrid_events import KeyPair, new_key_pair, sign

NOW = 1_714_986_200
BODY = b'[{"email":"user@example.com","event":"open","timestamp":1714986105}]\r\n'


def verifier(*keys: str, **options: float) -> SignatureVerifier:
    return SignatureVerifier(list(keys), clock=lambda: NOW, **options)


def test_verify_accepts_signed_body(webhook_keys: KeyPair) -> None:
    stamp = str(NOW)

    verifier(webhook_keys.public_b64).verify(
        sign(webhook_keys.private_key, stamp, BODY), stamp, BODY
    )


def test_verify_rejects_changed_body(webhook_keys: KeyPair) -> None:
    stamp = str(NOW)
    signature = sign(webhook_keys.private_key, stamp, BODY)

    with pytest.raises(SignatureError, match="does not match"):
        verifier(webhook_keys.public_b64).verify(signature, stamp, BODY.rstrip())


def test_verify_rejects_reencoded_json(webhook_keys: KeyPair) -> None:
    import json

    stamp = str(NOW)
    signature = sign(webhook_keys.private_key, stamp, BODY)
    reencoded = json.dumps(json.loads(BODY)).encode()

    with pytest.raises(SignatureError):
        verifier(webhook_keys.public_b64).verify(signature, stamp, reencoded)


def test_verify_rejects_changed_timestamp(webhook_keys: KeyPair) -> None:
    signature = sign(webhook_keys.private_key, str(NOW), BODY)

    with pytest.raises(SignatureError, match="does not match"):
        verifier(webhook_keys.public_b64).verify(signature, str(NOW - 1), BODY)


def test_verify_rejects_wrong_key(webhook_keys: KeyPair) -> None:
    other = new_key_pair()
    stamp = str(NOW)

    with pytest.raises(SignatureError, match="does not match"):
        verifier(webhook_keys.public_b64).verify(sign(other.private_key, stamp, BODY), stamp, BODY)


def test_verify_tries_every_key_for_rotation(webhook_keys: KeyPair) -> None:
    new = new_key_pair()
    stamp = str(NOW)
    both = verifier(webhook_keys.public_b64, new.public_b64)

    both.verify(sign(webhook_keys.private_key, stamp, BODY), stamp, BODY)
    both.verify(sign(new.private_key, stamp, BODY), stamp, BODY)


@pytest.mark.parametrize(
    ("signature", "timestamp", "message"),
    [
        (None, str(NOW), "missing"),
        ("c2ln", None, "missing"),
        ("", str(NOW), "missing"),
        ("c2ln", "17149862OO", "not a number"),
        ("c2ln", "-1714986200", "not a number"),
        ("c2ln", " 1714986200", "not a number"),
        ("c2ln", "\u00b9\u00b2", "not a number"),
        ("c2ln", "1" * 21, "too long"),
        ("not base64!", str(NOW), "not valid base64"),
        ("é", str(NOW), "not valid base64"),
        ("A" * 300, str(NOW), "too long"),
        ("c2lnbmF0dXJl", str(NOW), "does not match"),
    ],
)
def test_verify_rejects_malformed_headers(
    webhook_keys: KeyPair, signature: str | None, timestamp: str | None, message: str
) -> None:
    with pytest.raises(SignatureError, match=message):
        verifier(webhook_keys.public_b64).verify(signature, timestamp, BODY)


def test_verify_freshness_window(webhook_keys: KeyPair) -> None:
    check = verifier(webhook_keys.public_b64, max_age=90_000, max_future=300)

    for stamp in (NOW - 90_000, NOW, NOW + 300):
        check.verify(sign(webhook_keys.private_key, str(stamp), BODY), str(stamp), BODY)
    stale = str(NOW - 90_001)
    with pytest.raises(SignatureError, match="too old"):
        check.verify(sign(webhook_keys.private_key, stale, BODY), stale, BODY)
    future = str(NOW + 301)
    with pytest.raises(SignatureError, match="in the future"):
        check.verify(sign(webhook_keys.private_key, future, BODY), future, BODY)


def test_verify_without_keys_rejects(webhook_keys: KeyPair) -> None:
    stamp = str(NOW)

    with pytest.raises(SignatureError, match="no webhook public key"):
        verifier().verify(sign(webhook_keys.private_key, stamp, BODY), stamp, BODY)


def test_verify_headers_case_insensitive(webhook_keys: KeyPair) -> None:
    stamp = str(NOW)
    headers = {
        SIGNATURE_HEADER.lower(): sign(webhook_keys.private_key, stamp, BODY),
        TIMESTAMP_HEADER.upper(): stamp,
    }

    verifier(webhook_keys.public_b64).verify_headers(headers, BODY)


def test_sendgrid_helper_accepts_our_signatures(webhook_keys: KeyPair) -> None:
    """SendGrid's own EventWebhook helper agrees with the fixture's signing."""
    stamp = str(NOW)
    helper = EventWebhook(webhook_keys.public_b64)
    signature = sign(webhook_keys.private_key, stamp, BODY)

    assert helper.verify_signature(BODY.decode(), signature, stamp) is True
    assert helper.verify_signature(BODY.decode() + " ", signature, stamp) is False


def test_verifier_agrees_with_sendgrid_helper(webhook_keys: KeyPair) -> None:
    """On matching and mismatching inputs both verifiers give the same verdict."""
    other = new_key_pair()
    helper = EventWebhook(webhook_keys.public_b64)
    check = verifier(webhook_keys.public_b64, max_age=10**10, max_future=10**10)
    bodies = [BODY, b"[]", '[{"reason":"caf\u00e9 \u2603"}]'.encode(), b"[{}]\n"]
    for body in bodies:
        for stamp in ("1714986200", "1", "0001714986200"):
            for key in (webhook_keys.private_key, other.private_key):
                signature = sign(key, stamp, body)
                expected = helper.verify_signature(body.decode(), signature, stamp)
                try:
                    check.verify(signature, stamp, body)
                    ours = True
                except SignatureError:
                    ours = False
                assert ours is expected, (body, stamp)


def test_load_public_key_strips_whitespace(webhook_keys: KeyPair) -> None:
    text = webhook_keys.public_b64
    wrapped = "  " + "\n".join(text[i : i + 40] for i in range(0, len(text), 40)) + "\n"

    key = load_public_key(wrapped)

    assert key.public_numbers() == load_public_key(text).public_numbers()


def test_load_public_key_accepts_pem(webhook_keys: KeyPair) -> None:
    pem = (
        webhook_keys.private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )

    key = load_public_key(pem)

    assert key.public_numbers() == webhook_keys.private_key.public_key().public_numbers()


def test_load_public_keys_skips_blank_entries(webhook_keys: KeyPair) -> None:
    assert len(load_public_keys(["", "  ", webhook_keys.public_b64])) == 1


@pytest.mark.parametrize("text", ["not-a-key", "c2hvcnQ=", "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"])
def test_load_public_key_rejects_invalid(text: str) -> None:
    with pytest.raises(ConfigError, match="APP_JOBS_WEBHOOK_PUBLIC_KEYS"):
        load_public_key(text)


def test_load_public_key_rejects_other_curve() -> None:
    der = (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )

    with pytest.raises(ConfigError, match="not an ECDSA P-256 key"):
        load_public_key(base64.b64encode(der).decode())
