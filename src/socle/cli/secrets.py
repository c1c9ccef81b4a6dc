"""Secrets commands: ``socle operator`` (init, unseal, seal, rotate, status), ``socle secrets``
(KV v2 put/get/list/delete) and ``socle audit verify``.

They speak the Vault HTTP API, so they work against Socle's ``/v1`` and any Vault-compatible
server. Address: ``--address`` > ``VAULT_ADDR`` > ``SOCLE_ADDR`` > the running server's
``$SOCLE_HOME/server.json``. Token: ``--token`` > ``VAULT_TOKEN`` > ``SOCLE_TOKEN`` >
the dev root token of this home (dev mode only, and only when the address is this home's own
server: it is never sent anywhere else) > ``~/.vault-token`` (where ``operator init
--save-root-token`` writes it, mode 0600, like Vault's CLI). So in dev mode ``socle secrets``
works out of the box, as ``vault server -dev`` leaves its root token for the CLI.
``audit verify`` is offline: it only reads the file.

``socle secrets policy`` and ``socle secrets grant`` live in :mod:`socle.cli.secrets_policy`.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

import click
import httpx
from rich.table import Table

from socle.cli.client import check_listener
from socle.cli.output import console, err_console, json_option, print_json, safe
from socle.errors import ApiError, AuthError, ConfigError, NotFoundError, ServerNotRunning
from socle.fs import write_private
from socle.secrets.core import DEV_KEY_FILE
from socle.secrets.core.audit_chain import verify_file
from socle.settings import Settings, load_settings, read_json_file

TOKEN_FILE = ".vault-token"  # noqa: S105 - a file name, not a secret


def _settings() -> Settings:
    return load_settings()


def resolve_address(option: str | None) -> str:
    if option:
        return option.rstrip("/")
    for candidate in (os.environ.get("VAULT_ADDR"), _settings().addr):
        if candidate:
            return candidate.rstrip("/")
    settings = _settings()
    data = read_json_file(settings.server_file)
    if data and data.get("url"):
        check_listener(settings)  # a token must not go to an app squatting a freed port
        return str(data["url"]).rstrip("/")
    raise ServerNotRunning(
        f"no secrets server address (no --address, VAULT_ADDR, SOCLE_ADDR or {settings.server_file})",
        hint="start Socle with `socle up`, or pass --address http://127.0.0.1:PORT",
    )


def is_local(address_option: str | None) -> bool:
    """Whether the secrets API is this home's own server: no address given anywhere, or
    exactly the URL in its ``server.json`` (as ``eval "$(socle secrets env)"`` exports) and
    held by the server that wrote it."""
    settings = _settings()
    given = address_option or os.environ.get("VAULT_ADDR") or settings.addr
    if not given:
        return True
    data = read_json_file(settings.server_file)
    if not data or str(data.get("url", "")).rstrip("/") != given.rstrip("/"):
        return False
    # A root token must not go to an app squatting a freed port. check_listener trusts an
    # address set in SOCLE_ADDR (the operator's choice, for the token they chose); the dev
    # root token is found here, not chosen: who holds the port is checked all the same.
    check_listener(settings.model_copy(update={"addr": None}))
    return True


def dev_key_file(settings: Settings) -> Path:
    return settings.home / DEV_KEY_FILE


def dev_root_token(settings: Settings) -> str | None:
    """The root token a dev-mode server keeps in its home (mode 0600), or None."""
    data = read_json_file(dev_key_file(settings))
    token = data.get("root_token") if data else None
    return token if isinstance(token, str) and token else None


def resolve_token(option: str | None, *, local: bool = False) -> str:
    """The token to send; ``local``: the address is this home's server (see the module doc)."""
    if option:
        return option
    for candidate in (os.environ.get("VAULT_TOKEN"), os.environ.get("SOCLE_TOKEN")):
        if candidate:
            return candidate.strip()
    if local:
        token = dev_root_token(_settings())
        if token:
            return token
    try:
        return (Path.home() / TOKEN_FILE).read_text().strip()
    except (FileNotFoundError, PermissionError):
        return ""


class VaultHTTP:
    """A tiny Vault API client: JSON in, JSON out, errors as SocleErrors with hints."""

    def __init__(self, address: str, token: str, *, timeout: float = 30.0) -> None:
        self.address = address
        headers = {"X-Vault-Request": "true"}
        if token:
            headers["X-Vault-Token"] = token
        self._http = httpx.Client(base_url=address, headers=headers, timeout=timeout)

    def __enter__(self) -> VaultHTTP:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
        try:
            response = self._http.request(method, "/v1/" + path.lstrip("/"), **kwargs)
        except httpx.ConnectError as exc:
            raise ServerNotRunning(
                f"cannot reach the secrets API at {self.address}: {exc}",
                hint="start Socle with `socle up`, or check --address / VAULT_ADDR",
            ) from exc
        except httpx.HTTPError as exc:
            raise ApiError(f"request to {self.address} failed: {exc}", status=0) from exc
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        if response.status_code >= 400:
            errors = (body or {}).get("errors") if isinstance(body, dict) else None
            message = "; ".join(str(e) for e in errors or []) or f"HTTP {response.status_code}"
            _raise(response.status_code, message, path)
        return body if isinstance(body, dict) else None


def _raise(status: int, message: str, path: str) -> None:
    if status == 403:
        raise AuthError(
            f"{message} ({path})",
            status=status,
            hint="check the token (--token, VAULT_TOKEN or ~/.vault-token) and its policies",
        )
    if status == 503:
        raise ApiError(
            "the secrets engine is sealed",
            status=status,
            hint="unseal it with `socle operator unseal` (repeat until the threshold is met)",
        )
    if status == 404:
        raise NotFoundError(
            f"nothing at {path}" + (f": {message}" if message != "HTTP 404" else "")
        )
    raise ApiError(f"{message} ({path})", status=status)


address_option = click.option(
    "--address",
    metavar="URL",
    help="Secrets API address (default: VAULT_ADDR, SOCLE_ADDR, or the running server).",
)
token_option = click.option(
    "--token", metavar="TOKEN", help="Token (default: VAULT_TOKEN, SOCLE_TOKEN, ~/.vault-token)."
)
mount_option = click.option(
    "--mount", default="secret", show_default=True, help="Mount path of the KV v2 engine."
)


def _client(address: str | None, token: str | None) -> VaultHTTP:
    return VaultHTTP(resolve_address(address), resolve_token(token, local=is_local(address)))


def _print_seal_status(status: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    table.add_row("Initialized", str(status.get("initialized")).lower())
    table.add_row("Sealed", str(status.get("sealed")).lower())
    table.add_row("Total Shares", str(status.get("n")))
    table.add_row("Threshold", str(status.get("t")))
    if status.get("sealed"):
        table.add_row("Unseal Progress", f"{status.get('progress')}/{status.get('t')}")
        table.add_row("Unseal Nonce", str(status.get("nonce") or "n/a"))
    console.print(table)


# -- operator -------------------------------------------------------------------------


@click.group("operator")
def operator() -> None:
    """Initialise, unseal, seal and rotate the secrets engine."""


@operator.command("init")
@click.option("--key-shares", default=5, show_default=True, help="Number of unseal key shares.")
@click.option("--key-threshold", default=3, show_default=True, help="Shares needed to unseal.")
@click.option("--save-root-token", is_flag=True, help="Write the root token to ~/.vault-token.")
@address_option
@json_option
def init(
    key_shares: int, key_threshold: int, save_root_token: bool, address: str | None, as_json: bool
) -> None:
    """Initialise the secrets engine: print the unseal key shares and the root token once."""
    with _client(address, "") as client:
        state = client.call("GET", "sys/init") or {}
        if state.get("initialized"):
            _already_initialised(client.address, local=is_local(address))
        result = client.call(
            "PUT", "sys/init", json={"secret_shares": key_shares, "secret_threshold": key_threshold}
        )
    assert result is not None
    if save_root_token:
        path = Path.home() / TOKEN_FILE
        write_private(path, result["root_token"])
    if as_json:
        print_json(result)
        return
    for number, key in enumerate(result["keys_base64"], start=1):
        console.print(f"Unseal Key {number}: {key}", soft_wrap=True)
    console.print(f"\nInitial Root Token: {result['root_token']}\n", soft_wrap=True)
    console.print(
        f"The secrets engine is initialised with {key_shares} key shares and a threshold of "
        f"{key_threshold}. It is [bold]sealed[/]: run `socle operator unseal` with "
        f"{key_threshold} different shares. Store the shares apart from each other; they are "
        "never shown again, and without enough of them the data cannot be recovered.",
        soft_wrap=True,
    )
    if save_root_token:
        console.print(f"Root token saved to {Path.home() / TOKEN_FILE} (mode 0600).")


def _already_initialised(address: str, *, local: bool) -> None:
    settings = _settings()
    if local and dev_key_file(settings).exists():
        raise ConfigError(
            f"the secrets engine at {address} is already initialised: this home "
            f"({settings.home}) runs in development mode, initialised and unsealed at start",
            hint="nothing to do: `socle secrets ...` already uses the dev root token "
            f"(kept in {dev_key_file(settings)}, mode 0600). For production, use a new home "
            "started without dev mode (`socle up --no-dev` or `socle server`), then run "
            "`socle operator init` there",
        )
    raise ConfigError(
        f"the secrets engine at {address} is already initialised",
        hint="unseal it with `socle operator unseal` (the key shares given at init); "
        "`socle operator status` shows where it stands",
    )


@operator.command("unseal")
@click.argument("key", required=False)
@click.option("--reset", is_flag=True, help="Forget the shares submitted so far.")
@address_option
@json_option
def unseal(key: str | None, reset: bool, address: str | None, as_json: bool) -> None:
    """Submit one unseal key share (prompted without echo when not given)."""
    if not reset and not key:
        key = click.prompt("Unseal Key (will be hidden)", hide_input=True)
    body: dict[str, Any] = {"reset": True} if reset else {"key": key}
    with _client(address, "") as client:
        status = client.call("PUT", "sys/unseal", json=body)
    assert status is not None
    if as_json:
        print_json(status)
    else:
        _print_seal_status(status)


@operator.command("status")
@address_option
@json_option
def status(address: str | None, as_json: bool) -> None:
    """Show whether the secrets engine is initialised and sealed."""
    with _client(address, "") as client:
        result = client.call("GET", "sys/seal-status")
    assert result is not None
    if as_json:
        print_json(result)
    else:
        _print_seal_status(result)


@operator.command("seal")
@address_option
@token_option
def seal(address: str | None, token: str | None) -> None:
    """Seal the secrets engine now (needs a root or sudo token)."""
    with _client(address, token) as client:
        client.call("PUT", "sys/seal")
    console.print("Sealed. Unseal with `socle operator unseal`.")


@operator.command("rotate")
@address_option
@token_option
@json_option
def rotate(address: str | None, token: str | None, as_json: bool) -> None:
    """Add a new data encryption key term; new writes use it, old data stays readable."""
    with _client(address, token) as client:
        client.call("PUT", "sys/rotate")
        result = client.call("GET", "sys/key-status") or {}
    data = result.get("data") or result
    if as_json:
        print_json(data)
    else:
        console.print(f"Key term is now {data.get('term')} (installed {data.get('install_time')}).")


# -- secrets (KV v2) --------------------------------------------------------------------


@click.group("secrets")
def secrets_group() -> None:
    """Read and write KV v2 secrets (mount `secret/` unless --mount)."""


def _kv_path(mount: str, kind: str, path: str) -> str:
    path = path.strip("/")
    if not path and kind == "data":
        raise ConfigError("a secret path is required", hint="e.g. `socle secrets get myapp/db`")
    return f"{mount.strip('/')}/{kind}/{path}"


def _parse_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    data: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{pair!r} is not KEY=VALUE", hint="e.g. password=s3cret, key=@file")
        if value == "-":
            value = sys.stdin.read()
        elif value.startswith("@"):
            try:
                value = Path(value[1:]).read_text()
            except OSError as exc:
                raise ConfigError(f"cannot read {value[1:]}: {exc.strerror}") from None
        data[key] = value
    return data


@secrets_group.command("put")
@click.argument("path")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@mount_option
@address_option
@token_option
@json_option
def put(
    path: str,
    pairs: tuple[str, ...],
    mount: str,
    address: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Write a new version of a secret (VALUE may be @file or - for stdin)."""
    data = _parse_pairs(pairs)
    with _client(address, token) as client:
        result = client.call("POST", _kv_path(mount, "data", path), json={"data": data}) or {}
    meta = result.get("data") or {}
    if as_json:
        print_json(meta)
    else:
        console.print(
            f"Wrote {safe(mount.strip('/'))}/{safe(path.strip('/'))} "
            f"version {meta.get('version', '?')}."
        )


@secrets_group.command("get")
@click.argument("path")
@click.option("--field", help="Print only this key's value.")
@click.option("--version", "version", type=int, help="Read this version (default: latest).")
@mount_option
@address_option
@token_option
@json_option
def get(
    path: str,
    field: str | None,
    version: int | None,
    mount: str,
    address: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Read a secret (latest version unless --version)."""
    params = {"version": str(version)} if version else None
    with _client(address, token) as client:
        result = client.call("GET", _kv_path(mount, "data", path), params=params) or {}
    body = result.get("data") or {}
    data = body.get("data")
    if data is None:
        raise NotFoundError(
            f"no secret at {mount.strip('/')}/{path.strip('/')}"
            + (f" version {version}" if version else "")
            + " (deleted?)"
        )
    if field is not None:
        if field not in data:
            raise NotFoundError(f"no field {field!r} in {path}")
        value = data[field]
        sys.stdout.write((value if isinstance(value, str) else str(value)) + "\n")
        return
    if as_json:
        print_json(body)
        return
    table = Table("Key", "Value")
    for key, value in sorted(data.items()):
        table.add_row(safe(key), safe(str(value)))
    console.print(table)
    metadata = body.get("metadata") or {}
    err_console.print(
        f"version {metadata.get('version', '?')}, created {metadata.get('created_time', '?')}"
    )


@secrets_group.command("list")
@click.argument("path", default="")
@mount_option
@address_option
@token_option
@json_option
def list_(path: str, mount: str, address: str | None, token: str | None, as_json: bool) -> None:
    """List secret names under a folder (folders end with /)."""
    with _client(address, token) as client:
        result = client.call("LIST", _kv_path(mount, "metadata", path)) or {}
    keys = (result.get("data") or {}).get("keys") or []
    if as_json:
        print_json(keys)
        return
    for key in keys:
        console.print(safe(str(key)))


@secrets_group.command("delete")
@click.argument("path")
@mount_option
@address_option
@token_option
def delete(path: str, mount: str, address: str | None, token: str | None) -> None:
    """Delete the latest version of a secret (older versions stay readable)."""
    with _client(address, token) as client:
        client.call("DELETE", _kv_path(mount, "data", path))
    console.print(
        f"Deleted the latest version of {safe(mount.strip('/'))}/{safe(path.strip('/'))}."
    )


@secrets_group.command("env")
@address_option
def env(address: str | None) -> None:
    """Print `export VAULT_ADDR=... VAULT_TOKEN=...` for bao/vault/hvac: eval "$(socle secrets env)".

    VAULT_TOKEN is printed only for this home's own dev-mode server (its root token); in
    production log in with your own token instead.
    """
    url = resolve_address(address)
    sys.stdout.write(f"export VAULT_ADDR={shlex.quote(url)}\n")
    token = dev_root_token(_settings()) if is_local(address) else None
    if token is None:
        if os.environ.get("VAULT_TOKEN"):
            return  # already set: the clients read it from the environment
        err_console.print(
            "no dev root token for this address: set VAULT_TOKEN yourself "
            "(e.g. the root token printed by `socle operator init`)"
        )
        return
    sys.stdout.write(f"export VAULT_TOKEN={shlex.quote(token)}\n")


# -- audit ----------------------------------------------------------------------------


@click.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def verify(file: Path, as_json: bool) -> None:
    """Check an audit file's hash chain (offline); exit 1 at the first bad line."""
    result = verify_file(file)
    if as_json:
        print_json(result.to_dict())
    elif result.ok:
        console.print(f"OK: {result.lines} lines, chain intact. Last hash: {result.last_hash}")
        console.print(
            "Keep the last hash elsewhere: the chain cannot detect lines cut off "
            "at the end of the file.",
            style="dim",
        )
    else:
        err_console.print(
            f"[bold red]tampered:[/] line {result.bad_line}: {safe(result.reason)}",
            soft_wrap=True,
        )
    if not result.ok:
        raise SystemExit(1)


def register(group: click.Group) -> None:
    from socle.cli import secrets_policy

    secrets_policy.register(secrets_group)
    group.add_command(operator)
    group.add_command(secrets_group)
    # ``socle audit verify FILE`` is registered by :mod:`socle.cli.audit`, which calls
    # :func:`verify` for a file.
