"""Per-route ingress records: parsed strictly, bounded labels, exact exposition."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from socle.observe.metrics.ingress import IngressTraffic


def samples(traffic: IngressTraffic) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(traffic)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def record(route: str, status: str, total: str, sent: str, upstream: str) -> bytes:
    return f"socle1 {route} {status} {total} {sent} {upstream}".encode()


ROUTES = {"shop": ("web", "prod"), "default-api": ("api", "dev")}


def traffic() -> IngressTraffic:
    return IngressTraffic(Path("/nonexistent"), lambda: ROUTES)


def test_counts_classes_latency_and_bytes() -> None:
    t = traffic()
    t.feed(record("shop", "200", "0.004", "120", "0.003"))
    t.feed(record("shop", "502", "0.300", "10", "0.100, 0.150"))
    t.feed(record("shop", "404", "0.000", "0", "-"))
    t.feed(record("default-api", "201", "2.000", "5", "1.999"))
    got = samples(t)
    shop = (("app", "web"), ("env", "prod"), ("route", "shop"))
    assert got[("socle_ingress_requests_total", (*shop[:1], ("code_class", "2xx"), *shop[1:]))] == 1
    assert got[("socle_ingress_requests_total", (*shop[:1], ("code_class", "5xx"), *shop[1:]))] == 1
    assert got[("socle_ingress_requests_total", (*shop[:1], ("code_class", "4xx"), *shop[1:]))] == 1
    assert got[("socle_ingress_request_duration_seconds_count", shop)] == 3
    assert abs(got[("socle_ingress_request_duration_seconds_sum", shop)] - 0.304) < 1e-9
    assert (
        got[
            ("socle_ingress_request_duration_seconds_bucket", (*shop[:2], ("le", "0.005"), shop[2]))
        ]
        == 2
    )
    # Upstream time: the tries are summed; a request without upstream is not observed.
    assert got[("socle_ingress_upstream_response_duration_seconds_count", shop)] == 2
    assert abs(got[("socle_ingress_upstream_response_duration_seconds_sum", shop)] - 0.253) < 1e-9
    assert got[("socle_ingress_response_bytes_total", shop)] == 130
    api = (("app", "api"), ("env", "dev"), ("route", "default-api"))
    assert (
        got[("socle_ingress_request_duration_seconds_bucket", (*api[:2], ("le", "1.0"), api[2]))]
        == 0
    )
    assert (
        got[("socle_ingress_request_duration_seconds_bucket", (*api[:2], ("le", "2.5"), api[2]))]
        == 1
    )


def test_hostile_datagrams_never_add_labels() -> None:
    t = traffic()
    hostile = [
        b"",
        b"\xff\xfe\x00garbage",
        b"x" * 100_000,
        record("shop", "200", "0.001", "1", "0.001") + b" " + record("evil", "200", "1", "1", "-"),
        b"<190>Nov 30 08:00:00 socle: " + record("shop", "200", "0.001", "1", "0.001"),
        record("Shop", "200", "0.001", "1", "0.001"),
        record('shop",app="x', "200", "0.001", "1", "0.001"),
        record("shop", "2000", "0.001", "1", "0.001"),
        record("shop", "200", "1e9", "1", "0.001"),
        record("shop", "200", "0.001", "-1", "0.001"),
        record("shop", "200", "0.001", "1", "0.001 $(rm)"),
        record("shop", "200", "0.001", "1", "0.001" + ", 0.001" * 200),
    ]
    for data in hostile:
        t.feed(data)
    t.feed(record("unknown-route", "200", "0.001", "1", "-"))
    t.feed(record("-", "400", "0.000", "150", "-"))
    got = samples(t)
    assert not any(name == "socle_ingress_requests_total" for name, _ in got)
    assert got[("socle_ingress_records_dropped_total", (("reason", "malformed"),))] == len(hostile)
    assert got[("socle_ingress_records_dropped_total", (("reason", "unknown_route"),))] == 1
    assert got[("socle_ingress_records_dropped_total", (("reason", "no_route"),))] == 1


def test_a_removed_route_stops_being_exported() -> None:
    routes = dict(ROUTES)
    t = IngressTraffic(Path("/nonexistent"), lambda: routes)
    t.feed(record("shop", "200", "0.001", "1", "0.001"))
    assert any(dict(labels).get("route") == "shop" for _, labels in samples(t))
    del routes["shop"]
    assert not any(dict(labels).get("route") == "shop" for _, labels in samples(t))


async def test_file_is_read_as_it_grows_and_rotated_without_loss(tmp_path: Path) -> None:
    """Appended lines are read once, a partial line waits for its end, and a rotation
    (rename, the writer reopens) loses nothing written to the old or the new file."""
    log = tmp_path / "metrics.log"
    writer = log.open("ab", buffering=0)
    log.write_bytes(b"socle1 shop 200 0.001 1 -\n")  # before start: not counted
    reopened: list[bool] = []

    def reopen() -> None:
        reopened.append(True)

    t = IngressTraffic(log, lambda: ROUTES, reopen=reopen, rotate_bytes=200)
    t._open(True)
    line = record("shop", "200", "0.001", "1", "0.001") + b"\n"
    writer.write(line * 3 + line[:10])
    got = t.read()
    assert len(got) == 3
    writer.write(line[10:] + line * 5)  # now past 200 bytes: rotated after this read
    got += t.read()
    assert reopened and not log.exists() and len(got) == 9
    writer.write(line * 2)  # the writer has not reopened yet: into the old file
    writer.close()
    new = log.open("ab", buffering=0)
    new.write(line * 4)
    for _ in range(4):  # the old file is read to its end, then removed
        got += t.read()
    assert len(got) == 9 + 2 + 4
    assert not (tmp_path / "metrics.log.old").exists()
    for data in got:
        t.feed(data)
    assert sum(t._stats["shop"].codes.values()) == 15
    new.close()
    await t.close()
