"""``socle services [NAME] [--json]``: what the service registry holds, healthy or not."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from socle.cli.client import Client
from socle.cli.output import console, json_option, print_json
from socle.settings import load_settings


def _client() -> Client:
    return Client(load_settings())


def _health(word: str) -> str:
    colour = {"passing": "green", "warning": "yellow"}.get(word, "red")
    return f"[{colour}]{escape(word)}[/]"


@click.command("services")
@click.argument("name", required=False)
@click.option("--env", "environment", default=None, help="Only this environment.")
@json_option
def services(name: str | None, environment: str | None, as_json: bool) -> None:
    """Registered services: every healthy instance of every app, and external services."""
    params = {"environment": environment} if environment else {}
    with _client() as client:
        if name:
            one: dict[str, Any] = client.call("GET", f"/api/v1/services/{name}", params=params)
            rows = one["instances"]
        else:
            listing: dict[str, Any] = client.call("GET", "/api/v1/services", params=params)
            rows = [i for s in listing["services"] for i in s["instances"]]
    if as_json:
        print_json(one if name else listing)
        return
    if not rows:
        console.print(
            "No registered service. Instances register once they pass their health check."
        )
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("SERVICE", "ENV", "INSTANCE", "ADDRESS", "PORTS", "HEALTH", "SOURCE"):
        table.add_column(column, overflow="fold")
    for row in rows:
        ports = ", ".join(f"{k}={v}" for k, v in sorted(row["ports"].items())) or "-"
        table.add_row(
            escape(row["service"]),
            escape(row["environment"]),
            escape(row["instance"]),
            escape(row["address"]),
            escape(ports),
            _health(row["health"]),
            escape(row["source"]),
        )
    console.print(table)


def register(group: click.Group) -> None:
    group.add_command(services)
