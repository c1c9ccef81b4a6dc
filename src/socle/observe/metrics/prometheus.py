"""The embedded Prometheus: its generated config, checks, reloads, and queries.

Layout under ``home/observe/prometheus/`` (owner-only, like all of SOCLE_HOME)::

    prometheus.yml      the live config (only ever replaced by one that promtool accepted)
    rules/*.yml         rule files (AlertRule, built-in rules), checked the same way
    token               the bearer token Prometheus scrapes Socle with (credentials_file)
    web.yml, web.password  basic auth on its own HTTP API (see :mod:`socle.observe._webauth`)
    data/               the TSDB (retention from settings)
    prometheus.log, prometheus.pid

Scrape targets are never written into the config: every job discovers them from Socle's
``http_sd`` endpoint (``/api/v1/metrics/targets?job=...``), so a new app or instance needs
no reload, only the next discovery refresh. A config or rule change is written next to the
live file, checked with ``promtool``, renamed over it, then ``POST /-/reload``: a bad
generated config never replaces a working one (the error names promtool's reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

from socle.errors import ObserveError, QueryRejected
from socle.fs import write_private
from socle.observe._embedded import EmbeddedDaemon, replace_checked
from socle.observe._embedded import run_check as _run_check
from socle.observe._webauth import USER
from socle.tasks import TaskGroup

JOBS = ("socle", "socle-instances", "apps")
"""The scrape jobs, each fed by ``/api/v1/metrics/targets?job=<name>``."""

MAX_ANSWER_BYTES = 32 << 20
"""The largest query answer the control plane reads from Prometheus."""


@dataclass(frozen=True)
class ScrapeSetup:
    """What the generated config needs to know about this control plane."""

    socle_url: str
    """Base URL of Socle's main listener (``http://127.0.0.1:7780``)."""
    token_file: Path
    ca_file: Path | None = None
    scrape_interval: float = 15.0
    alert_interval: float | None = None
    """Scrape interval of the per-instance exporter and the rule evaluation interval (the
    crash-loop-to-remediation path); None: ``scrape_interval``. Never above it."""
    rules_dir: Path | None = None
    alertmanager: str | None = None
    """``host:port`` of the Alertmanager to send alerts to (None: none)."""
    alertmanager_password_file: Path | None = None
    """Alertmanager's basic-auth password (its API is not open to the host)."""
    remote_write: str | None = None
    agent: bool = False
    """Agent mode: scrape and forward to ``remote_write`` only (no rules, no alerting)."""


def _seconds(value: float) -> str:
    return f"{max(1, round(value))}s"


def render_config(setup: ScrapeSetup) -> dict[str, Any]:
    """The Prometheus configuration for ``setup`` (pure; tested as data)."""
    parts = urlsplit(setup.socle_url)
    auth = {"type": "Bearer", "credentials_file": str(setup.token_file)}
    tls: dict[str, Any] = {"ca_file": str(setup.ca_file)} if setup.ca_file else {}

    def sd(job: str) -> dict[str, Any]:
        config: dict[str, Any] = {
            "url": f"{setup.socle_url}/api/v1/metrics/targets?job={job}",
            "refresh_interval": _seconds(min(setup.scrape_interval, 30.0)),
            "authorization": auth,
        }
        if tls:
            config["tls_config"] = tls
        return config

    def socle_job(job: str, *, honor_labels: bool) -> dict[str, Any]:
        config: dict[str, Any] = {
            "job_name": job,
            "scheme": parts.scheme,
            "authorization": auth,
            "honor_labels": honor_labels,
            "http_sd_configs": [sd(job)],
        }
        if tls:
            config["tls_config"] = tls
        return config

    interval = _seconds(setup.scrape_interval)
    fast = min(setup.alert_interval or setup.scrape_interval, setup.scrape_interval)
    # The exporter's own labels (app, env, instance, release) win over the target's. It is
    # scraped faster than the rest: its restart counters are what crash-loop rules read,
    # and a new instance's counter only counts from its first sample on.
    instances = socle_job("socle-instances", honor_labels=True)
    instances["scrape_interval"] = _seconds(fast)
    instances["scrape_timeout"] = _seconds(min(fast, 10.0))
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": interval,
            "evaluation_interval": _seconds(fast),
            "scrape_timeout": _seconds(min(setup.scrape_interval, 10.0)),
        },
        "scrape_configs": [
            socle_job("socle", honor_labels=False),
            instances,
            {"job_name": "apps", "http_sd_configs": [sd("apps")]},
        ],
    }
    if setup.rules_dir is not None and not setup.agent:
        config["rule_files"] = [str(setup.rules_dir / "*.yml")]
    if setup.alertmanager is not None and not setup.agent:
        manager: dict[str, Any] = {"static_configs": [{"targets": [setup.alertmanager]}]}
        if setup.alertmanager_password_file is not None:
            manager["basic_auth"] = {
                "username": USER,
                "password_file": str(setup.alertmanager_password_file),
            }
        config["alerting"] = {"alertmanagers": [manager]}
    if setup.remote_write:
        config["remote_write"] = [{"url": setup.remote_write}]
    return config


def dump(config: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False)


def promtool_for(prometheus_bin: str) -> str:
    sibling = Path(prometheus_bin).with_name("promtool")
    if sibling.exists():
        return str(sibling)
    return shutil.which("promtool") or "promtool"


async def check_rules(promtool: str, path: Path, *, name: str | None = None) -> None:
    """``promtool check rules``; a refusal is an :class:`ObserveError` with its reason on
    one line (status shows the first line of an error), naming the file as ``name`` (the
    live file a staged candidate stands for)."""
    code, out = await _run_check([promtool, "check", "rules", str(path)])
    if code != 0:
        shown = name or path.name
        lines = [line.strip() for line in out.replace(str(path), shown).splitlines()]
        useful = [line for line in lines if line and not line.startswith(("Checking", "FAILED"))]
        reason = "; ".join(useful or [line for line in lines if line])[:500]
        raise ObserveError(
            f"Prometheus refuses the rules in {shown}: {reason}",
            hint="fix the expression (PromQL) or the durations of the rule",
        )


class PrometheusServer(EmbeddedDaemon):
    """The embedded Prometheus of one control plane (see the module docstring)."""

    daemon = "prometheus"
    title = "Prometheus"
    start_hint = (
        "check SOCLE_PROMETHEUS_LISTEN (a free loopback port) and {log}; "
        "SOCLE_PROMETHEUS=off runs without it"
    )

    def __init__(
        self,
        folder: Path,
        *,
        binary: str,
        host: str,
        port: int,
        retention: str,
        retention_size: str,
        tasks: TaskGroup,
        agent: bool = False,
    ) -> None:
        super().__init__(
            folder, binary=binary, host=host, port=port, tasks=tasks, client_timeout=30.0
        )
        self.agent = agent
        self.promtool = promtool_for(binary)
        self.retention = retention
        self.retention_size = retention_size
        self.rules_dir = folder / "rules"
        self._config_lock = asyncio.Lock()
        self._live_rules: dict[str, str] = {}
        """Digest of each rule file this server made live (promtool accepted it): an
        unchanged file is not checked again, so a write costs one promtool run per file
        that changed, not one per rule applied."""

    def _argv(self) -> list[str]:
        argv = [
            self.binary,
            f"--config.file={self.config_file}",
            f"--web.listen-address={self.address}",
            f"--web.config.file={self.folder / 'web.yml'}",
            "--web.enable-lifecycle",
            f"--web.external-url={self.url}/",
            "--log.level=warn",
        ]
        if self.agent:
            argv += ["--enable-feature=agent", f"--storage.agent.path={self.folder / 'agent'}"]
            return argv
        argv += [
            f"--storage.tsdb.path={self.folder / 'data'}",
            f"--storage.tsdb.retention.time={self.retention}",
        ]
        if self.retention_size not in ("", "0"):
            argv.append(f"--storage.tsdb.retention.size={self.retention_size}")
        return argv

    async def prepare(self, token: str) -> None:
        """Folders, the scrape token (before the first config, which names the file) and a
        new password for Prometheus' own API."""
        await self._prepare(token, [self.rules_dir, self.folder / "data"])

    async def write_config(self, config: Mapping[str, Any], *, reload: bool = True) -> None:
        """Check ``config`` with promtool, then make it live (and reload a running server)."""
        async with self._config_lock:
            check = [self.promtool, "check", "config", *(["--agent"] if self.agent else [])]
            out = await replace_checked(self.config_file, dump(config), check)
            if out is not None:
                raise ObserveError(
                    f"the generated Prometheus config was refused, the running one is kept: {out}",
                    hint="check the observe settings (remote_write URL, retention) and the "
                    "AlertRule manifests",
                )
            if reload and self.running:
                await self.reload()

    async def write_rules(self, files: Mapping[str, str]) -> None:
        """Replace the rule files with ``files`` (name -> YAML), each new or changed one
        checked, then reload."""
        async with self._config_lock:
            staged: list[tuple[Path, Path]] = []
            digests = {
                name: hashlib.sha256(text.encode()).hexdigest() for name, text in files.items()
            }
            try:
                for name, text in sorted(files.items()):
                    if self._live_rules.get(name) == digests[name]:
                        continue  # live already, as promtool accepted it
                    candidate = self.rules_dir / f".{name}.new"
                    await asyncio.to_thread(write_private, candidate, text)
                    staged.append((candidate, self.rules_dir / name))
                    await check_rules(self.promtool, candidate, name=name)
            except BaseException:
                for candidate, _ in staged:
                    with contextlib.suppress(FileNotFoundError):
                        candidate.unlink()
                raise

            def swap() -> None:
                for candidate, final in staged:
                    os.replace(candidate, final)
                for old in self.rules_dir.glob("*.yml"):
                    if old.name not in files:
                        old.unlink()

            self._live_rules = {}  # a swap that fails midway leaves files to check again
            await asyncio.to_thread(swap)
            self._live_rules = digests
            if self.running:
                await self.reload()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.pid is not None

    async def reload(self) -> None:
        try:
            response = await self._client.post(f"{self.url}/-/reload")
        except httpx.HTTPError as exc:
            raise ObserveError(f"could not reload Prometheus: {exc}") from exc
        if response.status_code != 200:
            raise ObserveError(f"Prometheus refused to reload: {response.text.strip()}")

    def to_dict(self) -> dict[str, object]:
        return {"url": self.url, "retention": self.retention, **self._process_info()}


class PrometheusQuery:
    """Queries against a Prometheus HTTP API (the embedded one or a team's own)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        auth: tuple[str, str] | None = None,
        max_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout
        self._auth = auth
        """Basic auth (the embedded Prometheus'); None for a team's own."""
        self._max_bytes = max_bytes

    async def federate(self, matches: Sequence[str]) -> bytes:
        """``GET /federate?match[]=...``: the newest sample of every matching series, in
        the text exposition format, for a team's own Prometheus to scrape (federation).
        Bounded like :meth:`get`; a selector Prometheus refuses is a :class:`QueryRejected`.
        """
        status, raw = await self._read("/federate", [("match[]", m) for m in matches])
        if status in (400, 422):
            message = raw[:500].decode(errors="replace").strip()
            raise QueryRejected(
                f"Prometheus refused the selector: {message}",
                hint='each match[] is a series selector, e.g. {job="apps"}',
            )
        if status != 200:
            message = raw[:500].decode(errors="replace").strip()
            raise ObserveError(f"Prometheus failed the federation scrape ({status}): {message}")
        return raw

    async def _read(
        self, path: str, params: Mapping[str, str] | Sequence[tuple[str, str]]
    ) -> tuple[int, bytes]:
        """``GET`` a path of Prometheus' web API: the status and the body, read up to
        ``max_bytes`` (a query over every series can answer hundreds of megabytes, all
        held by the control plane)."""
        chunks: list[bytes] = []
        size = 0
        try:
            async with (
                httpx.AsyncClient(timeout=self._timeout, auth=self._auth) as client,
                client.stream(
                    "GET",
                    f"{self.url}{path}",
                    params=dict(params) if isinstance(params, Mapping) else list(params),
                ) as response,
            ):
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self._max_bytes:
                        raise QueryRejected(
                            f"Prometheus' answer is larger than {self._max_bytes >> 20} MiB",
                            hint="narrow the query: fewer series, a larger step or a shorter range",
                        )
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise ObserveError(
                f"Prometheus at {self.url} did not answer: {type(exc).__name__}",
                hint="see `socle status` (component metrics)",
            ) from exc
        return response.status_code, b"".join(chunks)

    async def get(self, endpoint: str, params: Mapping[str, str]) -> dict[str, Any]:
        """``GET /api/v1/<endpoint>``: the ``data`` of a success, else a typed error.

        The answer is bounded (see :meth:`_read`) and parsed off the loop when large.
        """
        status, raw = await self._read(f"/api/v1/{endpoint}", params)
        size = len(raw)
        try:
            body = await asyncio.to_thread(json.loads, raw) if size > 1 << 16 else json.loads(raw)
        except ValueError as exc:
            raise ObserveError(f"Prometheus answered {status} without JSON") from exc
        if not isinstance(body, dict):
            raise ObserveError(f"Prometheus answered {status} with no object")
        if body.get("status") != "success":
            message = str(body.get("error") or raw[:500].decode(errors="replace"))[:500]
            if status in (400, 422):
                raise QueryRejected(
                    f"Prometheus refused the query: {message}", hint="check the PromQL"
                )
            raise ObserveError(f"Prometheus failed the query: {message}")
        data = body.get("data")
        return data if isinstance(data, dict) else {"result": data}


__all__ = [
    "JOBS",
    "PrometheusQuery",
    "PrometheusServer",
    "ScrapeSetup",
    "check_rules",
    "dump",
    "promtool_for",
    "render_config",
]
