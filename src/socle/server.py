"""The control plane process: state store, runtime driver, engine and API in one asyncio loop.

Stopping it (SIGTERM, SIGINT, ``socle down --keep-apps`` or even ``kill -9``) leaves app
instances running; the next start re-adopts them. ``socle down`` stops the apps first.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from socle.api.app import ApiContext, create_app
from socle.api.tokens import TokenStore, write_secret_file
from socle.engine.releases import ReleaseStore
from socle.engine.service import Engine
from socle.engine.store_sqlite import SqliteStore
from socle.errors import ConfigError
from socle.runtime.local.driver import LocalDriver
from socle.settings import Settings, parse_listen

log = logging.getLogger("socle.server")


def _bind(listen: str) -> socket.socket:
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {listen}: {exc.strerror}",
            hint="another program uses that port; pick another with --listen HOST:PORT",
        ) from exc
    sock.listen(1024)
    sock.set_inheritable(False)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _ApiServer(uvicorn.Server):
    """uvicorn, minus its signal handling: the control plane owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _Lock:
    """One control plane per SOCLE_HOME: an flock held for the life of the process."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"another Socle control plane is running with {self._path.parent}",
                hint="use `socle status`, or `socle down` to stop it",
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


async def serve(settings: Settings) -> None:
    home = settings.home
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = _Lock(home / "server.lock")
    lock.acquire()
    sock = _bind(settings.listen)
    store = await SqliteStore.open(settings.db_path)
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
    engine = Engine(store, driver, releases)
    await driver.start()
    await engine.start()

    stop_event = asyncio.Event()
    keep_apps = True

    def request_shutdown(keep: bool) -> None:
        nonlocal keep_apps
        keep_apps = keep
        stop_event.set()

    ctx = ApiContext(engine=engine, driver=driver, tokens=tokens, request_shutdown=request_shutdown)
    api = create_app(ctx)
    config = uvicorn.Config(api, log_level="warning", access_log=False, lifespan="off")
    server = _ApiServer(config)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_shutdown, True)

    serving = asyncio.create_task(server.serve(sockets=[sock]))
    url = _url(sock)
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
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await store.close()
        with contextlib.suppress(FileNotFoundError):
            settings.server_file.unlink()
        lock.release()


def run(settings: Settings) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(settings))
