"""The control plane process: state store, runtime driver, engine and API in one asyncio loop.

Stopping it (SIGTERM, SIGINT, ``socle down --keep-apps`` or even ``kill -9``) leaves app
instances running; the next start re-adopts them. ``socle down`` stops the apps first.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
from pathlib import Path

from granian.constants import Interfaces
from granian.server.embed import Server as GranianServer
from starlette.types import ASGIApp, Receive, Scope, Send

from socle.api.app import ApiContext, create_app
from socle.api.tokens import TokenStore, write_secret_file
from socle.engine.releases import ReleaseStore
from socle.engine.service import Engine
from socle.errors import ConfigError
from socle.lockfile import try_lock
from socle.runtime.local.driver import LocalDriver
from socle.secrets.core import SecretsCore
from socle.secrets.registry import default_registry
from socle.settings import Settings, parse_listen
from socle.state.registry import open_store

log = logging.getLogger("socle.server")


def _reserve(listen: str) -> tuple[str, int]:
    """Check that ``listen`` is free (and pick a port for port 0) before serving on it."""
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {listen}: {exc.strerror}",
                hint="another program uses that port; pick another with --listen HOST:PORT",
            ) from exc
        return host, sock.getsockname()[1]


def _url(host: str, port: int, *, tls: bool) -> str:
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _tls_files(settings: Settings) -> tuple[Path, Path] | None:
    """The API's certificate and key; refuse to serve plain HTTP beyond loopback."""
    host, _ = parse_listen(settings.listen)
    if settings.tls_cert is None and settings.tls_key is None:
        if not _loopback(host):
            raise ConfigError(
                f"refusing to listen on {settings.listen} without TLS",
                hint="set SOCLE_TLS_CERT and SOCLE_TLS_KEY (PEM files; the secrets engine's "
                "PKI can issue them), or listen on 127.0.0.1",
            )
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise ConfigError("TLS needs both SOCLE_TLS_CERT and SOCLE_TLS_KEY")
    for path in (settings.tls_cert, settings.tls_key):
        if not path.is_file():
            raise ConfigError(f"TLS file {path} does not exist or is not a file")
    return settings.tls_cert, settings.tls_key


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def mount_secrets(api: ASGIApp, secrets: ASGIApp) -> ASGIApp:
    """One ASGI app: the Vault-compatible secrets API under ``/v1``, the rest to ``api``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/v1" or path.startswith("/v1/")):
            await secrets(scope, receive, send)
        else:
            await api(scope, receive, send)

    return app


class _Lock:
    """One control plane per SOCLE_HOME: an flock held for the life of the process."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = try_lock(self._path)
        if fd is None:
            raise ConfigError(
                f"another Socle control plane is running with {self._path.parent}",
                hint="use `socle status`, or `socle down` to stop it",
            )
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


async def serve(settings: Settings) -> None:
    tls = _tls_files(settings)
    home = settings.home
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = _Lock(home / "server.lock")
    lock.acquire()
    host, port = _reserve(settings.listen)
    store = await open_store(settings.store or settings.db_path)
    driver = LocalDriver(
        settings.run_dir,
        settings.logs_dir,
        log_max_bytes=settings.log_max_bytes,
        log_backups=settings.log_backups,
    )
    releases = ReleaseStore(
        settings.releases_dir,
        keep=settings.releases_kept,
        max_parallel=settings.max_parallel_builds,
    )
    tokens = TokenStore(store)
    await tokens.ensure_admin(settings.token_file)
    secrets = SecretsCore(store, home, default_registry(), dev=settings.dev)
    await secrets.start()
    engine = Engine(
        store,
        driver,
        releases,
        secrets=secrets,
        secret_check_seconds=settings.secret_check_seconds,
    )
    await driver.start()
    await engine.start()

    stop_event = asyncio.Event()
    keep_apps = True

    def request_shutdown(keep: bool) -> None:
        nonlocal keep_apps
        keep_apps = keep
        stop_event.set()

    ctx = ApiContext(engine=engine, driver=driver, tokens=tokens, request_shutdown=request_shutdown)
    app = mount_secrets(create_app(ctx), secrets.asgi)
    server = GranianServer(
        app,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        log_enabled=False,
        ssl_cert=tls[0] if tls else None,
        ssl_key=tls[1] if tls else None,
    )

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_shutdown, True)

    serving = asyncio.create_task(server.serve())
    url = _url(host, port, tls=tls is not None)
    write_secret_file(settings.server_file, json.dumps({"url": url, "pid": os.getpid()}) + "\n")
    isolation = driver.isolation()
    log.warning("socle control plane listening on %s (home %s)", url, home)
    if isolation.warning:
        log.warning("isolation: %s", isolation.warning)
    try:
        await stop_event.wait()
    finally:
        log.warning("socle control plane stopping (apps %s)", "kept" if keep_apps else "stopped")
        await engine.stop()
        await releases.close()
        await driver.close(stop_instances=not keep_apps)
        server.stop()  # type: ignore[no-untyped-call]
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await secrets.stop()
        await store.close()
        with contextlib.suppress(FileNotFoundError):
            settings.server_file.unlink()
        lock.release()


def run(settings: Settings) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(settings))
