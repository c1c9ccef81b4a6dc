"""Opening a state store from settings: URL and path parsing, the registry, safe errors."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path

import pytest

from socle.errors import ConfigError, StoreError
from socle.state.postgres import (
    CONNECTION_HINT,
    PostgresStore,
    check_dsn,
    prefix_end,
    redact_dsn,
    scrub,
)
from socle.state.registry import StoreRegistry, default_registry, open_store, sqlite_path
from socle.state.sqlite import SqliteStore
from socle.state.store import Op, Record, StateStore

SECRET = "Hunter2-very-secret"


class NullStore:
    """The smallest StateStore, to show that a registry accepts any backend."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def get(self, key: str) -> Record | None:
        return None

    async def scan(self, prefix: str) -> list[Record]:
        return []

    async def keys(self, prefix: str) -> list[str]:
        return []

    async def put(self, key: str, value: bytes, *, expect_version: int | None = None) -> int:
        return 1

    async def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        return False

    async def commit(self, ops: Sequence[Op]) -> None:
        return None

    async def close(self) -> None:
        return None


async def open_null(url: str) -> StateStore:
    return NullStore(url)


# --- resolving a location -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("sqlite:///var/lib/socle/state.db", ("sqlite", "sqlite:///var/lib/socle/state.db")),
        ("SQLite:///x.db", ("sqlite", "SQLite:///x.db")),
        ("postgresql://u@h/db", ("postgresql", "postgresql://u@h/db")),
        ("postgres://u@h/db?sslmode=require", ("postgres", "postgres://u@h/db?sslmode=require")),
        ("/abs/state.db", ("sqlite", "sqlite:///abs/state.db")),
        (Path("/abs/with space.db"), ("sqlite", "sqlite:///abs/with%20space.db")),
    ],
)
def test_resolve(location: str | Path, expected: tuple[str, str]) -> None:
    assert default_registry().resolve(location) == expected


def test_relative_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    scheme, url = default_registry().resolve("data/state.db")
    assert scheme == "sqlite"
    assert sqlite_path(url) == tmp_path / "data" / "state.db"


def test_a_colon_in_a_file_name_is_not_a_scheme(tmp_path: Path) -> None:
    scheme, url = default_registry().resolve(f"{tmp_path}/backup:2024.db")
    assert scheme == "sqlite" and sqlite_path(url) == tmp_path / "backup:2024.db"


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///abs/path.db", "/abs/path.db"),
        ("sqlite:////abs/path.db", "/abs/path.db"),
        ("sqlite:///abs/caf%C3%A9%20x.db", "/abs/café x.db"),
    ],
)
def test_sqlite_path(url: str, path: str) -> None:
    assert sqlite_path(url) == Path(path)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://host/x.db",
        "sqlite:relative.db",
        "sqlite://",
        "sqlite:///",
        "sqlite:///x.db?mode=ro",
    ],
)
def test_bad_sqlite_urls(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        sqlite_path(url)
    assert caught.value.hint


@pytest.mark.parametrize(
    "location",
    [
        f"mysql://root:{SECRET}@db/socle",
        f"postgresql+psycopg://u:{SECRET}@h/db",
        f"etcd://u:{SECRET}@h:2379",
        f"redis://:{SECRET}@localhost",
    ],
)
async def test_unknown_scheme_names_the_supported_ones(location: str) -> None:
    with pytest.raises(ConfigError) as caught:
        await open_store(location)
    message = str(caught.value)
    assert "postgresql" in message and "sqlite" in message
    assert SECRET not in f"{message} {caught.value.hint}"


@pytest.mark.parametrize(
    "location", [f"host=db user=socle password={SECRET}", f" dbname=state password={SECRET}"]
)
async def test_key_value_dsn_is_refused_not_taken_for_a_file(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="key=value") as caught:
        await open_store(location)
    assert SECRET not in f"{caught.value} {caught.value.hint}"
    assert list(tmp_path.iterdir()) == []


def test_an_equals_sign_in_a_file_name_is_fine(tmp_path: Path) -> None:
    scheme, url = default_registry().resolve(f"{tmp_path}/run=1.db")
    assert scheme == "sqlite" and sqlite_path(url) == tmp_path / "run=1.db"


@pytest.mark.parametrize("location", ["", "   "])
async def test_empty_location(location: str) -> None:
    with pytest.raises(ConfigError, match="empty"):
        await open_store(location)


# --- opening ------------------------------------------------------------------------------


async def test_open_sqlite_url_and_plain_path(tmp_path: Path) -> None:
    locations: list[str | Path] = [
        f"sqlite://{tmp_path}/a.db",
        str(tmp_path / "b.db"),
        tmp_path / "c.db",
    ]
    for location in locations:
        opened = await open_store(location)
        try:
            assert isinstance(opened, SqliteStore)
            assert await opened.put("k", b"v") == 1
        finally:
            await opened.close()
    assert {p.name for p in tmp_path.glob("*.db")} == {"a.db", "b.db", "c.db"}


async def test_registry_is_explicit_and_extensible() -> None:
    registry = StoreRegistry()
    registry.register("Null", open_null)
    assert registry.schemes == ["null"]
    opened = await open_store("null://anything", registry=registry)
    assert isinstance(opened, NullStore) and opened.url == "null://anything"
    with pytest.raises(ValueError, match="already registered"):
        registry.register("null", open_null)
    with pytest.raises(ValueError, match="not a URL scheme"):
        registry.register("no spaces", open_null)
    # This registry has no SQLite: a plain path has nowhere to go.
    with pytest.raises(ConfigError, match="no state store registered for sqlite"):
        await registry.open("/tmp/state.db")
    # The default registry is a fresh object each time, untouched by the one above.
    assert "null" not in default_registry().schemes


# --- PostgreSQL DSNs: parsing and redaction (no server needed) ----------------------------


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        (
            f"postgresql://socle:{SECRET}@db.internal:5433/state",
            "postgresql://socle@db.internal:5433/state",
        ),
        (f"host=db user=socle password={SECRET} dbname=state", "postgresql://socle@db/state"),
        ("postgresql:///state?host=/run/postgresql", "postgresql:///run/postgresql/state"),
        ("not a dsn", "postgresql://<invalid DSN>"),
    ],
)
def test_redact_dsn(dsn: str, shown: str) -> None:
    assert redact_dsn(dsn) == shown
    assert SECRET not in redact_dsn(dsn)


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://u:{SECRET}@h/db",
        "postgresql://u:Hunter2%2Dvery%2Dsecret@h/db",
        f"host=h password={SECRET}",
        f"host=h password='{SECRET}'",
    ],
)
def test_scrub_every_spelling_of_the_password(dsn: str) -> None:
    assert scrub(f"boom: {SECRET} and {dsn}", dsn).count(SECRET) == 0


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://u:{SECRET}@h/db?bogus_option=1",
        f"host=h password=x{SECRET} {SECRET}",
        f"host=h password='{SECRET}",
    ],
)
async def test_bad_dsn_is_a_config_error_without_the_password(dsn: str) -> None:
    with pytest.raises(ConfigError) as caught:
        await PostgresStore.open(dsn)
    assert "invalid PostgreSQL DSN" in str(caught.value)
    assert SECRET not in f"{caught.value} {caught.value.hint}"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    check_dsn("postgresql://u@h/db?sslmode=verify-full")  # options pass through


async def test_unreachable_server_is_a_store_error_with_a_hint() -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dsn = f"postgresql://socle:{SECRET}@127.0.0.1:{port}/state?connect_timeout=2"
    with pytest.raises(StoreError) as caught:
        await open_store(dsn)
    assert caught.value.hint == CONNECTION_HINT
    assert f"postgresql://socle@127.0.0.1:{port}/state" in str(caught.value)
    assert SECRET not in f"{caught.value} {caught.value.hint}"


async def test_a_closed_postgres_store_refuses_calls() -> None:
    store = PostgresStore("postgresql://u@127.0.0.1:1/db")  # never connected
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.get("k")


@pytest.mark.parametrize(
    ("prefix", "end"),
    [
        ("", None),
        ("apps/", "apps0"),
        ("a%", "a&"),
        ("x\ud7ff", "x\ue000"),
        ("z\U0010ffff", "{"),
        ("\U0010ffff\U0010ffff", None),
    ],
)
def test_prefix_end(prefix: str, end: str | None) -> None:
    assert prefix_end(prefix) == end


async def test_memory_stores_share_data_by_name_within_one_registry() -> None:
    registry = default_registry()
    one = await registry.open("memory://shared")
    two = await registry.open("memory://shared")
    alone = await registry.open("memory://")
    other_registry = await default_registry().open("memory://shared")
    await one.put("k", b"v")
    assert (await two.get("k")) is not None
    assert await alone.get("k") is None
    assert await other_registry.get("k") is None  # no global state between registries
    await one.close()
    with pytest.raises(StoreError):
        await one.get("k")
    assert (await two.get("k")) is not None


@pytest.mark.parametrize("url", ["memory://x/path", "memory://x?opt=1"])
async def test_bad_memory_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="memory://NAME"):
        await default_registry().open(url)


async def test_only_shared_stores_have_a_lease(tmp_path: Path) -> None:
    from socle.state.lease import Holder

    me = Holder(host="h", pid=1, address="http://127.0.0.1:1", home=str(tmp_path))
    registry = default_registry()
    assert await registry.open_lease(tmp_path / "state.db", me) is None
    assert await registry.open_lease("memory://x", me) is None
    lease = await registry.open_lease("postgresql://u@127.0.0.1:1/db", me)
    assert lease is not None and "postgresql://u@127.0.0.1:1/db" in repr(lease)
    with pytest.raises(ValueError, match="already registered"):
        registry.register_lease("postgresql", lambda url, holder: None)  # type: ignore[arg-type,return-value]


async def test_sqlite_files_are_private_even_from_an_older_home(tmp_path: Path) -> None:
    import stat

    db = tmp_path / "state.db"
    first = await SqliteStore.open(db)
    await first.put("k", b"v")
    await first.close()
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        side = tmp_path / name
        if side.exists():
            side.chmod(0o644)  # as an older version left them
    store = await SqliteStore.open(db)
    try:
        await store.put("k", b"w")
        files = [p for p in tmp_path.iterdir() if p.name.startswith("state.db")]
        assert {p.name for p in files} >= {"state.db", "state.db-wal"}
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    finally:
        await store.close()


async def test_a_new_sqlite_store_never_has_wider_files(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        store = await SqliteStore.open(tmp_path / "fresh.db")
        await store.put("k", b"v")
        for path in tmp_path.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
        await store.close()
    finally:
        os.umask(old)
