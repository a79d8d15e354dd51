"""The faster checks in pyqueue.payload must agree with what they replaced."""

from __future__ import annotations

import random
import re

from pyqueue.payload import _ruby_spelling_differs, dumps, new_jid

# The regular expression that dumps() used before the substring checks.
REFERENCE = re.compile(r"e[+-]|\d{16}\.0")


def test_spelling_check_matches_reference() -> None:
    rng = random.Random(3)
    # Digits (one of them Arabic-Indic), the float characters and JSON punctuation.
    alphabet = '0123456789\u0663.e+-"a,{}:[] '
    texts = [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(50_000)
    ]
    texts += ["1000000000000000.0", "x123456789012345.0", "\u0663" * 16 + ".0", "a.0.0.0", "1e+20"]

    disagreements = [t for t in texts if bool(REFERENCE.search(t)) != _ruby_spelling_differs(t)]

    assert disagreements == []


def test_dumps_spells_floats_as_ruby() -> None:
    assert dumps({"a": 1e20}) == '{"a":1.0e+20}'
    assert dumps([1e15, 2.5e-7, 1.5]) == "[1.0e+15,2.5e-07,1.5]"
    assert dumps({"at": 1796421742.0123}) == '{"at":1796421742.0123}'


def test_new_jid_is_24_hex_digits() -> None:
    jids = {new_jid() for _ in range(1000)}

    assert len(jids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{24}", jid) for jid in jids)
