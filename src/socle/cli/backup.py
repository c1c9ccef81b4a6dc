"""``socle backup create|verify|restore``: archives of a home, made and read locally.

The CLI works on ``SOCLE_HOME`` itself, whether the control plane runs or not: the state
store is copied with SQLite's online backup API (or ``pg_dump``), which is consistent under
a live writer, so there is no need to go through the API. A restore refuses a home where a
control plane runs.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from socle.backup.operations import create_backup, restore_backup, verify_backup
from socle.cli.client import Client
from socle.cli.output import console, err_console, json_option, print_json, safe
from socle.errors import ConfigError
from socle.settings import Settings, load_settings

BACKUP_TIMEOUT = 6 * 3600.0
"""How long the CLI waits for a control plane to write a backup (big volumes take time)."""


class _Bar:
    """A rich progress bar per phase, on stderr, only on a terminal."""

    def __init__(self, enabled: bool) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
            disable=not enabled,
        )
        self._task: Any = None

    def __enter__(self) -> _Bar:
        self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._progress.stop()

    def phase(self, description: str, total: int | None) -> None:
        if self._task is not None:
            self._progress.update(self._task, visible=False)
        self._task = self._progress.add_task(safe(description), total=total)

    def advance(self, amount: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, amount)


def _say(text: str) -> None:
    """One message, never wrapped mid-path (logs and pipes keep whole lines)."""
    console.print(text, soft_wrap=True)


def _settings() -> Settings:
    return load_settings()


def _show_progress(as_json: bool) -> bool:
    return not as_json and err_console.is_terminal


@click.group()
def backup() -> None:
    """Back up, verify and restore a Socle home (state, releases, volumes)."""


@backup.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--server",
    "on_server",
    is_flag=True,
    help="Ask the control plane (SOCLE_ADDR or this home's) to write the archive on its "
    "host, under its SOCLE_HOME/backups.",
)
@json_option
def create(file: Path | None, on_server: bool, as_json: bool) -> None:
    """Write one archive of the state store, kept releases and volumes.

    FILE defaults to SOCLE_HOME/backups/socle-<UTC time>.tar (mode 0600). The admin token
    and the dev unseal key are never included; secrets are in it as ciphertext only.
    Works whether the control plane runs or not.
    """
    settings = _settings()
    if on_server:
        if file is not None:
            raise ConfigError(
                "with --server the control plane names the file",
                hint="drop FILE; the archive goes to the server's SOCLE_HOME/backups",
            )
        with (
            Client(settings, timeout=BACKUP_TIMEOUT) as client,
            console.status("the control plane is writing the backup"),
        ):
            data = client.call("POST", "/api/v1/backups")
        if as_json:
            print_json(data)
            return
        _summary(
            str(data["path"]),
            int(data["size"]),
            float(data["seconds"]),
            str(data["store"]),
            len(data["releases"]),
            len(data["volumes"]),
        )
        for skipped in data["skipped"]:
            err_console.print(f"[yellow]skipped:[/] {safe(str(skipped))}", soft_wrap=True)
        return
    with _Bar(_show_progress(as_json)) as bar:
        result = asyncio.run(create_backup(settings, file, reporter=bar))
    if as_json:
        print_json(result.to_dict())
        return
    manifest = result.manifest
    _summary(
        str(result.path),
        result.size,
        result.seconds,
        manifest.store,
        len(manifest.releases),
        len(manifest.volumes),
    )
    for skipped in manifest.skipped:
        err_console.print(f"[yellow]skipped:[/] {safe(skipped)}", soft_wrap=True)


def _summary(path: str, size: int, seconds: float, store: str, releases: int, volumes: int) -> None:
    mib = size / (1024 * 1024)
    rate = mib / seconds if seconds > 0 else 0.0
    _say(f"[green]✓ backup written:[/] {safe(path)}")
    _say(
        f"  {mib:.1f} MiB in {seconds:.1f} s ({rate:.0f} MiB/s); state store ({store}), "
        f"{releases} release(s), {volumes} volume(s)"
    )


@backup.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def verify(file: Path, as_json: bool) -> None:
    """Re-read FILE and check every entry's checksum against its manifest.

    Exits 1 naming the first bad entry (tampered, truncated or missing)."""
    with _Bar(_show_progress(as_json)) as bar:
        manifest = asyncio.run(verify_backup(file, reporter=bar))
    summary = {
        "file": str(file),
        "ok": True,
        "created": manifest.created,
        "scope": manifest.scope,
        "store": manifest.store,
        "releases": manifest.releases,
        "volumes": sorted(manifest.volumes),
        "entries": len(manifest.entries),
        "data_bytes": manifest.total_bytes,
    }
    if as_json:
        print_json(summary)
        return
    _say(
        f"[green]✓ {safe(str(file))} is intact:[/] {len(manifest.entries)} entries, "
        f"{manifest.total_bytes} bytes checked (made {safe(manifest.created)})"
    )


@backup.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--force",
    is_flag=True,
    help="Restore into a home that is not empty, replacing its state, releases and volumes.",
)
@json_option
def restore(file: Path, force: bool, as_json: bool) -> None:
    """Restore FILE into SOCLE_HOME (which must be empty unless --force).

    Everything is checked before anything is written. Afterwards `socle up` or `socle
    server` brings back apps, revisions and secrets (sealed: unseal them as usual)."""
    settings = _settings()
    with _Bar(_show_progress(as_json)) as bar:
        manifest = asyncio.run(restore_backup(settings, file, force=force, reporter=bar))
    if as_json:
        print_json(
            {
                "home": str(settings.home),
                "scope": manifest.scope,
                "store": manifest.store,
                "releases": manifest.releases,
                "volumes": sorted(manifest.volumes),
            }
        )
        return
    _say(f"[green]✓ restored into {safe(str(settings.home))}[/]")
    if manifest.scope == "volume":
        _say(f"  volume(s): {', '.join(sorted(manifest.volumes))}")
        return
    _say(
        f"  state store ({manifest.store}), {len(manifest.releases)} release(s), "
        f"{len(manifest.volumes)} volume(s)"
    )
    _say("next: `socle server` (or `socle up`) brings the apps back.")
    dev_key = "secrets-dev-unseal.key"
    _say(
        "secrets are sealed: unseal with your key shares (`socle operator unseal`); in dev "
        f"mode copy {dev_key} from the old home into {safe(os.fspath(settings.home))} first."
    )


def register(group: click.Group) -> None:
    group.add_command(backup)
