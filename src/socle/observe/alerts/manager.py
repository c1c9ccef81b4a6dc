"""The embedded Alertmanager: config (webhook back to Socle), process, v2 API client.

Started with ``--cluster.listen-address=`` (empty: no gossip on 0.0.0.0) on a loopback
port, config and data under ``home/observe/alertmanager/``. Every alert goes to one
receiver, a webhook on Socle (``POST /api/v1/alerts/webhook``) authenticated with an API
token from a ``credentials_file``; Socle runs the rule's remediation. The config is checked
with ``amtool check-config`` before it replaces the live one.

Alerts and silences are read and written through Alertmanager's own v2 API
(``/api/v2/alerts``, ``/api/v2/silences``, ``/api/v2/silence/{id}``), behind basic auth
(``web.yml``, see :mod:`socle.observe._webauth`): every app sandbox shares the host's
loopback, and an open API would let any of them silence alerts or post forged ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from socle.errors import NotFoundError, ObserveError, QueryRejected
from socle.fs import private_dir, write_private
from socle.observe._process import Supervised, stop_stale
from socle.observe._webauth import WebAuth, write_web_auth
from socle.tasks import TaskGroup

WEBHOOK_PATH = "/api/v1/alerts/webhook"


def render_config(
    socle_url: str,
    token_file: Path,
    *,
    ca_file: Path | None = None,
    group_wait: str = "2s",
    group_interval: str = "10s",
    repeat_interval: str = "1h",
) -> dict[str, Any]:
    """Alertmanager's config: everything to Socle's webhook (pure; tested as data)."""
    http_config: dict[str, Any] = {
        "authorization": {"type": "Bearer", "credentials_file": str(token_file)}
    }
    if ca_file is not None:
        http_config["tls_config"] = {"ca_file": str(ca_file)}
    return {
        "route": {
            "receiver": "socle",
            "group_by": ["alertname", "app", "instance"],
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "receivers": [
            {
                "name": "socle",
                "webhook_configs": [
                    {
                        "url": socle_url.rstrip("/") + WEBHOOK_PATH,
                        "send_resolved": True,
                        "max_alerts": 100,
                        "http_config": http_config,
                    }
                ],
            }
        ],
    }


class AlertmanagerServer:
    """The embedded Alertmanager of one control plane (see the module docstring)."""

    def __init__(
        self, folder: Path, *, binary: str, host: str, port: int, tasks: TaskGroup
    ) -> None:
        self.folder = folder
        self.binary = binary
        self.host = host
        self.port = port
        self._tasks = tasks
        self.config_file = folder / "alertmanager.yml"
        self.token_file = folder / "token"
        self._process: Supervised | None = None
        self._client = httpx.AsyncClient(timeout=15.0)
        self.web: WebAuth | None = None
        """Basic auth on its HTTP API (set by :meth:`prepare`; Prometheus needs it too)."""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    async def prepare(self, token: str) -> None:
        """Folders, the webhook token and a new password for Alertmanager's own API."""

        def make() -> WebAuth:
            private_dir(self.folder)
            private_dir(self.folder / "data")
            write_private(self.token_file, token + "\n")
            return write_web_auth(self.folder)

        self.web = await asyncio.to_thread(make)
        self._client.auth = self.web.pair

    async def write_config(self, *, socle_url: str, ca_file: Path | None) -> None:
        config = render_config(socle_url, self.token_file, ca_file=ca_file)
        candidate = self.config_file.with_name("alertmanager.yml.new")
        await asyncio.to_thread(write_private, candidate, yaml.safe_dump(config, sort_keys=False))
        amtool = shutil.which("amtool") or str(Path(self.binary).with_name("amtool"))
        if Path(amtool).exists():
            proc = await asyncio.create_subprocess_exec(
                amtool,
                "check-config",
                str(candidate),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                with contextlib.suppress(FileNotFoundError):
                    candidate.unlink()
                raise ObserveError(
                    "the generated Alertmanager config was refused: "
                    + out.decode(errors="replace").strip()[-500:]
                )
        await asyncio.to_thread(os.replace, candidate, self.config_file)
        if self._process is not None:
            await self._post("/-/reload")

    async def _ready(self) -> bool:
        try:
            response = await self._client.get(f"{self.url}/-/ready", timeout=2.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def start(self) -> None:
        await asyncio.to_thread(
            stop_stale, self.folder / "alertmanager.pid", self.binary, str(self.config_file)
        )
        argv = [
            self.binary,
            f"--config.file={self.config_file}",
            f"--storage.path={self.folder / 'data'}",
            f"--web.listen-address={self.address}",
            f"--web.config.file={self.folder / 'web.yml'}",
            "--cluster.listen-address=",
            f"--web.external-url={self.url}/",
            "--log.level=warn",
        ]
        process = Supervised(
            "alertmanager",
            argv,
            log_file=self.folder / "alertmanager.log",
            pid_file=self.folder / "alertmanager.pid",
            tasks=self._tasks,
            ready=self._ready,
        )
        try:
            await process.start(timeout=60.0)
        except RuntimeError as exc:
            raise ObserveError(
                f"the embedded Alertmanager did not start: {exc}",
                hint="check SOCLE_ALERTMANAGER_LISTEN and "
                f"{self.folder / 'alertmanager.log'}; SOCLE_ALERTMANAGER=off runs without it",
            ) from exc
        self._process = process

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            await process.stop()
        await self._client.aclose()

    def to_dict(self) -> dict[str, object]:
        process = self._process.to_dict() if self._process else {"pid": None}
        return {"url": self.url, **process}

    # -- the v2 API ----------------------------------------------------------------------

    async def _request(
        self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None
    ) -> httpx.Response:
        try:
            response = await self._client.request(method, self.url + path, json=json, params=params)
        except httpx.HTTPError as exc:
            raise ObserveError(
                f"Alertmanager did not answer: {type(exc).__name__}",
                hint="see `socle status` (component alertmanager)",
            ) from exc
        if response.status_code == 404:
            raise NotFoundError(f"Alertmanager: {response.text.strip()[:300] or 'not found'}")
        if 400 <= response.status_code < 500:
            raise QueryRejected(f"Alertmanager refused: {response.text.strip()[:500]}")
        if response.status_code >= 500:
            raise ObserveError(f"Alertmanager failed: {response.text.strip()[:500]}")
        return response

    async def _post(self, path: str) -> None:
        await self._request("POST", path)

    async def alerts(self) -> list[dict[str, Any]]:
        response = await self._request("GET", "/api/v2/alerts")
        data = response.json()
        return data if isinstance(data, list) else []

    async def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Post alerts to Alertmanager's v2 API (an ``endsAt`` in the past resolves one)."""
        await self._request("POST", "/api/v2/alerts", json=alerts)

    async def silences(self) -> list[dict[str, Any]]:
        response = await self._request("GET", "/api/v2/silences")
        data = response.json()
        return data if isinstance(data, list) else []

    async def add_silence(self, silence: Mapping[str, Any]) -> str:
        response = await self._request("POST", "/api/v2/silences", json=dict(silence))
        return str(response.json().get("silenceID", ""))

    async def expire_silence(self, silence_id: str) -> bool:
        """End a silence now: True if it was active or pending, False if it had already
        ended. An unknown id is a :class:`NotFoundError` (Alertmanager itself answers the
        ``DELETE`` of an unknown id with a 500, which would read as its own fault)."""
        try:
            response = await self._request("GET", f"/api/v2/silence/{silence_id}")
        except NotFoundError:
            raise NotFoundError(
                f"no silence {silence_id}", hint="see `socle silence list --all`"
            ) from None
        if (response.json().get("status") or {}).get("state") == "expired":
            return False
        await self._request("DELETE", f"/api/v2/silence/{silence_id}")
        return True


__all__ = ["WEBHOOK_PATH", "AlertmanagerServer", "render_config"]
