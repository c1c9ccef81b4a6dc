"""Loki's protobuf push (``logproto.PushRequest``, snappy block format) written byte by
byte from the protobuf wire format, as Promtail sends it: a client independent from
``socle.observe.logs.pushwire``'s decoder, for tests and benchmarks (no Promtail installs
here). Field numbers from Loki's ``pkg/push/push.proto``."""

from __future__ import annotations

import cramjam


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return varint(number << 3) + varint(payload)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def entry(ns: int, line: str, metadata: dict[str, str] | None = None) -> bytes:
    ts = field(1, ns // 1_000_000_000) + field(2, ns % 1_000_000_000)
    out = field(1, ts) + field(2, line.encode())
    for name, value in (metadata or {}).items():
        out += field(3, field(1, name.encode()) + field(2, value.encode()))
    return out


def stream(labels: str, entries: list[bytes], hash_: int = 0) -> bytes:
    out = field(1, labels.encode()) + b"".join(field(2, e) for e in entries)
    return out + (field(3, hash_) if hash_ else b"")


def push(*streams: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(b"".join(field(1, s) for s in streams)))
