"""A real Socle control plane in a subprocess, driven like a user: CLI and HTTP API.

Each server gets its own SOCLE_HOME under the test's tmp_path and a free loopback port.
Teardown stops it with its apps, then kills by PID anything still running from that home
(the instances' shims and apps), so no test leaves processes behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

SOCLE = str(Path(sys.executable).parent / "socle")


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, OSError, ValueError, KeyError):
            last = None
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def processes_under(home: Path) -> list[int]:
    """PIDs whose command line or working directory mentions ``home``."""
    needle = str(home)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if needle in cmdline or cwd.startswith(needle):
            found.append(int(entry.name))
    return found + children_of(set(found))


def children_of(parents: set[int]) -> list[int]:
    """PIDs whose parent is in ``parents`` (nginx workers do not name the home)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid in parents and int(entry.name) not in parents:
            found.append(int(entry.name))
    return found


def prometheus_query(server: SocleServer, promql: str) -> list[dict[str, Any]]:
    """The query's result; empty while the embedded Prometheus is still starting (it starts
    after the API answers, so a busy machine can see the API first)."""
    done = server.cli("metrics", "query", promql, "--json", check=False)
    if done.returncode != 0 and "no Prometheus to query" in done.stderr:
        return []
    assert done.returncode == 0, done.stderr
    result: list[dict[str, Any]] = json.loads(done.stdout)["result"]
    return result


@dataclass
class SocleServer:
    home: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    token: str = ""
    args: tuple[str, ...] = ()
    verify: str | bool = True
    """CA file (or True for the system's) that HTTPS calls from the tests trust."""
    wrapper: tuple[str, ...] = ()
    """A command the server runs under (e.g. ``strace -f -o FILE``)."""
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.home / "server-test.log"

    def start(self) -> None:
        if self.proc is not None:
            self.proc.wait(30)  # a previous run was stopped: reap it
        self.home.mkdir(parents=True, exist_ok=True)
        info = self.home / "server.json"
        info.unlink(missing_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*self.wrapper, SOCLE, "server", "--listen", "127.0.0.1:0", *self.args],
                env=self.env,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited:\n{self.log.read_text()[-3000:]}")
            data = json.loads(info.read_text())
            self.url = data["url"]
            response = httpx.get(self.url + "/healthz", timeout=1, verify=self._tls())
            return response.status_code == 200

        try:
            wait_for(ready, 30, "control plane to answer")
        except BaseException:
            self.proc.kill()  # a server that never answered is not left behind
            self.proc.wait(10)
            raise
        self.token = (self.home / "admin.token").read_text().strip()

    def _tls(self) -> ssl.SSLContext | bool:
        if isinstance(self.verify, str):
            return ssl.create_default_context(cafile=self.verify)
        return self.verify

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, *, keep_apps: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            response = self.api("POST", "/api/v1/shutdown", json={"keep_apps": keep_apps})
            if response.status_code != 200:
                # Refused: the test revoked every token it knows. SIGTERM stops the control
                # plane too (keeping the apps: cleanup() kills them by PID) instead of
                # waiting a minute for a stop that will not come.
                self.proc.terminate()
            self.proc.wait(60)
        except (httpx.HTTPError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(10)

    def cli(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [SOCLE, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"socle {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def api(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Call the API with the admin token (or ``token``; an empty one sends none)."""
        token = self.token if token is None else token
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        return httpx.request(
            method, self.url + path, headers=sent, timeout=60, verify=self._tls(), **kwargs
        )

    def status(self) -> dict[str, Any]:
        response = self.api("GET", "/api/v1/status")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def app(self, name: str) -> dict[str, Any]:
        return next(a for a in self.status()["apps"] if a["name"] == name)

    def cleanup(self) -> None:
        self.stop()
        for pid in processes_under(self.home):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # Instances' network namespaces (as root): a killed control plane leaves them.
        prefix_ns = "socle-" + hashlib.sha256(str(self.home).encode()).hexdigest()[:6] + "-"
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir("/run/netns"):
                if name.startswith(prefix_ns):
                    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        for claim in Path("/run/socle/addresses").glob("*/*"):
            with contextlib.suppress(OSError):
                if claim.read_text().startswith(prefix_ns):
                    claim.unlink()
        # Instances' scratch spaces (and rendered templates) are tmpfs mounts, volumes are
        # loop-mounted images; a killed control plane leaves them, and so does a clean stop
        # (volumes stay for apps that outlive it). Nothing of this home stays mounted.
        prefix = f"{self.home}/"
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            target = line.split()[4]
            if target.startswith(prefix):
                subprocess.run(["umount", "-l", target], check=False, capture_output=True)


WEB_APP = textwrap.dedent(
    """
    import json, os, signal, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/healthz" and os.path.exists("unhealthy"):
                self.send_response(500); self.end_headers(); return
            body = json.dumps({"version": os.environ.get("VERSION", ""), "pid": os.getpid(),
                               "instance": os.environ.get("SOCLE_INSTANCE"),
                               "db_password": os.environ.get("DB_PASSWORD")}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, fmt, *args):
            print("request", self.path, flush=True)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if os.environ.get("CRASH") == "1":
        print("crashing on purpose", file=sys.stderr, flush=True)
        sys.exit(3)
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    print("listening on", os.environ["PORT"], flush=True)
    server.serve_forever()
    """
)


def write_repo(root: Path, apps: dict[str, dict[str, Any]]) -> Path:
    """A manifest repository with one stdlib web app per entry (spec overrides merged)."""
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    (root / "web").mkdir(exist_ok=True)
    (root / "web" / "app.py").write_text(WEB_APP)
    docs = []
    for name, overrides in apps.items():
        spec: dict[str, Any] = {
            "replicas": 1,
            "run": {"command": [sys.executable, "app.py"], "workdir": "web"},
            "ports": [{"name": "http"}],
            "health": {
                "http": {"path": "/healthz", "port": "http"},
                "interval": "1s",
                "timeout": "1s",
            },
            "stopGrace": "2s",
            "update": {"progressDeadlineSeconds": "30s"},
        }
        spec.update(overrides)
        docs.append(
            {"apiVersion": "socle/v1", "kind": "App", "metadata": {"name": name}, "spec": spec}
        )
    (root / "apps.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return root


def localhost_request(method: str, url: str, **kw: Any) -> httpx.Response:
    """``url`` as a browser or curl resolves it: ``*.localhost`` names (the ingress's stable
    app URLs) go to the loopback address, with the name in the Host header (the system
    resolver here does not know them)."""
    parts = httpx.URL(url)
    headers = dict(kw.pop("headers", {}))
    if parts.host.endswith(".localhost"):
        headers["Host"] = parts.netloc.decode()
        parts = parts.copy_with(host="127.0.0.1")
    return httpx.request(method, parts, headers=headers, timeout=kw.pop("timeout", 10), **kw)


def get_json(url: str) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(url, timeout=5).json()
    return data


def instance_url(app: dict[str, Any], ordinal: int = 0) -> str:
    inst = next(i for i in app["instances"] if i["ordinal"] == ordinal)
    return f"http://{inst['address']}:{inst['ports']['http']}/"


@contextlib.contextmanager
def running_server(
    home: Path, env: dict[str, str], args: tuple[str, ...] = ()
) -> Iterator[SocleServer]:
    """A started control plane, cleaned up (processes, mounts) however the test ends."""
    srv = SocleServer(home=home, env=env, args=args)
    srv.start()
    try:
        yield srv
    finally:
        srv.cleanup()


def observed_env(
    socle_env: dict[str, str], *, alertmanager: bool = True, **extra: str
) -> dict[str, str]:
    """``socle_env`` with the embedded Prometheus (and Alertmanager) on, scraping every second
    (the other e2e servers run without them, to spare the two cores)."""
    env = dict(socle_env, SOCLE_PROMETHEUS="embedded", SOCLE_SCRAPE_INTERVAL="1", **extra)
    if alertmanager:
        env["SOCLE_ALERTMANAGER"] = "embedded"
    return env
