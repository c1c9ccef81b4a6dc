"""Commands that run the control plane and apps: server, up, down, plan, apply, status,
history, rollback, logs."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from socle.cli.client import Client, server_url
from socle.cli.output import console, err_console, json_option, print_json, safe
from socle.cli.render import app_urls, print_history, print_plan, print_status
from socle.errors import ConfigError, ManifestError, Problem, ServerNotRunning, SocleError
from socle.fs import open_private_append, private_dir, write_private
from socle.model.status import (
    TERMINAL_REVISION_STATUSES,
    AppHealth,
    ChangePhase,
    RevisionStatus,
)
from socle.settings import Settings, load_settings, read_json_file

SERVER_START_TIMEOUT = 30.0


def _settings(**overrides: Any) -> Settings:
    return load_settings(**overrides)


def _repo_path(path: str) -> str:
    resolved = Path(path).resolve()
    if not resolved.is_dir():
        raise ConfigError(
            f"{path} is not a folder", hint="give the folder that holds your manifests"
        )
    return str(resolved)


def _remembered_file(settings: Settings) -> Path:
    return settings.home / "repository.json"


def _remember(settings: Settings, path: str, env: str | None) -> None:
    """Note the repository (and environment) for later commands run without a PATH."""
    with contextlib.suppress(OSError):  # a remote control plane's home may not be ours
        write_private(_remembered_file(settings), json.dumps({"path": path, "env": env}) + "\n")


def _repository(
    settings: Settings, path: str | None, env: str | None, *, remember: bool
) -> tuple[str, str | None]:
    """The repository and environment to use: PATH, or the one last given to up/apply."""
    if path is not None:
        resolved = _repo_path(path)
        if remember:
            _remember(settings, resolved, env)
        return resolved, env
    saved = read_json_file(_remembered_file(settings))
    if not saved or not isinstance(saved.get("path"), str):
        raise ConfigError(
            "no PATH given, and no repository was applied from this home yet",
            hint="give the folder of your manifests, e.g. `socle apply examples/quickstart`; "
            "later commands without a PATH reuse it",
        )
    if env is None and isinstance(saved.get("env"), str):
        env = saved["env"]
    shown = saved["path"] + (f" (env {env})" if env else "")
    err_console.print(f"[dim]using {safe(shown)}, as last given to `socle up`/`apply`[/]")
    return _repo_path(saved["path"]), env


env_option = click.option(
    "--env", "-e", "env", metavar="ENV", help="Apply the environments/ENV overlay."
)
allow_delete_all_option = click.option(
    "--allow-delete-all",
    is_flag=True,
    help="Allow a plan that deletes every object (refused otherwise, e.g. for an empty folder).",
)
listen_option = click.option(
    "--listen", metavar="HOST:PORT", help="API address (default 127.0.0.1:7780; port 0 = any)."
)


REVISION_POLL_SECONDS = 0.1
"""How often ``apply``/``up``/``rollback`` ask whether their revision is done: a revision's
state is one small read (no plan), and every apply returns on average half a poll after its
revision ended (0.25 s made each one wait 125 ms more, for nothing)."""


def _wait_revision(client: Client, number: int, *, quiet: bool = False) -> dict[str, Any]:
    """Poll a revision until it is done, showing per-app progress."""
    last_text, last_status, ready = "", 0.0, {}
    with console.status(f"revision {number}: starting", spinner="dots") as spinner:
        while True:
            revision: dict[str, Any] = client.call(
                "GET", f"/api/v1/revisions/{number}", params={"plan": "false"}
            )
            if revision["status"] in TERMINAL_REVISION_STATUSES:
                return client.call("GET", f"/api/v1/revisions/{number}")  # type: ignore[no-any-return]
            if quiet:
                time.sleep(REVISION_POLL_SECONDS)
                continue
            if (
                revision["status"] == RevisionStatus.ROLLING
                and time.monotonic() - last_status > 1.0
            ):
                status = client.call("GET", "/api/v1/status")
                ready = {a["name"]: f"{a['ready']}/{a['desired']}" for a in status["apps"]}
                last_status = time.monotonic()
            text = f"revision {number} {revision['status']}: " + _progress(revision, ready)
            if text != last_text:
                spinner.update(safe(text[:200]))
                last_text = text
            time.sleep(REVISION_POLL_SECONDS)


def _progress(revision: dict[str, Any], ready: dict[str, str]) -> str:
    """ "api: rolling 1/2, worker: pending" — or counts per phase for big revisions."""
    apps: dict[str, dict[str, str]] = revision["apps"]
    if len(apps) > 8:
        phases: dict[str, int] = {}
        for entry in apps.values():
            phases[entry["phase"]] = phases.get(entry["phase"], 0) + 1
        return ", ".join(f"{count} {phase}" for phase, count in sorted(phases.items()))
    return ", ".join(
        f"{name}: {entry['phase']}"
        + (f" {ready[name]}" if name in ready and entry["phase"] == ChangePhase.ROLLING else "")
        for name, entry in apps.items()
    )


def _report_revision(revision: dict[str, Any]) -> int:
    status = revision["status"]
    if status == RevisionStatus.SUCCEEDED:
        console.print(f"[green]✓ revision {revision['number']} applied[/]")
        return 0
    err_console.print(
        f"[red]✗ revision {revision['number']} {status}[/]: {safe(revision['message'])}"
    )
    for name, entry in revision["apps"].items():
        if entry["message"]:
            err_console.print(f"  {safe(name)}: {safe(entry['phase'])}: {safe(entry['message'])}")
    return 1


def _in_repo(repo: str, problem: Problem) -> Problem:
    """The problem with its file as the user can open it: the server names files relative
    to the repository, the user stands somewhere else (relative to here when inside)."""
    if problem.file is None or os.path.isabs(problem.file):
        return problem
    full = os.path.normpath(os.path.join(repo, problem.file))
    here = os.path.relpath(full)
    return dataclasses.replace(problem, file=full if here.startswith("..") else here)


@contextlib.contextmanager
def _repo_files(repo: str | None) -> Iterator[None]:
    try:
        yield
    except ManifestError as exc:
        if repo is None:
            raise
        raise ManifestError([_in_repo(repo, p) for p in exc.problems], hint=exc.hint) from None


def _apply(
    client: Client,
    body: dict[str, Any],
    *,
    yes: bool,
    wait: bool,
    as_json: bool,
    endpoint: str,
    quiet_urls: bool = False,
) -> int:
    with _repo_files(body.get("path")):
        return _apply_in(
            client,
            body,
            yes=yes,
            wait=wait,
            as_json=as_json,
            endpoint=endpoint,
            quiet_urls=quiet_urls,
        )


def _apply_in(
    client: Client,
    body: dict[str, Any],
    *,
    yes: bool,
    wait: bool,
    as_json: bool,
    endpoint: str,
    quiet_urls: bool,
) -> int:
    if not yes:
        preview = client.call("POST", "/api/v1/plan", json=body) if endpoint == "apply" else None
        if preview is not None:
            print_plan(preview)
            if not preview["changes"]:
                return 0
        if not sys.stdin.isatty():
            raise ConfigError("refusing to apply without confirmation", hint="pass --yes")
        if not click.confirm("Apply these changes?", default=False):
            err_console.print("Cancelled; nothing was changed.")
            return 1
    result = client.call("POST", f"/api/v1/{endpoint}", json=body)
    revision = result["revision"]
    if revision is None:
        if as_json:
            print_json(result)
        else:
            console.print("[green]No changes.[/] Everything is up to date.")
        return 0
    if yes and not as_json:
        print_plan(result["plan"])
    if not wait:
        if as_json:
            print_json(result)
        else:
            console.print(f"revision {revision['number']} started; follow it with `socle status`")
        return 0
    final = _wait_revision(client, revision["number"], quiet=as_json)
    if as_json:
        print_json(final)
        return 0 if final["status"] == RevisionStatus.SUCCEEDED else 1
    code = _report_revision(final)
    if code == 0 and endpoint == "apply" and not quiet_urls:
        for name, url in app_urls(client.call("GET", "/api/v1/status")):
            if url:
                console.print(f"[bold]{safe(name)}[/] answers at {safe(url)}")
    return code


@click.command()
@listen_option
@click.option("--dev", is_flag=True, help="Development mode: auto-unseal secrets from a key file.")
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="PEM certificate for the API.")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="PEM key for the API.")
@click.option(
    "--standby",
    is_flag=True,
    help="On a shared (PostgreSQL) store led by another control plane, wait and take over "
    "when it stops, instead of refusing to start.",
)
def server(
    listen: str | None, dev: bool, tls_cert: str | None, tls_key: str | None, standby: bool
) -> None:
    """Run the control plane in the foreground (Ctrl-C stops it; apps keep running).

    Listening beyond loopback needs TLS (--tls-cert/--tls-key or SOCLE_TLS_CERT/KEY).
    """
    from socle.server import run

    run(
        _settings(
            listen=listen,
            dev=dev or None,
            tls_cert=tls_cert,
            tls_key=tls_key,
            standby=standby or None,
        )
    )


def _start_background(settings: Settings, listen: str | None, dev: bool) -> None:
    private_dir(settings.home)
    log_path = settings.home / "server.log"
    argv = [sys.executable, "-m", "socle", "server"]
    if listen:
        argv += ["--listen", listen]
    if dev:
        argv.append("--dev")
    env = dict(os.environ, SOCLE_HOME=str(settings.home))
    with os.fdopen(open_private_append(log_path), "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise SocleError(
                "the control plane exited at start:\n  " + "\n  ".join(tail),
                hint=f"see {log_path}",
            )
        if server_url(settings):
            with Client(settings) as client:
                if client.healthy():
                    return
        time.sleep(0.1)
    raise SocleError("the control plane did not answer in time", hint=f"see {log_path}")


def _running(settings: Settings) -> bool:
    if not server_url(settings):
        return False
    try:
        with Client(settings) as client:
            return client.healthy()
    except ServerNotRunning:
        return False


@click.command()
@click.argument("path", required=False, type=click.Path())
@env_option
@listen_option
@click.option("--no-wait", is_flag=True, help="Return once the apply started.")
@click.option(
    "--dev/--no-dev",
    default=True,
    show_default=True,
    help="Development mode for a new control plane: the secrets engine is initialised and "
    "auto-unsealed from a key file in SOCLE_HOME (mode 0600). Use --no-dev in production.",
)
@click.option(
    "--bootstrap",
    type=click.Path(exists=True),
    help="Bootstrap manifest (file or folder of Source/Notifier objects): add its sources "
    "and sync every environment they feed before returning.",
)
@click.option(
    "--restore",
    type=click.Path(exists=True, dir_okay=False),
    help="With --bootstrap, on a fresh home: first restore this backup archive (data, last "
    "synced commits), then start and sync (disaster recovery).",
)
def up(
    path: str | None,
    env: str | None,
    listen: str | None,
    no_wait: bool,
    dev: bool,
    bootstrap: str | None,
    restore: str | None,
) -> None:
    """Start the control plane in the background (if needed), apply PATH and wait.

    `socle up --bootstrap FILE [--restore BACKUP]` rebuilds a control plane from Git:
    the backup (if any) is restored into the empty home, then the bootstrap's sources
    are added and every environment is synced to its commit."""
    settings = _settings()
    if restore and not bootstrap:
        raise click.UsageError("--restore needs --bootstrap FILE")
    if restore:
        if _running(settings):
            raise SocleError(
                "a control plane is running on this home: --restore rebuilds a fresh home",
                hint="stop it (`socle down`) and use an empty SOCLE_HOME",
            )
        _restore(settings, Path(restore))
    if not _running(settings):
        with console.status("starting the control plane"):
            _start_background(settings, listen, dev)
        if dev:
            err_console.print(
                "[bold yellow]warning:[/] development mode: secrets auto-unseal from "
                f"{settings.home / DEV_KEY_FILE}; do not use it in production"
            )
        console.print(
            f"[green]✓ control plane running[/] at {server_url(settings)} (home {settings.home})"
        )
    else:
        console.print(f"control plane already running at {server_url(settings)}")
    _print_secrets_help(settings)
    code = 0
    with Client(settings) as client:
        if path:
            repo, env = _repository(settings, path, env, remember=True)
            body = {"path": repo, "env": env}
            code = _apply(
                client,
                body,
                yes=True,
                wait=not no_wait,
                as_json=False,
                endpoint="apply",
                quiet_urls=True,  # `up` prints the whole status, URLs included
            )
        elif not no_wait and not bootstrap:
            code = _wait_settled(client)
        if bootstrap:
            code = max(code, _bootstrap(client, Path(bootstrap), wait=not no_wait))
        status = client.call("GET", "/api/v1/status")
    print_status(status)
    if not path and not status["apps"]:
        console.print(
            "Nothing is applied yet: run `socle apply PATH` (or `socle up PATH`) with the "
            "folder of your manifests."
        )
    raise SystemExit(code)


def _restore(settings: Settings, archive: Path) -> None:
    """Restore ``archive`` into the (empty) home before the control plane starts."""
    import asyncio

    from socle.backup.operations import restore_backup

    with console.status(f"restoring {archive.name}"):
        asyncio.run(restore_backup(settings, archive))
    console.print(f"[green]✓ restored {safe(archive.name)}[/] into {safe(str(settings.home))}")


BOOTSTRAP_TIMEOUT = 600.0


def _bootstrap(client: Client, path: Path, *, wait: bool) -> int:
    """Add the bootstrap's sources, then wait until every source has synced (or failed):
    1 if one failed."""
    rows = client.call("POST", "/api/v1/gitops/sources/apply", json={"path": str(path.absolute())})
    names = {row["name"] for row in rows}
    console.print(f"[green]✓ bootstrap[/]: {len(names)} source(s) from {safe(str(path))}")
    if not wait or not names:
        return 0
    deadline = time.monotonic() + BOOTSTRAP_TIMEOUT
    busy = {"new", "syncing"}
    with console.status("syncing environments from Git", spinner="dots"):
        while True:
            sources = [
                s for s in client.call("GET", "/api/v1/gitops/sources") if s["name"] in names
            ]
            if all(s["status"]["state"] not in busy for s in sources):
                break
            if time.monotonic() > deadline:
                err_console.print("[bold red]error:[/] sources still syncing; see `socle status`")
                return 1
            time.sleep(0.2)
    failed = [s for s in sources if s["status"]["state"] == "failed"]
    for source in failed:
        err_console.print(
            f"[bold red]source {safe(source['name'])} failed:[/] {safe(source['status']['reason'])}"
        )
    settled = _wait_settled(client)
    return 1 if failed else settled


DEV_KEY_FILE = "secrets-dev-unseal.key"
"""As ``socle.secrets.core.DEV_KEY_FILE``; not imported, so `socle up` stays light."""


def _print_secrets_help(settings: Settings) -> None:
    """How to reach the secrets engine with `socle secrets`, bao/vault and hvac. In dev mode
    the root token stays in its 0600 file: this says where, never what it is."""
    url = server_url(settings)
    key_file = settings.home / DEV_KEY_FILE
    if not url or not key_file.exists():
        return
    console.print(
        "Secrets (dev mode): `socle secrets put|get|list|grant|policy` use the dev root token "
        "by themselves.\n"
        "For the bao/vault CLI, hvac and other Vault clients:\n"
        f"  export VAULT_ADDR={url}\n"
        '  eval "$(socle secrets env)"   # sets VAULT_ADDR and VAULT_TOKEN\n'
        f"(the dev root token is the root_token field of {key_file}, mode 0600)",
        soft_wrap=True,
        markup=False,
        highlight=False,
    )


SETTLE_TIMEOUT = 180.0


def _wait_settled(client: Client) -> int:
    """After a start without PATH: wait for the last rollout and for re-adopted apps to be
    healthy, instead of showing a "degraded" that is only "still starting"."""
    latest = client.call("GET", "/api/v1/revisions", params={"limit": 1})
    if latest and latest[0]["status"] not in TERMINAL_REVISION_STATUSES:
        final = _wait_revision(client, latest[0]["number"])
        if final["status"] != RevisionStatus.SUCCEEDED:
            return _report_revision(final)
    deadline = time.monotonic() + SETTLE_TIMEOUT
    with console.status("waiting for apps to be healthy", spinner="dots") as spinner:
        while True:
            apps = client.call("GET", "/api/v1/status")["apps"]
            waiting = [a["name"] for a in apps if a["ready"] < a["desired"]]
            if not waiting:
                return 0
            broken = [
                a["name"] for a in apps if a["health"] in (AppHealth.FAILED, AppHealth.CRASHLOOP)
            ]
            if broken:
                err_console.print(f"[red]not healthy:[/] {safe(', '.join(broken))}")
                return 1
            if time.monotonic() > deadline:
                err_console.print(
                    f"[yellow]still not healthy after {SETTLE_TIMEOUT:g}s:[/] "
                    + safe(", ".join(waiting))
                )
                return 1
            spinner.update(safe(f"waiting for {', '.join(waiting[:8])} to be healthy"))
            time.sleep(0.5)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its parent counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@click.command()
@click.option("--keep-apps", is_flag=True, help="Leave app instances running.")
@click.option(
    "--force",
    is_flag=True,
    help="If no control plane answers, stop this home's app instances from their records.",
)
def down(keep_apps: bool, force: bool) -> None:
    """Stop the control plane (and its apps, unless --keep-apps)."""
    settings = _settings()
    info = read_json_file(settings.server_file)
    try:
        with Client(settings) as client:
            client.call("POST", "/api/v1/shutdown", json={"keep_apps": keep_apps})
    except ServerNotRunning:
        if not force or keep_apps:
            raise
        stopped = _stop_orphans(settings)
        console.print(f"[green]✓ no control plane was running; stopped {stopped} instance(s)[/]")
        return
    pid = int(info["pid"]) if info and info.get("pid") else None
    with console.status("stopping"):
        deadline = time.monotonic() + 120
        while pid and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    console.print(
        "[green]✓ control plane stopped[/]" + (" (apps kept running)" if keep_apps else "")
    )


def _stop_orphans(settings: Settings) -> int:
    """Adopt the instances recorded under ``run/`` and stop them, without a control plane
    (the driver's lock on ``run/`` refuses if one is in fact running)."""
    import asyncio

    from socle.runtime.local.driver import LocalDriver

    async def run() -> int:
        driver = LocalDriver(settings.run_dir, settings.logs_dir)
        await driver.start()
        count = len(driver.instances())
        await driver.close(stop_instances=True)
        return count

    return asyncio.run(run())


@click.command()
@click.argument("path", required=False, type=click.Path())
@env_option
@allow_delete_all_option
@click.option("--source", "source_url", metavar="URL", help="Preview a Git repository instead.")
@click.option("--ref", metavar="BRANCH", help="With --source: branch, tag or commit.")
@click.option("--path", "folder", default=".", help="With --source: folder of manifests.")
@json_option
def plan(
    path: str | None,
    env: str | None,
    allow_delete_all: bool,
    source_url: str | None,
    ref: str | None,
    folder: str,
    as_json: bool,
) -> None:
    """Show what apply would change. Exit 0: no change, 2: changes, 1: error.

    Without PATH, the repository (and environment) last given to `socle up`/`apply`.
    `--source URL --ref BRANCH --env ENV`: what that branch (a merge request) would change
    in ENV, compared with the source that follows the repository there.
    """
    settings = _settings()
    if source_url is not None:
        if ref is None or env is None:
            raise ConfigError("--source needs --ref and --env")
        preview = {"repo": source_url, "ref": ref, "path": folder, "env": env}
        with Client(settings, timeout=600) as client:
            result = client.call("POST", "/api/v1/gitops/preview", json=preview)
        if as_json:
            print_json(result)
        else:
            commit = result["commit"]
            console.print(
                f"commit {safe(commit['sha'][:12])} {safe(commit['message'].split(chr(10))[0])}"
                f" -> environment {safe(env)}"
            )
            print_plan(result)
        raise SystemExit(2 if result["changes"] else 0)
    repo, env = _repository(settings, path, env, remember=False)
    body = {"path": repo, "env": env, "allow_delete_all": allow_delete_all}
    with Client(settings) as client, _repo_files(repo):
        result = client.call("POST", "/api/v1/plan", json=body)
    if as_json:
        print_json(result)
    else:
        print_plan(result)
    raise SystemExit(2 if result["changes"] else 0)


@click.command()
@click.argument("path", required=False, type=click.Path())
@env_option
@allow_delete_all_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--no-wait", is_flag=True, help="Return once the apply started.")
@json_option
def apply(
    path: str | None,
    env: str | None,
    allow_delete_all: bool,
    yes: bool,
    no_wait: bool,
    as_json: bool,
) -> None:
    """Apply the manifests in PATH: build, roll out in dependency order, wait for health.

    Without PATH, the repository (and environment) last given to `socle up`/`apply`.
    """
    settings = _settings()
    repo, env = _repository(settings, path, env, remember=True)
    with Client(settings) as client:
        body = {"path": repo, "env": env, "allow_delete_all": allow_delete_all}
        code = _apply(client, body, yes=yes, wait=not no_wait, as_json=as_json, endpoint="apply")
    raise SystemExit(code)


@click.command()
@click.argument("target")
@click.argument("number", required=False, type=click.IntRange(min=1))
@click.option("--unpin", is_flag=True, help="With ENV: follow the sources again.")
@click.option(
    "--revert", is_flag=True, help="With ENV: write a revert commit to the source branch instead."
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--no-wait", is_flag=True, help="Return once the rollback started.")
@json_option
def rollback(
    target: str,
    number: int | None,
    unpin: bool,
    revert: bool,
    yes: bool,
    no_wait: bool,
    as_json: bool,
) -> None:
    """Re-apply the desired state of revision TARGET with its kept releases (no rebuild).

    `socle rollback ENV [REV]`: return environment ENV to revision REV (default: the good
    one before the current) and pin it there until a new commit arrives or `--unpin`;
    with `--revert`, write a commit to the source branch that restores that revision's
    folder instead (Git stays the truth; no pin).
    """
    if not target.isdigit() or number is not None or unpin or revert:
        from socle.cli.gitops import env_rollback
        from socle.model.source import check_env

        try:
            check_env(target)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="TARGET (a revision or ENV)") from None

        with Client(_settings()) as client:
            result = env_rollback(client, target, number, unpin, as_json, revert)
            if revert:
                if as_json:
                    print_json(result)
                raise SystemExit(0 if result["status"]["state"] == "synced" else 1)
            revision_ = (result.get("revision") or {}).get("number")
            final = (
                _wait_revision(client, revision_, quiet=as_json)
                if revision_ and not no_wait
                else None
            )
        if as_json:
            print_json({**result, "final": final})
        raise SystemExit(0 if final is None or final["status"] == RevisionStatus.SUCCEEDED else 1)
    revision = int(target)
    if revision < 1:
        raise ConfigError("revision numbers start at 1")
    with Client(_settings()) as client:
        if not yes and not sys.stdin.isatty():
            raise ConfigError("refusing to roll back without confirmation", hint="pass --yes")
        if not yes and not click.confirm(f"Roll back to revision {revision}?", default=False):
            raise SystemExit(1)
        code = _apply(
            client,
            {"revision": revision},
            yes=True,
            wait=not no_wait,
            as_json=as_json,
            endpoint="rollback",
        )
    raise SystemExit(code)


@click.command()
@json_option
def status(as_json: bool) -> None:
    """Apps, their health and instances (PID, address, ports), and the isolation in use."""
    with Client(_settings()) as client:
        result = client.call("GET", "/api/v1/status")
        result["environments"] = client.call("GET", "/api/v1/gitops/envs")
    if as_json:
        print_json(result)
    else:
        from socle.cli.gitops import print_environments

        print_status(result)
        print_environments(result["environments"])


@click.command()
@click.argument("env", required=False)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@json_option
def history(env: str | None, limit: int, as_json: bool) -> None:
    """Revisions, newest first: who applied what, and how it ended.

    With ENV: that environment's revisions with commit, result and duration."""
    if env is not None:
        from socle.cli.gitops import env_history

        with Client(_settings()) as client:
            env_history(client, env, limit, as_json)
        return
    with Client(_settings()) as client:
        result = client.call("GET", "/api/v1/revisions", params={"limit": limit})
    if as_json:
        print_json(result)
    else:
        print_history(result)


def register(group: click.Group) -> None:
    for command in (server, up, down, plan, apply, rollback, status, history):
        group.add_command(command)
