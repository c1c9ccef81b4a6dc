"""The CLI's HTTP client for the control plane: finds the address and token, maps errors."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from typing import Any

import httpx

from socle.errors import ApiError, AuthError, ManifestError, Problem, ServerNotRunning
from socle.settings import Settings, read_json_file


def server_url(settings: Settings) -> str | None:
    if settings.addr:
        return settings.addr.rstrip("/")
    data = read_json_file(settings.server_file)
    return str(data["url"]) if data and data.get("url") else None


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
            ]
        )
    if response.status_code == 401:
        raise AuthError(message, status=401, hint=hint)
    if response.status_code >= 500:
        # A fault of the server: the request id ties this report to the server's log.
        rid = body.get("request_id") or response.headers.get("x-request-id")
        if rid:
            hint = f"{hint + '; ' if hint else ''}the server log has details under request id {rid}"
    raise ApiError(message, status=response.status_code, hint=hint)
