"""The CLI's HTTP client for the control plane: finds the address and token, maps errors."""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from socle.errors import ApiError, AuthError, ManifestError, Problem, ServerNotRunning
from socle.settings import Settings, read_json_file


def server_url(settings: Settings) -> str | None:
    if settings.addr:
        return settings.addr.rstrip("/")
    data = read_json_file(settings.server_file)
    return str(data["url"]) if data and data.get("url") else None


LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on TCP ``port`` of this host (from /proc/net)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii", errors="replace") as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and fields[1].endswith(f":{port:04X}"):
                found.add(fields[9])
    return found


def check_listener(settings: Settings) -> None:
    """Refuse to talk to a loopback port that the control plane of ``server.json`` does not
    hold. Apps share the host's network and outlive the control plane: after a crash (a
    stale ``server.json``) a hostile app can listen on the freed port, and the CLI would
    send it the admin token. Where this cannot be told (another user's process, no /proc),
    nothing is refused."""
    if settings.addr:
        return  # an address the operator gave: their choice, checked by TLS if any
    data = read_json_file(settings.server_file)
    if not data or not data.get("url") or not str(data.get("pid", "")).isdigit():
        return
    parts = urlsplit(str(data["url"]))
    if parts.hostname not in LOOPBACK or parts.port is None:
        return
    inodes = _listening_inodes(parts.port)
    if not inodes:
        return  # nothing listens: the connection fails and says so
    pid = int(data["pid"])
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        fds = []
    except OSError:
        return  # not ours to look at
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return
    raise ServerNotRunning(
        f"{parts.hostname}:{parts.port} is held by a process other than the control plane "
        f"(pid {pid}) named in {settings.server_file}; not sending it the token",
        hint="the control plane is not running (it may have crashed) and something else "
        "listens on its port, possibly an app: find it with `ss -ltnp`, then `socle up`",
    )


def api_token(settings: Settings) -> str | None:
    if settings.token:
        return settings.token
    try:
        return settings.token_file.read_text().strip() or None
    except (FileNotFoundError, PermissionError):
        return None


class Client:
    def __init__(self, settings: Settings, *, timeout: float = 30.0) -> None:
        url = server_url(settings)
        if url is None:
            raise ServerNotRunning(
                f"no Socle control plane found for SOCLE_HOME={settings.home}",
                hint="start one with `socle up` (or `socle server`), or set SOCLE_ADDR",
            )
        self.url = url
        check_listener(settings)
        token = api_token(settings)
        headers: dict[str, str] = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(settings.ca)) if settings.ca else True
        )
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout, verify=verify)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ServerNotRunning(
                f"cannot reach the control plane at {self.url}: {exc}",
                hint="start it with `socle up`, or check SOCLE_ADDR",
            ) from exc
        except httpx.HTTPError as exc:
            raise ApiError(f"request to {self.url}{path} failed: {exc}", status=0) from exc

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        _raise_for(response)
        return response.json()

    def healthy(self) -> bool:
        try:
            return self._http.get("/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stream_lines(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        try:
            with self._http.stream("GET", path, params=params, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for(response)
                for line in response.iter_lines():
                    if line:
                        yield json.loads(line)
        except httpx.ConnectError as exc:
            raise ServerNotRunning(f"cannot reach the control plane at {self.url}") from exc


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = {"message": response.text[:500]}
    message = str(body.get("message") or body)
    hint = body.get("hint")
    if response.status_code == 422 and body.get("problems"):
        raise ManifestError(
            [
                Problem(p.get("file"), p.get("line"), p.get("path", ""), p.get("reason", ""))
                for p in body["problems"]
            ],
            hint=hint,
        )
    if response.status_code == 401:
        raise AuthError(message, status=401, hint=hint)
    if response.status_code >= 500:
        # A fault of the server: the request id ties this report to the server's log.
        rid = body.get("request_id") or response.headers.get("x-request-id")
        if rid:
            hint = f"{hint + '; ' if hint else ''}the server log has details under request id {rid}"
    raise ApiError(message, status=response.status_code, hint=hint)
