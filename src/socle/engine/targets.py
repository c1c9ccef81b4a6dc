"""What the engine keeps per app: the target the runtime must converge to.

A target is written by apply (or rollback, or an automatic rollback) and read by the
controller. The *template* digest covers everything that shapes an instance (release,
command, env, ports, health, resources, restart, stop grace, secret versions), so that a
template change means new instances while a replica change only scales.

Planning computes an :class:`AppState` for every app on every plan; :class:`AppStateCache`
keeps them for the app objects a :class:`~socle.model.cache.ManifestCache` hands out again,
so an unchanged app costs a dictionary lookup instead of a dump and two digests.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

from socle.engine.planner import AppState
from socle.model.app import App
from socle.model.kinds import ObjectRef
from socle.model.status import RolloutStatus
from socle.state.store import Delete, Op, Put, Record, StateStore

TEMPLATE_FIELDS = ("run", "env", "ports", "health", "resources", "restart", "stopGrace")
OPTIONAL_TEMPLATE_FIELDS = ("volumes", "templates")
"""Part of the template only when set, so that apps without them keep the template (and
the instances) they had before the field existed."""


OPTIONAL_MANIFEST_FIELDS = ("metrics", "templates", "autoscale")
"""Left out of the planner's manifest when unset, so that apps applied before the field
existed keep their digest: upgrading Socle shows no change for them."""


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def app_state(app: App, release: str, secret_versions: Mapping[str, int] | None = None) -> AppState:
    """The planner's view of an app: manifest, release, template and overall digest."""
    manifest = app.model_dump(mode="json", by_alias=True)
    spec = manifest["spec"]
    for key in OPTIONAL_MANIFEST_FIELDS:
        if not spec.get(key):  # None, or an empty list
            spec.pop(key, None)
    metrics = spec.get("metrics")
    if metrics is not None and metrics.get("releaseCheck") is None:
        metrics.pop("releaseCheck", None)  # same digest as before the field existed
    template = _digest(
        {
            "release": release,
            "spec": {
                **{k: spec.get(k) for k in TEMPLATE_FIELDS},
                **{k: spec[k] for k in OPTIONAL_TEMPLATE_FIELDS if spec.get(k)},
            },
            "secrets": dict(sorted((secret_versions or {}).items())),
        }
    )
    return AppState(
        name=app.name,
        manifest=manifest,
        release=release,
        template=template,
        digest=_digest({"manifest": manifest, "release": release, "template": template}),
        secrets=dict(sorted((secret_versions or {}).items())),
    )


StateKey = tuple[int, str, tuple[tuple[str, int], ...]]


class AppStateCache:
    """``app_state`` results by (app object, release, secret versions).

    Keyed by the *identity* of the app object (its validated manifest is immutable and the
    entry holds a reference, so the id cannot be reused while cached). Entries not asked
    for during the last ``keep_passes`` passes are dropped at :meth:`end_pass`, so memory
    follows the apps being planned. Plans may overlap (they compute states in threads), so
    every access takes a lock; the states themselves are computed outside it.
    """

    def __init__(self, keep_passes: int = 4) -> None:
        self._keep = keep_passes
        self._pass = 0
        self._entries: dict[StateKey, tuple[App, AppState, int]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def state(
        self, app: App, release: str, secret_versions: Mapping[str, int] | None = None
    ) -> AppState:
        """Same result as :func:`app_state`, computed once per distinct input."""
        key: StateKey = (id(app), release, tuple(sorted((secret_versions or {}).items())))
        with self._lock:
            found = self._entries.get(key)
            if found is not None and found[0] is app:
                if found[2] != self._pass:
                    self._entries[key] = (app, found[1], self._pass)
                self.hits += 1
                return found[1]
        state = app_state(app, release, secret_versions)
        with self._lock:
            self._entries[key] = (app, state, self._pass)
            self.misses += 1
        return state

    def end_pass(self) -> None:
        """Forget entries no pass among the last ``keep_passes`` asked for."""
        with self._lock:
            oldest = self._pass - self._keep
            if any(seen <= oldest for _, _, seen in self._entries.values()):
                self._entries = {k: v for k, v in self._entries.items() if v[2] > oldest}
            self._pass += 1

    def __len__(self) -> int:
        return len(self._entries)

    def export(self) -> list[tuple[App, AppState, tuple[str, tuple[tuple[str, int], ...]]]]:
        """The entries as ``(app, state, (release, secrets))``, keyed again by :meth:`adopt`
        (object ids do not survive a restart; the app objects themselves do, when pickled
        together with the manifest cache that holds them)."""
        with self._lock:
            return [(app, state, (k[1], k[2])) for k, (app, state, _) in self._entries.items()]

    def adopt(
        self, entries: list[tuple[App, AppState, tuple[str, tuple[tuple[str, int], ...]]]]
    ) -> None:
        with self._lock:
            for app, state, (release, secrets) in entries:
                self._entries[(id(app), release, secrets)] = (app, state, self._pass)


def state_to_dict(state: AppState) -> dict[str, Any]:
    return {
        "name": state.name,
        "manifest": state.manifest,
        "release": state.release,
        "template": state.template,
        "digest": state.digest,
        "secrets": state.secrets,
    }


def state_from_dict(data: Mapping[str, Any]) -> AppState:
    return AppState(
        name=data["name"],
        manifest=data["manifest"],
        release=data["release"],
        template=data["template"],
        digest=data["digest"],
        secrets=dict(data.get("secrets", {})),
    )


@dataclass
class Rollout:
    revision: int
    started: float
    status: str = RolloutStatus.PROGRESSING
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "started": self.started,
            "status": self.status,
            "message": self.message,
        }


@dataclass
class Target:
    """One app's target as stored at ``objects/App/<name>``."""

    state: AppState
    release_root: Path
    rollout: Rollout
    previous: AppState | None = None
    previous_root: Path | None = None
    environment: str = "default"
    """The environment this app runs in (its scope, see :mod:`socle.engine.scopes`)."""
    known_app: InitVar[App | None] = None
    """The app ``state`` was made from, if the caller has it: saves validating it again."""
    app: App = field(init=False)

    def __post_init__(self, known_app: App | None) -> None:
        if known_app is not None and known_app.name == self.state.name:
            self.app = known_app
        else:
            self.app = App.model_validate(self.state.manifest)

    @property
    def name(self) -> str:
        return self.state.name

    def to_json(self) -> bytes:
        data = {
            "state": state_to_dict(self.state),
            "release_root": str(self.release_root),
            "rollout": self.rollout.to_dict(),
            "previous": state_to_dict(self.previous) if self.previous else None,
            "previous_root": str(self.previous_root) if self.previous_root else None,
            "environment": self.environment,
        }
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Target:
        data = json.loads(raw)
        return cls(
            state=state_from_dict(data["state"]),
            release_root=Path(data["release_root"]),
            rollout=Rollout(**data["rollout"]),
            previous=state_from_dict(data["previous"]) if data.get("previous") else None,
            previous_root=Path(data["previous_root"]) if data.get("previous_root") else None,
            environment=data.get("environment", "default"),
        )


OBJECTS_PREFIX = "objects/"
GENERATION_KEY = "meta/targets-generation"
"""Bumped (compare-and-swap) by every plan's commit: see :class:`TargetRecords`."""


def object_key(kind: str, name: str) -> str:
    """Where an object's target lives: ``objects/<Kind>/<name>``."""
    return f"{OBJECTS_PREFIX}{kind}/{name}"


class TargetRecords:
    """Target records with compare-and-swap: every write says which version it replaces.

    The version of each record is remembered from the last read or write (a successful
    write of version ``v`` leaves ``v + 1``, the stores' contract; were it otherwise, the
    next write would lose with ConflictError and be retried from fresh state, never
    overwrite). Two control planes (or two loops) writing the same target can therefore
    never silently overwrite each other: the loser gets :class:`~socle.errors.ConflictError`.

    Per-record versions alone would let a writer with a stale view commit a plan that does
    not touch what the other changed (it deleted ``api``; we update ``cache`` and keep
    running ``api``). So every plan's commit also bumps one generation record
    (:data:`GENERATION_KEY`, :meth:`generation_op`): a plan commits only on the view it was
    made from. Single-target writes of the rollout controller do not bump it (they change a
    rollout's status, never what is wanted).
    """

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._versions: dict[ObjectRef, int] = {}
        self._generation = (0, 0)
        """``(value, record version)`` of :data:`GENERATION_KEY` as last seen."""

    async def load(self) -> dict[str, dict[str, bytes]]:
        """Every stored target, by kind then name (remembering versions)."""
        generation = await self._store.get(GENERATION_KEY)
        self._generation = (
            (int(generation.value), generation.version) if generation is not None else (0, 0)
        )
        self._versions = {}
        found: dict[str, dict[str, bytes]] = {}
        for record in await self._store.scan(OBJECTS_PREFIX):
            kind, _, name = record.key[len(OBJECTS_PREFIX) :].partition("/")
            found.setdefault(kind, {})[name] = record.value
            self._versions[(kind, name)] = record.version
        return found

    def version(self, ref: ObjectRef) -> int:
        return self._versions.get(ref, 0)

    def put_op(self, ref: ObjectRef, value: bytes) -> Put:
        return Put(object_key(*ref), value, self._versions.get(ref, 0))

    def delete_op(self, ref: ObjectRef) -> Delete:
        return Delete(object_key(*ref), self._versions.get(ref, 0))

    def generation_op(self) -> Put:
        """The bump of the targets' generation that a plan's commit must include."""
        value, version = self._generation
        return Put(GENERATION_KEY, str(value + 1).encode(), version)

    def committed(self, ops: list[Op]) -> None:
        """Record the versions left by ``ops``, once their commit succeeded."""
        for op in ops:
            if op.key == GENERATION_KEY and isinstance(op, Put):
                self._generation = (int(op.value), (op.expect_version or 0) + 1)
                continue
            if not op.key.startswith(OBJECTS_PREFIX):
                continue
            kind, _, name = op.key[len(OBJECTS_PREFIX) :].partition("/")
            if isinstance(op, Put):
                self._versions[(kind, name)] = (op.expect_version or 0) + 1
            else:
                self._versions.pop((kind, name), None)

    async def refresh(self, ref: ObjectRef) -> Record | None:
        """Read one target again (after a lost race), remembering its version."""
        record = await self._store.get(object_key(*ref))
        if record is None:
            self._versions.pop(ref, None)
        else:
            self._versions[ref] = record.version
        return record

    async def put(self, ref: ObjectRef, value: bytes) -> None:
        """One compare-and-swap write (ConflictError if another writer got there first)."""
        op = self.put_op(ref, value)
        await self._store.commit([op])
        self.committed([op])
