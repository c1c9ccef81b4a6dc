"""Service-discovery DNS: the registry's healthy instances as A and SRV records.

Names (zone ``socle.internal.``, case-insensitive):

- ``APP.ENV.socle.internal`` -- A (AAAA) records of every healthy instance;
- ``_PORT._tcp.APP.ENV.socle.internal`` -- SRV records, one per healthy instance, whose
  targets are ``INSTANCE.APP.ENV.socle.internal`` (their A records come as additionals);
- ``INSTANCE.APP.ENV.socle.internal`` -- A record of that one instance, while healthy;
- ``APP.socle.internal`` -- shorthand for the ``default`` environment.

Answers carry a short TTL (:data:`TTL`): a failing instance leaves the answers at once and
caches forget it within seconds. A name with no healthy instance is NXDOMAIN (NOERROR with
no answer when the name exists but not the record type); a name outside the zone is
REFUSED (this is no recursive resolver); a packet that does not parse is dropped without
an answer, and a TCP client that sends one is disconnected. Only the wire format comes from
dnspython; the servers are asyncio (UDP and TCP on the same address).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.IN.SRV import SRV

from socle.errors import ConfigError
from socle.network.registry import DEFAULT_ENVIRONMENT, ServiceInstance, ServiceRegistry
from socle.tasks import within

log = logging.getLogger("socle.network")

ZONE = dns.name.from_text("socle.internal.")
TTL = 5
"""Seconds resolvers may keep an answer."""
UDP_PAYLOAD = 512
"""Largest UDP answer without EDNS; larger ones are truncated (TC) so the client asks
over TCP."""
MAX_UDP_PAYLOAD = 1232
"""Largest UDP answer whatever EDNS size the query claims (DNS Flag Day 2020's value):
answers are not fragmented, and a spoofed 50-byte query cannot draw a 4 KB answer at its
victim (an amplification of ~80); past it, the client retries over TCP."""
MAX_TCP_MESSAGE = 65535
TCP_IDLE_SECONDS = 10.0
MAX_TCP_CLIENTS = 256


def service_name(app: str, environment: str) -> str:
    """The DNS name of an app in an environment (without the trailing dot)."""
    return f"{app}.{environment}.socle.internal"


def _address_type(address: str) -> dns.rdatatype.RdataType | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return dns.rdatatype.A if ip.version == 4 else dns.rdatatype.AAAA


def _soa() -> dns.rrset.RRset:
    rdata = SOA(  # type: ignore[no-untyped-call]
        dns.rdataclass.IN,
        dns.rdatatype.SOA,
        dns.name.from_text("ns.socle.internal."),
        dns.name.from_text("hostmaster.socle.internal."),
        1,
        3600,
        600,
        86400,
        TTL,
    )
    rrset = dns.rrset.RRset(ZONE, dns.rdataclass.IN, dns.rdatatype.SOA)
    rrset.add(rdata, TTL)
    return rrset


class Resolver:
    """Answers one parsed query from the registry (pure: no sockets)."""

    def __init__(self, registry: ServiceRegistry) -> None:
        self._registry = registry
        self._folded: dict[tuple[str, str], tuple[str, str]] = {}
        self._folded_at = -1

    @property
    def index(self) -> int:
        """Changes whenever an answer may change."""
        return self._registry.index

    def _entries(self, app: str, env: str) -> list[ServiceInstance]:
        found = self._registry.instances(app, env, healthy_only=True)
        if found:
            return found
        # DNS names are case-insensitive; app names are lowercase, environments may not be.
        # The folded names are rebuilt once per registry change, not scanned per query: a
        # flood of random names (which no cache holds) costs a dict lookup each.
        if self._folded_at != self._registry.index:
            self._folded = {(s.lower(), e.lower()): (s, e) for s, e in self._registry.services()}
            self._folded_at = self._registry.index
        real = self._folded.get((app, env))
        if real is None:
            return []
        return self._registry.instances(real[0], real[1], healthy_only=True)

    def _address_rrset(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType, entries: list[ServiceInstance]
    ) -> dns.rrset.RRset | None:
        addresses = sorted({e.address for e in entries if _address_type(e.address) == rdtype})
        if not addresses:
            return None
        return dns.rrset.from_text_list(name, TTL, dns.rdataclass.IN, rdtype, addresses)

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        response.flags &= ~dns.flags.RA
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        qname = question.name
        if question.rdclass != dns.rdataclass.IN or not qname.is_subdomain(ZONE):
            response.flags &= ~dns.flags.AA
            response.set_rcode(dns.rcode.REFUSED)
            return response
        labels = [
            label.decode("ascii", "replace").lower() for label in qname.relativize(ZONE).labels
        ]
        if qname == ZONE:
            labels = []
        found = self._lookup(labels, qname, question.rdtype, response)
        if found is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(_soa())
        elif not found:
            response.authority.append(_soa())  # the name exists, not this type: NODATA
        return response

    def _lookup(
        self, labels: list[str], qname: dns.name.Name, rdtype: int, response: dns.message.Message
    ) -> bool | None:
        """Fill ``response``; True: answered, False: the name exists (no such record),
        None: no such name."""
        if not labels:
            return False  # the zone apex
        if len(labels) >= 2 and labels[0].startswith("_") and labels[1] == "_tcp":
            return self._srv(labels[0][1:], labels[2:], qname, rdtype, response)
        if len(labels) == 1:
            app, env, instance = labels[0], DEFAULT_ENVIRONMENT, None
        elif len(labels) == 2:
            app, env, instance = labels[0], labels[1], None
        elif len(labels) == 3:
            instance, app, env = labels
        else:
            return None
        entries = self._entries(app, env)
        if instance is not None:
            entries = [e for e in entries if e.id.lower() == instance]
        if not entries:
            return None
        if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.ANY):
            for kind in (dns.rdatatype.A, dns.rdatatype.AAAA):
                if rdtype in (kind, dns.rdatatype.ANY):
                    rrset = self._address_rrset(qname, kind, entries)
                    if rrset is not None:
                        response.answer.append(rrset)
        return bool(response.answer)

    def _srv(
        self,
        port_name: str,
        rest: list[str],
        qname: dns.name.Name,
        rdtype: int,
        response: dns.message.Message,
    ) -> bool | None:
        if len(rest) == 1:
            app, env = rest[0], DEFAULT_ENVIRONMENT
        elif len(rest) == 2:
            app, env = rest
        else:
            return None
        entries = [e for e in self._entries(app, env) if port_name in e.ports]
        if not entries:
            return None
        if rdtype not in (dns.rdatatype.SRV, dns.rdatatype.ANY):
            return False
        srv = dns.rrset.RRset(qname, dns.rdataclass.IN, dns.rdatatype.SRV)
        try:
            base = dns.name.from_text(service_name(app, env) + ".")
        except dns.exception.DNSException:
            return None
        for entry in entries:
            kind = _address_type(entry.address)
            try:
                if kind is None:  # a host name (an ExternalService): the target itself
                    target = dns.name.from_text(entry.address.rstrip(".") + ".")
                else:
                    target = dns.name.Name((entry.id.lower().encode(),)).concatenate(base)
            except dns.exception.DNSException:
                continue  # a name DNS cannot carry (label too long): left out
            if kind is not None:
                extra = dns.rrset.from_text_list(
                    target, TTL, dns.rdataclass.IN, kind, [entry.address]
                )
                response.additional.append(extra)
            port = entry.ports[port_name]
            record = SRV(dns.rdataclass.IN, dns.rdatatype.SRV, 1, 1, port, target)  # type: ignore[no-untyped-call]
            srv.add(record, TTL)
        response.answer.append(srv)
        return True


def _wire(response: dns.message.Message, limit: int) -> bytes:
    """``response`` as bytes within ``limit``; too large: truncated (TC), no records."""
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        response.answer.clear()
        response.additional.clear()
        response.authority.clear()
        response.flags |= dns.flags.TC
        return response.to_wire(max_size=limit)


class AnswerCache:
    """Answers by query bytes (all but the ID), valid while the registry's index is the same.

    dnspython renders a message in about a millisecond; a registry changes far less often
    than it is asked. A cached answer gets the new query's ID and is sent as is. Bounded:
    full, it starts again (hostile random names cannot grow it).
    """

    MAX_ENTRIES = 10_000

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self._index = -1
        self._answers: dict[tuple[bool, bytes], bytes | None] = {}

    def answer(self, data: bytes, *, udp: bool) -> bytes | None:
        if len(data) < 12:
            return None
        index = self.resolver.index
        if index != self._index or len(self._answers) >= self.MAX_ENTRIES:
            self._answers.clear()
            self._index = index
        key = (udp, data[2:])
        if key in self._answers:
            cached = self._answers[key]
            return None if cached is None else data[:2] + cached[2:]
        wire = handle(self.resolver, data, udp=udp)
        self._answers[key] = wire
        return wire


def handle(resolver: Resolver, data: bytes, *, udp: bool) -> bytes | None:
    """The answer to one packet, or None to drop it (it does not parse)."""
    try:
        query = dns.message.from_wire(data)
    except Exception:  # dnspython raises many kinds on hostile bytes: drop them all
        return None
    if query.flags & dns.flags.QR:
        return None  # a response, not a query: never answer it (no reflection loops)
    try:
        response = resolver.answer(query)
    except Exception:
        log.exception("DNS query could not be answered")
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.SERVFAIL)
    limit = MAX_TCP_MESSAGE
    if udp:
        limit = (
            max(UDP_PAYLOAD, min(query.payload, MAX_UDP_PAYLOAD))
            if query.edns >= 0
            else UDP_PAYLOAD
        )
    return _wire(response, limit)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, resolver: AnswerCache) -> None:
        self._resolver = resolver
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        answer = self._resolver.answer(data, udp=True)
        if answer is not None and self._transport is not None:
            self._transport.sendto(answer, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("DNS UDP error: %s", exc)


class DnsServer:
    """UDP and TCP on one ``host:port`` (port 0: a free one, the same for both)."""

    def __init__(
        self,
        registry: ServiceRegistry,
        host: str,
        port: int,
        *,
        claim: Callable[[int], object] | None = None,
        release: Callable[[int], object] | None = None,
    ) -> None:
        """``claim(port)`` reserves the TCP port before the TCP side binds it (the control
        plane's port book: it raises when another listener of the plane has or will have
        that port; a picked port is then picked again); ``release(port)`` gives it back
        (a failed start, :meth:`stop`)."""
        self._resolver = AnswerCache(Resolver(registry))
        self._host = host
        self._port = port
        self._claim = claim
        self._release = release
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._clients = asyncio.Semaphore(MAX_TCP_CLIENTS)

    @property
    def address(self) -> tuple[str, int]:
        return self._host, self._port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        for attempt in range(10):
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(self._resolver), local_addr=(self._host, self._port), family=family
            )
            port = transport.get_extra_info("sockname")[1]
            claimed = False
            try:
                # The TCP listener sets SO_REUSEADDR, which lets it bind a port the book
                # holds (not listening) for another listener: ask the book first.
                if self._claim is not None:
                    self._claim(port)
                    claimed = True
                self._tcp = await asyncio.start_server(
                    self._serve_tcp, self._host, port, family=family, reuse_address=True
                )
            except (OSError, ConfigError):
                transport.close()
                if claimed and self._release is not None:
                    self._release(port)
                if self._port != 0 or attempt == 9:
                    raise
                continue  # the TCP side of a picked UDP port was taken: pick again
            self._udp = transport
            self._port = port
            return

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
            if self._release is not None:
                self._release(self._port)
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await self._tcp.wait_closed()
            self._tcp = None

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients.locked():
            writer.close()
            return
        async with self._clients:
            try:
                while True:
                    head = await within(reader.readexactly(2), TCP_IDLE_SECONDS)
                    (size,) = struct.unpack("!H", head)
                    data = await within(reader.readexactly(size), TCP_IDLE_SECONDS)
                    answer = self._resolver.answer(data, udp=False)
                    if answer is None:
                        break  # malformed: hang up
                    writer.write(struct.pack("!H", len(answer)) + answer)
                    await writer.drain()
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()


__all__ = ["TTL", "ZONE", "AnswerCache", "DnsServer", "Resolver", "handle", "service_name"]
