"""Environments and ownership: which environment each object lives in, and which source
declared it.

The engine keeps addressing objects by ``(kind, name)`` (store keys, plans, handlers,
runtime); an environment is a *scope* on top of it. Each object has a scope record at
``owners/<Kind>/<name>`` (written in the same commit as its target) saying its
environment, the name its manifests give it, the source that declared it and where.

The internal name of an object is recorded, not computed: the first environment to
declare ``App/api`` gets the bare name ``api`` (so an existing home and a single
environment see no change at all), a second environment declaring ``App/api`` gets
``api--<env>``. Objects and the references between them (``dependsOn``, volume mounts)
are renamed before planning (:func:`rename`), so handlers, releases, volumes and the
runtime keep seeing plain, valid names.

A plan made for one ``(source, environment)`` compares the source's declared objects with
the objects that source owns in that environment only: applying a second team's folder
never deletes the first team's apps, and an empty source refuses to delete everything.
Two sources declaring the same ``(kind, name)`` in one environment are refused, naming both
locations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from socle.errors import ManifestError, Problem
from socle.model.kinds import (
    ENV_SEPARATOR,
    KindRegistry,
    ObjectRef,
    default_kinds,
)
from socle.model.loader import LoadedManifests
from socle.state.store import Delete, Op, Put, StateStore

DEFAULT_ENV = "default"
"""The environment of ``socle apply PATH`` without ``--env`` (and of every object made
before environments existed and not claimed by one)."""

SCOPES_PREFIX = "owners/"
SEPARATOR = ENV_SEPARATOR

ADOPTED = "(made before environments)"
"""The origin of objects adopted from a home made before environments existed: the first
source that declares one of them in its environment takes it over (the folder it was
applied from may have moved since), instead of being refused as a second owner."""

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def path_owner(path: Path) -> str:
    """The owner id of ``socle apply PATH``: the folder is the source."""
    return f"path:{path}"


def source_owner(name: str) -> str:
    """The owner id of a GitOps source."""
    return f"source:{name}"


@dataclass(frozen=True)
class Scope:
    env: str
    name: str
    """The object's name as its manifests declare it (``api``, also for ``api--prod``)."""
    owner: str
    """Who declared it: ``path:/abs/folder`` or ``source:NAME``."""
    origin: str = ""
    """Where in the owner's manifests: ``apps/api.yaml:3``."""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scope:
        return cls(
            env=data["env"], name=data["name"], owner=data["owner"], origin=data.get("origin", "")
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Scope:
        return cls.from_dict(json.loads(raw))


def scope_key(ref: ObjectRef) -> str:
    return f"{SCOPES_PREFIX}{ref[0]}/{ref[1]}"


class ScopeIndex:
    """Every object's scope, in memory, with the record versions for compare-and-swap."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._scopes: dict[ObjectRef, Scope] = {}
        self._versions: dict[ObjectRef, int] = {}

    async def load(self) -> None:
        self._scopes, self._versions = {}, {}
        for record in await self._store.scan(SCOPES_PREFIX):
            kind, _, name = record.key[len(SCOPES_PREFIX) :].partition("/")
            self._scopes[(kind, name)] = Scope.from_json(record.value)
            self._versions[(kind, name)] = record.version

    def get(self, ref: ObjectRef) -> Scope | None:
        return self._scopes.get(ref)

    def environment(self, ref: ObjectRef) -> str:
        scope = self._scopes.get(ref)
        return scope.env if scope is not None else DEFAULT_ENV

    def all(self) -> dict[ObjectRef, Scope]:
        return dict(self._scopes)

    def owned(self, owner: str, env: str) -> set[ObjectRef]:
        return {r for r, s in self._scopes.items() if s.owner == owner and s.env == env}

    def adopted(self, ref: ObjectRef) -> bool:
        """Whether ``ref`` was adopted from an older home and not claimed by a source yet."""
        scope = self._scopes.get(ref)
        return scope is not None and scope.origin == ADOPTED

    def in_env(self, env: str) -> set[ObjectRef]:
        return {r for r, s in self._scopes.items() if s.env == env}

    def environments(self) -> list[str]:
        return sorted({s.env for s in self._scopes.values()})

    def allocate(
        self,
        env: str,
        owner: str,
        declared: Iterable[ObjectRef],
        origins: Mapping[str, str],
    ) -> dict[ObjectRef, ObjectRef]:
        """Internal ref of each declared ``(kind, name)`` of ``owner`` in ``env``.

        Raises ManifestError naming both locations when another source already declares one
        of them in ``env`` (nothing is changed).
        """
        by_scope = {(s.env, r[0], s.name): r for r, s in self._scopes.items()}
        taken = set(self._scopes)
        mapping: dict[ObjectRef, ObjectRef] = {}
        problems: list[Problem] = []
        for kind, name in declared:
            found = by_scope.get((env, kind, name))
            where = origins.get(f"{kind}/{name}", "")
            reserved = _reserved(name, env, known=found is not None)
            if reserved is not None:
                problems.append(_problem(where, f"{kind} {name}: {reserved}"))
                continue
            if found is not None:
                other = self._scopes[found]
                if other.owner != owner and other.origin != ADOPTED:
                    problems.append(
                        _problem(
                            where,
                            f"{kind} {name} in environment {env} is already declared by "
                            f"{other.owner} at {other.origin or '?'}; "
                            "one object has one owner",
                        )
                    )
                    continue
                mapping[(kind, name)] = found
                continue
            candidate: ObjectRef = (kind, name)
            if candidate in taken:
                candidate = (kind, f"{name}{SEPARATOR}{env}")
                if candidate in taken or not _NAME_RE.fullmatch(candidate[1]):
                    problems.append(
                        _problem(
                            where,
                            f"{kind} {name} cannot get a name of its own in environment "
                            f"{env} ({candidate[1]!r} is taken or too long)",
                        )
                    )
                    continue
            taken.add(candidate)
            mapping[(kind, name)] = candidate
        if problems:
            raise ManifestError(
                problems,
                hint="remove the object from one of the sources, or put the sources in "
                "different environments; nothing was changed",
            )
        return mapping

    # -- writes (in the engine's commits) ----------------------------------------------

    def put_op(self, ref: ObjectRef, scope: Scope) -> Put | None:
        """The write of ``ref``'s scope, or None when it is already so."""
        if self._scopes.get(ref) == scope:
            return None
        return Put(scope_key(ref), scope.to_json(), self._versions.get(ref, 0))

    def delete_op(self, ref: ObjectRef) -> Delete | None:
        if ref not in self._scopes:
            return None
        return Delete(scope_key(ref), self._versions.get(ref, 0))

    def committed(self, ops: list[Op]) -> None:
        for op in ops:
            if not op.key.startswith(SCOPES_PREFIX):
                continue
            kind, _, name = op.key[len(SCOPES_PREFIX) :].partition("/")
            if isinstance(op, Put):
                self._scopes[(kind, name)] = Scope.from_json(op.value)
                self._versions[(kind, name)] = (op.expect_version or 0) + 1
            else:
                self._scopes.pop((kind, name), None)
                self._versions.pop((kind, name), None)

    async def adopt(self, refs: Iterable[ObjectRef], scope_of: Scope) -> int:
        """Give objects without a scope (made before environments existed) ``scope_of``'s
        environment and owner; one atomic commit. Returns how many."""
        ops: list[Op] = []
        for ref in refs:
            if ref in self._scopes:
                continue
            scope = Scope(scope_of.env, ref[1], scope_of.owner, ADOPTED)
            ops.append(Put(scope_key(ref), scope.to_json(), 0))
        if ops:
            await self._store.commit(ops)
            self.committed(ops)
        return len(ops)


@runtime_checkable
class Claiming(Protocol):
    """An object state that holds something no other owner may hold at the same time (a
    Route's host): whoever holds it first keeps it."""

    def claims(self) -> Sequence[str]:
        """Readable claims, e.g. ``"host shop.example.com"``."""
        ...


def check_claims(
    states: Mapping[ObjectRef, object],
    current: Mapping[ObjectRef, object],
    scopes: ScopeIndex,
    owner: str,
    env: str,
    origins: Mapping[str, str],
) -> list[Problem]:
    """Problems for each claim in ``states`` (one owner's declared objects in ``env``) that
    an object of another owner or environment already holds.

    Without this, a second team's Route (or the same folder applied to a second
    environment without its own host) adds ``/admin`` to a host a first team serves, and
    the ingress would send that team's users and their credentials to it.
    """
    wanted = {ref: state.claims() for ref, state in states.items() if isinstance(state, Claiming)}
    kinds = {ref[0] for ref in wanted}
    held: dict[str, tuple[ObjectRef, Scope]] = {}
    for ref in sorted(r for r in current if r[0] in kinds and r not in states):
        state = current[ref]
        if not isinstance(state, Claiming):
            continue
        scope = scopes.get(ref)
        if scope is None or (scope.owner, scope.env) == (owner, env):
            continue
        for claim in state.claims():
            held.setdefault(claim, (ref, scope))
    problems: list[Problem] = []
    for ref, claims in sorted(wanted.items()):
        for claim in claims:
            found = next((held[c] for c in held if _overlap(claim, c)), None)
            if found is None:
                continue
            other, scope = found
            problems.append(
                _problem(
                    origins.get(f"{ref[0]}/{ref[1]}", ""),
                    f"{ref[0]} {ref[1]}: {claim} is already held by {other[0]} {scope.name} "
                    f"of {scope.owner or '?'} in environment {scope.env}; "
                    f"one owner per {claim.split()[0]}",
                )
            )
    return problems


def _overlap(a: str, b: str) -> bool:
    """Whether two claims overlap: equal, or a wildcard ``*.`` name covering the other
    (``host *.shop.test`` and ``host admin.shop.test``: nginx prefers the exact name, so
    the second would take traffic the first served)."""
    if a == b:
        return True
    return _covers(a, b) or _covers(b, a)


def _covers(wild: str, other: str) -> bool:
    kind, _, name = wild.partition(" ")
    other_kind, _, other_name = other.partition(" ")
    return (
        kind == other_kind
        and name.startswith("*.")
        and other_name.endswith(name[1:])
        and not other_name.startswith("*.")
    )


def _reserved(name: str, env: str, *, known: bool) -> str | None:
    """Why ``name`` cannot be declared in ``env``, or None.

    ``--`` belongs to the names Socle gives an object's copy in a second environment
    (``api--prod``), and readers that only see instances turn an internal name back into
    the declared one by cutting ``--<env>`` (:func:`socle.model.kinds.declared_name`). A
    manifest naming its app ``api--prod`` in ``prod`` would therefore answer for ``api`` in
    DNS and the service catalog (a neighbour's traffic), and one naming it ``api--prod``
    anywhere would squat the name ``prod``'s ``api`` needs. Names already recorded keep
    working (a home made before this rule), except the impersonating ones.
    """
    if name.endswith(f"{SEPARATOR}{env}"):
        return (
            f"a name ending in '{SEPARATOR}{env}' would read as the declared name "
            f"{name[: -len(SEPARATOR + env)]!r} in environment {env}; rename it"
        )
    if SEPARATOR in name and not known:
        return f"'{SEPARATOR}' is reserved for the names of copies in other environments; rename it"
    return None


def _problem(origin: str, reason: str) -> Problem:
    file, _, line = origin.rpartition(":")
    if not file or not line.isdigit():
        return Problem(origin or None, None, "metadata.name", reason)
    return Problem(file, int(line), "metadata.name", reason)


def rename(
    loaded: LoadedManifests,
    mapping: Mapping[ObjectRef, ObjectRef],
    kinds: KindRegistry | None = None,
) -> LoadedManifests:
    """``loaded`` with every object under its internal name, references included.

    Objects whose name and references do not change are kept as they are (the common
    case: one environment per name), so the planning caches keep working for them.
    """
    renamed = {old: new for old, new in mapping.items() if old != new}
    if not renamed:
        return loaded
    registry = kinds if kinds is not None else default_kinds()
    objects: dict[ObjectRef, BaseModel] = {}
    origins: dict[str, str] = {}
    for ref, obj in loaded.objects.items():
        new_ref = mapping.get(ref, ref)
        origin = loaded.origins.get(f"{ref[0]}/{ref[1]}")
        if origin is not None:
            origins[f"{new_ref[0]}/{new_ref[1]}"] = origin
        refs = registry.get(ref[0]).references(obj) if ref[0] in registry else []
        moved = [r for r in refs if r.ref in renamed]
        if new_ref == ref and not moved:
            objects[new_ref] = obj
            continue
        data: dict[str, Any] = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
        data["metadata"]["name"] = new_ref[1]
        for reference in moved:
            target = renamed[reference.ref]
            _set(data, reference.path, _written_like(_get(data, reference.path), target))
        objects[new_ref] = type(obj).model_validate(data)
    return LoadedManifests(loaded.root, loaded.env, dict(sorted(objects.items())), origins)


def _written_like(old: Any, target: ObjectRef) -> str:
    """A reference to ``target`` written the way the user wrote the old one."""
    if isinstance(old, str) and "/" in old:
        return f"{target[0]}/{target[1]}"
    return target[1]


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def _set(data: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value
