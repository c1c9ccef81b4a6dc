"""(e) KV v2 reads per second through the whole server, with a file audit device on and off.

A real ``socle server --dev`` in a temporary SOCLE_HOME; one KV v2 secret; ``wrk`` (a Lua
script sets ``X-Vault-Token`` from the environment) sends ``GET /v1/secret/data/bench`` for
``DURATION`` seconds at each concurrency level, first with a file audit device enabled, then
without. wrk runs on the same cores as the server, as it would on a small box.

Target: >= 10,000 KV v2 reads/s with audit on, on a 2-core machine. Prints JSON; the audit
log's line count (two lines per request) and ``socle audit verify`` check that every read
really was audited, in an intact chain.

Usage: python bench/secrets_kv.py [DURATION_S] [CONNECTIONS ...]   (default: 10 16 64)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from _harness import socle_server

from tests.e2e.socle_fixture import SOCLE, SocleServer

THREADS = 2
TICKS = os.sysconf("SC_CLK_TCK")
LUA = """\
wrk.method = "GET"
wrk.headers["X-Vault-Token"] = os.getenv("BENCH_VAULT_TOKEN")
"""
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


def run_wrk(
    server: SocleServer, url: str, token: str, script: Path, connections: int, seconds: int
) -> dict[str, Any]:
    assert server.proc is not None
    cpu_before = cpu_seconds(server.proc.pid)
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
    cpu = cpu_seconds(server.proc.pid) - cpu_before
    # CPU per read is steadier than reads/s when other work shares the machine.
    result["server_cpu_us_per_read"] = round(1e6 * cpu / max(result["requests"], 1), 1)
    return {"threads": THREADS, "connections": connections, **result}


def vault(server: SocleServer, token: str, method: str, path: str, body: Any = None) -> None:
    response = httpx.request(
        method, f"{server.url}/v1/{path}", headers={"X-Vault-Token": token}, json=body, timeout=30
    )
    response.raise_for_status()


def count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y --no-install-recommends wrk")
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    levels = [int(a) for a in sys.argv[2:]] or [16, 64]
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


if __name__ == "__main__":
    main()
