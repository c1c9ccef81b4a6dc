"""``socle secrets policy write|read|list|delete`` and ``socle secrets grant``.

Policies are the Vault ACL documents of ``sys/policies/acl``. An app's secret references are
read with exactly one policy, ``app-<name>`` (deny by default), so ``grant`` is the everyday
way to let an app read a secret: it reads that policy, adds the paths (capabilities are
merged with what is there), and writes it back. Documents are parsed here first, with the
engine's own parser, so a bad file is refused with its name and line before anything is sent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from socle.cli.output import console, json_option, print_json, safe
from socle.cli.secrets import VaultHTTP, _client, _settings, address_option, is_local, token_option
from socle.errors import ConfigError, NotFoundError, SocleError
from socle.model.app import NAME_RE
from socle.secrets.backend import Operation
from socle.secrets.core.policy import (
    ACL,
    CAPABILITIES,
    DENY,
    PathRule,
    Policy,
    PolicyError,
    cap_names,
    parse_policy,
    valid_name,
)
from socle.settings import Settings, read_json_file

GRANTABLE = [name for name in CAPABILITIES if name not in ("deny", "subscribe", "recover")]
"""Capabilities ``grant`` gives (``deny`` is written with ``policy write``)."""


def app_policy(app: str) -> str:
    """The policy an app's secret references are read with (see ``engine.secret_refs``)."""
    return f"app-{app}"


def grant_command(app: str, paths: list[str], capabilities: list[str] | None = None) -> str:
    """The exact command that lets ``app`` read ``paths`` (quoted for a POSIX shell)."""
    caps = (
        ""
        if not capabilities or capabilities == ["read"]
        else " --capabilities " + ",".join(capabilities)
    )
    return f"socle secrets grant {app} {' '.join(paths)}{caps}"


@click.group("policy")
def policy() -> None:
    """Write, read, list and delete ACL policies (HCL or JSON documents)."""


def _read_document(source: str) -> tuple[str, str]:
    """(text, name to show in errors) of FILE, or of stdin for ``-``."""
    if source == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(source).read_text(), source
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not a text file", hint="give an HCL or JSON policy") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror}") from None


def _check_name(name: str) -> None:
    if not valid_name(name):
        raise ConfigError(
            f"invalid policy name {name!r}",
            hint="use lower-case letters, digits and . _ - @ (at most 128), e.g. app-web",
        )


def _parse(name: str, text: str, shown: str) -> Policy:
    try:
        return parse_policy(name, text)
    except PolicyError as exc:
        reason = str(exc).removeprefix("failed to parse policy: ")
        raise ConfigError(
            f"{shown}: {reason}",
            hint='a policy is a list of path "PATTERN" { capabilities = ["read", ...] } blocks; '
            "nothing was written",
        ) from None


@policy.command("write")
@click.argument("name")
@click.argument("file", default="-", metavar="FILE|-")
@address_option
@token_option
def policy_write(name: str, file: str, address: str | None, token: str | None) -> None:
    """Write policy NAME from FILE (HCL or JSON), or from stdin with - (the default)."""
    _check_name(name)
    text, shown = _read_document(file)
    parsed = _parse(name, text, shown)
    with _client(address, token) as client:
        client.call("PUT", f"sys/policies/acl/{name}", json={"policy": text})
    for warning in parsed.warnings:
        console.print(f"[yellow]warning:[/] {safe(warning)}")
    console.print(f"Wrote policy {safe(name)} ({len(parsed.rules)} path rule(s)).")


def _fetch(client: VaultHTTP, name: str) -> str | None:
    """The policy's text, or None when there is no such policy."""
    try:
        result = client.call("GET", f"sys/policies/acl/{name}") or {}
    except NotFoundError:
        return None
    text = (result.get("data") or {}).get("policy")
    return text if isinstance(text, str) else None


@policy.command("read")
@click.argument("name")
@address_option
@token_option
@json_option
def policy_read(name: str, address: str | None, token: str | None, as_json: bool) -> None:
    """Print policy NAME as it was written."""
    _check_name(name)
    with _client(address, token) as client:
        text = _fetch(client, name)
    if text is None:
        raise NotFoundError(
            f"no policy named {name!r}", hint="`socle secrets policy list` shows the policies"
        )
    if as_json:
        print_json({"name": name, "policy": text})
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


@policy.command("list")
@address_option
@token_option
@json_option
def policy_list(address: str | None, token: str | None, as_json: bool) -> None:
    """List the ACL policies."""
    with _client(address, token) as client:
        result = client.call("LIST", "sys/policies/acl") or {}
    keys = sorted(str(k) for k in (result.get("data") or {}).get("keys") or [])
    if as_json:
        print_json(keys)
        return
    for key in keys:
        console.print(safe(key))


@policy.command("delete")
@click.argument("name")
@address_option
@token_option
def policy_delete(name: str, address: str | None, token: str | None) -> None:
    """Delete policy NAME (tokens that carry it lose what it granted)."""
    _check_name(name)
    with _client(address, token) as client:
        if _fetch(client, name) is None:
            raise NotFoundError(
                f"no policy named {name!r}", hint="`socle secrets policy list` shows the policies"
            )
        client.call("DELETE", f"sys/policies/acl/{name}")
    console.print(f"Deleted policy {safe(name)}.")


# -- grant ------------------------------------------------------------------------------


def _capabilities(values: tuple[str, ...]) -> list[str]:
    wanted: list[str] = []
    for value in values:
        for cap in (c.strip().lower() for c in value.split(",")):
            if cap not in GRANTABLE:
                raise ConfigError(
                    f"unknown capability {cap!r}",
                    hint="use one or more of " + ", ".join(GRANTABLE) + " (comma-separated)",
                )
            if cap not in wanted:
                wanted.append(cap)
    return wanted or ["read"]


def _api_path(path: str, mounts: dict[str, Any] | None) -> str:
    """The ACL path for ``path`` (a ``#key`` suffix dropped; ``data/`` added on KV v2)."""
    cleaned = path.split("#", 1)[0].strip().strip("/")
    if not cleaned or any(part in ("", ".", "..") for part in cleaned.split("/")):
        raise ConfigError(
            f"invalid secret path {path!r}", hint="e.g. secret/data/db or secret/db#password"
        )
    if "*" in cleaned[:-1]:
        raise ConfigError(f"invalid secret path {path!r}: * may only end a path")
    for mount, entry in sorted((mounts or {}).items(), key=lambda m: -len(m[0])):
        if not isinstance(entry, dict) or not (cleaned + "/").startswith(mount):
            continue
        options = entry.get("options") or {}
        relative = cleaned[len(mount) :]
        kv2 = entry.get("type") == "kv" and str(options.get("version")) == "2"
        if kv2 and relative and not relative.startswith(("data/", "metadata/")):
            return f"{mount}data/{relative}"
        break
    return cleaned


def _mounts(client: VaultHTTP) -> dict[str, Any] | None:
    """The mount table when the token may read it (to spell KV v2 paths), else None."""
    try:
        result = client.call("GET", "sys/mounts") or {}
    except SocleError:
        return None
    data = result.get("data")
    table: dict[str, Any] = data if isinstance(data, dict) else result
    return {k: v for k, v in table.items() if isinstance(k, str) and k.endswith("/")}


def known_apps(settings: Settings) -> set[str] | None:
    """Apps this home knows (running, or in the repository last applied), or None when
    neither can be read (then the name is not checked)."""
    from socle.cli.client import Client, server_url

    found: set[str] = set()
    told = False
    saved = read_json_file(settings.home / "repository.json")
    if saved and isinstance(saved.get("path"), str):
        from socle.model.loader import load

        try:
            env = saved.get("env") if isinstance(saved.get("env"), str) else None
            found |= set(load(Path(saved["path"]), env).apps)
            told = True
        except (SocleError, OSError):
            pass
    if server_url(settings):
        try:
            with Client(settings) as client:
                found |= {a["name"] for a in client.call("GET", "/api/v1/status")["apps"]}
                told = True
        except (SocleError, KeyError, TypeError):
            pass
    return found if told else None


def render_policy(name: str, rules: list[PathRule]) -> str:
    """An HCL document for ``rules`` (what ``grant`` writes back)."""
    lines = [f"# {name}: written by `socle secrets grant` (merged with what was there)"]
    for rule in rules:
        lines.append(f"path {json.dumps(rule.pattern)} {{")
        lines.append(f"  capabilities = {json.dumps(cap_names(rule.caps))}")
        for key, params in (
            ("allowed_parameters", rule.allowed),
            ("denied_parameters", rule.denied),
        ):
            if params is not None:
                lines.append(f"  {key} = {{")
                for param, values in params.items():
                    lines.append(f"    {json.dumps(param)} = {json.dumps(list(values))}")
                lines.append("  }")
        if rule.required:
            lines.append(f"  required_parameters = {json.dumps(list(rule.required))}")
        lines.append("}")
    return "\n".join(lines) + "\n"


def _probe(pattern: str) -> str:
    """A concrete path that ``pattern`` matches (``+`` a segment, a trailing ``*`` nothing),
    to ask which existing rule decides it."""
    return "/".join("x" if part == "+" else part for part in pattern.rstrip("*").split("/"))


def merge_grant(name: str, existing: str | None, paths: list[str], caps: list[str]) -> str:
    """The policy ``existing`` plus ``caps`` on each of ``paths`` (a pure function)."""
    rules: dict[str, PathRule] = {}
    before = ACL([_parse(name, existing, f"policy {name} on the server")]) if existing else None
    if existing:
        for rule in _parse(name, existing, f"policy {name} on the server").rules:
            rules[rule.pattern] = (
                rules[rule.pattern].merged(rule) if rule.pattern in rules else rule
            )
    bits = 0
    for cap in caps:
        bits |= CAPABILITIES[cap]
    for path in paths:
        current = rules.get(path)
        if current is not None and current.caps & DENY:
            raise ConfigError(
                f"policy {name} denies {path}: grant will not turn a deny into an allow",
                hint=f"edit it: `socle secrets policy read {name} > {name}.hcl`, change it, then "
                f"`socle secrets policy write {name} {name}.hcl`",
            )
        # A deny written with a wider pattern (secret/data/*) loses to a more specific
        # rule: adding one for ``path`` would turn that deny into an allow as well.
        denying = before.rule(_probe(path), Operation.READ) if before is not None else None
        if denying is not None and denying.caps & DENY and denying.pattern != path:
            raise ConfigError(
                f"policy {name} denies {path} (through {denying.pattern}): grant will not "
                "turn a deny into an allow",
                hint=f"edit it: `socle secrets policy read {name} > {name}.hcl`, change it, then "
                f"`socle secrets policy write {name} {name}.hcl`",
            )
        added = PathRule(path, bits)
        rules[path] = current.merged(added) if current is not None else added
    text = render_policy(name, list(rules.values()))
    _parse(name, text, "the merged policy")  # never write what the engine would refuse
    return text


@click.command("grant")
@click.argument("app")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option(
    "--capabilities",
    "capabilities",
    multiple=True,
    metavar="CAPS",
    help="Comma-separated capabilities to grant (default: read).",
)
@address_option
@token_option
@json_option
def grant(
    app: str,
    paths: tuple[str, ...],
    capabilities: tuple[str, ...],
    address: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Let APP read the secrets at PATH... (writes the policy app-APP, merged with what is there).

    PATH is what the App manifest references (secret/data/db or secret/db#password).
    """
    if not NAME_RE.fullmatch(app):
        raise ConfigError(
            f"invalid app name {app!r}",
            hint="an app name is metadata.name of its App manifest: lower-case letters, "
            "digits and -, at most 63",
        )
    caps = _capabilities(capabilities)
    if is_local(address):
        known = known_apps(_settings())
        if known is not None and app not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise ConfigError(
                f"unknown app {app!r} (apps of this home and of its last applied repository: "
                f"{listed})",
                hint="check metadata.name in the App manifest; to write a policy for anything "
                "else, use `socle secrets policy write`",
            )
    name = app_policy(app)
    with _client(address, token) as client:
        mounts = _mounts(client)
        acl_paths = list(dict.fromkeys(_api_path(p, mounts) for p in paths))
        text = merge_grant(name, _fetch(client, name), acl_paths, caps)
        client.call("PUT", f"sys/policies/acl/{name}", json={"policy": text})
    if as_json:
        print_json({"policy": name, "paths": acl_paths, "capabilities": caps, "document": text})
        return
    for path in acl_paths:
        console.print(f"Granted {', '.join(caps)} on {safe(path)} to app {safe(app)} ({name}).")


def register(secrets_group: click.Group) -> None:
    secrets_group.add_command(policy)
    secrets_group.add_command(grant)
