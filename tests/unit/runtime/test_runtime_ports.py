"""Loopback port allocation."""

from __future__ import annotations

import socket

from socle.runtime.local.ports import PortAllocator


def test_allocates_distinct_bindable_ports() -> None:
    allocator = PortAllocator()
    ports = allocator.allocate(["http", "admin", "metrics"])
    assert set(ports) == {"http", "admin", "metrics"}
    assert len(set(ports.values())) == 3
    for port in ports.values():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # really free
    assert allocator.in_use() == frozenset(ports.values())


def test_never_hands_out_a_port_in_use_twice() -> None:
    allocator = PortAllocator()
    seen: set[int] = set()
    for _ in range(200):
        port = allocator.allocate(["p"])["p"]
        assert port not in seen
        seen.add(port)


def test_reserved_ports_are_skipped_and_released_ports_reusable() -> None:
    allocator = PortAllocator()
    first = allocator.allocate(["a"])
    allocator.release(first)
    assert allocator.in_use() == frozenset()
    allocator.reserve({"x": 40000, "y": 40001})
    assert allocator.in_use() == {40000, 40001}
    allocator.release([40000])
    assert allocator.in_use() == {40001}


def test_no_names_no_ports() -> None:
    assert PortAllocator().allocate([]) == {}
