"""``socle firewall status [--json]``: is the firewall enforced, and what each rule counted."""

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


@click.group("firewall")
def firewall() -> None:
    """The nftables firewall compiled from NetworkPolicy objects."""


@firewall.command("status")
@json_option
def status(as_json: bool) -> None:
    """Whether the firewall is enforced, and every rule with its packet/byte counters."""
    with _client() as client:
        data: dict[str, Any] = client.call("GET", "/api/v1/firewall")
    if as_json:
        print_json(data)
        return
    if data.get("enforced"):
        console.print(
            f"[green]firewall enforced[/]: table {escape(str(data.get('table')))}, "
            f"{data.get('loads', 0)} load(s)"
        )
        if data.get("drift_corrections"):
            console.print(
                f"[yellow]changed outside Socle {data['drift_corrections']} time(s), "
                f"corrected:[/] {escape(str(data.get('last_drift')))}"
            )
        if not data.get("isolated"):
            console.print(
                "[yellow]app policies are not enforced:[/] instances share the host's network "
                "(no per-instance network namespace); host policies are."
            )
    else:
        console.print(f"[bold red]firewall NOT enforced:[/] {escape(str(data.get('reason')))}")
    if data.get("last_error"):
        console.print(f"[red]last load failed:[/] {escape(str(data['last_error']))}")
    rules = data.get("rules") or []
    if not rules:
        console.print("No NetworkPolicy applied.")
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("POLICY", "RULE", "PACKETS", "BYTES"):
        table.add_column(column, overflow="fold")
    for rule in rules:
        table.add_row(
            escape(rule["policy"] or "(socle)"),
            escape(rule["text"]),
            "-" if rule["packets"] is None else str(rule["packets"]),
            "-" if rule["bytes"] is None else str(rule["bytes"]),
        )
    console.print(table)


def register(group: click.Group) -> None:
    group.add_command(firewall)
