"""Loki push bodies as real agents send them: protobuf compressed with snappy (Promtail,
Grafana Agent/Alloy, the Docker driver) and JSON, plain or gzip-compressed.

A protobuf push is Loki's ``logproto.PushRequest``; only the fields Socle reads are
declared, through protobuf's descriptor API (no generated code, no ``.proto`` compiler)::

    PushRequest    { repeated Stream streams = 1; }
    Stream         { string labels = 1; repeated Entry entries = 2; uint64 hash = 3; }
    Entry          { Timestamp timestamp = 1; string line = 2;
                     repeated LabelPair structuredMetadata = 3; }
    LabelPair      { string name = 1; string value = 2; }
    Timestamp      { int64 seconds = 1; int32 nanos = 2; }   (google.protobuf's, same wire)

Field numbers follow Loki's ``pkg/push/push.proto``; unknown fields are skipped, as
protobuf does. The stream's labels travel as one string in Prometheus' form
(``{app="api", env="prod"}``). The body is snappy's *block* format (not the framed one).

Every decoded push becomes the JSON push shape and goes through :func:`loki.parse_push`,
so both formats meet the same checks. Hostile bodies: the decompressed size is read from
snappy's header (or bounded while inflating gzip) and refused past
:data:`MAX_DECOMPRESSED` before any memory is spent on it; bad snappy, bad gzip, bad
protobuf and bad label strings are :class:`loki.PushError` (HTTP 400) naming the reason.
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from typing import Any

from socle.observe.logs.loki import MAX_ENTRIES, MAX_LABELS, PushError, UnsupportedPush

MAX_DECOMPRESSED = 32 * 1024 * 1024
"""Largest push once decompressed (a snappy or gzip body can expand ~20x and far more).
Promtail and Grafana's agents send batches of 1 MiB by default."""

_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|\}$)', re.S)
_ESCAPE = re.compile(r"\\(?:([nrt\"\\'abfv])|x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|(.))", re.S)
_SIMPLE = {
    "n": "\n",
    "r": "\r",
    "t": "\t",
    '"': '"',
    "\\": "\\",
    "'": "'",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
}
PROTOBUF = "application/x-protobuf"


def _unescape(text: str, where: str) -> str:
    def one(match: re.Match[str]) -> str:
        simple, hex2, hex4, bad = match.groups()
        if simple:
            return _SIMPLE[simple]
        if hex2 or hex4:
            return chr(int(hex2 or hex4, 16))
        raise PushError(f"{where}: bad escape \\{bad!s}")

    return _ESCAPE.sub(one, text)


def parse_labels(text: str, where: str = "push: labels") -> dict[str, str]:
    """``{a="1", b="2"}`` (Prometheus' label string, Go-quoted values) as a dict."""
    body = text.strip()
    if not body.startswith("{"):
        raise PushError(f'{where}: {text[:60]!r} is not a label set like {{app="api"}}')
    labels: dict[str, str] = {}
    pos = 1
    if body[1:].strip() == "}":
        return labels
    while pos < len(body):
        match = _LABEL.match(body, pos)
        if match is None:
            raise PushError(f'{where}: {text[:60]!r} is not a label set like {{app="api"}}')
        name, value, _ = match.groups()
        if name in labels:
            raise PushError(f"{where}: label {name!r} twice")
        labels[name] = _unescape(value, where)
        if len(labels) > MAX_LABELS:
            raise PushError(f"{where}: more than {MAX_LABELS} labels")
        pos = match.end()
    if not body.endswith("}") or pos != len(body):
        raise PushError(f'{where}: {text[:60]!r} is not a label set like {{app="api"}}')
    return labels


@functools.cache
def _push_request() -> Any:
    """The ``PushRequest`` message class, built once from a hand-written descriptor in a
    private pool (so it can never clash with another ``logproto`` loaded in the process)."""
    from google.protobuf import (  # type: ignore[import-untyped]
        descriptor_pb2,
        descriptor_pool,
        message_factory,
    )

    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="socle/loki_push.proto", package="socle.logproto", syntax="proto3"
    )

    def message(name: str, fields: list[tuple[str, int, int, int, str]]) -> None:
        msg = file.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            field = msg.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name

    one, many = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    message(
        "Timestamp", [("seconds", 1, f.TYPE_INT64, one, ""), ("nanos", 2, f.TYPE_INT32, one, "")]
    )
    message(
        "LabelPair", [("name", 1, f.TYPE_STRING, one, ""), ("value", 2, f.TYPE_STRING, one, "")]
    )
    message(
        "Entry",
        [
            ("timestamp", 1, f.TYPE_MESSAGE, one, ".socle.logproto.Timestamp"),
            ("line", 2, f.TYPE_STRING, one, ""),
            ("structuredMetadata", 3, f.TYPE_MESSAGE, many, ".socle.logproto.LabelPair"),
        ],
    )
    message(
        "Stream",
        [
            ("labels", 1, f.TYPE_STRING, one, ""),
            ("entries", 2, f.TYPE_MESSAGE, many, ".socle.logproto.Entry"),
            ("hash", 3, f.TYPE_UINT64, one, ""),
        ],
    )
    message("PushRequest", [("streams", 1, f.TYPE_MESSAGE, many, ".socle.logproto.Stream")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("socle.logproto.PushRequest"))


def unsnappy(raw: bytes) -> bytes:
    """A snappy block, refused past :data:`MAX_DECOMPRESSED` from its header alone."""
    try:
        import cramjam
    except ImportError:  # an optional dependency: say what to install, or what to send
        raise UnsupportedPush(
            "push: protobuf+snappy bodies need the snappy codec (Python package cramjam)",
            hint="install cramjam, or send Loki's JSON push format (application/json)",
        ) from None
    try:
        size = cramjam.snappy.decompress_raw_len(raw)
    except Exception:  # cramjam raises its own DecompressionError or ValueError
        raise PushError("push: the body is not snappy-compressed (block format)") from None
    if size > MAX_DECOMPRESSED:
        raise PushError(
            f"push: the body decompresses to {size} bytes, more than {MAX_DECOMPRESSED}",
            hint="send smaller batches (Promtail's client.batchsize)",
        )
    try:
        return bytes(cramjam.snappy.decompress_raw(raw))
    except Exception:
        raise PushError("push: the body is not valid snappy (block format)") from None


def ungzip(raw: bytes) -> bytes:
    """A gzip (or zlib) body, inflated at most :data:`MAX_DECOMPRESSED` bytes."""
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, detected
    try:
        out = inflater.decompress(raw, MAX_DECOMPRESSED)
    except zlib.error:
        raise PushError("push: the body is not valid gzip") from None
    if inflater.unconsumed_tail:
        raise PushError(
            f"push: the body decompresses to more than {MAX_DECOMPRESSED} bytes",
            hint="send smaller batches",
        )
    if not inflater.eof:
        raise PushError("push: the gzip body is truncated")
    return out


def decode_protobuf(raw: bytes) -> dict[str, Any]:
    """A snappy-compressed ``PushRequest`` as the JSON push shape (``{"streams": [...]}``)."""
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

    data = unsnappy(raw)
    request = _push_request()()
    try:
        request.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError):
        raise PushError("push: the body is not a Loki PushRequest (protobuf)") from None
    # Counted before anything is built from them (the JSON path checks while it builds).
    if sum(len(stream.entries) for stream in request.streams) > MAX_ENTRIES:
        raise PushError(f"push: more than {MAX_ENTRIES} lines in one push")
    streams: list[dict[str, Any]] = []
    for i, stream in enumerate(request.streams):
        labels = parse_labels(stream.labels, f"push: streams[{i}].labels")
        values: list[list[Any]] = []
        for entry in stream.entries:
            ns = entry.timestamp.seconds * 1_000_000_000 + entry.timestamp.nanos
            if ns <= 0:
                raise PushError(f"push: streams[{i}]: an entry has no timestamp")
            value: list[Any] = [str(ns), entry.line]
            if entry.structuredMetadata:
                value.append({pair.name: pair.value for pair in entry.structuredMetadata})
            values.append(value)
        streams.append({"stream": labels, "values": values})
    return {"streams": streams}


def decode(raw: bytes, content_type: str, content_encoding: str) -> Any:
    """The push body of a request, by its content type and encoding, as the JSON shape.

    Loki's rules: ``application/x-protobuf`` is snappy-compressed protobuf (whatever the
    encoding header says); JSON may be sent plain or with ``Content-Encoding: gzip``.
    """
    kind = content_type.split(";")[0].strip().lower()
    encoding = content_encoding.strip().lower()
    if kind == PROTOBUF:
        return decode_protobuf(raw)
    if kind not in ("application/json", ""):
        raise UnsupportedPush(
            f"push: unsupported content type {kind[:60]!r}",
            hint=f"send {PROTOBUF} (snappy) or application/json",
        )
    if encoding in ("gzip", "deflate", "x-gzip"):
        raw = ungzip(raw)
    elif encoding not in ("", "identity"):
        raise UnsupportedPush(
            f"push: unsupported content encoding {encoding[:40]!r}",
            hint="send JSON plain or with Content-Encoding: gzip",
        )
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise PushError("push: the body is not JSON") from None


__all__ = ["MAX_DECOMPRESSED", "decode", "decode_protobuf", "parse_labels", "ungzip", "unsnappy"]
