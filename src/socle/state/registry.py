"""Open a state store from a URL or a path: the registry of store backends.

Settings name the store with one string, so that moving from the embedded default to a
shared database is a configuration change, not a code change:

- ``/var/lib/socle/state.db`` or ``state.db`` (a plain path) or ``sqlite:///abs/path.db``
  → :class:`~socle.state.sqlite.SqliteStore`;
- ``postgresql://user:password@host:5432/db?sslmode=verify-full`` (or ``postgres://``)
  → :class:`~socle.state.postgres.PostgresStore`, every libpq option passed through;
- ``memory://name`` → :class:`~socle.state.memory.MemoryStore`, in this process only (tests,
  throw-away runs): stores opened with the same name *through the same registry* share data.

A store that several control planes may share also registers a leader lease
(:meth:`StoreRegistry.register_lease`, :mod:`socle.state.lease`); :meth:`StoreRegistry.open_lease`
returns None for the others (SQLite: one control plane per home, kept by a file lock).

A backend is one module plus one :meth:`StoreRegistry.register` call. The registry is an
object you can build and pass around (tests register in-memory stores), not a hidden global;
:func:`open_store` uses a fresh :func:`default_registry` unless it is given one. Backend
modules are imported only when their scheme is opened.

Errors: a location that names no known backend, or that its backend cannot parse, raises
:class:`~socle.errors.ConfigError` naming the supported schemes; a location is never echoed
back whole, because a DSN may carry a password.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from socle.errors import ConfigError
from socle.state.lease import Holder, LeaderLease
from socle.state.store import StateStore

Opener = Callable[[str], Awaitable[StateStore]]
"""Opens a store from its full URL (the scheme is already known to match)."""

LeaseOpener = Callable[[str, Holder], Awaitable[LeaderLease]]
"""Makes the leader lease of the store at a URL, for the given would-be holder."""

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_LIBPQ_KEYWORDS = re.compile(
    r"^\s*(host|hostaddr|port|dbname|user|password|passfile|service|sslmode|options"
    r"|application_name|connect_timeout|target_session_attrs)\s*=",
    re.IGNORECASE,
)


class StoreRegistry:
    """Maps URL schemes to store openers; plain paths go to the ``sqlite`` opener."""

    def __init__(self) -> None:
        self._openers: dict[str, Opener] = {}
        self._leases: dict[str, LeaseOpener] = {}
        self.memory: dict[str, object] = {}
        """Data of ``memory://`` stores opened through this registry, by name."""

    def register(self, scheme: str, opener: Opener) -> None:
        """Serve URLs ``scheme://...`` with ``opener``; schemes are case-insensitive."""
        key = scheme.lower()
        if not _SCHEME.match(key + ":"):
            raise ValueError(f"not a URL scheme: {scheme!r}")
        if key in self._openers:
            raise ValueError(f"a store is already registered for {key}://")
        self._openers[key] = opener

    def register_lease(self, scheme: str, opener: LeaseOpener) -> None:
        """Stores of ``scheme`` are shared between control planes: lease them with ``opener``."""
        key = scheme.lower()
        if key not in self._openers:
            raise ValueError(f"register a store for {key}:// before its lease")
        if key in self._leases:
            raise ValueError(f"a lease is already registered for {key}://")
        self._leases[key] = opener

    async def open_lease(self, url_or_path: str | Path, holder: Holder) -> LeaderLease | None:
        """The leader lease of the store ``url_or_path`` names, or None if it needs none."""
        scheme, url = self.resolve(url_or_path)
        opener = self._leases.get(scheme)
        return None if opener is None else await opener(url, holder)

    @property
    def schemes(self) -> list[str]:
        return sorted(self._openers)

    def resolve(self, url_or_path: str | Path) -> tuple[str, str]:
        """The scheme and URL that ``url_or_path`` stands for (a path becomes ``sqlite:``).

        A string is a URL when it starts with ``scheme://`` or with a registered
        ``scheme:``; anything else is a file path, made absolute against the current folder,
        except a libpq ``key=value`` DSN, which is refused rather than mistaken for a file.
        """
        if isinstance(url_or_path, Path):
            return "sqlite", _sqlite_url(url_or_path)
        text = url_or_path.strip()
        if not text:
            raise ConfigError(
                "the state store location is empty",
                hint="give a file path, sqlite:///abs/path.db or postgresql://host/db",
            )
        match = _SCHEME.match(text)
        if match is not None:
            scheme = match.group(1).lower()
            if text[match.end() :].startswith("//") or scheme in self._openers:
                if scheme not in self._openers:
                    raise ConfigError(
                        f"unsupported state store scheme {scheme!r} "
                        f"(supported: {', '.join(self.schemes)})",
                        hint="use sqlite:///abs/path.db, postgresql://user@host:port/db "
                        "or a plain file path for SQLite",
                    )
                return scheme, text
        if _LIBPQ_KEYWORDS.match(text):
            # Taken as a path, this would become a SQLite file named after the DSN
            # (password included): refuse it, and do not echo it.
            raise ConfigError(
                "the state store location looks like a libpq key=value DSN",
                hint="write it as a URL: postgresql://user:password@host:port/dbname?sslmode=...",
            )
        return "sqlite", _sqlite_url(Path(text).expanduser())

    async def open(self, url_or_path: str | Path) -> StateStore:
        scheme, url = self.resolve(url_or_path)
        opener = self._openers.get(scheme)
        if opener is None:
            raise ConfigError(
                f"no state store registered for {scheme}:",
                hint=f"registered schemes: {', '.join(self.schemes) or 'none'}",
            )
        return await opener(url)


def _sqlite_url(path: Path) -> str:
    return "sqlite://" + path.absolute().as_uri().removeprefix("file://")


def sqlite_path(url: str) -> Path:
    """The file named by ``sqlite:///abs/path.db`` (percent-decoded).

    ``sqlite:////abs/path.db`` (SQLAlchemy's spelling) means the same file. Relative files
    have no URL form here: pass them as plain paths.
    """
    parts = urlsplit(url)
    if parts.netloc or not parts.path.startswith("/") or parts.path.strip("/") == "":
        raise ConfigError(
            "a SQLite URL names an absolute file: sqlite:///abs/path.db",
            hint="write sqlite:/// followed by the absolute path, or give a plain file path",
        )
    if parts.query or parts.fragment:
        raise ConfigError(
            "a SQLite state store URL takes no options (nothing after '?' or '#')",
            hint="remove the query string from the sqlite:/// URL",
        )
    return Path("/" + unquote(parts.path).lstrip("/"))


async def _open_sqlite(url: str) -> StateStore:
    from socle.state.sqlite import SqliteStore

    return await SqliteStore.open(sqlite_path(url))


async def _open_postgres(url: str) -> StateStore:
    from socle.state.postgres import PostgresStore

    return await PostgresStore.open(url)


async def _lease_postgres(url: str, holder: Holder) -> LeaderLease:
    from socle.state.postgres_lease import PostgresLease

    return PostgresLease(url, holder)


def default_registry() -> StoreRegistry:
    """A new registry with the stores Socle ships: SQLite, PostgreSQL and in-memory."""
    registry = StoreRegistry()
    registry.register("sqlite", _open_sqlite)
    registry.register("postgresql", _open_postgres)
    registry.register("postgres", _open_postgres)
    registry.register_lease("postgresql", _lease_postgres)
    registry.register_lease("postgres", _lease_postgres)

    async def open_memory(url: str) -> StateStore:
        from socle.state.memory import MemoryStore

        return MemoryStore.open(url, registry.memory)

    registry.register("memory", open_memory)
    return registry


async def open_store(
    url_or_path: str | Path, *, registry: StoreRegistry | None = None
) -> StateStore:
    """Open the state store that ``url_or_path`` names (see the module docstring)."""
    return await (registry if registry is not None else default_registry()).open(url_or_path)


__all__ = ["Opener", "StoreRegistry", "default_registry", "open_store", "sqlite_path"]
