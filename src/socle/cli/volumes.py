"""``socle volume list|show NAME|delete NAME --purge``: persistent data of apps."""

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


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)  # pragma: no cover


def _state(row: dict[str, Any]) -> str:
    if not row["exists"]:
        return "[red]missing[/]"
    if row["declared"]:
        return "[green]in use[/]" if row["mounted_by"] else "[green]declared[/]"
    return "[yellow]retained[/]"


@click.group()
def volume() -> None:
    """Volumes: persistent folders apps mount, kept across releases and restarts."""


@volume.command("list")
@json_option
def list_volumes(as_json: bool) -> None:
    """Every volume of this home (declared or retained) with its usage."""
    with _client() as client:
        rows: list[dict[str, Any]] = client.call("GET", "/api/v1/volumes")
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("No volumes. Declare one with a `kind: Volume` manifest.")
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("NAME", "STATE", "USED", "SIZE", "ENFORCED", "MOUNTED BY", "WARNING"):
        table.add_column(column, overflow="fold")
    for row in rows:
        enforced = row.get("enforced")
        table.add_row(
            escape(row["name"]),
            _state(row),
            _bytes(row.get("used_bytes")),
            _bytes(row.get("size_bytes")),
            "-" if enforced is None else ("yes" if enforced else "[yellow]no[/]"),
            escape(", ".join(row["mounted_by"]) or "-"),
            escape(row.get("warning") or ""),
        )
    console.print(table)


@volume.command("show")
@click.argument("name")
@json_option
def show_volume(name: str, as_json: bool) -> None:
    """One volume: where its data lives, its size, usage and who mounts it."""
    with _client() as client:
        row: dict[str, Any] = client.call("GET", f"/api/v1/volumes/{name}")
    if as_json:
        print_json(row)
        return
    table = Table(show_header=False, show_edge=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("name", escape(row["name"]))
    table.add_row("state", _state(row))
    table.add_row("path", escape(str(row.get("path") or "-")))
    table.add_row("size", _bytes(row.get("size_bytes")))
    table.add_row("used", _bytes(row.get("used_bytes")))
    enforced = row.get("enforced")
    table.add_row("enforced", "-" if enforced is None else ("yes" if enforced else "no"))
    retain = row.get("retain")
    table.add_row("retain", "-" if retain is None else ("yes" if retain else "no"))
    table.add_row("mounted by", escape(", ".join(row["mounted_by"]) or "-"))
    if row.get("warning"):
        table.add_row("warning", f"[yellow]{escape(row['warning'])}[/]")
    console.print(table)


@volume.command("delete")
@click.argument("name")
@click.option("--purge", is_flag=True, help="Really delete the data (required).")
@json_option
def delete_volume(name: str, purge: bool, as_json: bool) -> None:
    """Delete a retained volume's data for good (refused while declared or mounted)."""
    with _client() as client:
        result: dict[str, Any] = client.call(
            "DELETE", f"/api/v1/volumes/{name}", params={"purge": purge}
        )
    if as_json:
        print_json(result)
    else:
        console.print(f"[green]✓ volume {escape(name)} purged[/]")


def register(group: click.Group) -> None:
    group.add_command(volume)
