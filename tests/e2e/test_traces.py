"""Traces through the CLI and the API: an apply's span tree, trace ids in revisions and
audit entries, the OTLP receiver (JSON, protobuf, gzip) and a real app exporting spans
with the OpenTelemetry SDK from inside its sandbox."""

from __future__ import annotations

import gzip
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.e2e.socle_fixture import WEB_APP, SocleServer, wait_for, write_repo

TRACED_APP = """
import os
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

provider = TracerProvider()  # service name and resource from the OTEL_* variables
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
with provider.get_tracer("app").start_as_current_span("app startup") as span:
    span.set_attribute("app.answer", 42)
    with provider.get_tracer("app").start_as_current_span("warm cache"):
        pass
provider.shutdown()
print("exported", flush=True)
"""


def _repo(root: Path) -> Path:
    (root / "web").mkdir(parents=True)
    (root / "web" / "app.py").write_text(WEB_APP)
    (root / "web" / "traced.py").write_text(
        "import threading\n"
        f"threading.Thread(target=exec, args=({TRACED_APP!r},), daemon=True).start()\n" + WEB_APP
    )
    spec: dict[str, Any] = {
        "replicas": 1,
        "run": {"command": [sys.executable, "traced.py"], "workdir": "web"},
        "ports": [{"name": "http"}],
        "health": {"http": {"path": "/healthz", "port": "http"}, "interval": "1s"},
        "stopGrace": "2s",
    }
    doc = {"apiVersion": "socle/v1", "kind": "App", "metadata": {"name": "web"}, "spec": spec}
    (root / "apps.yaml").write_text(yaml.safe_dump(doc))
    return root


def _skip_if_another_home_owns_the_firewall(server: SocleServer) -> None:
    """Every control plane on one machine loads the same ``inet socle`` table: when another
    one (a test running beside this one) replaced it, its rules drop our instances' packets
    to our receiver, which is no fault of the receiver (production has one per machine)."""
    otlp = server.status()["control_plane"]["network"].get("instances_otlp")
    if not otlp:
        return
    port = otlp.rsplit(":", 1)[1]
    done = subprocess.run(
        ["nft", "list", "table", "inet", "socle"], capture_output=True, text=True, check=False
    )
    if done.returncode == 0 and f"host-service-tcp-{port}" not in done.stdout:
        pytest.skip("another control plane on this machine replaced the shared firewall table")


def _names(spans: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for span in spans:
        out.append(span["name"])
        out.extend(_names(span["children"]))
    return out


def _find(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for span in spans:
        if span["name"] == name:
            return span
        try:
            return _find(span["children"], name)
        except KeyError:
            continue
    raise KeyError(name)


def test_an_apply_is_traced_from_request_to_rollout(server: SocleServer, tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    server.cli("apply", str(repo), "--yes")
    revision = server.api("GET", "/api/v1/revisions/1").json()
    trace_id = revision["trace_id"]
    assert revision["status"] == "succeeded" and len(trace_id) == 32

    def complete() -> dict[str, Any] | None:
        answer = server.api("GET", "/api/v1/traces/1")
        if answer.status_code != 200:
            return None
        found: dict[str, Any] = answer.json()
        return found if "rollout web" in _names(found["spans"]) else None

    found = wait_for(complete, timeout=60, what="the apply's spans")
    assert found["trace_id"] == trace_id and found["revision"] == 1
    root = found["spans"][0]
    assert root["name"] == "POST /api/v1/apply" and root["service"] == "socle"
    apply = _find(found["spans"], "apply")
    assert [c["name"] for c in apply["children"]][:2] == ["build", "commit"]
    rollout = _find(apply["children"], "rollout web")
    assert rollout["attributes"]["socle.phase"] == "ready"
    assert apply["duration_ms"] >= rollout["duration_ms"] > 0
    assert apply["attributes"]["socle.status"] == "succeeded"

    shown = server.cli("trace", "1")
    assert f"revision 1, trace {trace_id}" in shown.stdout
    assert "└─ rollout web [socle]" in shown.stdout
    assert " s " in shown.stdout or " ms " in shown.stdout
    by_id = json.loads(server.cli("trace", trace_id, "--json").stdout)
    assert by_id["trace_id"] == trace_id

    # The audit entry of the apply request carries the same trace id.
    audited = json.loads(server.cli("audit", "query", "--path", "/api/v1/apply", "--json").stdout)
    assert any(e["trace_id"] == trace_id for e in audited)

    # The app got the OTEL_* variables and exported its own spans to the receiver.
    def app_trace() -> list[dict[str, Any]] | None:
        listed: list[dict[str, Any]] = server.api(
            "GET", "/api/v1/traces", params={"service": "web"}
        ).json()
        return listed or None

    try:
        listed = wait_for(app_trace, timeout=60, what="the app's exported spans")
    except AssertionError:
        _skip_if_another_home_owns_the_firewall(server)
        raise
    assert listed[0]["name"] == "app startup" and listed[0]["spans"] == 2
    spans = server.api("GET", f"/api/v1/traces/{listed[0]['trace_id']}").json()["spans"]
    startup = spans[0]
    assert startup["attributes"]["app.answer"] == 42
    assert startup["attributes"]["resource.deployment.environment"]
    assert startup["attributes"]["resource.service.instance.id"].startswith("web-")
    assert startup["children"][0]["name"] == "warm cache"
    table = server.cli("trace", "--service", "web").stdout
    assert "app startup" in table


def _otlp_json(trace_id: str, span_id: str, name: str) -> dict[str, Any]:
    now = time.time_ns()
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "batch"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "name": name,
                                "kind": "SPAN_KIND_CLIENT",
                                "startTimeUnixNano": str(now - 2_000_000_000),
                                "endTimeUnixNano": str(now),
                                "attributes": [
                                    {"key": "rows", "value": {"intValue": "12"}},
                                ],
                                "status": {"code": 2},
                            }
                        ]
                    }
                ],
            }
        ]
    }


def test_otlp_receiver_json_protobuf_gzip_and_refusals(server: SocleServer) -> None:
    key = (server.home / "traces" / "ingest.key").read_text().strip()
    assert (server.home / "traces" / "ingest.key").stat().st_mode & 0o777 == 0o600
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    body = json.dumps(_otlp_json(trace_id, span_id, "nightly export")).encode()
    url = "/v1/traces"
    headers = {"Content-Type": "application/json"}

    assert server.api("POST", url, token="", content=body, headers=headers).status_code == 401
    assert server.api("POST", url, token="wrong", content=body, headers=headers).status_code == 401
    sent = server.api("POST", url, token=key, content=body, headers=headers)
    assert sent.status_code == 200 and sent.json() == {}

    # The same request in protobuf, gzipped, with an API token instead of the ingest key.
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    attribute = resource.resource.attributes.add()
    attribute.key, attribute.value.string_value = "service.name", "batch"
    span = resource.scope_spans.add().spans.add()
    span.trace_id, span.span_id = bytes.fromhex(trace_id), secrets.token_bytes(8)
    span.parent_span_id = bytes.fromhex(span_id)
    span.name = "write rows"
    span.start_time_unix_nano = time.time_ns() - 1_000_000_000
    span.end_time_unix_nano = time.time_ns()
    proto = server.api(
        "POST",
        url,
        content=gzip.compress(request.SerializeToString()),
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    )
    assert proto.status_code == 200 and proto.headers["content-type"] == "application/x-protobuf"

    found = server.api("GET", f"/api/v1/traces/{trace_id}").json()
    (root,) = found["spans"]
    assert root["name"] == "nightly export" and root["status"] == "error"
    assert root["kind"] == "client" and root["attributes"]["rows"] == 12
    assert [c["name"] for c in root["children"]] == ["write rows"]
    shown = server.cli("trace", trace_id).stdout
    assert "nightly export [batch] ✗" in shown and "write rows" in shown

    bad = _otlp_json("zz" * 16, span_id, "bad")
    refused = server.api("POST", url, token=key, json=bad)
    assert refused.status_code == 400 and "traceId" in refused.json()["message"]
    junk = server.api(
        "POST",
        url,
        token=key,
        content=b"\xff\x00junk",
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert junk.status_code == 400
    wrong_type = server.api(
        "POST", url, token=key, content=b"x", headers={"Content-Type": "text/plain"}
    )
    assert wrong_type.status_code == 400 and "Content-Type" in wrong_type.json()["message"]
    bomb = gzip.compress(b"\0" * (80 * 1024 * 1024))
    too_big = server.api(
        "POST",
        url,
        token=key,
        content=bomb,
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    )
    assert too_big.status_code == 413

    # The Vault API still answers under /v1, and nothing can be mounted at traces/.
    assert server.api("GET", "/v1/sys/health").status_code in (200, 429, 501, 503)
    missing = server.cli("trace", "0" * 31 + "1", check=False)
    assert missing.returncode == 1 and "no spans" in missing.stderr
    wrong = server.cli("trace", "abc", check=False)
    assert wrong.returncode == 1 and "neither a revision number" in wrong.stderr
    database = server.home / "traces" / "traces.duckdb"
    assert os.stat(database).st_mode & 0o077 == 0  # owner-only, like the whole home


SPOOFER = """
import json, os, time, urllib.error, urllib.parse, urllib.request

endpoint = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
name, _, value = os.environ["OTEL_EXPORTER_OTLP_HEADERS"].partition("=")
key = urllib.parse.unquote(value)
now = time.time_ns()

def body(trace_id, span_id="00f067aa0ba902b7"):
    attrs = [{"key": k, "value": {"stringValue": v}} for k, v in (
        ("service.name", "billing"), ("service.instance.id", "billing-0"),
        ("deployment.environment", "prod"))]
    span = {"traceId": trace_id, "spanId": span_id, "name": "charge card",
            "startTimeUnixNano": str(now - 1000000), "endTimeUnixNano": str(now),
            "attributes": [{"key": "socle.app", "value": {"stringValue": "billing"}}]}
    return {"resourceSpans": [{"resource": {"attributes": attrs},
                               "scopeSpans": [{"spans": [span]}]}]}

def post(data, ctype="application/json", auth=key):
    headers = {"Content-Type": ctype}
    if auth:
        headers["Authorization"] = auth
    request = urllib.request.Request(endpoint, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:
        return repr(exc)

half_bad = body(os.environ["T_HALF_BAD"])
half_bad["resourceSpans"][0]["scopeSpans"][0]["spans"].append(
    dict(body("zz" * 16)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]))
results = {
    "claims": post(json.dumps(body(os.environ["T_CLAIMS"])).encode()),
    "no_key": post(json.dumps(body(os.environ["T_NO_KEY"])).encode(), auth=None),
    "half_bad": post(json.dumps(half_bad).encode()),
    "not_json": post(b"{not json"),
    "not_protobuf": post(b"\\xff\\x00junk", "application/x-protobuf"),
    "too_big": post(json.dumps(body(os.environ["T_TOO_BIG"]) | {"pad": "x" * 200000}).encode()),
}
print("OTLP-RESULTS " + json.dumps(results), flush=True)
time.sleep(3600)
"""


def test_an_isolated_app_exports_through_the_bridge_and_cannot_lie(
    tmp_path: Path, socle_env: dict[str, str]
) -> None:
    """An app in its own network namespace reaches the receiver on the bridge's gateway;
    its spans carry the instance that really sent them, whatever the body claims; bodies
    that are too large, malformed or half malformed are refused and nothing is stored."""
    env = dict(socle_env, SOCLE_MAX_TRACE_PUSH_BYTES="65536")
    server = SocleServer(home=tmp_path / "home", env=env)
    server.start()
    try:
        network = server.status()["control_plane"]["network"]
        if not network.get("instances_otlp"):
            pytest.skip("instances do not run in their own network namespaces here")
        ids = {
            k: secrets.token_hex(16) for k in ("T_CLAIMS", "T_NO_KEY", "T_HALF_BAD", "T_TOO_BIG")
        }
        repo = write_repo(
            tmp_path / "repo",
            {
                "spoofer": {
                    "run": {"command": [sys.executable, "-c", SPOOFER]},
                    "ports": [],
                    "health": None,
                    "env": ids,
                }
            },
        )
        server.cli("apply", str(repo), "--yes")

        def results() -> dict[str, Any] | None:
            for line in server.cli("logs", "spoofer").stdout.splitlines():
                if "OTLP-RESULTS " in line:
                    found: dict[str, Any] = json.loads(line.split("OTLP-RESULTS ", 1)[1])
                    return found
            return None

        answers = wait_for(results, timeout=120, what="the app's OTLP requests")
        if "Error" in str(answers.get("claims")):
            _skip_if_another_home_owns_the_firewall(server)
        assert answers == {
            "claims": 200,
            "no_key": 401,
            "half_bad": 400,
            "not_json": 400,
            "not_protobuf": 400,
            "too_big": 413,
        }, answers

        (span,) = server.api("GET", f"/api/v1/traces/{ids['T_CLAIMS']}").json()["spans"]
        instance = server.app("spoofer")["instances"][0]["id"]
        assert span["name"] == "charge card" and span["service"] == "spoofer"
        attributes = span["attributes"]
        assert attributes["socle.app"] == "spoofer"
        assert attributes["socle.instance"] == instance
        assert attributes["resource.service.instance.id"] == instance
        assert attributes["resource.deployment.environment"] == "default"
        assert attributes["claimed.service.name"] == "billing"
        shown = server.cli("trace", ids["T_CLAIMS"]).stdout
        assert "charge card [spoofer]" in shown and "billing" not in shown
        for refused in ("T_NO_KEY", "T_HALF_BAD", "T_TOO_BIG"):
            answer = server.api("GET", f"/api/v1/traces/{ids[refused]}")
            assert answer.status_code == 404, refused

        # Only the receiver is on the bridge: no platform or Vault API there, and a
        # request from the host (no instance's address) is refused.
        base = f"http://{network['instances_otlp']}"
        assert httpx.get(base + "/v1/sys/health", timeout=10).status_code == 404
        from_host = httpx.post(
            base + "/v1/traces", content=b"{}", headers={"Content-Type": "application/json"}
        )
        assert from_host.status_code == 403
    finally:
        server.cleanup()
