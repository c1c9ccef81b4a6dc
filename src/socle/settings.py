"""Socle's settings, in one object, read at the edge.

Only the CLI and server entry points build a :class:`Settings` from the environment
(``SOCLE_*`` variables); everything deeper receives the object or the values it needs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin

from pydantic import BeforeValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from socle.errors import ConfigError
from socle.units import scan_duration

DEFAULT_PORT = 7780


def default_home() -> Path:
    """Where Socle keeps its data when SOCLE_HOME is not set."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "socle"


_SETTING_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_SETTING_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
    "y": 365 * 86400.0,
}


def _seconds(value: object) -> object:
    """A duration setting as people write it: ``30`` (seconds), ``10s``, ``1h30m``, ``30d``,
    ``2y`` (log retention runs to years). Numbers are left to the field's own checks."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    total = scan_duration(text, _SETTING_DURATION, _SETTING_UNITS)
    if total is None:
        raise ValueError(
            f"{value!r} is not a duration: write seconds (30) or a duration such as "
            "500ms, 10s, 5m, 1h30m, 30d, 2y"
        )
    return total


Seconds = Annotated[float, BeforeValidator(_seconds)]
"""Seconds, also written with units (``10s``, ``5m``, ``30d``)."""


LISTEN_SETTINGS = (
    "listen",
    "consul_listen",
    "dns_listen",
    "prometheus_listen",
    "alertmanager_listen",
    "ingress_http",
    "ingress_https",
)
"""Every ``HOST:PORT`` setting a control plane listens on (checked alike, never picked twice)."""


PROMETHEUS_DURATION = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d|w|y))+")
"""Prometheus' duration syntax (``--storage.tsdb.retention.time``): ``15d``, ``1y2w``."""

PROMETHEUS_SIZE = re.compile(r"[0-9]+(?:B|KB|MB|GB|TB|PB|EB)")
"""Prometheus' size syntax (``--storage.tsdb.retention.size``): ``512MB``, ``2GB``."""


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (IPv6 as ``[::1]:PORT``); port 0 means any free port."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {value!r} must look like HOST:PORT, e.g. 127.0.0.1:7780")
    return host.strip("[]"), int(port)


def read_json_file(path: Path) -> dict[str, Any] | None:
    """A small JSON file another process writes (e.g. ``server.json``), or None."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, PermissionError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Settings(BaseSettings):
    """Everything an operator can set. Environment variables use the ``SOCLE_`` prefix."""

    model_config = SettingsConfigDict(env_prefix="SOCLE_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    """Data directory: state database, releases, logs, tokens, secrets keys."""

    listen: str = f"127.0.0.1:{DEFAULT_PORT}"
    """Where the control-plane API listens. Loopback unless told otherwise."""

    store: str | None = None
    """State store: a SQLite path or ``sqlite:///...`` (default ``home/state.db``), or
    ``postgresql://user@host/db`` to share state across control planes."""

    tls_cert: Path | None = None
    """PEM certificate (chain) for the API. Required to listen beyond loopback."""

    tls_key: Path | None = None
    """PEM private key matching ``tls_cert``."""

    ca: Path | None = None
    """CA bundle the CLI trusts for an ``https://`` control plane (default: system CAs)."""

    addr: str | None = None
    """API address the CLI talks to (overrides what the server recorded in ``home``)."""

    token: str | None = None
    """API token for the CLI (overrides the admin token file in ``home``)."""

    dev: bool = False
    """Development mode: the secrets engine auto-unseals from a key file (said loudly)."""

    secret_check_seconds: Seconds = 10.0
    """How often the versions of secrets that apps reference are checked (a new version
    rolls the app)."""

    gitops_drift_seconds: Seconds = 10.0
    """How often GitOps compares the live state of synced environments with their commit
    (drift: a target changed behind its back, instances not ready after a rollout)."""

    max_parallel_builds: int = 2
    """How many release builds run at once."""

    releases_kept: int = 5
    """Releases kept per app, so rollbacks need no rebuild."""

    log_max_bytes: int = 10 * 1024 * 1024
    """Rotate an instance's log file past this size."""

    log_backups: int = 3
    """Rotated log files kept per instance."""

    log_retention_seconds: Seconds = Field(default=30 * 86400.0, gt=0)
    """Sealed log segments older than this are dropped from the log store."""

    log_retention_bytes: int = Field(default=10 * 1024**3, ge=1024)
    """The log store's sealed segments are kept under this many bytes (oldest dropped)."""

    log_segment_seconds: Seconds = Field(default=3600.0, gt=0)
    """How long new log lines stay in the store's hot table before they are sealed into a
    segment (one Parquet file, chained by hash)."""

    log_segment_rows: int = Field(default=2_000_000, ge=1)
    """A segment is sealed early once it holds this many lines."""

    loki_url: str = ""
    """Forward every stored log line to this Loki (``http(s)://host:port``); empty: don't."""

    autoscale_seconds: Seconds = Field(default=10.0, gt=0, le=3600)
    """How often Apps with ``spec.autoscale`` have their load measured and their count set."""

    release_check_seconds: Seconds = Field(default=10.0, gt=0, le=3600)
    """How often new releases' error ratios are compared with the previous releases'
    (Apps with ``spec.metrics.releaseCheck``)."""

    otlp_endpoint: str = ""
    """Also export Socle's own spans over OTLP/HTTP to this collector
    (``http(s)://host:4318``; ``/v1/traces`` is added); empty: only the embedded store."""

    trace_retention_seconds: Seconds = Field(default=7 * 86400.0, gt=0)
    """Spans older than this leave the embedded trace store."""

    trace_max_spans: int = Field(default=500_000, ge=1000)
    """The embedded trace store keeps at most this many spans (the oldest go first)."""

    max_trace_push_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=1024**3)
    """Largest OTLP/HTTP trace body (``/v1/traces``)."""

    otlp_bridge_port: int = Field(default=4318, ge=0, le=65535)
    """Port of the OTLP/HTTP receiver that isolated instances reach on the Socle bridge's
    gateway address (their ``OTEL_EXPORTER_OTLP_ENDPOINT``); 0 picks a free port. A fixed
    port keeps the endpoint of running apps valid across control-plane restarts."""

    standby: bool = False
    """With a shared (PostgreSQL) store: when another control plane leads, wait as a standby
    and take over when it stops, instead of refusing to start."""

    leader_check_seconds: Seconds = Field(default=1.0, gt=0, le=60)
    """How often a leader checks that it still holds the lease; it stops acting (exits)
    as soon as it does not."""

    consul_listen: str = "127.0.0.1:8500"
    """Where the Consul-compatible API (catalog, health, agent, KV) listens: its own
    listener, so that ``/v1/...`` stays the Vault API on the main one. Loopback only (plain
    HTTP); port 0 picks a free port (recorded in ``server.json``)."""

    dns_listen: str = "127.0.0.1:8600"
    """Where the service-discovery DNS answers (UDP and TCP, zone ``socle.internal``);
    port 0 picks a free port (recorded in ``server.json``). Instances get it as
    ``SOCLE_DNS``."""

    ingress: bool = True
    """Run the ingress (nginx) as the HTTP entry point to the apps."""

    ingress_http: str = "127.0.0.1:8080"
    """Where the ingress answers plain HTTP (``0.0.0.0:80`` for the world, as root)."""

    ingress_https: str = "127.0.0.1:8443"
    """Where the ingress answers HTTPS (TLS routes)."""

    nginx: Path = Path("/usr/sbin/nginx")
    """The nginx binary the ingress runs."""

    acme_ca: Path | None = None
    """Extra CA bundle trusted for ACME directories (a private ACME server such as pebble);
    by default the system's CAs."""
    firewall: bool = True
    """Compile NetworkPolicy objects to nftables table ``inet socle`` and load it (needs
    root and ``nft``; without them ``socle status`` says the firewall is not enforced)."""

    firewall_netns: str | None = None
    """Load the ruleset inside this named network namespace (``ip netns``) instead of the
    machine's own: for labs and tests that must not touch the host's firewall."""

    network_bridge: str = Field(default="socle0", pattern=r"^[a-z][a-z0-9]{0,14}$")
    """The Socle bridge that instances' veths are plugged into (when isolated)."""

    network_range: str = "10.213.0.0/16"
    """Private range instances take their addresses from; the bridge holds the first
    address (the gateway). It exists only on this machine: nothing is routed off it."""

    network_isolation: bool = True
    """As root, run every instance in its own network namespace on the bridge, so that app
    policies apply and apps cannot reach the host's loopback services."""

    max_connections: int = Field(default=2048, ge=16, le=16384)
    """Connections the API serves at once; more wait in the listen backlog. Idle
    keep-alive connections are closed after ``header_timeout``, so they cannot hold
    these slots for long."""

    header_timeout: Seconds = Field(default=10.0, gt=0, le=300)
    """Seconds a client has to send a request's headers, and that an idle keep-alive
    connection stays open."""

    body_timeout: Seconds = Field(default=30.0, gt=0, le=3600)
    """Seconds a request body may stall between two chunks before the request is cut."""

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=1024**3)
    """Largest request body of the platform API (``/api/v1``); larger ones get 413 unread."""

    max_secrets_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, le=1024**3)
    """Largest request body of the Vault-compatible API (``/v1``), Vault's own default."""

    max_log_push_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=1024**3)
    """Largest Loki push body (``/loki/api/v1/push``)."""

    audit_dirs: str = ""
    """Extra folders (``:``-separated, absolute) where audit devices may write files;
    by default only ``home/audit/`` (or ``stdout``)."""

    prometheus: Literal["embedded", "agent", "off"] = "embedded"
    """The metrics data plane: ``embedded`` runs Debian's ``prometheus`` as a component
    (config and data under ``home/observe/prometheus``); ``agent`` runs it in agent mode,
    scraping and forwarding everything to ``metrics_remote_write`` (a team's own Prometheus,
    which then stores, evaluates the rule files Socle writes, and answers queries through
    ``metrics_query_url``); ``off`` runs none (``/metrics`` is still served)."""

    prometheus_bin: str = "/usr/bin/prometheus"
    """The Prometheus server binary (``promtool`` is looked up next to it)."""

    prometheus_listen: str = "127.0.0.1:0"
    """Where the embedded Prometheus listens (port 0: a free loopback port, recorded in
    status); queries go through Socle's API, so nobody needs to know it."""

    prometheus_retention: str = "15d"
    """How long the embedded Prometheus keeps samples (``--storage.tsdb.retention.time``)."""

    prometheus_retention_size: str = "0"
    """Size cap of its data (``--storage.tsdb.retention.size``, e.g. ``2GB``; 0: none)."""

    scrape_interval: Seconds = Field(default=10.0, ge=1, le=3600)
    """Seconds between scrapes of the control plane and of the apps' own metrics."""

    alert_interval: Seconds = Field(default=5.0, ge=1, le=3600)
    """Seconds between scrapes of the per-instance exporter (restarts, memory, health) and
    between rule evaluations: the path from a crash loop to its remediation (5 s: about 20 s
    from an app's first crash to the restart request, see docs/metrics.md; each scrape of
    1,000 instances costs ~0.25 s of CPU). Never slower than ``scrape_interval``."""

    metrics_remote_write: str | None = None
    """A team's own Prometheus (or compatible store): every sample the embedded one scrapes
    is also sent there (``remote_write``)."""

    metrics_query_url: str | None = None
    """Query this Prometheus (``http(s)://host:port``) instead of the embedded one."""

    alertmanager: Literal["embedded", "off"] = "embedded"
    """Alert routing: ``embedded`` runs Debian's ``prometheus-alertmanager`` as a component;
    ``off`` runs none (alert rules are still evaluated by Prometheus)."""

    alertmanager_bin: str = "/usr/bin/prometheus-alertmanager"

    alertmanager_listen: str = "127.0.0.1:0"
    """Where the embedded Alertmanager listens (port 0: a free loopback port)."""

    remediation_interval: Seconds = Field(default=300.0, ge=0, le=86400)
    """Least seconds between two automatic remediations of one app by one rule, so that a
    flapping app cannot cause a storm of restarts."""

    @field_validator("network_range")
    @classmethod
    def _check_network_range(cls, value: str) -> str:
        import ipaddress

        try:
            network = ipaddress.ip_network(value, strict=True)
        except ValueError as exc:
            raise ValueError(f"network_range {value!r}: {exc}") from None
        if network.version != 4 or not network.is_private or network.prefixlen > 28:
            raise ValueError(
                f"network_range {value!r} must be a private IPv4 range of at least /28"
            )
        return str(network)

    @field_validator("prometheus_retention")
    @classmethod
    def _check_prometheus_retention(cls, value: str) -> str:
        # Checked here, in Prometheus' own syntax: a value it refuses would otherwise stop
        # the whole control plane at start with only Prometheus' usage text to go on.
        if not PROMETHEUS_DURATION.fullmatch(value):
            raise ValueError(
                f"prometheus_retention {value!r} must be a Prometheus duration such as 15d, "
                "12h or 1y2w"
            )
        return value

    @field_validator("prometheus_retention_size")
    @classmethod
    def _check_prometheus_retention_size(cls, value: str) -> str:
        if value != "0" and not PROMETHEUS_SIZE.fullmatch(value):
            raise ValueError(
                f"prometheus_retention_size {value!r} must be 0 (no cap) or a size such as "
                "512MB or 2GB (units B, KB, MB, GB, TB, PB, EB)"
            )
        return value

    @field_validator("audit_dirs")
    @classmethod
    def _check_audit_dirs(cls, value: str) -> str:
        for folder in filter(None, value.split(":")):
            if not folder.startswith("/"):
                raise ValueError(f"audit_dirs: {folder!r} must be an absolute path")
        return value

    @field_validator(*LISTEN_SETTINGS)
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @property
    def db_path(self) -> Path:
        return self.home / "state.db"

    @property
    def releases_dir(self) -> Path:
        return self.home / "releases"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def logstore_dir(self) -> Path:
        """The log store: hot DuckDB, sealed segments and their chain."""
        return self.home / "logstore"

    @property
    def platform_audit_dir(self) -> Path:
        """The platform audit log (every API request and state change, hash-chained)."""
        return self.home / "platform-audit"

    @property
    def traces_dir(self) -> Path:
        """The trace store: Socle's own spans and the apps' (OTLP), in DuckDB."""
        return self.home / "traces"

    @property
    def volumes_dir(self) -> Path:
        """Persistent data of ``Volume`` objects, one folder per volume."""
        return self.home / "volumes"

    @property
    def backups_dir(self) -> Path:
        """Where scheduled backups are written (``socle backup create`` defaults here too)."""
        return self.home / "backups"

    @property
    def observe_dir(self) -> Path:
        """Config and data of the embedded Prometheus and Alertmanager."""
        return self.home / "observe"

    @property
    def token_file(self) -> Path:
        return self.home / "admin.token"

    @property
    def server_file(self) -> Path:
        """Written by a running server: its address and PID."""
        return self.home / "server.json"


def _echoable(field: str) -> bool:
    """Whether a refused value of ``field`` may be shown back: numbers, flags and choices
    only. A text setting (a store DSN, a URL) may hold a password: never echoed."""
    info = Settings.model_fields.get(field)
    if info is None:
        return False
    annotation = info.annotation
    return annotation in (int, float, bool) or get_origin(annotation) is Literal


def load_settings(**overrides: Any) -> Settings:
    """The settings from the environment (plus ``overrides`` that are not None), for the CLI.

    A refused value is a :class:`ConfigError` naming the environment variable and why,
    rather than pydantic's validation dump."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        reasons = []
        for error in exc.errors():
            field = str(error.get("loc", ("?",))[0])
            reason = str(error.get("msg", "")).removeprefix("Value error, ")
            shown = f" (got {error.get('input')!r})" if _echoable(field) else ""
            reasons.append(f"SOCLE_{field.upper()}: {reason}{shown}")
        raise ConfigError(
            "invalid setting: " + "; ".join(reasons),
            hint="fix or unset that environment variable (unset: the default)",
        ) from None
    except ValueError as exc:
        raise ConfigError(f"invalid setting: {exc}") from None
