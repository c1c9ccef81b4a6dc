"""Runtime configuration (``spec.templates``) as a user sees it: an app whose config lists
its peer app's endpoints, re-rendered and restarted when the peer scales; a KV change
signals it; a broken render keeps the last good file and shows in ``socle status``."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import consul
import httpx
import yaml

from tests.e2e.socle_fixture import SocleServer, instance_url, wait_for, write_repo

READER = textwrap.dedent(
    """
    import json, os, signal, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    folder = os.environ["SOCLE_TEMPLATES_DIR"]
    state = {"hups": 0}

    def load():
        for name in ("peers.conf", "mode.conf"):
            with open(os.path.join(folder, name)) as handle:
                state[name] = handle.read()

    def on_hup(*_):
        state["hups"] += 1
        load()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({**state, "pid": os.getpid(), "folder": folder,
                               "writable": os.access(folder, os.W_OK)}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, fmt, *args):
            pass

    load()
    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
    """
)

PEERS = '{% for p in service("peer", port="http") %}{{ p.address }}:{{ p.port }}\n{% endfor %}'
MODE = 'mode={{ key("cfg/mode") }}\n'


def repo_with(tmp_path: Path, peers: int) -> Path:
    reader = {
        "run": {"command": ["python3", "reader.py"], "workdir": "web"},
        "dependsOn": ["peer"],  # its first render lists the peer
        "templates": [
            {"source": "conf/peers.tmpl", "destination": "peers.conf", "onChange": "restart"},
            {"source": "conf/mode.tmpl", "destination": "mode.conf", "onChange": "signal"},
        ],
    }
    root = write_repo(tmp_path / "repo", {"peer": {"replicas": peers}, "reader": reader})
    docs = list(yaml.safe_load_all((root / "apps.yaml").read_text()))
    docs[1]["spec"]["run"]["command"] = [docs[0]["spec"]["run"]["command"][0], "reader.py"]
    (root / "apps.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    (root / "web" / "reader.py").write_text(READER)
    (root / "web" / "conf").mkdir(exist_ok=True)
    (root / "web" / "conf" / "peers.tmpl").write_text(PEERS)
    (root / "web" / "conf" / "mode.tmpl").write_text(MODE)
    return root


def kv(server: SocleServer) -> consul.Consul:
    info = json.loads((server.home / "server.json").read_text())
    host, _, port = info["consul"].rpartition(":")
    return consul.Consul(host=host, port=int(port), token=server.token)


def config(server: SocleServer) -> dict[str, Any]:
    app = server.app("reader")
    ready = [i for i in app["instances"] if i["ready"]]
    if not ready:
        return {}
    try:
        data: dict[str, Any] = httpx.get(instance_url(app), timeout=5).json()
    except httpx.HTTPError:
        return {}
    data["host_pid"] = ready[0]["pid"]  # the pid inside the sandbox's namespace is always 2
    return data


def peer_lines(server: SocleServer) -> set[str]:
    return {
        f"{i['address']}:{i['ports']['http']}"
        for i in server.app("peer")["instances"]
        if i["ready"]
    }


def test_config_follows_peers_and_kv(server: SocleServer, tmp_path: Path) -> None:
    client = kv(server)
    client.kv.put("cfg/mode", "slow")
    server.cli("apply", str(repo_with(tmp_path, 1)), "--yes")
    first = wait_for(lambda: config(server) or None, 60, "reader serving its config")
    assert first["folder"] == "/run/socle/templates"
    assert first["writable"] is False  # read-only inside the sandbox
    assert first["mode.conf"] == "mode=slow\n"
    assert set(first["peers.conf"].split()) == peer_lines(server)
    assert len(peer_lines(server)) == 1

    # The peer scales: the reader's file is rendered again and the reader restarted.
    server.cli("apply", str(repo_with(tmp_path, 2)), "--yes")
    wait_for(lambda: len(peer_lines(server)) == 2, 60, "two ready peers")
    scaled = wait_for(
        lambda: (c := config(server)) and len(c["peers.conf"].split()) == 2 and c,
        60,
        "reader restarted with both peers",
    )
    assert set(scaled["peers.conf"].split()) == peer_lines(server)
    assert scaled["host_pid"] != first["host_pid"]

    # A KV change signals the reader (SIGHUP): same process, new file.
    client.kv.put("cfg/mode", "fast")
    hup = wait_for(
        lambda: (c := config(server)) and c["mode.conf"] == "mode=fast\n" and c,
        60,
        "reader signalled with the new mode",
    )
    assert hup["host_pid"] == scaled["host_pid"] and hup["hups"] >= 1

    # A render that fails keeps the last good file and says why in `socle status`.
    client.kv.delete("cfg/mode")
    status = wait_for(
        lambda: "template not rendered" in (m := server.app("reader")["message"] or "") and m,
        60,
        "the template error in status",
    )
    assert "cfg/mode" in status
    assert config(server)["mode.conf"] == "mode=fast\n"
    table = server.cli("status")
    assert "template not rendered" in table.stdout


SECRET = "amber-otter-telescope-41c9"
NEW_SECRET = "violet-harbor-compass-8e2a"


def test_secrets_in_templates_are_denied_by_default_and_masked(
    dev_server: SocleServer, tmp_path: Path
) -> None:
    import hvac

    keys = json.loads((dev_server.home / "secrets-dev-unseal.key").read_text())
    vault = hvac.Client(url=dev_server.url, token=keys["root_token"])
    vault.secrets.kv.v2.create_or_update_secret(
        "db", secret={"password": SECRET}, mount_point="secret"
    )
    kv(dev_server).kv.put("cfg/mode", "x")
    root = repo_with(tmp_path, 1)
    (root / "web" / "conf" / "mode.tmpl").write_text(
        'mode=password={{ secret("secret/data/db#password") }}\n'
    )
    dev_server.cli("apply", str(root), "--yes", check=False)

    # Deny by default: the app has no policy, the instance cannot start, status says why.
    def refused() -> str | None:
        message = dev_server.app("reader")["message"] or ""
        return message if "app-reader" in message else None

    message = wait_for(refused, 90, "the denied secret in status")
    assert "secret/data/db#password" in message and SECRET not in message

    vault.sys.create_or_update_policy(
        "app-reader", 'path "secret/data/db" { capabilities = ["read"] }'
    )
    dev_server.cli("apply", str(root), "--yes")
    served = wait_for(
        lambda: (c := config(dev_server)) and c["mode.conf"] == f"mode=password={SECRET}\n" and c,
        90,
        "the reader with its secret",
    )
    # A new version of the secret is rendered again (and signals the reader).
    vault.secrets.kv.v2.create_or_update_secret(
        "db", secret={"password": NEW_SECRET}, mount_point="secret"
    )
    wait_for(
        lambda: (c := config(dev_server)) and c["mode.conf"] == f"mode=password={NEW_SECRET}\n",
        90,
        "the new secret version rendered",
    )
    assert config(dev_server)["host_pid"] == served["host_pid"]
    visible = dev_server.cli("status", "--json").stdout + dev_server.cli("history", "--json").stdout
    visible += dev_server.cli("plan", str(root), "--json", check=False).stdout
    visible += (
        (dev_server.home / "server.log").read_text(errors="replace")
        if (dev_server.home / "server.log").exists()
        else ""
    )
    for value in (SECRET, NEW_SECRET):
        assert value not in visible
    # Rendered files live on a tmpfs (as root), never on the disk that holds the state.
    assert os.path.ismount(dev_server.home / "templates")
