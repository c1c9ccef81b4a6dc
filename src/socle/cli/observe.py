"""``socle metrics query``, ``socle alerts``, ``socle silence add|list|expire``, ``socle slo``.

Everything goes through Socle's API (which proxies Prometheus and Alertmanager), so users
never need their addresses or credentials.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from socle.cli.client import Client
from socle.cli.output import console, json_option, print_json
from socle.errors import ConfigError
from socle.settings import load_settings
from socle.units import parse_duration


def _client() -> Client:
    return Client(load_settings())


def _labels(metric: dict[str, Any]) -> str:
    name = metric.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{rest}}}" if rest else (name or "{}")


def _when(value: float) -> str:
    """The time of a point: with its date when it is not today."""
    moment = datetime.fromtimestamp(value)
    if moment.date() != datetime.now().date():
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    return moment.strftime("%H:%M:%S")


@click.group()
def metrics() -> None:
    """Metrics: query the embedded Prometheus (PromQL) through Socle."""


@metrics.command("query")
@click.argument("promql")
@click.option("--range", "range_", help="Evaluate over this long up to now, e.g. 1h.")
@click.option("--step", help="Resolution of a range query, e.g. 30s (default: range/60).")
@json_option
def query(promql: str, range_: str | None, step: str | None, as_json: bool) -> None:
    """Evaluate PROMQL now, or over the last --range (a table of values)."""
    with _client() as client:
        if range_ is None:
            data = client.call("GET", "/api/v1/metrics/query", params={"query": promql})
        else:
            try:
                seconds = parse_duration(range_)
            except ValueError as exc:
                raise ConfigError(f"--range: {exc}", hint="e.g. --range 1h") from None
            if seconds <= 0:
                raise ConfigError("--range must be more than 0", hint="e.g. --range 1h")
            step_s = max(1.0, seconds / 60)
            if step is not None:
                try:
                    digits = step.replace(".", "", 1).isdigit()
                    step_s = float(step) if digits else parse_duration(step)
                except ValueError as exc:
                    raise ConfigError(f"--step: {exc}", hint="e.g. --step 30s") from None
                if step_s <= 0:
                    raise ConfigError("--step must be more than 0", hint="e.g. --step 30s")
            end = time.time()
            params = {
                "query": promql,
                "start": f"{end - seconds:.3f}",
                "end": f"{end:.3f}",
                "step": f"{step_s:g}",
            }
            data = client.call("GET", "/api/v1/metrics/query_range", params=params)
    if as_json:
        print_json(data)
        return
    kind = data.get("resultType")
    result = data.get("result")
    if kind in ("scalar", "string"):
        console.print(escape(str(result[1] if isinstance(result, list) else result)))
        return
    if not result:
        console.print("No data.")
        return
    table = Table(show_edge=False, header_style="bold")
    table.add_column("SERIES")
    if kind == "matrix":
        table.add_column("POINTS", justify="right")
        table.add_column("FIRST")
        table.add_column("LAST")
        for series in result:
            values = series.get("values") or []
            first = f"{values[0][1]} @{_when(float(values[0][0]))}" if values else "-"
            last = f"{values[-1][1]} @{_when(float(values[-1][0]))}" if values else "-"
            table.add_row(escape(_labels(series["metric"])), str(len(values)), first, last)
    else:
        table.add_column("VALUE", justify="right")
        for series in result:
            table.add_row(escape(_labels(series["metric"])), escape(str(series["value"][1])))
    console.print(table)


@click.command("alerts")
@json_option
def alerts(as_json: bool) -> None:
    """Active alerts (from Alertmanager) and the recent remediations."""
    with _client() as client:
        data = client.call("GET", "/api/v1/alerts")
    if as_json:
        print_json(data)
        return
    firing = data.get("alerts") or []
    if data.get("source") == "prometheus":
        console.print(
            "[yellow]Alertmanager is off[/]: alerts as Prometheus evaluates them "
            "(none routed, silenced or remediated)."
        )
    if not firing:
        console.print("No active alerts.")
    else:
        table = Table(show_edge=False, header_style="bold")
        for column in ("ALERT", "STATE", "SEVERITY", "APP", "INSTANCE", "SINCE", "SUMMARY"):
            table.add_column(column)
        for alert in firing:
            labels = alert.get("labels") or {}
            state = (alert.get("status") or {}).get("state", "")
            if (alert.get("status") or {}).get("silencedBy"):
                state = "silenced"
            table.add_row(
                escape(labels.get("alertname", "")),
                escape(state),
                escape(labels.get("severity", "")),
                escape(labels.get("app", "")),
                escape(labels.get("instance", "")),
                escape(str(alert.get("startsAt", ""))[:19]),
                escape((alert.get("annotations") or {}).get("summary", "")),
            )
        console.print(table)
    done = data.get("remediations") or []
    if done:
        console.print("\nRemediations:")
        table = Table(show_edge=False, header_style="bold")
        for column in ("TIME", "RULE", "ACTION", "TARGET", "RESULT", "MESSAGE"):
            table.add_column(column)
        for item in done[-20:]:
            table.add_row(
                _when(float(item["time"])),
                escape(item["rule"]),
                escape(item["action"]),
                escape(item.get("instance") or item.get("app") or ""),
                escape(item["result"]),
                escape(item["message"]),
            )
        console.print(table)


@click.command("slo")
@json_option
def slo(as_json: bool) -> None:
    """Service level objectives: error budget left and how fast it burns."""
    with _client() as client:
        rows: list[dict[str, Any]] = client.call("GET", "/api/v1/slos")
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("No SLOs. Declare one with a `kind: SLO` manifest.")
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("SLO", "OBJECTIVE", "WINDOW", "ERRORS", "BUDGET LEFT", "BURN 1H", "BURN 6H"):
        table.add_column(column)

    def pct(value: float | None) -> str:
        return "no data" if value is None else f"{value * 100:.2f}%"

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    for row in rows:
        table.add_row(
            escape(row["name"]),
            f"{row['objective']:g}%",
            escape(row["window"]),
            pct(row["error_ratio"]),
            pct(row["budget_remaining"]),
            rate(row["burn_rate"]["1h"]),
            rate(row["burn_rate"]["6h"]),
        )
    console.print(table)


@click.group()
def silence() -> None:
    """Silences: mute matching alerts for a while (Alertmanager's v2 API)."""


@silence.command("add")
@click.argument("matchers", nargs=-1, required=True)
@click.option("--duration", default="1h", show_default=True, help="How long, e.g. 30m, 2h.")
@click.option("--comment", default="", help="Why (shown in `socle silence list`).")
@json_option
def silence_add(matchers: tuple[str, ...], duration: str, comment: str, as_json: bool) -> None:
    """Silence alerts matching every MATCHER (name=value, name!=value, name=~regex)."""
    with _client() as client:
        data = client.call(
            "POST",
            "/api/v1/silences",
            json={"matchers": list(matchers), "duration": duration, "comment": comment},
        )
    if as_json:
        print_json(data)
        return
    console.print(f"silence {escape(data['id'])} until {escape(data['endsAt'])}")


@silence.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also expired silences.")
@json_option
def silence_list(show_all: bool, as_json: bool) -> None:
    """Silences (active and pending; --all for expired ones too)."""
    with _client() as client:
        rows: list[dict[str, Any]] = client.call("GET", "/api/v1/silences")
    if not show_all:
        rows = [r for r in rows if (r.get("status") or {}).get("state") != "expired"]
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("No silences.")
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("ID", "STATE", "MATCHERS", "ENDS", "BY", "COMMENT"):
        table.add_column(column)
    for row in rows:
        matchers = " ".join(_matcher(m) for m in row.get("matchers") or [])
        table.add_row(
            escape(row.get("id", "")),
            escape((row.get("status") or {}).get("state", "")),
            escape(matchers),
            escape(str(row.get("endsAt", ""))[:19]),
            escape(row.get("createdBy", "")),
            escape(row.get("comment", "")),
        )
    console.print(table)


def _matcher(m: dict[str, Any]) -> str:
    ops = {(True, False): "=", (False, False): "!=", (True, True): "=~", (False, True): "!~"}
    op = ops[(bool(m.get("isEqual", True)), bool(m.get("isRegex")))]
    return f"{m['name']}{op}{m['value']}"


@silence.command("expire")
@click.argument("silence_id")
def silence_expire(silence_id: str) -> None:
    """End silence SILENCE_ID now."""
    with _client() as client:
        data = client.call("DELETE", f"/api/v1/silences/{silence_id}")
    if data.get("already_expired"):
        console.print(f"silence {escape(silence_id)} had already expired")
    else:
        console.print(f"silence {escape(silence_id)} expired")


def register(group: click.Group) -> None:
    group.add_command(metrics)
    group.add_command(alerts)
    group.add_command(silence)
    group.add_command(slo)
