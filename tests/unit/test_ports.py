"""PortBook: a picked port stays bound (no one else's port-0 bind gets it) yet the real
listener can still take it; a port someone already listens on is refused naming the setting."""

from __future__ import annotations

import errno
import socket

import pytest

from socle.errors import ConfigError
from socle.ports import PortBook


def _listen(port: int, *, reuseaddr: bool) -> socket.socket:
    sock = socket.socket()
    if reuseaddr:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


def test_a_held_port_is_refused_to_others_and_given_to_the_real_listener() -> None:
    book = PortBook()
    try:
        host, port = book.hold("127.0.0.1:0", setting="SOCLE_X")
        assert host == "127.0.0.1" and port > 0
        # A program that does not share (no SO_REUSEADDR) cannot take it...
        with pytest.raises(OSError) as refused:
            _listen(port, reuseaddr=False)
        assert refused.value.errno == errno.EADDRINUSE
        # ...the server we start on it (granian, Prometheus, nginx all set SO_REUSEADDR) can.
        server = _listen(port, reuseaddr=True)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        server.close()
    finally:
        book.close()
    # Released: free for anyone.
    _listen(port, reuseaddr=False).close()


def test_picks_are_all_different_and_skip_avoided_ports() -> None:
    book = PortBook()
    try:
        picked = {book.hold("127.0.0.1:0", setting="S")[1] for _ in range(50)}
        assert len(picked) == 50
        # Explicit ports are held once, however often they are asked for.
        first = next(iter(picked))
        assert book.hold(f"127.0.0.1:{first}", setting="S") == ("127.0.0.1", first)
        assert len(book.held()) == 50
    finally:
        book.close()
    assert book.held() == []


def test_a_port_another_program_listens_on_is_refused_naming_the_setting() -> None:
    other = _listen(0, reuseaddr=False)
    try:
        port = other.getsockname()[1]
        with pytest.raises(ConfigError) as err:
            PortBook().hold(f"127.0.0.1:{port}", setting="SOCLE_CONSUL_LISTEN")
        assert f"127.0.0.1:{port}" in str(err.value) and "SOCLE_CONSUL_LISTEN" in str(err.value)
        assert "SOCLE_CONSUL_LISTEN" in (err.value.hint or "")
    finally:
        other.close()


def test_malformed_addresses_are_refused() -> None:
    with pytest.raises(ValueError):
        PortBook().hold("nonsense", setting="S")


def test_two_settings_asking_for_one_port_are_refused_naming_both() -> None:
    """The held socket does not listen, so the kernel would let a second setting's bind
    through; the book refuses it at once, naming both settings."""
    book = PortBook()
    try:
        _, port = book.hold("127.0.0.1:0", setting="--listen / SOCLE_LISTEN")
        with pytest.raises(ConfigError) as same:
            book.hold(f"127.0.0.1:{port}", setting="SOCLE_PROMETHEUS_LISTEN")
        assert "SOCLE_PROMETHEUS_LISTEN" in same.value.message
        assert "SOCLE_LISTEN" in same.value.message
        with pytest.raises(ConfigError, match="already has"):  # the wildcard overlaps too
            book.hold(f"0.0.0.0:{port}", setting="SOCLE_CONSUL_LISTEN")
        # The same setting asking again (a component restarting) gets its port back.
        assert book.hold(f"127.0.0.1:{port}", setting="--listen / SOCLE_LISTEN")[1] == port
        assert len(book.held()) == 1
    finally:
        book.close()


def test_a_port_picked_elsewhere_is_claimed_only_when_free_in_the_book() -> None:
    """The DNS server picks its port over UDP; its TCP side claims the same number, which
    must not be a port the book holds, or avoids for a child's configured listener."""
    book = PortBook()
    try:
        _, held = book.hold("127.0.0.1:0", setting="SOCLE_CONSUL_LISTEN")
        with pytest.raises(ConfigError, match="SOCLE_CONSUL_LISTEN"):
            book.claim("127.0.0.1", held, setting="SOCLE_DNS_LISTEN")
        spare = socket.socket()
        spare.bind(("127.0.0.1", 0))
        avoided = spare.getsockname()[1]
        spare.close()
        book.avoid([f"127.0.0.1:{avoided}"])
        with pytest.raises(ConfigError, match="configured for another listener"):
            book.claim("127.0.0.1", avoided, setting="SOCLE_DNS_LISTEN")
        other = socket.socket()
        other.bind(("127.0.0.1", 0))
        free = other.getsockname()[1]
        other.close()
        book.claim("127.0.0.1", free, setting="SOCLE_DNS_LISTEN")
        assert ("127.0.0.1", free) in book.held()
        book.release("127.0.0.1", free)
        assert ("127.0.0.1", free) not in book.held()
    finally:
        book.close()


def test_ports_another_allocator_handed_out_are_never_picked() -> None:
    """The runtime gives instances ports that nothing binds until the app starts: a pick
    that returned one would let the app (binding with SO_REUSEADDR) listen in place of
    Prometheus. The book asks the allocator at every pick."""
    book = PortBook()
    handed_out: set[int] = set()
    book.avoid_also(lambda: handed_out)
    try:
        _, first = book.hold("127.0.0.1:0", setting="A")
        book.release("127.0.0.1", first)
        handed_out.update(range(1, 65536))  # every port given to instances: nothing to pick
        with pytest.raises(ConfigError, match="no free port"):
            book.hold("127.0.0.1:0", setting="SOCLE_PROMETHEUS_LISTEN")
        # An explicit port is the operator's choice: held (a clash shows when the app binds).
        assert book.hold(f"127.0.0.1:{first}", setting="B") == ("127.0.0.1", first)
    finally:
        book.close()
