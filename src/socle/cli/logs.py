"""``socle logs``: an app's output, LogQL queries over the log store, and its verification.

``socle logs APP [--follow]`` prints an app's instances' output (as before);
``socle logs --query 'LOGQL' [--since] [--limit] [--follow] [--json]`` queries the store
(lines, or counts over time for ``count_over_time``/``rate``); ``socle logs verify`` checks
the sealed segments' integrity chain from the files alone (no server needed); ``socle logs
stats`` says what the store holds.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import click

from socle.cli.apps import _settings
from socle.cli.client import Client
from socle.cli.output import console, json_option, print_json, safe
from socle.errors import ConfigError, SocleError
from socle.observe.logs.logql import MetricQuery
from socle.observe.logs.logql import parse as parse_logql
from socle.units import parse_duration


class _DefaultGroup(click.Group):
    """A group whose first word, when it is not a subcommand, belongs to ``show``: so
    ``socle logs APP`` and ``socle logs --query ...`` keep working next to ``socle logs
    verify``. (An app named like a subcommand: ``socle logs show verify``.)"""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands:
            args = ["show", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultGroup)
def logs() -> None:
    """Apps' and Socle's logs: show, query (LogQL), follow, verify."""


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _print_row(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(row) + "\n")
        return
    labels = row["labels"]
    who = labels.get("instance") or labels.get("app", "")
    text = safe(row["line"])
    if labels.get("stream") == "stderr":
        text = f"[red]{text}[/]"
    console.print(f"[dim]{_stamp(row['time'])}[/] [cyan]{safe(who)}[/] {text}", soft_wrap=True)


@logs.command("show")
@click.argument("app", required=False)
@click.option(
    "--query", "-q", metavar="LOGQL", help='A LogQL query, e.g. \'{app="api"} |= "error"\'.'
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option("--since", metavar="DURATION", help="Only lines newer than this, e.g. 10m.")
@click.option("--limit", type=click.IntRange(1, 5000), help="Most lines shown (query: 100).")
@click.option("--step", metavar="DURATION", help="Counts over time: one point per step.")
@click.option("--instance", type=click.IntRange(min=0), help="Only this instance ordinal.")
@json_option
def show(
    app: str | None,
    query: str | None,
    follow: bool,
    since: str | None,
    limit: int | None,
    step: str | None,
    instance: int | None,
    as_json: bool,
) -> None:
    """Print an app's logs (all instances, oldest first), or the lines of a LogQL query.

    Also: `socle logs verify` checks the integrity chain of the sealed log segments.
    """
    if query is not None:
        if app is not None or instance is not None:
            raise ConfigError(
                "give either an APP or --query, not both",
                hint=f"e.g. --query '{{app=\"{app or 'api'}\"}}'",
            )
        _query(query, follow=follow, since=since, limit=limit, step=step, as_json=as_json)
        return
    if app is None:
        raise ConfigError("which app? give an APP or --query", hint="e.g. socle logs api -f")
    _app_logs(app, follow, since, instance, as_json)


def _query(
    query: str,
    *,
    follow: bool,
    since: str | None,
    limit: int | None,
    step: str | None,
    as_json: bool,
) -> None:
    params: dict[str, Any] = {"query": query}
    if since:
        params["since"] = since
    with Client(_settings()) as client:
        if follow:
            params["limit"] = limit or 100
            try:
                for row in client.stream_lines("/api/v1/logs/tail", params):
                    _print_row(row, as_json)
            except KeyboardInterrupt:
                pass
            return
        params["limit"] = limit or 100
        step = step or _default_step(query, since)
        if step:
            params["step"] = step
        result = client.call("GET", "/api/v1/logs/query", params=params)
    if "series" in result:
        if as_json:
            print_json(result)
            return
        for series in result["series"]:
            console.print(f"[cyan]{safe(_labels(series['labels']))}[/]", soft_wrap=True)
            for when, value in series["points"]:
                console.print(f"  {_stamp(when)}  {value:g}")
        return
    for row in reversed(result["lines"]):  # newest were fetched first: print oldest first
        _print_row(row, as_json)


DEFAULT_WINDOW = 3600.0
"""The API's window when no --since is given (``DEFAULT_SINCE`` of the logs routes)."""


def _default_step(query: str, since: str | None) -> str | None:
    """For counts over time on a terminal: one point per window of the query's range
    (``[5m]``: a point every 5 minutes, each counting its own lines), at most 250 points.
    The API's default (about 250 points whatever the range) prints hundreds of lines of
    overlapping windows. None for a log query, or a query the server will refuse anyway."""
    try:
        parsed = parse_logql(query)
        window = parse_duration(since) if since else DEFAULT_WINDOW
    except (SocleError, ValueError):
        return None
    if not isinstance(parsed, MetricQuery):
        return None
    return f"{max(parsed.range_seconds, window / 250, 1.0):g}s"


def _app_logs(
    app: str, follow: bool, since: str | None, instance: int | None, as_json: bool
) -> None:
    params: dict[str, Any] = {"follow": follow}
    if since:
        params["since"] = since
    if instance is not None:
        params["instance"] = instance
    colours = ["cyan", "magenta", "blue", "green", "yellow"]
    with Client(_settings()) as client:
        try:
            for line in client.stream_lines(f"/api/v1/apps/{app}/logs", params):
                if as_json:
                    sys.stdout.write(json.dumps(line) + "\n")
                    continue
                ordinal = line["instance"].rsplit("-", 1)[-1]
                colour = colours[int(ordinal) % len(colours)] if ordinal.isdigit() else "white"
                text = safe(line["text"])
                if line["stream"] == "stderr":
                    text = f"[red]{text}[/]"
                console.print(f"[{colour}]{safe(line['instance'])}[/] {text}", soft_wrap=True)
        except KeyboardInterrupt:
            pass


@logs.command("verify")
@json_option
def verify(as_json: bool) -> None:
    """Check the log store's integrity chain: every sealed segment present and unchanged
    (removed only by retention), no chain line edited, removed or cut off. Reads
    SOCLE_HOME's files; the server may be running or not."""
    from socle.observe.logs.chain import verify as verify_chain

    settings = _settings()
    report = verify_chain(settings.logstore_dir)
    if as_json:
        print_json(report.to_dict())
    else:
        console.print(
            f"{report.segments} live segment(s), {report.dropped} dropped by retention, "
            f"{report.lines} chain line(s); head {report.head or '(empty)'}"
        )
        for problem in report.problems:
            console.print(f"[red]problem:[/] {safe(problem)}", soft_wrap=True)
    if not report.ok:
        raise SocleError(
            f"log store integrity check failed: {len(report.problems)} problem(s)",
            hint="a segment or chain line was changed or removed outside retention",
        )
    if not as_json:
        console.print("[green]ok[/]: the chain and every live segment are intact")


@logs.command("seal")
@json_option
def seal(as_json: bool) -> None:
    """Seal the newest lines into a segment now (they are sealed hourly otherwise)."""
    with Client(_settings()) as client:
        result = client.call("POST", "/api/v1/logs/seal")
    if as_json:
        print_json(result)
    else:
        sealed = result["sealed"]
        console.print("nothing to seal" if sealed is None else f"sealed segment {sealed}")


@logs.command("stats")
@json_option
def stats(as_json: bool) -> None:
    """What the log store holds: lines not sealed yet, sealed segments (lines, bytes), the
    chain head, and the forwarding to Loki when configured."""
    with Client(_settings()) as client:
        result = client.call("GET", "/api/v1/logs/stats")
    if as_json:
        print_json(result)
        return
    size = int(result.get("segment_bytes") or 0)
    console.print(
        f"{result.get('hot_lines', 0)} line(s) not sealed yet; "
        f"{result.get('segments', 0)} sealed segment(s), {result.get('sealed_lines', 0)} "
        f"line(s), {size / 2**20:.1f} MiB; chain head {safe(str(result.get('head') or '-'))}"
    )
    if result.get("handler_dropped"):
        console.print(f"[yellow]{result['handler_dropped']} of Socle's own records dropped[/]")
    forward = result.get("forward")
    if isinstance(forward, dict):
        console.print(
            f"forwarding to {safe(str(forward.get('url')))}: {forward.get('sent', 0)} sent, "
            f"{forward.get('dropped', 0)} dropped, {forward.get('failures', 0)} failure(s)"
        )


def register(group: click.Group) -> None:
    group.add_command(logs)
