"""GitOps commands: ``socle source add|list|show|remove``, ``socle sync ENV``,
``socle diff ENV [REV]``; ``socle history ENV`` and ``socle rollback ENV [REV]`` live with
their plain forms in :mod:`socle.cli.apps` and call the helpers here."""

from __future__ import annotations

import time
from typing import Any

import click
from rich.table import Table

from socle.cli.client import Client
from socle.cli.output import console, err_console, json_option, print_json, safe
from socle.cli.render import print_plan
from socle.settings import load_settings

SYNC_TIMEOUT = 600.0
"""A sync waits for its rollout (builds, health checks): minutes, not seconds."""

STATE_STYLE = {
    "synced": "green",
    "out of sync": "yellow",
    "syncing": "cyan",
    "failed": "red",
    "pinned": "magenta",
    "new": "white",
}


def _client(timeout: float = 30.0) -> Client:
    return Client(load_settings(), timeout=timeout)


@click.group()
def source() -> None:
    """Git sources: a repository, a branch/tag/commit and a folder feeding one environment."""


@source.command("add")
@click.argument("name")
@click.option("--repo", required=True, help="Repository URL (https, ssh, git, file) or path.")
@click.option("--branch", help="Branch to follow.")
@click.option("--ref", help="Tag or commit SHA to follow (instead of --branch).")
@click.option("--path", "folder", default=".", show_default=True, help="Folder of manifests.")
@click.option("--env", required=True, help="Environment this source feeds.")
@click.option("--auto-sync/--no-auto-sync", default=True, show_default=True)
@click.option("--prune", is_flag=True, help="Delete objects that left Git.")
@click.option("--self-heal", is_flag=True, help="Correct drift, not only report it.")
@click.option("--require-approval", is_flag=True, help="Promotions wait for `socle approve`.")
@click.option("--interval", default="60s", show_default=True, help="Poll interval (jittered).")
@click.option(
    "--credentials", help="Secrets path with `token` or `ssh_key`, e.g. secret/data/git/NAME."
)
@click.option("--webhook-secret", help="Secrets path with `secret` (webhook HMAC key/token).")
@click.option(
    "--signing-key",
    "signing_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="File with an armored GPG public key commits must be signed with (repeatable).",
)
@click.option(
    "--allowed-signers",
    type=click.Path(exists=True, dir_okay=False),
    help="SSH allowed_signers file: SSH keys commits may be signed with.",
)
@click.option("--replace", is_flag=True, help="Replace an existing source of that name.")
@json_option
def add(
    name: str,
    repo: str,
    branch: str | None,
    ref: str | None,
    folder: str,
    env: str,
    auto_sync: bool,
    prune: bool,
    self_heal: bool,
    require_approval: bool,
    interval: str,
    credentials: str | None,
    webhook_secret: str | None,
    signing_keys: tuple[str, ...],
    allowed_signers: str | None,
    replace: bool,
    as_json: bool,
) -> None:
    """Add source NAME; it syncs at once, then every --interval and on webhooks.

    With --signing-key / --allowed-signers only commits signed by those keys are applied."""
    from pathlib import Path

    signers = []
    if allowed_signers:
        text = Path(allowed_signers).read_text(errors="replace")
        signers = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    body = {
        "name": name,
        "repo": repo,
        "branch": branch,
        "ref": ref,
        "path": folder,
        "env": env,
        "auto_sync": auto_sync,
        "prune": prune,
        "self_heal": self_heal,
        "require_approval": require_approval,
        "interval": interval,
        "credentials": credentials,
        "webhook_secret": webhook_secret,
        "signing_keys": [Path(k).read_text(errors="replace") for k in signing_keys],
        "allowed_signers": signers,
        "replace": replace,
    }
    with _client() as client:
        result = client.call("POST", "/api/v1/gitops/sources", json=body)
    if as_json:
        print_json(result)
    else:
        console.print(
            f"source {safe(name)} added: {safe(repo)} "
            f"{safe(branch or ref)}:{safe(folder)} -> environment {safe(env)}; "
            f"webhook: POST /api/v1/gitops/webhook/{safe(name)}"
        )


@source.command("apply")
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@json_option
def apply_(path: str, as_json: bool) -> None:
    """Add or replace every Source in the manifests of folder PATH (a bootstrap manifest)."""
    import os

    with _client() as client:
        rows = client.call(
            "POST", "/api/v1/gitops/sources/apply", json={"path": os.path.abspath(path)}
        )
    if as_json:
        print_json(rows)
    else:
        for row in rows:
            console.print(f"source {safe(row['name'])} -> environment {safe(row['env'])}")


@source.command("list")
@json_option
def list_(as_json: bool) -> None:
    """Every source with its sync state."""
    with _client() as client:
        rows = client.call("GET", "/api/v1/gitops/sources")
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("No sources. Add one with `socle source add`.")
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("NAME", "ENV", "REPO", "REF", "PATH", "STATE", "COMMIT", "REASON"):
        table.add_column(column)
    for row in rows:
        status = row["status"]
        table.add_row(
            safe(row["name"]),
            safe(row["env"]),
            safe(row["repo"]),
            safe(row.get("branch") or row.get("ref") or ""),
            safe(row["path"]),
            _state(status["state"]),
            safe((status.get("commit") or {}).get("sha", "")[:12]),
            safe(status.get("reason", "")[:80]),
        )
    console.print(table)


@source.command("show")
@click.argument("name")
@json_option
def show(name: str, as_json: bool) -> None:
    """One source: its settings and status (errors of a refused commit included)."""
    with _client() as client:
        row = client.call("GET", f"/api/v1/gitops/sources/{name}")
    if as_json:
        print_json(row)
        return
    status = row.pop("status")
    for key, value in row.items():
        console.print(f"[bold]{safe(key)}[/]: {safe(value)}")
    console.print(f"[bold]state[/]: {_state(status['state'])}  {safe(status.get('reason', ''))}")
    commit = status.get("commit")
    if commit:
        console.print(
            f"[bold]commit[/]: {safe(commit['sha'][:12])} {safe(commit['author'])} "
            f"{safe(commit['date'])} {safe(commit['message'].splitlines()[0] if commit['message'] else '')}"
        )
    for error in status.get("errors", []):
        console.print(f"  [red]{safe(error)}[/]")


@source.command("remove")
@click.argument("name")
def remove(name: str) -> None:
    """Forget source NAME (its apps keep running; nothing syncs them any more)."""
    with _client() as client:
        client.call("DELETE", f"/api/v1/gitops/sources/{name}")
    console.print(f"source {safe(name)} removed")


@click.command()
@click.argument("env")
@click.option("--force", is_flag=True, help="Apply again even if the commit is already applied.")
@click.option("--allow-delete-all", is_flag=True, help="Apply a commit that deletes every object.")
@json_option
def sync(env: str, force: bool, allow_delete_all: bool, as_json: bool) -> None:
    """Sync every source of ENV now (fetch, plan, apply, wait). Exit 1 if one failed."""
    with _client(SYNC_TIMEOUT) as client:
        body = {"env": env, "force": force, "allow_delete_all": allow_delete_all}
        rows = client.call("POST", "/api/v1/gitops/sync", json=body)
    if as_json:
        print_json(rows)
    else:
        for row in rows:
            commit = (row.get("commit") or {}).get("sha", "")[:12]
            console.print(
                f"{safe(row['source'])}: {_state(row['state'])} {safe(commit)} "
                f"{safe(row.get('reason', ''))}"
            )
            for error in row.get("errors", []):
                err_console.print(f"  {safe(error)}")
    raise SystemExit(1 if any(r["state"] == "failed" for r in rows) else 0)


@click.command()
@click.argument("env")
@click.argument("revision", required=False, type=click.IntRange(min=1))
@json_option
def diff(env: str, revision: int | None, as_json: bool) -> None:
    """What differs between the live state of ENV and Git (or REVISION), field by field.
    Exit 0: no difference, 2: differences."""
    params = {"revision": revision} if revision else {}
    with _client(SYNC_TIMEOUT) as client:
        rows = client.call("GET", f"/api/v1/gitops/envs/{env}/diff", params=params)
    if as_json:
        print_json(rows)
    else:
        for row in rows:
            what = f"revision {row['revision']}" if "revision" in row else row.get("source")
            console.print(f"[bold]{safe(what)}[/] {safe(row.get('commit', '')[:12])}")
            if "error" in row:
                console.print(f"  {safe(row['error'])}")
            else:
                print_plan(row)
    raise SystemExit(2 if any(r.get("changes") for r in rows) else 0)


@click.command()
@click.option("--from", "from_env", required=True, help="Environment whose commit is healthy.")
@click.option("--to", "to_env", required=True, help="Environment to move it to.")
@click.option("--revision", metavar="SHA", help="A commit applied successfully in --from.")
@json_option
def promote(from_env: str, to_env: str, revision: str | None, as_json: bool) -> None:
    """Move exactly the commit healthy in --from to --to (waits for `socle approve` when
    the target requires it)."""
    body = {"from": from_env, "to": to_env, "revision": revision}
    with _client(SYNC_TIMEOUT) as client:
        result = client.call("POST", "/api/v1/gitops/promote", json=body)
    _print_promotion(result, as_json)


@click.command()
@click.argument("env")
@json_option
def approve(env: str, as_json: bool) -> None:
    """Approve the promotion waiting in ENV, then apply it."""
    with _client(SYNC_TIMEOUT) as client:
        result = client.call("POST", f"/api/v1/gitops/envs/{env}/approve")
    _print_promotion(result, as_json)


def _print_promotion(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(result)
    else:
        promotion = result["promotion"]
        state = "applied" if promotion["approved"] else "waiting for approval"
        console.print(f"{safe(promotion['sha'][:12])} from {safe(promotion['from'])}: {state}")
        for row in result["results"]:
            console.print(f"  {safe(row['source'])}: {_state(row['state'])} {safe(row['reason'])}")
    failed = any(r["state"] == "failed" for r in result["results"])
    raise SystemExit(1 if failed else 0)


def env_history(client: Client, env: str, limit: int, as_json: bool) -> None:
    rows = client.call("GET", f"/api/v1/gitops/envs/{env}/history", params={"limit": limit})
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print(f"No revisions in environment {safe(env)} yet.")
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("REV", "TIME", "COMMIT", "AUTHOR", "MESSAGE", "RESULT", "DURATION"):
        table.add_column(column)
    for row in rows:
        commit = row.get("commit") or {}
        note = f" (rollback of {row['rollback_of']})" if row.get("rollback_of") else ""
        if row["status"] == "refused":
            note = ": " + row["message"].split(": ", 1)[-1][:80]
        table.add_row(
            "-" if row["number"] is None else str(row["number"]),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["created"])),
            safe(commit.get("sha", "-")[:12]),
            safe(commit.get("author", row["who"])),
            safe((commit.get("message") or "").split("\n")[0][:60]),
            safe(row["status"]) + note,
            f"{row['duration']:.1f}s" if row.get("duration") is not None else "-",
        )
    console.print(table)


def env_rollback(
    client: Client,
    env: str,
    revision: int | None,
    unpin: bool,
    as_json: bool,
    revert: bool = False,
) -> dict[str, Any]:
    result: dict[str, Any] = client.call(
        "POST",
        f"/api/v1/gitops/envs/{env}/rollback",
        json={"revision": revision, "unpin": unpin, "revert": revert},
    )
    if as_json:
        return result
    if revert:
        done = result["revert"]
        console.print(
            f"revert commit {safe(done['sha'][:12])} pushed to source {safe(done['source'])} "
            f"(back to {safe(done['to'][:12])}); environment {safe(env)}: "
            f"{safe(result['status']['state'])} {safe(result['status']['reason'])}"
        )
    elif unpin:
        console.print(f"environment {safe(env)} unpinned; it follows its sources again")
    else:
        pin = result["pinned"]
        console.print(
            f"environment {safe(env)} pinned to revision {pin['revision']} "
            f"(until a new commit arrives or `socle rollback {safe(env)} --unpin`)"
        )
    return result


def print_environments(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = Table(show_edge=False, header_style="bold", title="Environments", title_justify="left")
    for column in ("ENV", "STATE", "SOURCE", "REVISION", "COMMIT", "REASON"):
        table.add_column(column)
    for row in rows:
        pinned = row.get("pinned")
        for entry in row["sources"]:
            commit = entry.get("commit") or {}
            reason = entry.get("reason", "")
            if pinned:
                reason = f"pinned to revision {pinned['revision']}; {reason}"
            promotion = row.get("promotion")
            if promotion and entry["source"] in promotion["sources"]:
                by = promotion.get("approved_by") or promotion["who"]
                reason = (
                    f"promoted {promotion['sha'][:12]} from {promotion['from']} ({by}); {reason}"
                )
            table.add_row(
                safe(row["env"]),
                _state(entry["state"]),
                safe(entry["source"]),
                str(entry.get("revision") or "-"),
                safe(commit.get("sha", "")[:12]),
                safe(reason[:100]),
            )
    console.print(table)


def _state(state: str) -> str:
    return f"[{STATE_STYLE.get(state, 'white')}]{safe(state)}[/]"


@click.group()
def notifier() -> None:
    """Webhooks that GitOps events (sync, drift, rollback, approvals) and alerts are posted to."""


@notifier.command("add")
@click.argument("name")
@click.option("--url", required=True, help="http(s) URL the events are POSTed to.")
@click.option(
    "--format", "fmt", type=click.Choice(["json", "slack", "teams"]), default="json",
    show_default=True, help="Body: plain JSON, or Slack / Teams compatible.",
)  # fmt: skip
@click.option("--event", "events", multiple=True, help="Event to send (repeatable; default all).")
@click.option("--env", help="Only events of this environment.")
@click.option("--secret", help="Secrets path whose `secret` signs bodies (HMAC-SHA256).")
@click.option(
    "--severity", "severities", multiple=True, type=click.Choice(["info", "warning", "critical"]),
    help="Only alerts of this severity (repeatable; default all).",
)  # fmt: skip
@click.option("--app", "apps", multiple=True, help="Only alerts about this app (repeatable).")
@json_option
def notifier_add(
    name: str,
    url: str,
    fmt: str,
    events: tuple[str, ...],
    env: str | None,
    secret: str | None,
    severities: tuple[str, ...],
    apps: tuple[str, ...],
    as_json: bool,
) -> None:
    """Add (or replace) notifier NAME."""
    alerts = {k: list(v) for k, v in (("severity", severities), ("app", apps)) if v}
    body = {"name": name, "url": url, "format": fmt, "events": list(events) or None,
            "env": env, "secret": secret, "alerts": alerts or None}  # fmt: skip
    with _client() as client:
        row = client.call("POST", "/api/v1/gitops/notifiers", json=body)
    if as_json:
        print_json(row)
    else:
        console.print(f"notifier {safe(name)}: {', '.join(safe(e) for e in row['events'])}")


@notifier.command("list")
@json_option
def notifier_list(as_json: bool) -> None:
    """Every notifier and the events it receives."""
    with _client() as client:
        rows = client.call("GET", "/api/v1/gitops/notifiers")
    if as_json:
        print_json(rows)
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("NAME", "FORMAT", "ENV", "SIGNED", "EVENTS"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            safe(row["name"]), safe(row["format"]), safe(row.get("env") or "*"),
            "yes" if row.get("secret") else "no", safe(", ".join(row["events"])),
        )  # fmt: skip
    console.print(table)


@notifier.command("remove")
@click.argument("name")
def notifier_remove(name: str) -> None:
    """Stop sending events to notifier NAME."""
    with _client() as client:
        client.call("DELETE", f"/api/v1/gitops/notifiers/{name}")
    console.print(f"notifier {safe(name)} removed")


@click.command()
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@json_option
def notifications(limit: int, as_json: bool) -> None:
    """Deliveries to notifiers, newest first: event, attempts, answer."""
    with _client() as client:
        rows = client.call("GET", "/api/v1/gitops/notifications", params={"limit": limit})
    if as_json:
        print_json(rows)
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("TIME", "NOTIFIER", "ENV", "SOURCE", "EVENT", "DELIVERED", "ATTEMPTS",
                   "ERROR"):  # fmt: skip
        table.add_column(column)
    for row in rows:
        table.add_row(
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["time"])),
            safe(row["notifier"]), safe(row["env"]), safe(row.get("source") or ""),
            safe(row["event"]),
            "yes" if row["delivered"] else "no", str(row["attempts"]), safe(row["error"]),
        )  # fmt: skip
    console.print(table)


def register(group: click.Group) -> None:
    for command in (source, sync, diff, promote, approve, notifier, notifications):
        group.add_command(command)
