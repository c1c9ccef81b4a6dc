"""The DNS resolver's answers from registry entries (pure: no sockets)."""

from __future__ import annotations

import random

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from socle.network.dns import MAX_UDP_PAYLOAD, TTL, AnswerCache, Resolver, handle
from socle.network.registry import Health, ServiceInstance, ServiceRegistry, Source


def registry() -> ServiceRegistry:
    reg = ServiceRegistry()
    reg.upsert(ServiceInstance("web", "default", "web-aaa-0", "127.0.0.1", {"http": 8001}))
    reg.upsert(ServiceInstance("web", "default", "web-aaa-1", "127.0.0.2", {"http": 8002}))
    reg.upsert(
        ServiceInstance("web", "prod", "web-bbb-0", "127.0.0.3", {"http": 9001, "admin": 9002})
    )
    reg.upsert(
        ServiceInstance(
            "db",
            "default",
            "db-x",
            "10.0.0.5",
            {"pg": 5432},
            health=Health.CRITICAL,
            source=Source.EXTERNAL,
        )
    )
    return reg


def ask(reg: ServiceRegistry, name: str, rdtype: str = "A") -> dns.message.Message:
    return Resolver(reg).answer(dns.message.make_query(name, rdtype))


def test_a_records_of_healthy_instances_with_a_short_ttl() -> None:
    response = ask(registry(), "web.default.socle.internal")
    assert response.rcode() == dns.rcode.NOERROR and response.flags & dns.flags.AA
    (rrset,) = response.answer
    assert sorted(r.address for r in rrset) == ["127.0.0.1", "127.0.0.2"] and rrset.ttl == TTL
    prod = ask(registry(), "WEB.Prod.socle.internal.")
    assert [r.address for r in prod.answer[0]] == ["127.0.0.3"]
    short = ask(registry(), "web.socle.internal")  # the default environment
    assert len(short.answer[0]) == 2
    reg = registry()
    reg.upsert(ServiceInstance("web", "Staging", "web-ccc-0", "127.0.0.4", {"http": 1}))
    assert [r.address for r in ask(reg, "web.staging.socle.internal").answer[0]] == ["127.0.0.4"]
    one = ask(registry(), "web-aaa-1.web.default.socle.internal")
    assert [r.address for r in one.answer[0]] == ["127.0.0.2"]


def test_srv_records_name_ports_and_targets_with_additionals() -> None:
    response = ask(registry(), "_http._tcp.web.default.socle.internal", "SRV")
    (srv,) = response.answer
    assert sorted(r.port for r in srv) == [8001, 8002]
    targets = {str(r.target) for r in srv}
    assert targets == {
        "web-aaa-0.web.default.socle.internal.",
        "web-aaa-1.web.default.socle.internal.",
    }
    assert {str(a.name) for a in response.additional} == targets
    admin = ask(registry(), "_admin._tcp.web.prod.socle.internal", "SRV")
    assert [r.port for r in admin.answer[0]] == [9002]


def test_nxdomain_for_unhealthy_or_unknown_and_nodata_for_other_types() -> None:
    for name in (
        "db.default.socle.internal",
        "nope.default.socle.internal",
        "_nope._tcp.web.default.socle.internal",
        "a.b.c.d.socle.internal",
    ):
        response = ask(registry(), name, "SRV" if name.startswith("_") else "A")
        assert response.rcode() == dns.rcode.NXDOMAIN, name
        assert response.authority and response.authority[0].rdtype == dns.rdatatype.SOA
    nodata = ask(registry(), "web.default.socle.internal", "TXT")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority


def test_other_zones_are_refused() -> None:
    for name in ("example.com", "socle.internal.evil.com", "internal"):
        assert ask(registry(), name).rcode() == dns.rcode.REFUSED


def test_hostile_packets_are_dropped() -> None:
    resolver = Resolver(registry())
    for packet in (
        b"",
        b"\x00",
        b"\xff" * 12,
        b"\x12\x34" + b"\x00" * 3 + b"\x01" + b"\xc0\x0c" * 20,
    ):
        assert handle(resolver, packet, udp=True) is None
    reply = dns.message.make_response(dns.message.make_query("web.socle.internal", "A"))
    assert handle(resolver, reply.to_wire(), udp=True) is None  # never answer a response


def test_large_udp_answers_are_truncated() -> None:
    reg = ServiceRegistry()
    for i in range(60):
        reg.upsert(
            ServiceInstance(
                "big",
                "default",
                f"big-{i:03d}-instance-with-a-long-id",
                f"127.0.1.{i}",
                {"http": 1000 + i},
            )
        )
    query = dns.message.make_query("_http._tcp.big.default.socle.internal", "SRV")
    wire = handle(Resolver(reg), query.to_wire(), udp=True)
    assert wire is not None and len(wire) <= 512
    assert dns.message.from_wire(wire).flags & dns.flags.TC
    full = handle(Resolver(reg), query.to_wire(), udp=False)
    assert full is not None and len(dns.message.from_wire(full).answer[0]) == 60


def test_cached_answers_follow_the_registry_and_the_query_id() -> None:
    from socle.network.dns import AnswerCache

    reg = registry()
    cache = AnswerCache(Resolver(reg))
    first = dns.message.make_query("web.default.socle.internal", "A")
    second = dns.message.make_query("web.default.socle.internal", "A")
    second.id = (first.id + 1) % 65536
    a = cache.answer(first.to_wire(), udp=True)
    b = cache.answer(second.to_wire(), udp=True)
    assert a is not None and b is not None
    assert dns.message.from_wire(b).id == second.id and a[2:] == b[2:]
    reg.remove("web-aaa-0")
    c = cache.answer(second.to_wire(), udp=True)
    assert c is not None and [r.address for r in dns.message.from_wire(c).answer[0]] == [
        "127.0.0.2"
    ]
    assert cache.answer(b"\x00\x01garbage", udp=True) is None


def test_udp_answers_stay_small_whatever_edns_size_is_claimed() -> None:
    """A spoofed query claiming a 4096-byte buffer must not draw a 4 KB answer."""
    reg = ServiceRegistry()
    for i in range(25):
        reg.upsert(
            ServiceInstance("big", "default", f"big-{i:03d}-x", f"127.0.1.{i}", {"http": 1000 + i})
        )
    query = dns.message.make_query(
        "_http._tcp.big.default.socle.internal", "SRV", use_edns=0, payload=4096
    )
    full = handle(Resolver(reg), query.to_wire(), udp=False)
    assert full is not None and MAX_UDP_PAYLOAD < len(full) < 4096  # would fit 4096
    wire = handle(Resolver(reg), query.to_wire(), udp=True)
    assert wire is not None and len(wire) <= MAX_UDP_PAYLOAD
    assert dns.message.from_wire(wire).flags & dns.flags.TC


class CountingRegistry(ServiceRegistry):
    def __init__(self) -> None:
        super().__init__()
        self.scans = 0

    def services(self) -> dict[tuple[str, str], list[ServiceInstance]]:
        self.scans += 1
        return super().services()


def test_a_flood_of_unknown_names_does_not_scan_the_registry_per_query() -> None:
    reg = CountingRegistry()
    for i in range(50):
        reg.upsert(ServiceInstance(f"app{i}", "Prod", f"app{i}-a-0", "127.0.0.1", {"http": 1}))
    resolver = Resolver(reg)
    for i in range(200):
        response = resolver.answer(dns.message.make_query(f"rnd{i}.prod.socle.internal", "A"))
        assert response.rcode() == dns.rcode.NXDOMAIN
    found = resolver.answer(dns.message.make_query("app7.prod.socle.internal", "A"))
    assert found.rcode() == dns.rcode.NOERROR and found.answer  # case-folded environment
    assert reg.scans <= 1
    reg.upsert(ServiceInstance("late", "Prod", "late-a-0", "127.0.0.9", {}))
    late = resolver.answer(dns.message.make_query("late.prod.socle.internal", "A"))
    assert late.answer and reg.scans == 2


def test_mutated_packets_never_raise() -> None:
    """Flipped bytes, cuts and junk tails of real queries (a fixed seed): each packet gets
    an answer or is dropped, and nothing escapes the handler."""
    rng = random.Random(7)
    resolver = AnswerCache(Resolver(registry()))
    seeds = [
        dns.message.make_query(name, rdtype, use_edns=edns).to_wire()
        for name in ("web.default.socle.internal", "_http._tcp.web.socle.internal", "x.socle.internal")
        for rdtype in ("A", "SRV", "ANY")
        for edns in (None, 0)
    ]  # fmt: skip
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            pick = rng.random()
            if pick < 0.6:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif pick < 0.8:
                data = data[: rng.randrange(len(data) + 1)] or bytearray(b"\0")
            else:
                data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        wire = resolver.answer(bytes(data), udp=rng.random() < 0.5)
        assert wire is None or len(wire) <= 65535
