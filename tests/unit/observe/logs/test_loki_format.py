"""Loki's wire formats: push bodies parsed (or refused saying where), answers shaped."""

from __future__ import annotations

import pytest

from socle.errors import ConfigError
from socle.observe.logs.loki import (
    PushError,
    matrix,
    parse_push,
    parse_time,
    streams,
    success,
    vector,
)
from socle.observe.logs.store import NS, Entry, Row, Series


def test_times_in_loki_forms() -> None:
    assert parse_time("1700000000123456789", "t") == 1700000000123456789
    assert parse_time("1700000000.5", "t") == 1700000000 * NS + NS // 2
    assert parse_time("2023-11-14T22:13:20Z", "t") == 1700000000 * NS
    with pytest.raises(ConfigError, match="not a time"):
        parse_time("yesterday", "start")
    for far in ["9999999999999999999", "99999999999999999999", "1900-01-01T00:00:00Z"]:
        with pytest.raises(ConfigError, match="out of range"):
            parse_time(far, "t")


@pytest.mark.parametrize(
    "text", ["9999999999999999999", "99999999999999999999", "1969-12-31T23:59:59Z", "9" * 40]
)
def test_times_a_64_bit_nanosecond_cannot_hold_are_refused(text: str) -> None:
    """A push at such a time failed its whole batch inside DuckDB (a 500); a query
    answered with DuckDB's binder errors."""
    with pytest.raises(ConfigError, match="out of range"):
        parse_time(text, "values[0][0]")
    with pytest.raises(ConfigError, match="out of range"):
        parse_push({"streams": [{"stream": {"app": "a"}, "values": [[text, "x"]]}]})


def test_a_push_body_becomes_entries_with_the_trace_id_of_its_metadata() -> None:
    body = {
        "streams": [
            {
                "stream": {"app": "api", "job": "x"},
                "values": [
                    ["1700000000000000000", "one"],
                    ["1700000000000000001", "two", {"trace_id": "abc"}],
                ],
            }
        ]
    }
    assert parse_push(body) == [
        Entry(1700000000000000000, "one", {"app": "api", "job": "x"}),
        Entry(1700000000000000001, "two", {"app": "api", "job": "x", "trace_id": "abc"}),
    ]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ([], "the body must be"),
        ({"streams": {}}, "the body must be"),
        ({"streams": [1]}, "streams[0]: must be an object"),
        ({"streams": [{"stream": {"__name__": "x"}, "values": []}]}, "bad label name"),
        ({"streams": [{"stream": {"a": 1}, "values": []}]}, "streams[0].stream.a"),
        ({"streams": [{"stream": {"a": "x" * 2000}, "values": []}]}, "streams[0].stream.a"),
        ({"streams": [{"stream": {}, "values": "x"}]}, "streams[0].values"),
        ({"streams": [{"stream": {}, "values": [["1", "a"], ["2"]]}]}, "values[1]"),
        ({"streams": [{"stream": {}, "values": [["x", "a"]]}]}, "values[0][0]"),
        ({"streams": [{"stream": {}, "values": [["1", "a" * 300_000]]}]}, "longer than"),
        ({"streams": [{"stream": {"app": "socle"}, "values": []}]}, "control plane's own"),
    ],
)
def test_bad_push_bodies_are_refused_saying_where(body: object, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_push(body)
    assert where in info.value.message
    assert info.value.http_status == 400


def test_too_many_lines_in_one_push_are_refused() -> None:
    body = {"streams": [{"stream": {}, "values": [["1", "a"]] * 100_001}]}
    with pytest.raises(PushError, match="more than"):
        parse_push(body)


def test_answers_have_lokis_shapes() -> None:
    rows = [
        Row(1, 10, {"app": "a"}, None, "x"),
        Row(2, 11, {"app": "b"}, None, "y"),
        Row(3, 12, {"app": "a"}, None, "z"),
    ]
    assert success("streams", streams(rows)) == {
        "status": "success",
        "data": {
            "resultType": "streams",
            "result": [
                {"stream": {"app": "a"}, "values": [["10", "x"], ["12", "z"]]},
                {"stream": {"app": "b"}, "values": [["11", "y"]]},
            ],
            "stats": {},
        },
    }
    series = [Series({"app": "a"}, [(NS, 2.0), (2 * NS, 0.5)])]
    assert matrix(series) == [{"metric": {"app": "a"}, "values": [[1.0, "2"], [2.0, "0.5"]]}]
    assert vector(series) == [{"metric": {"app": "a"}, "value": [2.0, "0.5"]}]
