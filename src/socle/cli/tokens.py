"""``socle token create|list|revoke|rotate``: named API tokens.

A token is shown once, when it is created or rotated; the control plane keeps only its
SHA-256. ``socle token rotate admin --local`` is the way back from a lost or leaked admin
token: it works on the home's state store directly, with the server stopped.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import click
from rich.table import Table

from socle.cli.client import Client
from socle.cli.output import console, err_console, json_option, print_json, safe
from socle.errors import ConfigError
from socle.settings import Settings, load_settings


def _settings() -> Settings:
    return load_settings()


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


@click.group()
def token() -> None:
    """Named API tokens: create, list, revoke, rotate."""


@token.command("create")
@click.argument("name")
@click.option("--ttl", metavar="DURATION", help="Expire after this long, e.g. 30d or 12h.")
@click.option("--admin", is_flag=True, help="The token may manage tokens too.")
@json_option
def create(name: str, ttl: str | None, admin: bool, as_json: bool) -> None:
    """Create a token called NAME and print it (once; it cannot be shown again)."""
    with Client(_settings()) as client:
        result = client.call(
            "POST", "/api/v1/tokens", json={"name": name, "ttl": ttl, "admin": admin}
        )
    if as_json:
        print_json(result)
        return
    err_console.print(
        f"[green]✓ token {safe(name)} created[/]; it is shown only now, keep it safe:"
    )
    click.echo(result["token"])


@token.command("list")
@json_option
def list_tokens(as_json: bool) -> None:
    """Tokens by name: created, expires, last used (never the token itself)."""
    with Client(_settings()) as client:
        result: list[dict[str, Any]] = client.call("GET", "/api/v1/tokens")
    if as_json:
        print_json(result)
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("NAME", "ADMIN", "CREATED", "EXPIRES", "LAST USED"):
        table.add_column(column, no_wrap=True)
    for entry in result:
        table.add_row(
            safe(entry["name"]),
            "yes" if entry["admin"] else "no",
            _when(entry["created"]),
            _when(entry["expires"]),
            _when(entry["last_used"]),
        )
    console.print(table)


@token.command("revoke")
@click.argument("name")
def revoke(name: str) -> None:
    """Revoke the token called NAME: it stops working at once."""
    with Client(_settings()) as client:
        client.call("DELETE", f"/api/v1/tokens/{name}")
    console.print(f"[green]✓ token {safe(name)} revoked[/]")


async def _rotate_local(settings: Settings) -> str:
    from socle.api.tokens import TokenStore
    from socle.fs import try_lock
    from socle.state.registry import open_store

    if not settings.home.is_dir():
        raise ConfigError(f"{settings.home} is not a Socle home", hint="check SOCLE_HOME")
    fd = try_lock(settings.home / "server.lock")
    if fd is None:
        raise ConfigError(
            f"a control plane is running with {settings.home}",
            hint="stop it first (`socle down --keep-apps`), or rotate through the API "
            "without --local",
        )
    try:
        store = await open_store(settings.store or settings.db_path)
        try:
            return await TokenStore(store).rotate_admin(settings.token_file)
        finally:
            await store.close()
    finally:
        os.close(fd)


@token.command("rotate")
@click.argument("name")
@click.option(
    "--local",
    is_flag=True,
    help="Work on SOCLE_HOME's state directly (server stopped): recovers a lost admin token.",
)
@json_option
def rotate(name: str, local: bool, as_json: bool) -> None:
    """Replace NAME's token by a new one; the old one stops working at once.

    For `admin` the new token is written to SOCLE_HOME/admin.token (not printed).
    """
    settings = _settings()
    if local:
        if name != "admin":
            raise ConfigError("--local rotates only the admin token")
        asyncio.run(_rotate_local(settings))
        result: dict[str, Any] = {"name": name, "file": True}
    else:
        with Client(settings) as client:
            result = client.call("POST", f"/api/v1/tokens/{name}/rotate")
    if as_json:
        print_json({k: v for k, v in result.items() if not (result.get("file") and k == "token")})
        return
    if result.get("file"):
        console.print(
            f"[green]✓ token {safe(name)} rotated[/]; the new one is in {settings.token_file}"
        )
        return
    err_console.print(f"[green]✓ token {safe(name)} rotated[/]; it is shown only now:")
    click.echo(result["token"])


def register(group: click.Group) -> None:
    group.add_command(token)
