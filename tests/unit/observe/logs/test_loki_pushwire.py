"""Loki push bodies as agents send them. No Promtail or Grafana agent installs here (Debian
has none, PyPI's Loki clients send JSON), so the protobuf is written by a small encoder of
the wire format (``tests/support/loki_wire.py``), independent from the decoder under test,
and compressed with snappy's block format like Promtail does."""

from __future__ import annotations

import gzip
import json

import cramjam
import pytest

from socle.observe.logs import loki, pushwire
from socle.observe.logs.loki import PushError, UnsupportedPush
from tests.support.loki_wire import entry as _entry
from tests.support.loki_wire import field as _field
from tests.support.loki_wire import push as _push
from tests.support.loki_wire import stream as _stream
from tests.support.loki_wire import varint as _varint


def test_a_promtail_push_decodes_to_the_json_shape_and_entries() -> None:
    ns = 1_764_000_000_123_456_789
    body = _push(
        _stream(
            '{app="api", env="prod", path="/a\\"b\\\\c\\n"}',
            [_entry(ns, "GET /x 500", {"trace_id": "abc123"}), _entry(ns + 1, "ünïcode ✓")],
            hash_=12345,
        ),
        _stream('{app="web"}', [_entry(ns + 2, "hello")]),
    )
    shape = pushwire.decode(body, "application/x-protobuf", "")
    assert shape == {
        "streams": [
            {
                "stream": {"app": "api", "env": "prod", "path": '/a"b\\c\n'},
                "values": [
                    [str(ns), "GET /x 500", {"trace_id": "abc123"}],
                    [str(ns + 1), "ünïcode ✓"],
                ],
            },
            {"stream": {"app": "web"}, "values": [[str(ns + 2), "hello"]]},
        ]
    }
    entries = loki.parse_push(shape)
    assert [(e.ts, e.line, e.labels.get("trace_id")) for e in entries] == [
        (ns, "GET /x 500", "abc123"),
        (ns + 1, "ünïcode ✓", None),
        (ns + 2, "hello", None),
    ]


def test_json_plain_and_gzip_decode_the_same() -> None:
    body = {"streams": [{"stream": {"app": "a"}, "values": [["1700000000000000000", "x"]]}]}
    raw = json.dumps(body).encode()
    assert pushwire.decode(raw, "application/json; charset=utf-8", "") == body
    assert pushwire.decode(gzip.compress(raw), "application/json", "gzip") == body


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("{}", {}),
        ('{ a = "1" ,b="x,y}" }', {"a": "1", "b": "x,y}"}),
        ('{a="\\x41\\u00e9\\t"}', {"a": "A\u00e9\t"}),
    ],
)
def test_label_strings(text: str, labels: dict[str, str]) -> None:
    assert pushwire.parse_labels(text) == labels


@pytest.mark.parametrize(
    "text",
    [
        "",
        "app=x",
        '{app="x"',
        '{app="x",}x',
        '{1a="x"}',
        '{a="x" b="y"}',
        '{a="\\q"}',
        '{a="1",a="2"}',
    ],
)
def test_bad_label_strings_are_refused(text: str) -> None:
    with pytest.raises(PushError):
        pushwire.parse_labels(text)


def test_hostile_bodies_are_refused_with_a_reason() -> None:
    def reason(raw: bytes, kind: str = "application/x-protobuf", enc: str = "") -> str:
        with pytest.raises(PushError) as caught:
            pushwire.decode(raw, kind, enc)
        return caught.value.message

    assert "snappy" in reason(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")
    assert "snappy" in reason(b"\x10\x00\x01")  # claims 16 bytes, holds 2
    # A header announcing 1 GiB: refused from the header, nothing inflated.
    assert "decompresses to 1073741824 bytes" in reason(_varint(1 << 30) + b"\x00" * 16)
    assert "more than" in reason(_varint(pushwire.MAX_DECOMPRESSED + 1) + b"\x00" * 16)
    assert "PushRequest" in reason(bytes(cramjam.snappy.compress_raw(b"\x0a\xff\xff\xff\x0f")))
    assert "label set" in reason(_push(_stream("app=x", [_entry(10**18, "l")])))
    assert "no timestamp" in reason(_push(_stream('{a="b"}', [_field(2, b"line")])))
    many = _push(_stream('{a="b"}', [_entry(10**18, "")] * (loki.MAX_ENTRIES + 1)))
    assert "more than" in reason(many)
    assert "gzip" in reason(b"not gzip", "application/json", "gzip")
    bomb = gzip.compress(b"[" * (pushwire.MAX_DECOMPRESSED + 10))
    assert "more than" in reason(bomb, "application/json", "gzip")
    assert "truncated" in reason(gzip.compress(b"{}")[:-12], "application/json", "gzip")
    assert "not JSON" in reason(b"\x00", "application/json")
    with pytest.raises(UnsupportedPush):
        pushwire.decode(b"{}", "text/plain", "")
    with pytest.raises(UnsupportedPush):
        pushwire.decode(b"{}", "application/json", "br")


def test_protobuf_pushes_meet_the_json_checks() -> None:
    # Through the same parse_push: the reserved app name, bad label names, long lines.
    for labels in ['{app="socle"}', '{__name__="x"}']:
        with pytest.raises(PushError):
            loki.parse_push(
                pushwire.decode(
                    _push(_stream(labels, [_entry(10**18, "l")])), pushwire.PROTOBUF, ""
                )
            )
    long = _push(_stream('{app="a"}', [_entry(10**18, "x" * (loki.MAX_LINE + 1))]))
    with pytest.raises(PushError, match="longer"):
        loki.parse_push(pushwire.decode(long, pushwire.PROTOBUF, ""))
