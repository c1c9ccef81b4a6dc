"""``socle trace [REVISION|TRACE_ID]``: the span tree of one apply or trace, with
durations (why did this deploy take 40 s?); without an argument, the newest traces."""

from __future__ import annotations

import time
from typing import Any

import click
from rich.table import Table

from socle.cli.client import Client
from socle.cli.output import console, json_option, print_json, safe
from socle.observe.traces.model import render, span_from_dict, tree
from socle.settings import Settings, load_settings


def _settings() -> Settings:
    return load_settings()


def _flatten(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for span in spans:
        out.append({k: v for k, v in span.items() if k != "children"})
        out.extend(_flatten(span.get("children") or []))
    return out


@click.command("trace")
@click.argument("ref", required=False)
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--service", metavar="NAME", help="Only traces with spans of this service.")
@json_option
def trace_command(ref: str | None, limit: int, service: str | None, as_json: bool) -> None:
    """Show the span tree of revision REF (a number) or trace REF (32 hex digits).

    Without REF: the newest traces (Socle's own and the apps')."""
    with Client(_settings()) as client:
        if ref is None:
            params: dict[str, Any] = {"limit": limit}
            if service:
                params["service"] = service
            recent: list[dict[str, Any]] = client.call("GET", "/api/v1/traces", params=params)
        else:
            found: dict[str, Any] = client.call("GET", f"/api/v1/traces/{ref}")
    if ref is None:
        if as_json:
            print_json(recent)
            return
        table = Table(show_edge=False, header_style="bold")
        for column in ("STARTED", "TRACE ID", "ROOT", "SERVICE", "DURATION", "SPANS", "ERRORS"):
            table.add_column(column, no_wrap=True)
        for entry in recent:
            table.add_row(
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["start_ns"] / 1e9)),
                entry["trace_id"],
                safe(entry["name"]),
                safe(entry["service"]),
                f"{entry['duration_ms'] / 1000:.3f} s",
                str(entry["spans"]),
                str(entry["errors"]),
            )
        console.print(table)
        return
    if as_json:
        print_json(found)
        return
    spans = [span_from_dict(s) for s in _flatten(found["spans"])]
    title = f"trace {found['trace_id']}"
    if found.get("revision") is not None:
        title = f"revision {found['revision']}, " + title
    console.print(title, style="bold", highlight=False)
    for line in render(tree(spans)):
        console.print(safe(line), highlight=False, soft_wrap=True)


def register(group: click.Group) -> None:
    group.add_command(trace_command)
