"""The interop set that both sides push, and an exact comparison of JSON values.

Exact means: same type (an int never equals a float here, and True is not
1), the same ``repr`` for floats (so -0.0 stays -0.0), dicts with the same
keys in the same order, and lists of the same length.
"""

from __future__ import annotations

from typing import Any

# One job per entry.
SINGLE_ARGS: list[list[Any]] = [
    [2**63 - 1, -(2**63), 2**63, 2**64],
    [12345678901234567890, -98765432109876543210, 10**19],
    [2**100, -(2**100), 0, -1],
    [-0.0, 0.0, 1e20, -1e20, 1e-7, 0.1, 0.5, 1.0, -2.5],
    [1e-5, 2.5e-5, 1e16, 1.7976931348623157e308, 5e-324, 123456789012345.6],
    [0.0011285007931292057, 3.141592653589793, 2.220446049250313e-16],
    # Ruby switches to exponent form (1.0e+15) one decade earlier than Python's repr.
    [1e15, -1e15, 1.5e15, 1234567890123456.0, 9999999999999998.0, 999999999999999.9],
    ["naïve café 🎉", "emoji 👩‍👩‍👧 and 🇩🇪", "\u2028 line separator \u2029"],
    ["line\nbreak\ttab", "", 'quote " backslash \\ slash /', "\x00\x01\x1f\x7f"],
    ["Ünïcödé ключ 中文 عربى", "\ufeff bom", "\U0010ffff"],
    [{"a": [1, {"b": None}], "c": {"d": [[], {}]}, "é🎉": True}],
    [{"nested": {"deeper": {"deepest": [1, 2.0, "3", None, False]}}}],
    [None],
    [[]],
    [{}],
    [],
    [True, False, None, [True], {"false": False}],
    [[1, [2, [3, [4, [5]]]]], {"list": [{"x": 2**70}, {"y": -0.0}]}],
]

BULK_ARGS: list[list[Any]] = [[index, index + 0.5, f"bulk-{index}"] for index in range(1000)]

SCHEDULED_ARGS: list[Any] = ["scheduled", 2**64, 0.1, -0.0]

# Values from a case where a 17-digit float failed an argument check after a
# JSON round trip, with other unusual but valid arguments.
ACCEPTED_EDGE_ARGS: list[Any] = [
    0.0011285007931292057,
    1e-07,
    1.7976931348623157e308,
    -0.0,
    None,
    {"a": [1, {"b": None}]},
    "naïve café 🎉",
    "line\nbreak\ttab",
    "",
    [],
]


def differences(expected: Any, actual: Any, path: str = "args") -> list[str]:
    """Return one line per place where ``actual`` is not exactly ``expected``."""
    if type(expected) is not type(actual):
        return [
            f"{path}: expected {type(expected).__name__} {expected!r}, "
            f"got {type(actual).__name__} {actual!r}"
        ]
    if isinstance(expected, float):
        return [] if repr(expected) == repr(actual) else [f"{path}: {expected!r} != {actual!r}"]
    if isinstance(expected, list):
        if len(expected) != len(actual):
            return [f"{path}: expected {len(expected)} items, got {len(actual)}"]
        found: list[str] = []
        for index, (left, right) in enumerate(zip(expected, actual, strict=True)):
            found += differences(left, right, f"{path}[{index}]")
        return found
    if isinstance(expected, dict):
        if list(expected) != list(actual):
            return [f"{path}: keys {list(expected)!r} != {list(actual)!r}"]
        found = []
        for key in expected:
            found += differences(expected[key], actual[key], f"{path}[{key!r}]")
        return found
    return [] if expected == actual else [f"{path}: {expected!r} != {actual!r}"]


def compare_runs(expected: dict[str, list[Any]], records: list[dict[str, Any]]) -> list[str]:
    """Compare the args each jid ran with (``records``) to what was pushed (``expected``).

    Returns one line per missing, unexpected, doubled or different job.
    """
    problems: list[str] = []
    seen: set[str] = set()
    for record in records:
        jid = record["jid"]
        if jid in seen:
            problems.append(f"{jid}: ran more than once")
            continue
        seen.add(jid)
        if jid not in expected:
            problems.append(f"{jid}: ran but was not pushed (args {record['args']!r})")
            continue
        problems += [f"{jid}: {line}" for line in differences(expected[jid], record["args"])]
    missing = [jid for jid in expected if jid not in seen]
    problems += [f"{jid}: never ran (args {expected[jid]!r})" for jid in missing]
    return problems
