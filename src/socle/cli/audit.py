"""``socle audit query|verify``: the platform audit log (every API request and state
change), and ``socle audit verify FILE`` for any audit file (the secrets' devices too).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from socle.cli.client import Client
from socle.cli.output import console, err_console, json_option, print_json, safe
from socle.cli.secrets import verify as verify_file_command
from socle.settings import Settings, load_settings


def _settings() -> Settings:
    return load_settings()


@click.group()
def audit() -> None:
    """Audit logs: query the platform's, verify any hash chain."""


def _what(entry: dict[str, Any]) -> str:
    if entry.get("kind") == "request":
        return f"{entry.get('method', '')} {entry.get('path', '')} → {entry.get('status', '')}"
    keys = entry.get("keys") or []
    shown = ", ".join(str(k) for k in keys[:3])
    more = f" (+{len(keys) - 3})" if len(keys) > 3 else ""
    return f"{entry.get('op', '')} {shown}{more}"


@audit.command("query")
@click.option("--who", metavar="TOKEN", help="Only what this token name (or `socle`) did.")
@click.option("--since", metavar="DURATION", help="Only entries this recent (10m, 2h, 7d).")
@click.option("--path", metavar="PREFIX", help="Request paths or state keys with this prefix.")
@click.option("--request-id", metavar="ID", help="Only one request and the changes it made.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=1000, show_default=True)
@json_option
def query(
    who: str | None,
    since: str | None,
    path: str | None,
    request_id: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Who did what, with which result and request id (newest last)."""
    params: dict[str, Any] = {"limit": limit}
    for key, value in (("who", who), ("since", since), ("path", path)):
        if value is not None:
            params[key] = value
    if request_id is not None:
        params["request_id"] = request_id
    with Client(_settings()) as client:
        entries: list[dict[str, Any]] = client.call("GET", "/api/v1/audit", params=params)
    if as_json:
        print_json(entries)
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("TIME", "WHO", "KIND", "WHAT", "RESULT", "REQUEST ID"):
        table.add_column(column, no_wrap=column != "WHAT")
    for entry in entries:
        table.add_row(
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(entry.get("time", 0)))),
            safe(entry.get("who", "")),
            safe(entry.get("kind", "")),
            safe(_what(entry)),
            safe(entry.get("result", "")),
            safe(entry.get("request_id", "")),
        )
    console.print(table)


@audit.command("verify")
@click.argument(
    "file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@json_option
@click.pass_context
def verify(ctx: click.Context, file: Path | None, as_json: bool) -> None:
    """Check a hash chain; exit 1 at the first bad line.

    Without FILE: the running control plane's platform audit log. With FILE: that file,
    offline (a secrets audit device's, or a copy of the platform log)."""
    if file is not None:
        ctx.invoke(verify_file_command, file=file, as_json=as_json)
        return
    with Client(_settings()) as client:
        result: dict[str, Any] = client.call("GET", "/api/v1/audit/verify")
    if as_json:
        print_json(result)
    elif result["ok"]:
        console.print(
            f"OK: {result['lines']} lines, chain intact. Last hash: {result['last_hash']}"
        )
    else:
        err_console.print(
            f"[bold red]tampered:[/] {safe(result['file'])} line {result['bad_line']}: "
            f"{safe(result['reason'])}",
            soft_wrap=True,
        )
    if not result["ok"]:
        raise SystemExit(1)


def register(group: click.Group) -> None:
    group.add_command(audit)
