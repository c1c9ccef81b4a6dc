"""The engine: plan and apply manifests of every kind, record revisions, roll back, report.

The engine names no kind: each kind's handler (:mod:`socle.engine.kinds`) says what its
objects mean; the engine addresses objects by ``(kind, name)``.

Apply is three steps, each leaving a consistent record if the process dies midway:
1. load, validate and plan (nothing written when the manifests are bad, or when the plan
   would delete every object without ``allow_delete_all``);
2. prepare what the plan needs (revision ``building``; targets untouched, so a failure or a
   crash changes nothing that runs): Apps build releases, Volumes make their folders;
3. write every changed target and the revision status in one atomic commit (``rolling``),
   every write compare-and-swap, and hand the targets to their handlers in dependency
   order; deletes of objects others depended on wait until those have settled. After a
   restart the handlers resume from the stored targets, so the next start converges too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from opentelemetry import trace

from socle.engine import plancache
from socle.engine.controller import TemplateHook
from socle.engine.kinds import (
    ApplyContext,
    ExternalSink,
    FirewallSink,
    HandlerDeps,
    HandlerRegistry,
    build_handlers,
)
from socle.engine.migrate import migrate
from socle.engine.planner import Action, ObjectState, Plan, plan
from socle.engine.releases import ReleaseStore
from socle.engine.revisions import Revision, RevisionLog
from socle.engine.scopes import (
    DEFAULT_ENV,
    Scope,
    ScopeIndex,
    check_claims,
    path_owner,
    rename,
)
from socle.engine.secret_refs import SecretReader
from socle.engine.targets import TargetRecords
from socle.errors import ConflictError, ManifestError, NotFoundError, SocleError
from socle.model.cache import ManifestCache
from socle.model.kinds import ObjectRef, format_reference, parse_reference
from socle.model.loader import LoadedManifests, load
from socle.model.status import ChangePhase, RevisionStatus
from socle.runtime.driver import RuntimeDriver
from socle.runtime.volumes import VolumeProvider
from socle.state.store import Op, StateStore
from socle.tasks import TaskMonitor
from socle.tracing import current_trace_id, tracer

log = logging.getLogger(__name__)
_tracer = tracer("socle.engine")
TERMINAL_PHASES = frozenset(
    {
        ChangePhase.READY,
        ChangePhase.FAILED,
        ChangePhase.ROLLED_BACK,
        ChangePhase.SUPERSEDED,
        ChangePhase.BUILD_FAILED,
        ChangePhase.DELETED,
    }
)
"""Phases after which an object's rollout span ends."""

PROGRESS_SAVE_SECONDS = 1.0
"""During builds, the revision's per-object phases are written at most this often, and at
most 5% of the time: each write is the whole revision record (it grows with the objects),
so writing it per object built would cost O(objects²)."""

CACHE_SAVE_SECONDS = 60.0
"""After an apply, the planning caches are saved unless they were in the last minute."""

DELETE_WAIT_SECONDS = 0.2
"""How often a pending delete checks whether the objects that depended on it settled."""


@dataclass
class Desired:
    """A fully resolved desired state: every object's planner state, by (kind, name)."""

    states: dict[ObjectRef, ObjectState]
    root: Path | None
    """Manifest repository, for builds; None for a re-apply of recorded states."""
    owner: str = ""
    """The source these objects come from; empty: every object (not scoped)."""
    environment: str = ""
    scopes: dict[ObjectRef, Scope] = field(default_factory=dict)
    """The scope each object will have (internal ref -> environment, declared name, owner)."""

    @property
    def scoped(self) -> bool:
        return bool(self.owner)

    def to_dict(self, handlers: HandlerRegistry) -> dict[str, Any]:
        by_kind: dict[str, dict[str, Any]] = {}
        for (kind, name), state in self.states.items():
            by_kind.setdefault(kind, {})[name] = handlers.get(kind).encode(name, state)
        scopes = {f"{k}/{n}": s.to_dict() for (k, n), s in self.scopes.items()}
        return {"objects": by_kind, "scopes": scopes}


class EngineEvents(Protocol):
    """What the engine tells an observer (the control plane's metrics); calls never block."""

    def planned(self, seconds: float) -> None:
        """A plan was computed in ``seconds``."""

    def applied(self, status: str, seconds: float) -> None:
        """An apply ended with ``status`` (succeeded, failed, ...) ``seconds`` after it began."""


class _NoEvents:
    def planned(self, seconds: float) -> None:
        pass

    def applied(self, status: str, seconds: float) -> None:
        pass


class Engine:
    def __init__(
        self,
        store: StateStore,
        driver: RuntimeDriver,
        releases: ReleaseStore,
        *,
        secrets: SecretReader | None = None,
        volumes: VolumeProvider | None = None,
        loader: Callable[[Path, str | None], LoadedManifests] = load,
        secret_check_seconds: float = 10.0,
        handlers: Callable[[HandlerDeps], HandlerRegistry] = build_handlers,
        tasks: TaskMonitor | None = None,
        cache_file: Path | None = None,
        instance_env: Mapping[str, str] | None = None,
        externals: ExternalSink | None = None,
        events: EngineEvents | None = None,
        templates: TemplateHook | None = None,
        firewall: FirewallSink | None = None,
        log_query_check: Callable[[str], str | None] | None = None,
    ) -> None:
        self._store = store
        self._events: EngineEvents = events if events is not None else _NoEvents()
        self._driver = driver
        self._releases = releases
        self.manifest_cache = ManifestCache()
        """Parsed and validated manifests kept between plans (default loader only)."""
        self._loader = (
            functools.partial(load, cache=self.manifest_cache) if loader is load else loader
        )
        self._secrets = secrets
        self._secret_check_seconds = secret_check_seconds
        self.revisions = RevisionLog(store)
        self.targets = TargetRecords(store)
        self.scopes = ScopeIndex(store)
        """Environment and owner of every object (see :mod:`socle.engine.scopes`)."""
        self._staging: dict[ObjectRef, Scope] = {}
        """Scopes of the plan being committed: handlers' records read them before the
        commit makes them part of :attr:`scopes`."""
        monitor = tasks if tasks is not None else TaskMonitor()
        self.handlers = handlers(
            HandlerDeps(
                driver=driver,
                releases=releases,
                targets=self.targets,
                report=self._report,
                secrets=secrets,
                volumes=volumes,
                tasks=monitor,
                instance_env=dict(instance_env or {}),
                externals=externals,
                environment=self.environment_of,
                templates=templates,
                firewall=firewall,
                log_query_check=log_query_check,
            )
        )
        self._apply_lock = asyncio.Lock()
        self._pending: dict[int, set[str]] = {}
        self._revision_lock = asyncio.Lock()
        self._marks: dict[int, list[tuple[set[str], str, str]]] = {}
        self._tasks = monitor.group("engine")
        self._cache_file = cache_file
        """Where the planning caches are kept across restarts (None: not kept)."""
        self._cache_saved = 0.0
        self._cache_adopted = asyncio.Event()
        """Set once the saved caches were adopted (or there were none): plans wait for it."""
        self._cache_complete = False
        """Whether adoption ran to its end: a cache cut short is never saved over the file."""
        self._spans: dict[int, _ApplySpans] = {}
        """The open spans of applies still rolling out (ended with their revision)."""

    def environment_of(self, ref: ObjectRef) -> str:
        """The environment of object ``ref`` (the plan being committed first)."""
        staged = self._staging.get(ref)
        return staged.env if staged is not None else self.scopes.environment(ref)

    def handler(self, kind: str) -> Any:
        """The handler of ``kind`` (typed Any: callers know which handler class they want)."""
        return self.handlers.get(kind)

    # Compatibility views of the App handler, used by status code and tests.
    @property
    def controller(self) -> Any:
        return self.handler("App").controller

    @property
    def state_cache(self) -> Any:
        return self.handler("App").state_cache

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if await migrate(self._store):
            # A home made by an earlier version: its releases carry no seal yet.
            await asyncio.to_thread(self._releases.seal_unsealed)
        # In the background: unpickling 10,000 validated objects takes seconds, and the
        # control plane should answer meanwhile; the first plan waits for it.
        self._tasks.spawn(self._adopt_cache(), "adopt-plan-cache")
        stored = await self.targets.load()
        await self.scopes.load()
        await self._adopt_unscoped(stored)
        for kind, records in stored.items():
            if kind not in self.handlers:
                log.error("state holds %d %s target(s) but no handler knows the kind; "
                          "they are kept untouched", len(records), kind)  # fmt: skip
                continue
            pending = await self.handlers.get(kind).restore(records)
            for name, number in pending.items():
                self._pending.setdefault(number, set()).add(format_reference((kind, name)))
        for revision in await self.revisions.list(limit=20):
            if revision.status == RevisionStatus.BUILDING:
                revision.status = RevisionStatus.INTERRUPTED
                revision.message = (
                    "the control plane stopped during the build; nothing was changed. "
                    "Run apply again."
                )
                await self.revisions.save(revision)
            elif revision.status == RevisionStatus.ROLLING and revision.number not in self._pending:
                await self._finish(revision)
        for handler in self.handlers.values():
            await handler.start()
        if self._secrets is not None:
            self._tasks.spawn(self._watch_refresh(), "watch-refresh")

    async def _adopt_unscoped(self, stored: dict[str, dict[str, bytes]]) -> None:
        """Objects made before environments existed get the environment and owner of the
        last revision that applied a folder (a home keeps running as it was)."""
        refs = [(kind, name) for kind, records in stored.items() for name in records]
        if all(self.scopes.get(ref) is not None for ref in refs):
            return
        scope = Scope(DEFAULT_ENV, "", "")
        for revision in await self.revisions.list(limit=0):
            if revision.source and revision.source != "secrets":
                owner, env = revision_scope(revision)
                scope = Scope(env, "", owner)
                break
        adopted = await self.scopes.adopt(refs, scope)
        if adopted:
            log.warning(
                "%d object(s) made before environments existed now belong to environment "
                "%s, owner %s",
                adopted,
                scope.env,
                scope.owner or "?",
            )

    async def stop(self) -> None:
        for handler in self.handlers.values():
            await handler.stop()
        await self._tasks.close()
        await self.save_cache()

    # -- planning caches across restarts -----------------------------------------------

    async def _adopt_cache(self) -> None:
        try:
            path = self._cache_file
            if path is None or not isinstance(self._loader, functools.partial):
                return
            content = await asyncio.to_thread(plancache.load, path)
            if content is None:
                return
            try:
                self.manifest_cache.adopt(content["manifests"])
                for kind, exported in content["handlers"].items():
                    if kind in self.handlers:
                        self.handlers.get(kind).adopt_cache(exported)
            except Exception:
                log.exception("ignoring the plan cache %s", path)
        finally:
            self._cache_complete = not _cancelling()
            self._cache_adopted.set()

    async def save_cache(self) -> None:
        """Save the planning caches (at stop, and after applies at most every
        :data:`CACHE_SAVE_SECONDS`); failures are logged, never fatal."""
        path = self._cache_file
        if path is None or not isinstance(self._loader, functools.partial):
            return
        if not self._cache_complete:
            return  # stopped before the saved caches were adopted: keep the file as it is

        def save() -> None:
            content = {
                "manifests": self.manifest_cache.export(),
                "handlers": {kind: h.export_cache() for kind, h in self.handlers.items()},
            }
            plancache.save(path, content)

        try:
            await asyncio.to_thread(save)
            self._cache_saved = time.monotonic()
        except Exception:
            log.exception("saving the plan cache to %s failed", path)

    # -- plan --------------------------------------------------------------------------

    def _current(self) -> dict[ObjectRef, ObjectState]:
        current: dict[ObjectRef, ObjectState] = {}
        for kind, handler in self.handlers.items():
            for name, state in handler.current().items():
                current[(kind, name)] = state
        return current

    def current_of(self, desired: Desired) -> dict[ObjectRef, ObjectState]:
        """What a plan for ``desired`` compares with: the objects its owner has in its
        environment (every object for an unscoped re-apply)."""
        current = self._current()
        if not desired.scoped:
            return current
        owned = self.scopes.owned(desired.owner, desired.environment)
        owned |= {ref for ref in desired.scopes if self.scopes.adopted(ref)}
        return {ref: state for ref, state in current.items() if ref in owned}

    async def desired_from(
        self,
        path: Path,
        env: str | None,
        *,
        environment: str | None = None,
        owner: str | None = None,
        prune: bool = True,
    ) -> tuple[LoadedManifests, Desired]:
        """The desired state of the manifests under ``path``.

        ``env`` picks the overlay (``environments/<env>/``); ``environment`` is the scope
        the objects live in (default: ``env``, else ``default``); ``owner`` the source that
        declares them (default: the folder itself, ``path:<folder>``).
        """
        await self._cache_adopted.wait()
        loaded = await asyncio.to_thread(self._loader, path, env)
        environment = environment or env or DEFAULT_ENV
        owner = owner or path_owner(loaded.root)
        mapping = self.scopes.allocate(environment, owner, loaded.objects, loaded.origins)
        loaded = await asyncio.to_thread(rename, loaded, mapping)
        scopes = {
            new: Scope(environment, old[1], owner, loaded.origins.get(f"{new[0]}/{new[1]}", ""))
            for old, new in mapping.items()
        }
        states: dict[ObjectRef, ObjectState] = {}
        for kind, handler in self.handlers.items():
            for name, state in (await handler.desired(loaded)).items():
                states[(kind, name)] = state
        problems = check_claims(
            states, self._current(), self.scopes, owner, environment, loaded.origins
        )
        if problems:
            raise ManifestError(
                problems,
                hint="use a host of your own (an overlay can change it per environment); "
                "nothing was changed",
            )
        if not prune:
            # Objects that left the source are kept as they are (reported, not deleted).
            current = self._current()
            for ref in self.scopes.owned(owner, environment) - set(states):
                if ref in current:
                    states[ref] = current[ref]
                    kept = self.scopes.get(ref)
                    if kept is not None:
                        scopes[ref] = kept
        return loaded, Desired(states, loaded.root, owner, environment, scopes)

    async def plan(
        self,
        path: Path,
        env: str | None,
        *,
        allow_delete_all: bool = False,
        environment: str | None = None,
        owner: str | None = None,
        prune: bool = True,
    ) -> tuple[LoadedManifests, Plan]:
        began = time.monotonic()
        with _tracer.start_as_current_span("plan", attributes={"socle.env": env or ""}):
            loaded, desired = await self.desired_from(
                path, env, environment=environment, owner=owner, prune=prune
            )
            current = self.current_of(desired)
            result = plan(desired.states, current, allow_delete_all=allow_delete_all)
        self._events.planned(time.monotonic() - began)
        return loaded, result

    # -- apply -------------------------------------------------------------------------

    async def apply(
        self,
        path: Path,
        env: str | None,
        who: str,
        *,
        allow_delete_all: bool = False,
        environment: str | None = None,
        owner: str | None = None,
        commit: dict[str, str] | None = None,
        prune: bool = True,
    ) -> tuple[Plan, Revision | None]:
        """Plan and start applying; returns at once with the revision (None if no change).

        Only the objects ``owner`` (default: the folder) has in ``environment`` (default:
        ``env``) are created, updated or deleted."""
        for _ in range(5):
            with _tracer.start_as_current_span(
                "load manifests", attributes={"socle.env": env or ""}
            ):
                loaded, desired = await self.desired_from(
                    path, env, environment=environment, owner=owner, prune=prune
                )
            try:
                return await self._start_apply(
                    desired,
                    who=who,
                    source=str(loaded.root),
                    env=env,
                    digest=loaded.digest(),
                    allow_delete_all=allow_delete_all,
                    commit=commit,
                )
            except _StaleScopes:
                continue  # another apply claimed names meanwhile: allocate again
        raise ConflictError(
            "other applies keep claiming the same names; nothing was changed",
            hint="apply again",
        )

    async def rollback_object(
        self, kind: str, name: str, who: str, *, scan: int = 100
    ) -> tuple[Plan, Revision | None]:
        """Roll one object (an app) back to its previous healthy state: the state it has in
        the newest revision that *succeeded* and holds it differently from now. Every other
        object stays as it is (a remediation must not undo other teams' changes).

        NotFoundError when no such revision is among the last ``scan`` (or its release is
        no longer kept)."""
        current = self._current()
        ref: ObjectRef = (kind, name)
        now = current.get(ref)
        if now is None:
            raise NotFoundError(f"{kind}/{name} is not applied")
        handler = self.handlers.get(kind)
        for revision in await self.revisions.list(limit=scan):  # newest first
            if revision.status != RevisionStatus.SUCCEEDED:
                continue
            try:
                entry = (await self.revisions.desired(revision.number))["objects"].get(kind, {})
            except NotFoundError:
                continue
            if name not in entry:
                continue
            old = handler.decode(entry[name])
            if old.comparable() == now.comparable():
                continue  # what runs now: not a *previous* state
            await handler.check_reapply({name: old}, revision.number)
            states = dict(current)
            states[ref] = old
            return await self._start_apply(
                Desired(states, None),
                who=who,
                source=revision.source,
                env=revision.env,
                digest=revision.digest,
                rollback_of=revision.number,
                allow_delete_all=True,
            )
        raise NotFoundError(
            f"no earlier healthy revision of {kind}/{name} to roll back to",
            hint="see `socle history`",
        )

    async def rollback(self, number: int, who: str) -> tuple[Plan, Revision | None]:
        """Re-apply the desired state of revision ``number`` (kept releases, no rebuild),
        within that revision's source and environment."""
        desired, old = await self.recorded(number)
        if not desired.scoped:
            # A re-apply of every object (a changed secret) holds every owner's objects in
            # every environment: rolling back to it would revert and delete other teams'
            # objects made since. Rollbacks stay within one source and environment.
            raise ConflictError(
                f"revision {number} re-applied every object ({old.source or 'no source'}); "
                "it belongs to no source or environment",
                hint="roll back a revision of the folder or source you want to restore",
            )
        return await self._start_apply(
            desired,
            who=who,
            source=old.source,
            env=old.env,
            digest=old.digest,
            rollback_of=number,
            allow_delete_all=True,  # the revision being rolled back to is what was asked
            commit=old.commit,
        )

    async def recorded(self, number: int) -> tuple[Desired, Revision]:
        """The desired state revision ``number`` applied, scoped as it was."""
        data = await self.revisions.desired(number)
        old = await self.revisions.get(number)
        owner, environment = revision_scope(old)
        states: dict[ObjectRef, ObjectState] = {}
        for kind, entries in data["objects"].items():
            if kind not in self.handlers:
                raise NotFoundError(f"revision {number} holds {kind} objects, unknown here")
            handler = self.handlers.get(kind)
            decoded = {name: handler.decode(entry) for name, entry in entries.items()}
            await handler.check_reapply(decoded, number)
            states.update({(kind, name): state for name, state in decoded.items()})
        recorded = data.get("scopes", {})
        scopes: dict[ObjectRef, Scope] = {}
        for ref in states:
            found = recorded.get(f"{ref[0]}/{ref[1]}")
            existing = self.scopes.get(ref)
            scopes[ref] = (
                Scope.from_dict(found) if found else existing or Scope(environment, ref[1], owner)
            )
        return Desired(states, None, owner, environment, scopes), old

    async def _start_apply(
        self,
        desired: Desired,
        *,
        who: str,
        source: str,
        env: str | None,
        digest: str,
        rollback_of: int | None = None,
        allow_delete_all: bool = False,
        commit: dict[str, str] | None = None,
    ) -> tuple[Plan, Revision | None]:
        await self._apply_lock.acquire()
        span = None
        try:
            for ref, scope in desired.scopes.items():
                known = self.scopes.get(ref)
                claimable = self.scopes.adopted(ref)
                if (
                    known is not None
                    and not claimable
                    and (known.env, known.owner)
                    != (
                        scope.env,
                        scope.owner,
                    )
                ):
                    raise _StaleScopes(ref)
            current = self.current_of(desired)
            with _tracer.start_as_current_span("plan"):
                the_plan = plan(desired.states, current, allow_delete_all=allow_delete_all)
            if the_plan.empty:
                self._apply_lock.release()
                return the_plan, None
            # The apply's span lives until the revision settles (rollouts included): its
            # trace answers "why did this deploy take 40 s".
            span = _tracer.start_span("apply", attributes={"socle.who": who})
            with trace.use_span(span, end_on_exit=False):
                trace_id = current_trace_id()
            revision = await self.revisions.create(
                {
                    "who": who,
                    "source": source,
                    "env": env,
                    "digest": digest,
                    "plan": the_plan.to_dict(),
                    "rollback_of": rollback_of,
                    "trace_id": trace_id,
                    "apps": {
                        c.label: {"phase": ChangePhase.PENDING, "message": ""}
                        for c in the_plan.changes
                    },
                    "owner": desired.owner,
                    "environment": desired.environment,
                    "commit": commit,
                },
                desired.to_dict(self.handlers),
            )
        except BaseException as exc:
            self._apply_lock.release()
            if span is not None:
                _end(span, error=repr(exc))
            raise
        span.set_attribute("socle.revision", revision.number)
        self._spans[revision.number] = _ApplySpans(span)
        with trace.use_span(span, end_on_exit=False):
            self._tasks.spawn(
                self._execute(desired, the_plan, revision), f"apply:{revision.number}"
            )
        return the_plan, revision

    async def _execute(self, desired: Desired, the_plan: Plan, revision: Revision) -> None:
        try:
            with _tracer.start_as_current_span("build"):
                prepared = await self._prepare(desired, the_plan, revision)
            if prepared:
                with _tracer.start_as_current_span("commit"):
                    await self._commit(desired, the_plan, revision)
            else:
                self._end_apply(revision.number, revision.message)
        except Exception as exc:
            self._end_apply(revision.number, repr(exc))
            log.exception("apply of revision %s failed", revision.number)
            revision.status = RevisionStatus.FAILED
            revision.message = exc.message if isinstance(exc, SocleError) else repr(exc)
            if isinstance(exc, ConflictError):
                revision.message += (
                    " (another writer changed the targets meanwhile; nothing of this "
                    "revision was committed: plan and apply again)"
                )
                await self._reload_targets()
            await self.revisions.save(revision)
            self._ended(revision)
        finally:
            self._apply_lock.release()

    def _by_kind(self, the_plan: Plan) -> dict[str, list[Any]]:
        groups: dict[str, list[Any]] = {}
        for change in the_plan.changes:
            groups.setdefault(change.kind, []).append(change)
        return groups

    async def _prepare(self, desired: Desired, the_plan: Plan, revision: Revision) -> bool:
        """Each kind's work before the commit, kinds in the order of the plan's first
        change of each (dependencies first). False (revision failed) if any failed."""
        loop = asyncio.get_running_loop()
        next_save = loop.time() + PROGRESS_SAVE_SECONDS
        saving = False

        async def save() -> None:
            await self.revisions.save(revision)

        async def progress(label: str, phase: str, message: str) -> None:
            nonlocal next_save, saving
            revision.apps[label] = {"phase": phase, "message": message}
            # Throttled: the commit (or the failure) writes the final phases anyway.
            if saving or loop.time() < next_save:
                return
            saving = True
            started = loop.time()
            try:
                await self.revisions.save(revision)
            finally:
                took = loop.time() - started
                saving, next_save = False, loop.time() + max(PROGRESS_SAVE_SECONDS, 20 * took)

        failures: dict[str, str] = {}
        for kind, changes in self._by_kind(the_plan).items():
            handler = self.handlers.get(kind)

            def mark(name: str, phase: str, message: str, kind: str = kind) -> None:
                revision.apps[format_reference((kind, name))] = {"phase": phase, "message": message}

            async def report(name: str, phase: str, message: str, kind: str = kind) -> None:
                await progress(format_reference((kind, name)), phase, message)

            ctx = ApplyContext(revision.number, desired.root, mark, save, report)
            wanted = {c.name: desired.states[c.ref] for c in changes if c.ref in desired.states}
            found = await handler.prepare(changes, wanted, ctx)
            failures.update({format_reference((kind, n)): m for n, m in found.items()})
            if failures:
                break
        if not failures:
            return True
        for label, message in failures.items():
            phase = (
                ChangePhase.BUILD_FAILED
                if parse_reference(label)[0] == "App"
                else ChangePhase.FAILED
            )
            revision.apps[label] = {"phase": phase, "message": message}
        revision.status = RevisionStatus.FAILED
        revision.message = next(iter(failures.values())) + " (nothing was changed)"
        await self.revisions.save(revision)
        self._ended(revision)
        return False

    async def _commit(self, desired: Desired, the_plan: Plan, revision: Revision) -> None:
        ops: list[Op] = []
        applied: dict[str, dict[str, ObjectState | None]] = {}
        self._staging = dict(desired.scopes)
        for change in the_plan.changes:
            ref = change.ref
            handler = self.handlers.get(change.kind)
            scope_op = (
                self.scopes.delete_op(ref)
                if change.action == Action.DELETE
                else self.scopes.put_op(ref, desired.scopes[ref])
                if ref in desired.scopes
                else None
            )
            if scope_op is not None:
                ops.append(scope_op)
            if change.action == Action.DELETE:
                ops.append(self.targets.delete_op(ref))
                applied.setdefault(change.kind, {})[change.name] = None
                revision.apps[change.label] = {"phase": ChangePhase.DELETING, "message": ""}
                continue
            state = desired.states[ref]
            ops.append(
                self.targets.put_op(ref, handler.record(change.name, state, revision.number))
            )
            applied.setdefault(change.kind, {})[change.name] = state
            revision.apps[change.label] = {"phase": ChangePhase.ROLLING, "message": ""}
        changed = {c.ref for c in the_plan.changes}
        for ref, scope in desired.scopes.items():
            if ref not in changed and self.scopes.adopted(ref):
                claim = self.scopes.put_op(ref, scope)  # a source takes an adopted object
                if claim is not None:
                    ops.append(claim)
        revision.status = RevisionStatus.ROLLING
        ops.append(self.targets.generation_op())
        ops.append(self.revisions.put_op(revision))
        try:
            await self._store.commit(ops)
        finally:
            self._staging = {}
        self.targets.committed(ops)
        self.revisions.committed(ops)
        self.scopes.committed(ops)

        labels = {c.label for c in the_plan.changes}
        spans = self._spans.get(revision.number)
        if spans is not None:
            for label in sorted(labels):
                spans.rollouts[label] = _tracer.start_span(
                    f"rollout {label}",
                    context=trace.set_span_in_context(spans.apply),
                    attributes={"socle.object": label, "socle.revision": revision.number},
                )
        waiters = self._delete_waiters(the_plan)
        self._supersede(labels)
        self._pending[revision.number] = set(labels)
        ready: set[str] = set()
        for kind, objects in applied.items():
            pending = await self.handlers.get(kind).activate(objects, revision.number)
            ready |= {format_reference((kind, n)) for n in objects if n not in pending}
        if ready:
            self._spawn(self._mark(revision.number, ready, ChangePhase.READY, ""))
        for (kind, name), waiting in waiters.items():
            self._spawn(self._delete_when_free(kind, name, revision.number, waiting))
        if time.monotonic() - self._cache_saved > CACHE_SAVE_SECONDS:
            self._cache_saved = time.monotonic()
            self._spawn(self.save_cache())

    def _delete_waiters(self, the_plan: Plan) -> dict[ObjectRef, set[str]]:
        """For each delete, the objects of this plan that depended on it before the plan
        (an App stops using a Volume before the Volume goes). Read before activation."""
        deletes = [c.ref for c in the_plan.changes if c.action == Action.DELETE]
        if not deletes:
            return {}
        before = self._current()
        depends = {
            c.ref: set(before[c.ref].dependencies()) for c in the_plan.changes if c.ref in before
        }
        return {
            ref: {
                c.label for c in the_plan.changes if c.ref != ref and ref in depends.get(c.ref, ())
            }
            for ref in deletes
        }

    async def _delete_when_free(self, kind: str, name: str, number: int, waiters: set[str]) -> None:
        while waiters & self._pending.get(number, set()):
            await asyncio.sleep(DELETE_WAIT_SECONDS)
        await self.handlers.get(kind).delete(name, number)

    def _supersede(self, labels: set[str]) -> None:
        for number, pending in list(self._pending.items()):
            touched = pending & labels
            if not touched:
                continue
            pending -= touched
            self._spawn(
                self._mark(
                    number, touched, ChangePhase.SUPERSEDED, "changed again by a newer revision"
                )
            )

    async def _reload_targets(self) -> None:
        """After a lost race: read every target again so the next plan starts from what
        the other writer stored."""
        stored = await self.targets.load()
        await self.scopes.load()
        for kind, handler in self.handlers.items():
            await handler.restore(stored.get(kind, {}))

    def _spawn(self, coro: Any) -> None:
        self._tasks.spawn(coro, getattr(coro, "__name__", "task"))

    # -- changes on their own (rotated secrets) ----------------------------------------

    async def _watch_refresh(self) -> None:
        """Re-apply objects whose state changed on their own (e.g. an app's referenced
        secret got a new version): the change goes through the same health-gated update."""
        while True:
            await asyncio.sleep(self._secret_check_seconds)
            try:
                await self.roll_changed_secrets()
            except Exception:
                log.exception("checking for changed objects failed; will retry")

    async def roll_changed_secrets(self) -> Revision | None:
        if self._apply_lock.locked():
            return None
        states = self._current()
        changed = False
        for kind, handler in self.handlers.items():
            for name, state in (await handler.refreshed()).items():
                states[(kind, name)] = state
                changed = True
        if not changed:
            return None
        _, revision = await self._start_apply(
            Desired(states, None),
            who="socle (secret changed)",
            source="secrets",
            env=None,
            digest="",
        )
        return revision

    # -- outcomes ----------------------------------------------------------------------

    def _report(self, number: int, kind: str, name: str, phase: str, message: str) -> None:
        """An object's outcome, reported by its handler after the commit."""
        self._spawn(self._mark(number, {format_reference((kind, name))}, phase, message))

    async def _mark(self, number: int, labels: set[str], phase: str, message: str) -> None:
        """Record per-object outcomes. Each write rewrites the whole revision record, so
        outcomes that arrive together are queued and applied in one read-modify-write, in
        order (compare-and-swap: a lost race is read again and applied again)."""
        self._marks.setdefault(number, []).append((set(labels), phase, message))
        async with self._revision_lock:
            batch = self._marks.pop(number, None)
            if not batch:
                return
            for _ in range(5):
                try:
                    await self._apply_marks(number, batch)
                    return
                except ConflictError:
                    log.warning("revision %s changed meanwhile; applying outcomes again", number)
            log.error("could not record outcomes of revision %s: it keeps changing", number)

    async def _apply_marks(self, number: int, batch: list[tuple[set[str], str, str]]) -> None:
        try:
            revision = await self.revisions.get(number)
        except NotFoundError:
            return
        if revision.done:
            return  # e.g. an automatic rollback settling after its revision was recorded
        pending = self._pending.get(number)
        for labels, phase, message in batch:
            for label in labels:
                revision.apps[label] = {"phase": phase, "message": message}
                self._end_rollout(number, label, phase, message)
            if pending is not None:
                pending -= labels
            if revision.status == RevisionStatus.ROLLING and not pending:
                self._pending.pop(number, None)
                await self._finish(revision)
                return
        await self.revisions.save(revision)

    async def _finish(self, revision: Revision) -> None:
        phases = {entry["phase"] for entry in revision.apps.values()}
        failures = [
            f"{name}: {entry['message']}"
            for name, entry in revision.apps.items()
            if entry["phase"] in (ChangePhase.FAILED, ChangePhase.ROLLED_BACK)
        ]
        if ChangePhase.FAILED in phases:
            revision.status = RevisionStatus.FAILED
        elif ChangePhase.ROLLED_BACK in phases:
            revision.status = RevisionStatus.ROLLED_BACK
        elif phases <= {ChangePhase.SUPERSEDED}:
            revision.status = RevisionStatus.SUPERSEDED
        else:
            revision.status = RevisionStatus.SUCCEEDED
        revision.message = "; ".join(failures)
        await self.revisions.save(revision)
        self._end_apply(revision.number, revision.message if failures else "", revision.status)
        self._ended(revision)

    def _ended(self, revision: Revision) -> None:
        self._events.applied(str(revision.status), max(0.0, time.time() - revision.created))

    # -- traces ------------------------------------------------------------------------

    def _end_rollout(self, number: int, label: str, phase: str, message: str) -> None:
        spans = self._spans.get(number)
        if spans is None or phase not in TERMINAL_PHASES:
            return
        span = spans.rollouts.pop(label, None)
        if span is not None:
            span.set_attribute("socle.phase", phase)
            failed = phase in (ChangePhase.FAILED, ChangePhase.ROLLED_BACK)
            _end(span, error=message if failed else "")

    def _end_apply(self, number: int, error: str, status: str = RevisionStatus.FAILED) -> None:
        spans = self._spans.pop(number, None)
        if spans is None:
            return
        for span in spans.rollouts.values():
            _end(span, error=error)
        spans.apply.set_attribute("socle.status", str(status))
        _end(spans.apply, error=error)

    # -- status ------------------------------------------------------------------------

    async def status(self) -> list[dict[str, Any]]:
        """One row per object of every kind (``kind``, ``name``, ``health``, ...), with its
        ``environment``, ``declared`` name and ``owner``."""
        rows: list[dict[str, Any]] = []
        for handler in self.handlers.values():
            rows.extend(await handler.status())
        for row in rows:
            scope = self.scopes.get((row["kind"], row["name"]))
            row["environment"] = scope.env if scope else DEFAULT_ENV
            row["declared"] = scope.name if scope else row["name"]
            row["owner"] = scope.owner if scope else ""
        return rows


class _StaleScopes(Exception):
    """Names were allocated before another apply committed the same names (retry)."""


def revision_scope(revision: Revision) -> tuple[str, str]:
    """``(owner, environment)`` of a revision; revisions made before sources existed were
    applies of a folder (their ``source``) to their ``env``."""
    if revision.owner:
        return revision.owner, revision.environment or DEFAULT_ENV
    if not revision.source or revision.source == "secrets":
        return "", ""  # a re-apply of every object (a rotated secret): not scoped
    return path_owner(Path(revision.source)), revision.env or DEFAULT_ENV


@dataclass
class _ApplySpans:
    apply: trace.Span
    rollouts: dict[str, trace.Span] = field(default_factory=dict)


def _end(span: trace.Span, *, error: str = "") -> None:
    if error:
        span.set_status(trace.Status(trace.StatusCode.ERROR, error[:500]))
    span.end()


def _cancelling() -> bool:
    """Whether the running task is being cancelled (inside its ``finally``)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
