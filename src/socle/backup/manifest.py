"""What a backup archive holds, and which archive entries are safe to restore. Pure.

An archive is an uncompressed tar whose last member is ``MANIFEST.json``. Every other member
has one of these shapes, and nothing else is accepted::

    state/state.db                      SQLite online backup of the state store
    state/state.pgdump                  pg_dump --format=custom of the PostgreSQL store
    releases/<app>/<release id>[/...]   a kept release (code), files, folders and symlinks
    volumes/<name>/data[/...]           a volume's files

The manifest lists every entry with its type, size, mode and SHA-256, and says what was left
out on purpose (the dev unseal key, the admin token). Restoring trusts nothing in it without
checking it against the bytes (:mod:`socle.backup.archive`), and refuses, before writing
anything, entries that could escape the home being restored: absolute paths, ``..``,
symlinks that lead out of their release or volume, hard links, devices, FIFOs.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from socle.errors import BackupError
from socle.model.app import NAME_RE

FORMAT = "socle-backup"
FORMAT_VERSION = 1
MANIFEST_NAME = "MANIFEST.json"
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
RELEASE_ID_RE = re.compile(r"^r[0-9a-f]{16}$")
SQLITE_ENTRY = "state/state.db"
PGDUMP_ENTRY = "state/state.pgdump"
SYSTEM_LINK_PREFIXES = ("/",)
"""Absolute symlink targets a *release* may hold. Build tools link to the interpreter
wherever it lives (``python3 -m venv`` makes ``.venv/bin/python3 -> /usr/bin/python3``, or a
path under ``/opt`` or ``/root/.pyenv``), so any absolute target is kept: restore never
writes or reads through a link, and at run time the app's sandbox decides what the link can
reach (``/etc/shadow`` and the Socle home are not in its view). Volumes may hold none."""

EXCLUDED = {
    "admin.token": "the admin API token; a restored home gets a new one at first start",
    "secrets-dev-unseal.key": "the dev-mode unseal key; never stored next to the ciphertext",
    "run/": "records of running instances; they belong to the host that runs them",
    "logs/": "instance logs",
    "logstore/": "the log store; copy its sealed segments with chain.jsonl to archive logs "
    "(`socle logs verify` checks them)",
    "backups/": "other backups",
}
"""Left out of every backup on purpose, and said so in the manifest."""

EntryType = Literal["file", "dir", "symlink"]
StoreKind = Literal["sqlite", "postgresql", "none"]


@dataclass(frozen=True)
class Entry:
    path: str
    type: EntryType
    mode: int
    size: int = 0
    sha256: str | None = None
    target: str | None = None
    """A symlink's text."""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "type": self.type, "mode": self.mode}
        if self.type == "file":
            data["size"] = self.size
            data["sha256"] = self.sha256
        if self.type == "symlink":
            data["target"] = self.target
        return data


@dataclass(frozen=True)
class VolumeEntry:
    name: str
    size_bytes: int
    retained: bool = False
    enforced: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "size_bytes": self.size_bytes,
            "retained": self.retained,
            "enforced": self.enforced,
        }


@dataclass
class Manifest:
    created: str
    socle_version: str
    store: StoreKind
    entries: list[Entry] = field(default_factory=list)
    volumes: dict[str, VolumeEntry] = field(default_factory=dict)
    releases: list[str] = field(default_factory=list)
    """``<app>/<release id>`` of every kept release inside."""
    scope: Literal["home", "volume"] = "home"
    """``home``: a whole SOCLE_HOME; ``volume``: one volume's scheduled backup."""
    skipped: list[str] = field(default_factory=list)
    """Files that could not be backed up (sockets, FIFOs, devices inside a volume)."""
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries if e.type == "file")

    def to_json(self) -> bytes:
        data = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "socle_version": self.socle_version,
            "created": self.created,
            "scope": self.scope,
            "store": self.store,
            "excluded": EXCLUDED,
            "notes": self.notes,
            "volumes": {name: v.to_dict() for name, v in sorted(self.volumes.items())},
            "releases": self.releases,
            "skipped": self.skipped,
            "total_bytes": self.total_bytes,
            "entries": [e.to_dict() for e in self.entries],
        }
        return json.dumps(data, indent=1).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        """Parse and check a manifest; every problem is a BackupError naming the field."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BackupError(f"{MANIFEST_NAME} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BackupError(f"{MANIFEST_NAME}: not a Socle backup manifest")
        if data.get("version") != FORMAT_VERSION:
            raise BackupError(
                f"{MANIFEST_NAME}: format version {data.get('version')!r} is not supported",
                hint=f"this Socle reads version {FORMAT_VERSION}; use the Socle that made it",
            )
        try:
            store = data["store"]
            if store not in ("sqlite", "postgresql", "none"):
                raise ValueError(f"store: unknown kind {store!r}")
            scope = data.get("scope", "home")
            if scope not in ("home", "volume"):
                raise ValueError(f"scope: unknown {scope!r}")
            volumes = {}
            for name, v in dict(data.get("volumes") or {}).items():
                if not NAME_RE.fullmatch(name):
                    raise ValueError(f"volumes: invalid name {name!r}")
                size = v["size_bytes"]
                if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                    raise ValueError(f"volumes.{name}.size_bytes: not a positive integer")
                volumes[name] = VolumeEntry(
                    name, size, bool(v.get("retained")), bool(v.get("enforced"))
                )
            entries = [_entry(e) for e in data["entries"]]
            return cls(
                created=str(data["created"]),
                socle_version=str(data.get("socle_version", "")),
                store=store,
                entries=entries,
                volumes=volumes,
                releases=[str(r) for r in data.get("releases") or []],
                scope=scope,
                skipped=[str(s) for s in data.get("skipped") or []],
                notes=[str(n) for n in data.get("notes") or []],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BackupError(f"{MANIFEST_NAME}: malformed: {exc}") from exc


def _entry(raw: Any) -> Entry:
    if not isinstance(raw, dict):
        raise ValueError("entries: each entry is an object")
    kind = raw["type"]
    if kind not in ("file", "dir", "symlink"):
        raise ValueError(f"entries: {raw.get('path')!r} has unknown type {kind!r}")
    mode = raw["mode"]
    if not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise ValueError(f"entries: {raw.get('path')!r} has a bad mode")
    size = raw.get("size", 0)
    if not isinstance(size, int) or size < 0:
        raise ValueError(f"entries: {raw.get('path')!r} has a bad size")
    digest = raw.get("sha256")
    if kind == "file" and (
        not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest)
    ):
        raise ValueError(f"entries: {raw.get('path')!r} has no valid sha256")
    return Entry(
        path=str(raw["path"]),
        type=kind,
        mode=mode,
        size=size,
        sha256=digest,
        target=raw.get("target"),
    )


def entry_root(path: str) -> str:
    """The folder an entry belongs to and may not leave: ``releases/<app>/<id>``,
    ``volumes/<name>/data``, or ``state`` (after :func:`check_path`)."""
    parts = path.split("/")
    if parts[0] == "releases":
        return "/".join(parts[:3])
    if parts[0] == "volumes":
        return "/".join(parts[:3])
    return parts[0]


def check_path(path: str) -> str:
    """Refuse an archive member name that is not one of the shapes in the module docstring.

    Returns the name; raises BackupError naming it and the reason."""

    def bad(reason: str) -> BackupError:
        return BackupError(
            f"refusing archive entry {path!r}: {reason}",
            entry=path,
            hint="this archive was not made by `socle backup create` or was tampered with; "
            "nothing was restored",
        )

    if not isinstance(path, str) or not path:
        raise bad("empty name")
    if "\0" in path:
        raise bad("NUL in the name")
    if path.startswith("/"):
        raise bad("absolute path")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise bad("'..', '.' or an empty component in the path")
    if path == MANIFEST_NAME:
        return path
    top = parts[0]
    if top == "state":
        if path not in (SQLITE_ENTRY, PGDUMP_ENTRY):
            raise bad("unknown state file")
        return path
    if top == "releases":
        if (
            len(parts) < 3
            or not NAME_RE.fullmatch(parts[1])
            or not RELEASE_ID_RE.fullmatch(parts[2])
        ):
            raise bad("not under releases/<app>/<release id>")
        return path
    if top == "volumes":
        if len(parts) < 3 or not NAME_RE.fullmatch(parts[1]) or parts[2] != "data":
            raise bad("not under volumes/<name>/data")
        return path
    raise bad("unknown top-level folder")


def check_symlink(path: str, target: str) -> None:
    """Refuse a symlink that leads out of its release or volume folder.

    A relative target must stay inside :func:`entry_root` once joined to the link's folder;
    an absolute one is allowed only in a release (see :data:`SYSTEM_LINK_PREFIXES`).
    Restore never writes through a symlink anyway; this keeps a restored volume from
    pointing apps or operators at the host's files."""
    root = entry_root(path)

    def bad(reason: str) -> BackupError:
        return BackupError(
            f"refusing symlink {path!r} -> {target!r}: {reason}",
            entry=path,
            hint="nothing was restored",
        )

    if not target or "\0" in target:
        raise bad("empty target or NUL in it")
    if path == root or root == "state":
        raise bad("a release or volume root, or a state file, cannot be a symlink")
    if target.startswith("/"):
        normal = posixpath.normpath(target)
        if path.startswith("releases/") and any(
            normal.startswith(prefix) for prefix in SYSTEM_LINK_PREFIXES
        ):
            return
        raise bad("absolute target in a volume")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if joined != root and not joined.startswith(root + "/"):
        raise bad(f"leads outside {root}")


__all__ = [
    "EXCLUDED",
    "MANIFEST_NAME",
    "PGDUMP_ENTRY",
    "SQLITE_ENTRY",
    "Entry",
    "Manifest",
    "VolumeEntry",
    "check_path",
    "check_symlink",
    "entry_root",
]
