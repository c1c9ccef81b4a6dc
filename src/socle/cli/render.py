"""Rich renderings of plans, status and history, shared by the app commands."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.table import Table

from socle.cli.output import console, safe
from socle.model.status import AppHealth, RevisionStatus

ACTION_STYLE = {
    "create": ("+", "green"),
    "update": ("~", "yellow"),
    "replace": ("-/+", "magenta"),
    "delete": ("-", "red"),
}
HEALTH_STYLE = {
    AppHealth.HEALTHY: "green",
    AppHealth.PROGRESSING: "cyan",
    AppHealth.DEGRADED: "yellow",
    AppHealth.FAILED: "red",
    AppHealth.CRASHLOOP: "red",
    AppHealth.STOPPED: "dim",
    # Kinds other than App (Volume rows) say these:
    "ready": "green",
    # Route rows (the ingress' view):
    "serving": "green",
    "no_healthy_upstream": "red",
    "certificate_pending": "yellow",
    "pending": "cyan",
    "error": "red",
    "warning": "yellow",
    "missing": "red",
}
STATUS_STYLE = {
    RevisionStatus.SUCCEEDED: "green",
    RevisionStatus.ROLLING: "cyan",
    RevisionStatus.BUILDING: "cyan",
    RevisionStatus.FAILED: "red",
    RevisionStatus.ROLLED_BACK: "magenta",
    RevisionStatus.INTERRUPTED: "yellow",
    RevisionStatus.SUPERSEDED: "dim",
}


def _value(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return safe(text if len(text) <= 80 else text[:77] + "...")


def print_plan(plan: dict[str, Any]) -> None:
    changes = plan["changes"]
    if not changes:
        console.print(f"[green]No changes.[/] {plan['unchanged']} object(s) up to date.")
        return
    for change in changes:
        symbol, colour = ACTION_STYLE[change["action"]]
        console.print(
            f"[bold {colour}]{symbol} {change['action']}[/] "
            f"{safe(change['kind'])}/{safe(change['name'])}"
            f"  [dim]{safe(change['reason'])}[/]"
        )
        for field in change["fields"]:
            console.print(
                f"    {safe(field['path'])}: [red]{_value(field['old'])}[/] → "
                f"[green]{_value(field['new'])}[/]"
            )
    counts = plan["counts"]
    console.print(
        f"\n[bold]Plan:[/] {counts['create']} to create, {counts['update']} to update, "
        f"{counts['replace']} to replace, {counts['delete']} to delete, "
        f"{plan['unchanged']} unchanged."
    )


def _ports(instance: dict[str, Any]) -> str:
    ports = instance.get("ports") or {}
    return ", ".join(
        f"{safe(name)}={safe(instance['address'])}:{safe(port)}" for name, port in ports.items()
    )


def print_status(status: dict[str, Any]) -> None:
    isolation = status["isolation"]
    console.print(
        f"[dim]isolation:[/] {safe(isolation['mode'])} [dim]({safe(isolation['detail'])})[/]"
    )
    protections = isolation.get("protections") or {}
    if protections:
        marks = [
            f"[green]✓[/] {safe(name)}" if held else f"[red]✗[/] {safe(name)}"
            for name, held in protections.items()
        ]
        console.print("[dim]protections:[/] " + "  ".join(marks))
    for name, how in (isolation.get("features") or {}).items():
        console.print(f"[dim]  {safe(name)}:[/] {safe(how)}")
    if isolation.get("warning"):
        console.print(f"[yellow]warning:[/] {safe(isolation['warning'])}")
    print_control_plane(status.get("control_plane") or {})
    if not status["apps"]:
        if not status.get("objects"):
            console.print("No apps. Apply manifests with `socle apply PATH`.")
        print_objects(status)
        return
    apps = Table(show_edge=False, header_style="bold")
    for column in ("APP", "ENV", "READY", "HEALTH", "RESTARTS", "RELEASE", "REV", "MESSAGE"):
        apps.add_column(column, overflow="fold")
    instances = Table(show_edge=False, header_style="bold")
    for column in ("INSTANCE", "PID", "UID", "STATE", "RESTARTS", "PORTS"):
        instances.add_column(column, overflow="fold")
    for app in status["apps"]:
        health = app["health"]
        apps.add_row(
            safe(app["name"]),
            safe(app.get("environment", "default")),
            f"{app['ready']}/{app['desired']}",
            f"[{HEALTH_STYLE.get(health, 'white')}]{safe(health)}[/]",
            str(app["restarts"]),
            safe(app["release"] or "-"),
            str(app["revision"] or "-"),
            safe(app["message"][:80]),
        )
        for inst in app["instances"]:
            state = "[green]ready[/]" if inst["ready"] else f"[yellow]{safe(inst['state'])}[/]"
            if inst["message"] and not inst["ready"]:
                state += f" [dim]{safe(inst['message'][:60])}[/]"
            uid = inst.get("uid")
            instances.add_row(
                safe(inst["id"]),
                str(inst["pid"] or "-"),
                "-" if uid is None else str(uid),
                state,
                str(inst["restarts"]),
                _ports(inst),
            )
    console.print(apps)
    console.print()
    console.print(instances)
    urls = app_urls(status)
    if urls:
        console.print()
    for name, url in urls:
        console.print(f"[bold]{safe(name)}[/] answers at {safe(url)}")
    print_objects(status)


def print_objects(status: dict[str, Any]) -> None:
    """Objects of the kinds other than App (Volumes, ...): one generic table."""
    others = [o for o in status.get("objects", []) if o.get("kind") != "App"]
    if not others:
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("OBJECT", "HEALTH", "DETAIL", "REV", "MESSAGE"):
        table.add_column(column, overflow="fold")
    for row in others:
        health = row.get("health", "-")
        detail = ""
        if "size_bytes" in row:
            used = row.get("used_bytes")
            detail = f"{_bytes(used) if used is not None else '-'} / {_bytes(row['size_bytes'])}"
        table.add_row(
            safe(f"{row['kind']}/{row['name']}"),
            f"[{HEALTH_STYLE.get(health, 'white')}]{safe(str(health))}[/]",
            detail,
            str(row.get("revision") or "-"),
            safe(str(row.get("message") or "")[:80]),
        )
    console.print()
    console.print(table)


def _bytes(value: int) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)  # pragma: no cover


def print_control_plane(plane: dict[str, Any]) -> None:
    """The "control plane" section: components, leader lease, background-task failures."""
    if not plane:
        return
    components = plane.get("components") or []
    down = [c for c in components if c.get("state") != "running"]
    words = [f"{len(components) - len(down)}/{len(components)} components running"]
    words += [f"{safe(c['name'])} {safe(c['state'])}" for c in down]
    leader = plane.get("leader")
    if leader:
        words.append(
            f"leader of its shared store (pid {leader.get('pid')} on {safe(str(leader.get('host')))})"
        )
    console.print(f"[dim]control plane:[/] {', '.join(words)}")
    network = plane.get("network") or {}
    if network.get("consul") or network.get("dns"):
        console.print(
            f"[dim]discovery:[/] Consul API http://{safe(str(network.get('consul') or '-'))}, "
            f"DNS {safe(str(network.get('dns') or '-'))} (zone socle.internal)"
        )
    observe = plane.get("observe") or {}
    prometheus, alertmanager = observe.get("prometheus"), observe.get("alertmanager")
    if prometheus or alertmanager or observe.get("query_url"):

        def daemon(info: dict[str, Any] | None) -> str:
            if not info:
                return "off"
            restarts = int(info.get("restarts") or 0)
            extra = f", {restarts} restart(s)" if restarts else ""
            return f"pid {info.get('pid') or '-'}{extra}"

        console.print(
            f"[dim]observe:[/] Prometheus {safe(daemon(prometheus))}, Alertmanager "
            f"{safe(daemon(alertmanager))} (`socle metrics query`, `socle alerts`)"
        )
        rules = (prometheus or {}).get("rules") or {}
        if rules.get("error"):
            since = time.strftime("%H:%M:%S", time.localtime(float(rules.get("failed_at") or 0)))
            console.print(
                "[bold red]Prometheus rule files NOT written[/] (AlertRule/SLO changes not "
                f"live, retrying) since {since}: {safe(str(rules['error']))}",
                soft_wrap=True,
            )
    firewall = network.get("firewall")
    if firewall:
        if not firewall.get("enforced"):
            console.print(
                f"[bold yellow]firewall NOT enforced:[/] {safe(str(firewall.get('reason')))}"
            )
        elif not firewall.get("isolated"):
            console.print(
                "[dim]firewall:[/] host policies enforced; [yellow]app policies NOT enforced[/] "
                f"({safe(str(firewall.get('reason') or 'instances share the host network'))})"
            )
        else:
            table = safe(str(firewall.get("table") or "inet socle"))
            console.print(
                f"[dim]firewall:[/] enforced (nftables table {table}; every instance in its "
                "own network namespace)"
            )
        if firewall.get("drift_corrections"):
            console.print(
                f"[yellow]firewall table changed outside Socle[/] "
                f"{firewall['drift_corrections']} time(s), corrected (socle firewall status)"
            )
    tasks = plane.get("tasks") or {}
    failures = int(tasks.get("failures") or 0)
    last = tasks.get("last_failure")
    if failures and last:
        when = time.strftime("%H:%M:%S", time.localtime(float(last["time"])))
        console.print(
            f"[red]background task failures:[/] {failures}; last: "
            f"{safe(str(last['task']))} at {when}: {safe(str(last['error']))}",
            soft_wrap=True,
        )


def app_urls(status: dict[str, Any]) -> list[tuple[str, str]]:
    """A URL per app that answers HTTP: its stable URL through the ingress when there is
    one, else the first ready instance's first port (which changes with every rollout)."""
    urls = []
    for app in status["apps"]:
        if app.get("url"):
            urls.append((app["name"], app["url"]))
            continue
        for inst in app["instances"]:
            if inst["ready"] and inst["ports"]:
                port = next(iter(inst["ports"].values()))
                host = inst["address"]
                host = f"[{host}]" if ":" in host else host
                urls.append((app["name"], f"http://{host}:{port}/"))
                break
    return urls


def print_history(revisions: list[dict[str, Any]]) -> None:
    if not revisions:
        console.print("No revisions yet.")
        return
    table = Table(show_edge=False, header_style="bold")
    for column in ("REV", "TIME", "WHO", "ENV", "CHANGES", "STATUS", "MESSAGE"):
        table.add_column(column)
    for rev in revisions:
        counts = rev["plan"]["counts"]
        changes = " ".join(f"{ACTION_STYLE[a][0]}{n}" for a, n in counts.items() if n)
        status = rev["status"]
        note = f" (rollback of {rev['rollback_of']})" if rev.get("rollback_of") else ""
        table.add_row(
            str(rev["number"]),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rev["created"])),
            safe(rev["who"]),
            safe(rev.get("environment") or rev["env"] or "-"),
            changes,
            f"[{STATUS_STYLE.get(status, 'white')}]{safe(status)}[/]{note}",
            safe(rev["message"][:100]),
        )
    console.print(table)
