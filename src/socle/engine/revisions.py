"""Revisions: every apply (or rollback) is numbered and recorded with its plan and result.

A revision record is small (``revisions/<n>``); the full desired state it applied lives
apart (``desired/<n>``) so that history listings never read big blobs, and so that a
rollback can re-apply exactly what that revision applied.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, fields
from typing import Any

from socle.errors import ConflictError, NotFoundError
from socle.model.status import TERMINAL_REVISION_STATUSES, RevisionStatus
from socle.state.store import Op, Put, StateStore

TERMINAL = TERMINAL_REVISION_STATUSES
COUNTER_KEY = "meta/revision"


REVISIONS_PREFIX = "revisions/"


def revision_key(number: int) -> str:
    return f"{REVISIONS_PREFIX}{number:010d}"


def desired_key(number: int) -> str:
    return f"desired/{number:010d}"


@dataclass
class Revision:
    number: int
    created: float
    who: str
    source: str
    env: str | None
    digest: str
    plan: dict[str, Any]
    status: str = RevisionStatus.BUILDING
    message: str = ""
    finished: float | None = None
    rollback_of: int | None = None
    apps: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per changed app: ``{"phase": ..., "message": ...}``."""
    owner: str = ""
    """The source whose objects this revision changed (``path:...``, ``source:NAME``);
    empty: every object (a rotated secret), or a revision made before sources existed."""
    environment: str = ""
    """The environment it changed; empty as for ``owner``."""
    commit: dict[str, str] | None = None
    """For a Git source: ``sha``, ``author``, ``date``, ``message``, ``ref``."""
    trace_id: str | None = None
    """The trace of this apply (``socle trace NUMBER`` shows its spans), when traced."""

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def to_dict(self, *, plan: bool = True) -> dict[str, Any]:
        """Shallow (JSON encoding walks the rest); without ``plan`` for cheap progress polls."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        if not plan:
            data["plan"] = {"counts": self.plan.get("counts", {})}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Revision:
        return cls(**data)


class RevisionLog:
    """Revision records, every write compare-and-swap against the version last seen.

    Two writers (two loops, or two control planes on one store) cannot silently overwrite
    a revision: the one that lost gets :class:`~socle.errors.ConflictError` and reads again.
    """

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._versions: dict[int, int] = {}

    async def create(self, revision_fields: dict[str, Any], desired: dict[str, Any]) -> Revision:
        """Allocate the next number (compare-and-swap) and write record and desired state."""
        while True:
            counter = await self._store.get(COUNTER_KEY)
            current = int(counter.value) if counter else 0
            number = current + 1
            revision = Revision(number=number, created=time.time(), **revision_fields)
            try:
                await self._store.commit(
                    [
                        Put(COUNTER_KEY, str(number).encode(), counter.version if counter else 0),
                        Put(revision_key(number), _encode(revision.to_dict()), 0),
                        Put(desired_key(number), _encode(desired), 0),
                    ]
                )
            except ConflictError:
                continue
            self._versions[number] = 1
            return revision

    def put_op(self, revision: Revision) -> Put:
        """The write of ``revision`` (compare-and-swap), to commit with other changes;
        call :meth:`committed` once the commit succeeded."""
        if revision.done and revision.finished is None:
            revision.finished = time.time()
        return Put(
            revision_key(revision.number),
            _encode(revision.to_dict()),
            self._versions.get(revision.number),
        )

    def committed(self, ops: list[Op]) -> None:
        """Remember the versions left by a successful commit of ``ops``."""
        for op in ops:
            if isinstance(op, Put) and op.key.startswith(REVISIONS_PREFIX):
                number = int(op.key[len(REVISIONS_PREFIX) :])
                if op.expect_version is not None:
                    self._versions[number] = op.expect_version + 1
                else:
                    self._versions.pop(number, None)

    async def save(self, revision: Revision) -> None:
        """Write ``revision``; ConflictError if another writer changed it since we read it."""
        op = self.put_op(revision)
        try:
            await self._store.commit([op])
        except ConflictError:
            self._versions.pop(revision.number, None)
            raise
        self.committed([op])

    async def get(self, number: int) -> Revision:
        record = await self._store.get(revision_key(number))
        if record is None:
            raise NotFoundError(
                f"revision {number} does not exist", hint="see `socle history` for revisions"
            )
        self._versions[number] = record.version
        return Revision.from_dict(json.loads(record.value))

    async def desired(self, number: int) -> dict[str, Any]:
        record = await self._store.get(desired_key(number))
        if record is None:
            raise NotFoundError(
                f"revision {number} has no recorded desired state",
                hint="see `socle history` for revisions",
            )
        data: dict[str, Any] = json.loads(record.value)
        return data

    async def newest(self) -> AsyncIterator[Revision]:
        """Every revision, newest first, read one at a time: a caller looking for a few
        (one environment's last 50, a commit) stops early instead of reading them all."""
        keys = await self._store.keys(REVISIONS_PREFIX)
        for key in reversed(keys):
            record = await self._store.get(key)
            if record:
                revision = Revision.from_dict(json.loads(record.value))
                self._versions[revision.number] = record.version
                yield revision

    async def list(self, limit: int = 50) -> list[Revision]:
        keys = await self._store.keys("revisions/")
        revisions = []
        for key in reversed(keys[-limit:] if limit else keys):
            record = await self._store.get(key)
            if record:
                revision = Revision.from_dict(json.loads(record.value))
                self._versions[revision.number] = record.version
                revisions.append(revision)
        return revisions


def _encode(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), default=str).encode()
