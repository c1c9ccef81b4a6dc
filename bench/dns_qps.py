"""(c) Service-discovery DNS: queries per second and latency, UDP, one server process.

The server (``socle.network.dns.DnsServer`` over a registry of APPS apps x 3 instances) runs
in its own process; this process sends A and SRV queries for random apps with WINDOW
queries in flight for SECONDS, then measures one-at-a-time latency. Prints JSON.

    python bench/dns_qps.py [SECONDS=5] [APPS=200] [WINDOW=32]
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import socket
import sys
import time
from multiprocessing.connection import Connection

import dns.message
from _harness import percentiles

from socle.network.dns import DnsServer
from socle.network.registry import ServiceInstance, ServiceRegistry


def serve(apps: int, conn: Connection) -> None:
    async def main() -> None:
        reg = ServiceRegistry()
        for a in range(apps):
            for i in range(3):
                reg.upsert(
                    ServiceInstance(
                        f"app{a}", "default", f"app{a}-x-{i}", f"127.0.{a % 250}.{i + 1}",
                        {"http": 10000 + i},
                    )
                )  # fmt: skip
        server = DnsServer(reg, "127.0.0.1", 0)
        await server.start()
        conn.send(server.address[1])
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told to stop
        await server.stop()

    asyncio.run(main())


def queries(apps: int, n: int) -> list[bytes]:
    out = []
    for k in range(n):
        app = f"app{random.randrange(apps)}"
        name, kind = (
            (f"{app}.default.socle.internal", "A")
            if k % 2
            else (f"_http._tcp.{app}.default.socle.internal", "SRV")
        )
        out.append(dns.message.make_query(name, kind).to_wire())
    return out


def throughput(port: int, wires: list[bytes], seconds: float, window: int) -> tuple[int, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(0.2)
    sent = answered = 0
    deadline = time.monotonic() + seconds
    in_flight = 0
    while time.monotonic() < deadline:
        while in_flight < window:
            sock.send(wires[sent % len(wires)])
            sent += 1
            in_flight += 1
        try:
            sock.recv(4096)
        except TimeoutError:
            in_flight = 0  # lost answers: start a new window
            continue
        answered += 1
        in_flight -= 1
    sock.close()
    return sent, answered


def latency(port: int, wires: list[bytes], n: int) -> list[float]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(2.0)
    samples = []
    for k in range(n):
        start = time.perf_counter()
        sock.send(wires[k % len(wires)])
        sock.recv(4096)
        samples.append((time.perf_counter() - start) * 1000)
    sock.close()
    return samples


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    apps = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    window = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.Process(target=serve, args=(apps, child))
    proc.start()
    try:
        port = parent.recv()
        wires = queries(apps, 4096)
        latency(port, wires, 200)  # warm up
        start = time.monotonic()
        sent, answered = throughput(port, wires, seconds, window)
        elapsed = time.monotonic() - start
        samples = latency(port, wires, 2000)
    finally:
        parent.send("stop")
        proc.join(30)
    print(
        json.dumps(
            {
                "bench": "dns_qps",
                "apps": apps,
                "instances": apps * 3,
                "window": window,
                "seconds": round(elapsed, 2),
                "queries_per_second": round(answered / elapsed),
                "lost": sent - answered,
                "latency_ms_one_at_a_time": percentiles(samples),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
