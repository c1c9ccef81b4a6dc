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

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from socle.errors import NotFoundError, ObserveError, QueryRejected
from socle.observe._embedded import EmbeddedDaemon, replace_checked
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


class AlertmanagerServer(EmbeddedDaemon):
    """The embedded Alertmanager of one control plane (see the module docstring)."""

    daemon = "alertmanager"
    title = "Alertmanager"
    start_hint = "check SOCLE_ALERTMANAGER_LISTEN and {log}; SOCLE_ALERTMANAGER=off runs without it"

    def __init__(
        self, folder: Path, *, binary: str, host: str, port: int, tasks: TaskGroup
    ) -> None:
        super().__init__(
            folder, binary=binary, host=host, port=port, tasks=tasks, client_timeout=15.0
        )

    async def prepare(self, token: str) -> None:
        """Folders, the webhook token and a new password for Alertmanager's own API."""
        await self._prepare(token, [self.folder / "data"])

    async def write_config(self, *, socle_url: str, ca_file: Path | None) -> None:
        config = render_config(socle_url, self.token_file, ca_file=ca_file)
        amtool = shutil.which("amtool") or str(Path(self.binary).with_name("amtool"))
        check = [amtool, "check-config"] if Path(amtool).exists() else None
        text = yaml.safe_dump(config, sort_keys=False)
        refused = await replace_checked(self.config_file, text, check)
        if refused is not None:
            raise ObserveError("the generated Alertmanager config was refused: " + refused[-500:])
        if self._process is not None:
            await self._post("/-/reload")

    def _argv(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_file}",
            f"--storage.path={self.folder / 'data'}",
            f"--web.listen-address={self.address}",
            f"--web.config.file={self.folder / 'web.yml'}",
            "--cluster.listen-address=",
            f"--web.external-url={self.url}/",
            "--log.level=warn",
        ]

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
