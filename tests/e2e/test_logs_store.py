"""The log store through the CLI and the API like a user: an app's output and Socle's own
records queried with LogQL, secret values masked before storage, lines kept across a
restart, a tampered segment caught by ``socle logs verify``, Loki push/query round trips."""

from __future__ import annotations

import base64
import gzip
import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.e2e.socle_fixture import SOCLE, SocleServer, wait_for, write_repo
from tests.e2e.test_secrets_apps import vault
from tests.integration.observe.logs.test_loki_forward import MockLoki
from tests.support import loki_wire

PRINTER = (
    "import json, sys, time\n"
    "for i in range(200):\n"
    "    level = 'error' if i % 10 == 0 else 'info'\n"
    "    print(json.dumps({'level': level, 'n': i, 'msg': 'tick %d' % i}), flush=True)\n"
    "print('token is', __import__('os').environ.get('TOKEN', ''), flush=True)\n"
    "print('boom on stderr', file=sys.stderr, flush=True)\n"
    "time.sleep(3600)\n"
)


def query(server: SocleServer, logql: str, **params: object) -> dict:
    response = server.api("GET", "/api/v1/logs/query", params={"query": logql, **params})
    assert response.status_code == 200, response.text
    data: dict = response.json()
    return data


def lines(server: SocleServer, logql: str, **params: object) -> list[str]:
    return [row["line"] for row in query(server, logql, **params)["lines"]]


def test_app_output_is_queried_with_logql_and_secrets_are_masked(
    dev_server: SocleServer, tmp_path: Path
) -> None:
    secret = "tok-9d1f3e77-masked"
    client = vault(dev_server)
    client.secrets.kv.v2.create_or_update_secret("p", secret={"t": secret}, mount_point="secret")
    client.sys.create_or_update_policy(
        "app-printer", 'path "secret/data/p" { capabilities = ["read"] }'
    )
    repo = write_repo(
        tmp_path / "repo",
        {
            "printer": {
                "run": {"command": [sys.executable, "-c", PRINTER]},
                "env": {"TOKEN": {"secret": "secret/data/p#t"}},
                "health": None,
            }
        },
    )
    dev_server.cli("apply", str(repo), "--yes", "--no-wait")
    wait_for(
        lambda: lines(dev_server, '{app="printer"} |= "token is"'), 60, "the app's lines stored"
    )
    errors = lines(dev_server, '{app="printer"} | json | level="error"', limit=1000)
    assert sorted(json.loads(e)["n"] for e in errors) == list(range(0, 200, 10))
    assert lines(dev_server, '{app="printer", stream="stderr"}') == ["boom on stderr"]
    [row] = query(dev_server, '{app="printer", stream="stderr"}')["lines"]
    instance = dev_server.app("printer")["instances"][0]
    assert row["labels"] == {
        "app": "printer",
        "env": "default",
        "instance": instance["id"],
        "release": instance["release"],
        "stream": "stderr",
    }
    assert len(lines(dev_server, '{app="printer"} |~ `"tick 1[0-9]"`')) == 10
    assert lines(dev_server, '{app="printer"} |= "token is"') == ["token is ****"]
    # Counts over time, and the CLI.
    series = query(dev_server, 'sum by (app) (count_over_time({app="printer"}[1h]))', step="1h")
    assert series["series"][0]["labels"] == {"app": "printer"}
    assert series["series"][0]["points"][-1][1] == 202
    out = dev_server.cli("logs", "--query", '{app="printer"} |= "tick 19"', "--json").stdout
    numbers = [json.loads(json.loads(x)["line"])["n"] for x in out.splitlines()]
    assert numbers == [19, *range(190, 200)]  # oldest first
    counts = dev_server.cli(
        "logs", "--query", 'sum(count_over_time({app="printer"}[1h]))', "--since", "3h", "--json"
    )
    [total] = json.loads(counts.stdout)["series"]
    assert len(total["points"]) <= 4  # a point per hour, not ~250 overlapping windows
    assert total["points"][-1][1] == 202
    # Socle's own records are in the store too.
    assert wait_for(lambda: lines(dev_server, '{app="socle"} |= "listening"'), 30, "own logs")
    # The plain-text secret is nowhere in the store's files, sealed or not.
    dev_server.cli("logs", "seal")
    for path in (dev_server.home / "logstore").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert lines(dev_server, '{app="printer"} |= "token is"') == ["token is ****"]


def test_no_line_lost_or_doubled_across_a_restart_and_tamper_is_detected(
    server: SocleServer, tmp_path: Path
) -> None:
    repo = write_repo(
        tmp_path / "repo",
        {"printer": {"run": {"command": [sys.executable, "-c", PRINTER]}, "health": None}},
    )
    server.cli("apply", str(repo), "--yes", "--no-wait")
    logql = '{app="printer"} |= "tick"'
    wait_for(lambda: len(lines(server, logql, limit=1000)) == 200, 60, "200 lines")
    server.cli("logs", "seal")
    held = json.loads(server.cli("logs", "stats", "--json").stdout)
    assert held["segments"] == 1 and held["sealed_lines"] >= 200 and held["segment_bytes"] > 0
    assert "1 sealed segment(s)" in server.cli("logs", "stats").stdout
    _push(server, "pushed", [f"hot {i}" for i in range(50)])  # not sealed: only in the WAL
    server.kill9()  # no shutdown at all: DuckDB replays its WAL at the next start
    server.start()
    time.sleep(1.5)  # a few passes of the restarted store over the same files
    assert len(lines(server, logql, limit=1000)) == 200
    assert len(lines(server, '{app="pushed"}', limit=1000)) == 50
    follow = subprocess.Popen(
        [SOCLE, "logs", "printer", "--follow"], env=server.env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert follow.stdout is not None
        assert "tick 0" in follow.stdout.readline()  # `socle logs APP --follow` still works
    finally:
        follow.kill()
        follow.wait(10)
        if follow.stdout is not None:
            follow.stdout.close()
    assert server.cli("logs", "verify").returncode == 0
    segment = next((server.home / "logstore" / "segments").glob("*.parquet"))
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    result = server.cli("logs", "verify", check=False)
    assert result.returncode != 0
    assert "was modified" in result.stdout
    segment.unlink()
    result = server.cli("logs", "verify", "--json", check=False)
    assert result.returncode != 0
    assert "missing" in json.loads(result.stdout)["problems"][0]


def test_loki_push_and_query_round_trip_with_a_plain_http_client(server: SocleServer) -> None:
    now = time.time_ns()
    body = {
        "streams": [
            {
                "stream": {"app": "edge", "env": "prod", "job": "promtail"},
                "values": [
                    [str(now - i * 1000), f"GET /x status={500 if i % 2 else 200}"]
                    for i in range(10)
                ],
            }
        ]
    }
    headers = {"Authorization": f"Bearer {server.token}"}
    response = httpx.post(server.url + "/loki/api/v1/push", json=body, headers=headers)
    assert response.status_code == 204, response.text
    # Without a token: refused before the body is read.
    assert httpx.post(server.url + "/loki/api/v1/push", json=body).status_code == 401
    got = httpx.get(
        server.url + "/loki/api/v1/query_range",
        params={"query": '{job="promtail"} | logfmt | status>=500', "limit": "100"},
        headers=headers,
    ).json()
    assert got["status"] == "success"
    assert got["data"]["resultType"] == "streams"
    [stream] = got["data"]["result"]
    assert stream["stream"] == {"app": "edge", "env": "prod", "job": "promtail"}
    assert [v[0] for v in stream["values"]] == [str(now - i * 1000) for i in range(1, 10, 2)]
    matrix = httpx.get(
        server.url + "/loki/api/v1/query_range",
        params={"query": 'sum(count_over_time({app="edge"}[1h]))', "step": "60"},
        headers=headers,
    ).json()
    assert matrix["data"]["resultType"] == "matrix"
    assert matrix["data"]["result"][0]["values"][-1][1] == "10"
    vector = httpx.get(
        server.url + "/loki/api/v1/query",
        params={"query": 'count_over_time({app="edge"}[1h])'},
        headers=headers,
    ).json()
    assert vector["data"]["resultType"] == "vector"
    assert vector["data"]["result"][0]["value"][1] == "10"
    labels = httpx.get(server.url + "/loki/api/v1/labels", headers=headers).json()
    assert {"app", "env", "job"} <= set(labels["data"])
    values = httpx.get(server.url + "/loki/api/v1/label/job/values", headers=headers).json()
    assert values == {"status": "success", "data": ["promtail"]}
    series = httpx.get(
        server.url + "/loki/api/v1/series", params={"match[]": '{job="promtail"}'}, headers=headers
    ).json()
    assert series == {
        "status": "success",
        "data": [{"app": "edge", "env": "prod", "job": "promtail"}],
    }


def test_promtail_protobuf_snappy_and_gzip_json_pushes_are_stored(server: SocleServer) -> None:
    now = time.time_ns()
    headers = {"Authorization": f"Bearer {server.token}"}
    body = loki_wire.push(
        loki_wire.stream(
            '{app="agent", env="prod", job="varlogs"}',
            [loki_wire.entry(now - 2000 + i, f"pb line {i}") for i in range(3)],
        )
    )
    response = httpx.post(
        server.url + "/loki/api/v1/push",
        content=body,
        headers={**headers, "Content-Type": "application/x-protobuf"},
    )
    assert response.status_code == 204, response.text
    gz = gzip.compress(
        json.dumps(
            {"streams": [{"stream": {"app": "agent"}, "values": [[str(now), "gzip line"]]}]}
        ).encode()
    )
    response = httpx.post(
        server.url + "/loki/api/v1/push",
        content=gz,
        headers={**headers, "Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 204, response.text
    got = httpx.get(
        server.url + "/loki/api/v1/query_range",
        params={"query": '{app="agent"}', "direction": "forward"},
        headers=headers,
    ).json()
    by_stream = {
        json.dumps(s["stream"], sort_keys=True): s["values"] for s in got["data"]["result"]
    }
    assert by_stream == {
        json.dumps({"app": "agent", "env": "prod", "job": "varlogs"}, sort_keys=True): [
            [str(now - 2000 + i), f"pb line {i}"] for i in range(3)
        ],
        json.dumps({"app": "agent"}): [[str(now), "gzip line"]],
    }


def test_hostile_loki_input_is_refused_with_a_reason(server: SocleServer) -> None:
    headers = {"Authorization": f"Bearer {server.token}"}
    push = server.url + "/loki/api/v1/push"
    cases = [
        (b"not json", "application/json", 400, "not JSON"),
        (b'{"streams": 3}', "application/json", 400, "streams"),
        (
            b'{"streams": [{"stream": {"a b": "x"}, "values": []}]}',
            "application/json",
            400,
            "bad label name",
        ),
        (
            b'{"streams": [{"stream": {"a": "x"}, "values": [["abc", "l"]]}]}',
            "application/json",
            400,
            "not a time",
        ),
        (
            b'{"streams": [{"stream": {"a": "x"}, "values": [[1, 2]]}]}',
            "application/json",
            400,
            "values[0]",
        ),
        (b"\x00\x01", "application/x-protobuf", 400, "snappy"),
        (loki_wire.varint(1 << 30) + b"\x00" * 8, "application/x-protobuf", 400, "decompresses"),
        (loki_wire.push(b"\x0a\x05{a=1}"), "application/x-protobuf", 400, "label set"),
        (b"{}", "text/plain", 415, "content type"),
        (b"x" * (9 * 1024 * 1024), "application/json", 413, ""),  # past max_log_push_bytes
    ]
    for body, kind, status, words in cases:
        response = httpx.post(push, content=body, headers={**headers, "Content-Type": kind})
        assert response.status_code == status, (body[:40], response.text)
        assert words in response.text
    for bad in [
        '{app="x"',
        "{}",
        'nope({app="x"}[1m])',
        '{app="x"} |~ "("',
        'rate({app="x"}[-1m])',
        '{app="x"} | json | a>"b"',
    ]:
        response = server.api("GET", "/api/v1/logs/query", params={"query": bad})
        assert response.status_code == 400, (bad, response.text)
        assert "query" in response.json()["message"]
    assert server.api("GET", "/loki/api/v1/label/a%20b/values").status_code == 400
    q = '{app="x"}'
    for params, status, words in [
        ({"query": q, "limit": "100000"}, 400, "limit"),
        ({"query": q, "since": "yesterday"}, 400, "since"),
        (
            {"query": q, "start": "2030-01-01T00:00:00Z", "end": "2020-01-01T00:00:00Z"},
            400,
            "start",
        ),
        ({"query": f"count_over_time({q}[1m])", "since": "300d", "step": "1s"}, 400, "step"),
        ({"query": q, "start": "not a time"}, 400, "not a time"),
        ({"query": "   "}, 400, "missing"),
    ]:
        response = server.api("GET", "/api/v1/logs/query", params=params)
        assert response.status_code == status, (params, response.text)
        assert words in response.text
    # Nothing above was stored or changed.
    assert server.api("GET", "/api/v1/logs/query", params={"query": q}).json() == {"lines": []}


def _push(server: SocleServer, app: str, texts: list[str]) -> None:
    now = time.time_ns()
    body = {
        "streams": [
            {"stream": {"app": app}, "values": [[str(now + i), t] for i, t in enumerate(texts)]}
        ]
    }
    response = server.api("POST", "/loki/api/v1/push", json=body)
    assert response.status_code == 204, response.text


def test_live_tail_over_the_api_streams_new_lines(server: SocleServer) -> None:
    _push(server, "tailed", ["old 1", "old 2"])
    headers = {"Authorization": f"Bearer {server.token}"}
    params = {"query": '{app="tailed"} != "skip"', "limit": "1"}
    with httpx.stream(
        "GET", server.url + "/api/v1/logs/tail", params=params, headers=headers, timeout=30
    ) as response:
        assert response.status_code == 200
        got = response.iter_lines()
        assert json.loads(next(got))["line"] == "old 2"  # the last `limit` lines first
        _push(server, "tailed", ["new 1", "skip me", "new 2"])
        _push(server, "other", ["not this app"])
        assert json.loads(next(got))["line"] == "new 1"
        assert json.loads(next(got))["line"] == "new 2"


def _ws_tail(
    server: SocleServer, query: str, token: str, limit: str = "10"
) -> tuple[int, socket.socket, bytes]:
    """A minimal WebSocket client (the venv has none): handshake, then raw frames."""
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    path = "/loki/api/v1/tail?" + urllib.parse.urlencode({"query": query, "limit": limit})
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, sock, head.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in head else b""


def _frames(sock: socket.socket, buffered: bytes) -> Iterator[tuple[int, bytes]]:
    data = buffered

    def need(n: int) -> bytes:
        nonlocal data
        while len(data) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError
            data += chunk
        out, data = data[:n], data[n:]
        return out

    while True:
        first, second = need(2)
        size = second & 0x7F
        if size == 126:
            size = struct.unpack(">H", need(2))[0]
        elif size == 127:
            size = struct.unpack(">Q", need(8))[0]
        yield first & 0x0F, need(size)


def test_loki_websocket_tail_needs_a_token_and_streams_lines(server: SocleServer) -> None:
    _push(server, "ws", ["before"])
    status, sock, rest = _ws_tail(server, '{app="ws"}', "not-a-token")
    with sock:
        # Refused: either no upgrade, or an upgrade closed at once with code 1008.
        if status == 101:
            opcode, payload = next(_frames(sock, rest))
            assert opcode == 8 and struct.unpack(">H", payload[:2])[0] == 1008
        else:
            assert status in (401, 403)
    status, sock, rest = _ws_tail(server, '{app="ws"}', server.token)
    with sock:
        assert status == 101
        frames = _frames(sock, rest)
        opcode, payload = next(frames)
        assert opcode == 1
        message = json.loads(payload)
        assert message["streams"][0]["stream"] == {"app": "ws"}
        assert message["streams"][0]["values"][0][1] == "before"
        _push(server, "ws", ["after"])
        opcode, payload = next(frames)
        assert json.loads(payload)["streams"][0]["values"][0][1] == "after"


def test_a_service_token_cannot_tail_logs_over_the_websocket(server: SocleServer) -> None:
    """The gate keeps Prometheus' scrape token to its three routes; the WebSocket tail, which
    checks its token itself, must refuse it too (it would read every app's logs)."""
    _push(server, "wsscope", ["a secret-looking line"])
    made = server.api("POST", "/api/v1/tokens", json={"name": "socle-prometheus"})
    assert made.status_code == 200, made.text
    scrape = made.json()["token"]
    status, sock, rest = _ws_tail(server, '{app="wsscope"}', scrape)
    with sock:
        if status == 101:
            opcode, payload = next(_frames(sock, rest))
            assert opcode == 8, payload  # a close, never the lines
            assert struct.unpack(">H", payload[:2])[0] == 1008
            assert b"service token" in payload
        else:
            assert status in (401, 403)


def test_a_websocket_tail_with_a_negative_limit_still_follows(server: SocleServer) -> None:
    """``limit=-5`` (a client's mistake or a probe) means no history, not a server error."""
    _push(server, "wsneg", ["before"])
    status, sock, rest = _ws_tail(server, '{app="wsneg"}', server.token, limit="-5")
    with sock:
        assert status == 101
        frames = _frames(sock, rest)
        _push(server, "wsneg", ["after"])
        opcode, payload = next(frames)
        assert opcode == 1, payload
        assert json.loads(payload)["streams"][0]["values"][0][1] == "after"


def test_lines_are_forwarded_to_a_configured_loki(tmp_path: Path, socle_env: dict) -> None:
    # A mock Loki: Grafana Loki cannot be installed on this machine (docs/observe.md).
    loki = MockLoki()
    env = dict(socle_env, SOCLE_LOKI_URL=loki.url)
    server = SocleServer(home=tmp_path / "home", env=env)
    server.start()
    try:
        _push(server, "fwd", ["to loki 1", "to loki 2"])
        wait_for(lambda: "to loki 2" in loki.lines, 30, "lines at the mock Loki")
        assert {"app": "fwd"} in loki.labels
        stats = server.api("GET", "/api/v1/logs/stats").json()
        assert stats["forward"]["sent"] >= 2 and stats["forward"]["dropped"] == 0
        # Loki goes down, lines keep coming, Socle is restarted: nothing is lost.
        loki.down.set()
        _push(server, "fwd", ["while loki is down"])
        wait_for(
            lambda: server.api("GET", "/api/v1/logs/stats").json()["forward"]["failures"] > 0,
            30,
            "a failed forward",
        )
        server.stop()
        loki.down.clear()
        server.start()
        wait_for(lambda: "while loki is down" in loki.lines, 30, "the backlog at the mock Loki")
        assert loki.lines.count("to loki 1") == 1
    finally:
        server.cleanup()
        loki.server.shutdown()
        loki.server.server_close()


def _workers() -> dict[int, int]:
    """Log store workers running on this machine: pid -> parent pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if b"socle.observe.logs.worker" in cmdline:
            found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def test_the_engine_runs_in_a_worker_that_is_restarted_and_never_orphaned(
    server: SocleServer,
) -> None:
    assert server.proc is not None
    pid = json.loads((server.home / "server.json").read_text())["pid"]
    # The control plane never loads the engine: it stays small.
    assert "duckdb" not in Path(f"/proc/{pid}/maps").read_text()
    [worker] = [w for w, parent in _workers().items() if parent == pid]
    os.kill(worker, 9)
    _push_until = time.monotonic() + 30
    while True:  # pushes fail while the worker is down, then work again
        response = server.api(
            "POST",
            "/loki/api/v1/push",
            json={
                "streams": [{"stream": {"app": "again"}, "values": [[str(time.time_ns()), "x"]]}]
            },
        )
        if response.status_code == 204:
            break
        assert response.status_code >= 500, response.text
        assert time.monotonic() < _push_until
        time.sleep(0.2)
    assert lines(server, '{app="again"}') == ["x"]
    [restarted] = [w for w, parent in _workers().items() if parent == pid]
    assert restarted != worker
    server.kill9()
    wait_for(lambda: restarted not in _workers(), 30, "the worker to exit with its parent")


def test_cli_query_follow_prints_new_lines(server: SocleServer) -> None:
    _push(server, "clitail", ["first"])
    follow = subprocess.Popen(
        [SOCLE, "logs", "--query", '{app="clitail"}', "--follow", "--json"],
        env=server.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        assert json.loads(follow.stdout.readline())["line"] == "first"
        _push(server, "clitail", ["second"])
        assert json.loads(follow.stdout.readline())["line"] == "second"
    finally:
        follow.kill()
        follow.wait(10)
        if follow.stdout is not None:
            follow.stdout.close()


def test_a_tail_with_a_regex_re2_refuses_is_refused_before_it_streams(
    server: SocleServer,
) -> None:
    """The store's RE2 is asked before the stream starts: a 400 naming the expression, not
    a stream cut with no reason."""
    headers = {"Authorization": f"Bearer {server.token}"}
    answer = httpx.get(
        server.url + "/api/v1/logs/tail",
        params={"query": '{app="x"} |~ "(?=look)"'},
        headers=headers,
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert "bad regular expression '(?=look)'" in answer.text
    greek = server.api("GET", "/loki/api/v1/query_range",
                       params={"query": '{app=~"\\\\p{Greek}+"}', "since": "5m"})  # fmt: skip
    assert greek.status_code == 200, greek.text


def test_a_live_tail_ends_when_its_token_is_revoked(server: SocleServer) -> None:
    """The gate checks a token once, when the tail starts: the tail itself asks again, so
    revoking a leaked token also ends the live tails opened with it."""
    made = server.api("POST", "/api/v1/tokens", json={"name": "reader"})
    assert made.status_code == 200, made.text
    headers = {"Authorization": f"Bearer {made.json()['token']}"}
    _push(server, "revoked", ["before"])
    with httpx.stream(
        "GET",
        server.url + "/api/v1/logs/tail",
        params={"query": '{app="revoked"}', "limit": "1"},
        headers=headers,
        timeout=60,
    ) as response:
        assert response.status_code == 200
        got = response.iter_lines()
        assert json.loads(next(got))["line"] == "before"
        assert server.api("DELETE", "/api/v1/tokens/reader").status_code == 200
        _push(server, "revoked", ["after"])
        rest = list(got)  # the stream ends (within a recheck period) instead of following
    assert all(json.loads(line)["line"] == "after" for line in rest if line)
