"""``socle routes [--json]``: the ingress routes, their upstreams and health, certificates."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from socle.cli.client import Client
from socle.cli.output import console, json_option, print_json, safe
from socle.settings import load_settings


def _client() -> Client:
    return Client(load_settings())


def _certificate(cert: dict[str, Any] | None) -> str:
    if not cert:
        return "-"
    return f"{safe(str(cert.get('issuer', '')))} until {safe(str(cert.get('not_after', '?')))}"


@click.command()
@json_option
def routes(as_json: bool) -> None:
    """Routes through the ingress: URL, target, healthy upstreams, certificate."""
    with _client() as client:
        result: dict[str, Any] = client.call("GET", "/api/v1/routes")
    if as_json:
        print_json(result)
        return
    if not result["enabled"]:
        console.print("The ingress is not running (see `socle status`).")
        return
    nginx = result["nginx"] or {}
    console.print(
        f"[dim]ingress:[/] http {safe(result['listen']['http'])}, "
        f"https {safe(result['listen']['https'])}, nginx pid {nginx.get('pid') or '-'}"
    )
    if nginx.get("error"):
        console.print(f"[red]not applied:[/] {safe(nginx['error'])}", soft_wrap=True)
    if not result["routes"]:
        console.print("No routes. Apps with a port get one when they are applied.")
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("ROUTE", "URL", "TARGET", "UPSTREAMS", "CERTIFICATE", "MESSAGE"):
        table.add_column(column, overflow="fold")
    for row in result["routes"]:
        ups = row["upstreams"]
        healthy = row["healthy"]
        style = "green" if healthy else "red"
        upstreams = f"[{style}]{healthy} healthy[/]"
        if ups:
            upstreams += " " + ", ".join(f"{safe(u['address'])}:{u['port']}" for u in ups)
        target = f"{safe(row['target'])}:{safe(row['port'])}" if row["target"] else "-"
        table.add_row(
            safe(row["name"]),
            safe(row["url"]),
            target,
            upstreams,
            _certificate(row.get("certificate")),
            f"[red]{safe(row['error'])}[/]" if row.get("error") else "",
        )
    console.print(table)


def register(group: click.Group) -> None:
    group.add_command(routes)
