"""The exact comparison used by the interop tests."""

from __future__ import annotations

from tests.interop.dataset import compare_runs, differences


def test_differences_by_type_and_repr() -> None:
    assert differences(1, 1) == []
    assert differences([-0.0, 2**100], [-0.0, 2**100]) == []
    assert differences(1, 1.0) != []
    assert differences(True, 1) != []
    assert differences(-0.0, 0.0) != []
    assert differences(0.1, 1 / 10) == []
    assert differences(0.1, 0.10000000000000002) != []


def test_differences_in_containers() -> None:
    assert differences({"a": 1, "b": 2}, {"b": 2, "a": 1}) != []
    assert differences([1, 2], [1]) == ["args: expected 2 items, got 1"]
    assert differences({"a": [1, {"b": None}]}, {"a": [1, {"b": 0}]}) == [
        "args['a'][1]['b']: expected NoneType None, got int 0"
    ]


def test_compare_runs_reports_each_problem() -> None:
    expected = {"j1": [1], "j2": [2], "j3": [3.0]}
    records = [
        {"jid": "j1", "args": [1]},
        {"jid": "j1", "args": [1]},
        {"jid": "j3", "args": [3]},
        {"jid": "j9", "args": []},
    ]
    problems = compare_runs(expected, records)
    assert problems == [
        "j1: ran more than once",
        "j3: args[0]: expected float 3.0, got int 3",
        "j9: ran but was not pushed (args [])",
        "j2: never ran (args [2])",
    ]
