"""The engine: plan and apply manifests, record revisions, roll back, report status.

Apply is three steps, each leaving a consistent record if the process dies midway:
1. load, validate and plan (nothing written when the manifests are bad);
2. build the releases the plan needs (revision ``building``; targets untouched, so a
   build failure or a crash changes nothing that runs);
3. write every changed target and the revision status in one atomic commit (``rolling``)
   and hand the targets to the controller, which converges the runtime. After a restart the
   controller resumes from the stored targets, so the next start converges too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from socle.engine import secret_refs
from socle.engine.controller import AppView, Controller
from socle.engine.planner import Action, AppState, Plan, plan
from socle.engine.releases import Release, ReleaseStore
from socle.engine.revisions import Revision, RevisionLog
from socle.engine.secret_refs import SecretReader
from socle.engine.targets import (
    AppStateCache,
    Rollout,
    Target,
    app_state,
    state_from_dict,
    state_to_dict,
    target_key,
)
from socle.errors import BuildError, ConfigError, ManifestError, NotFoundError, Problem, SocleError
from socle.model.app import App
from socle.model.cache import ManifestCache
from socle.model.loader import LoadedManifests, load
from socle.model.status import ChangePhase, RevisionStatus, RolloutStatus
from socle.runtime.driver import ReleaseId, RuntimeDriver
from socle.state.store import Delete, Op, Put, StateStore
from socle.tasks import TaskMonitor

log = logging.getLogger(__name__)

PROGRESS_SAVE_SECONDS = 1.0
"""During builds, the revision's per-app phases are written at most this often, and at
most 5% of the time: each write is the whole revision record (it grows with the apps), so
writing it per app built would cost O(apps²)."""


@dataclass
class Desired:
    """A fully resolved desired state: app states plus where each app's code comes from."""

    states: dict[str, AppState]
    apps: dict[str, App]
    root: Path | None
    """Manifest repository, for builds; None for a rollback (releases must exist)."""

    def to_dict(self, roots: Mapping[str, str]) -> dict[str, Any]:
        return {
            "apps": {
                name: {**state_to_dict(state), "release_root": roots.get(name, "")}
                for name, state in self.states.items()
            }
        }


class Engine:
    def __init__(
        self,
        store: StateStore,
        driver: RuntimeDriver,
        releases: ReleaseStore,
        *,
        secrets: SecretReader | None = None,
        loader: Callable[[Path, str | None], LoadedManifests] = load,
        secret_check_seconds: float = 10.0,
        tasks: TaskMonitor | None = None,
    ) -> None:
        self._store = store
        self._driver = driver
        self._releases = releases
        self.manifest_cache = ManifestCache()
        """Parsed and validated manifests kept between plans (default loader only)."""
        self.state_cache = AppStateCache()
        """Planner states of unchanged apps, kept between plans."""
        self._loader = (
            functools.partial(load, cache=self.manifest_cache) if loader is load else loader
        )
        self._secrets = secrets
        self._secret_check_seconds = secret_check_seconds
        self.revisions = RevisionLog(store)
        monitor = tasks if tasks is not None else TaskMonitor()
        self.controller = Controller(
            driver, self._on_rollout, resolve_secrets=self._secret_env, tasks=monitor
        )
        self._apply_lock = asyncio.Lock()
        self._pending: dict[int, set[str]] = {}
        self._deleting: dict[str, int] = {}
        self._revision_lock = asyncio.Lock()
        self._marks: dict[int, list[tuple[set[str], str, str]]] = {}
        self._tasks = monitor.group("engine")

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        for record in await self._store.scan("apps/"):
            target = Target.from_json(record.value)
            self.controller.set_target(target.name, target)
            if target.rollout.status == RolloutStatus.PROGRESSING:
                self._pending.setdefault(target.rollout.revision, set()).add(target.name)
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
        self.controller.start()
        if self._secrets is not None:
            self._tasks.spawn(self._watch_secrets(), "watch-secrets")

    async def stop(self) -> None:
        await self.controller.stop()
        await self._tasks.close()

    # -- plan --------------------------------------------------------------------------

    def _current(self) -> dict[str, AppState]:
        return {name: t.state for name, t in self.controller.targets().items()}

    async def desired_from(self, path: Path, env: str | None) -> tuple[LoadedManifests, Desired]:
        loaded = await asyncio.to_thread(self._loader, path, env)
        cache = self.state_cache

        def compute() -> dict[str, AppState]:
            with self._releases.batch():
                return {
                    name: cache.state(app, self._releases.compute_id(loaded.root, app))
                    for name, app in loaded.apps.items()
                }

        states = await asyncio.to_thread(compute)
        problems: list[Problem] = []
        for name, app in loaded.apps.items():
            if not secret_refs.references(app):
                continue
            if self._secrets is None:
                raise ConfigError("apps reference secrets but no secrets engine is running")
            found, bad = await secret_refs.versions(
                self._secrets, app, loaded.origins.get(f"App/{name}")
            )
            problems.extend(bad)
            states[name] = cache.state(app, states[name].release, found)
        cache.end_pass()
        if problems:
            raise ManifestError(
                problems,
                hint="write the secret (`socle secrets put`) and a policy named app-<name> "
                "that grants read on it; nothing was changed",
            )
        return loaded, Desired(states, dict(loaded.apps), loaded.root)

    async def plan(self, path: Path, env: str | None) -> tuple[LoadedManifests, Plan]:
        loaded, desired = await self.desired_from(path, env)
        return loaded, plan(desired.states, self._current())

    # -- apply -------------------------------------------------------------------------

    async def apply(self, path: Path, env: str | None, who: str) -> tuple[Plan, Revision | None]:
        """Plan and start applying; returns at once with the revision (None if no change)."""
        loaded, desired = await self.desired_from(path, env)
        return await self._start_apply(
            desired, who=who, source=str(loaded.root), env=env, digest=loaded.digest()
        )

    async def rollback(self, number: int, who: str) -> tuple[Plan, Revision | None]:
        """Re-apply the desired state of revision ``number`` using its kept releases."""
        data = await self.revisions.desired(number)
        old = await self.revisions.get(number)
        states: dict[str, AppState] = {}
        apps: dict[str, App] = {}
        for name, entry in data["apps"].items():
            state = state_from_dict(entry)
            if self._releases.get(name, ReleaseId(state.release)) is None:
                raise NotFoundError(
                    f"release {state.release} of app {name} from revision {number} is no longer kept",
                    hint="apply that version of the manifests again to rebuild it",
                )
            states[name] = state
            apps[name] = App.model_validate(state.manifest)
        return await self._start_apply(
            Desired(states, apps, None),
            who=who,
            source=old.source,
            env=old.env,
            digest=old.digest,
            rollback_of=number,
        )

    async def _start_apply(
        self,
        desired: Desired,
        *,
        who: str,
        source: str,
        env: str | None,
        digest: str,
        rollback_of: int | None = None,
    ) -> tuple[Plan, Revision | None]:
        await self._apply_lock.acquire()
        try:
            the_plan = plan(desired.states, self._current())
            if the_plan.empty:
                self._apply_lock.release()
                return the_plan, None
            roots = {name: str(t.release_root) for name, t in self.controller.targets().items()}
            revision = await self.revisions.create(
                {
                    "who": who,
                    "source": source,
                    "env": env,
                    "digest": digest,
                    "plan": the_plan.to_dict(),
                    "rollback_of": rollback_of,
                    "apps": {
                        c.name: {"phase": ChangePhase.PENDING, "message": ""}
                        for c in the_plan.changes
                    },
                },
                desired.to_dict(roots),
            )
        except BaseException:
            self._apply_lock.release()
            raise
        self._tasks.spawn(self._execute(desired, the_plan, revision), f"apply:{revision.number}")
        return the_plan, revision

    async def _execute(self, desired: Desired, the_plan: Plan, revision: Revision) -> None:
        try:
            built = await self._build(desired, the_plan, revision)
            if built is None:
                return
            await self._commit(desired, the_plan, revision, built)
        except Exception as exc:
            log.exception("apply of revision %s failed", revision.number)
            revision.status = RevisionStatus.FAILED
            revision.message = exc.message if isinstance(exc, SocleError) else repr(exc)
            await self.revisions.save(revision)
        finally:
            self._apply_lock.release()

    async def _build(
        self, desired: Desired, the_plan: Plan, revision: Revision
    ) -> dict[str, Release] | None:
        wanted = [c.name for c in the_plan.changes if c.action != Action.DELETE]

        def kept() -> tuple[dict[str, Release], list[str]]:
            # Scale-only changes keep the current release: nothing to build.
            found: dict[str, Release] = {}
            missing: list[str] = []
            for name in wanted:
                state = desired.states[name]
                existing = self._releases.get(name, ReleaseId(state.release))
                if existing is not None:
                    found[name] = existing
                elif desired.root is None:
                    raise NotFoundError(f"release {state.release} of app {name} is not kept")
                else:
                    missing.append(name)
            return found, missing

        results, to_build = await asyncio.to_thread(kept)
        if not to_build:
            return results
        root = desired.root
        assert root is not None
        for name in to_build:
            revision.apps[name] = {"phase": ChangePhase.BUILDING, "message": ""}
        await self.revisions.save(revision)
        loop = asyncio.get_running_loop()
        next_save = loop.time() + PROGRESS_SAVE_SECONDS
        saving = False

        async def build_one(name: str) -> None:
            nonlocal next_save, saving
            release = await self._releases.ensure(root, desired.apps[name])
            results[name] = release
            revision.apps[name] = {"phase": ChangePhase.BUILT, "message": release.id}
            # Progress for `socle apply`, throttled: the final phases are written by the
            # commit (or the failure below) anyway.
            if not saving and loop.time() >= next_save:
                saving = True
                started = loop.time()
                try:
                    await self.revisions.save(revision)
                finally:
                    took = loop.time() - started
                    saving, next_save = False, loop.time() + max(PROGRESS_SAVE_SECONDS, 20 * took)

        # One walk of each workdir for all the apps that share it; ensure() still checks
        # every copy against its id, so a file changed meanwhile fails that build.
        with self._releases.batch():
            outcomes = await asyncio.gather(
                *(build_one(n) for n in to_build), return_exceptions=True
            )
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            for name, outcome in zip(to_build, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    message = outcome.message if isinstance(outcome, SocleError) else repr(outcome)
                    revision.apps[name] = {"phase": "build failed", "message": message}
            first = errors[0]
            revision.status = RevisionStatus.FAILED
            revision.message = (
                first.message if isinstance(first, BuildError | SocleError) else repr(first)
            ) + " (nothing was changed)"
            await self.revisions.save(revision)
            return None
        return results

    async def _commit(
        self, desired: Desired, the_plan: Plan, revision: Revision, built: dict[str, Release]
    ) -> None:
        now = time.time()
        ops: list[Op] = []
        new_targets: dict[str, Target | None] = {}
        for change in the_plan.changes:
            name = change.name
            if change.action == Action.DELETE:
                ops.append(Delete(target_key(name)))
                new_targets[name] = None
                revision.apps[name] = {"phase": "deleting", "message": ""}
                continue
            current = self.controller.target(name)
            state = desired.states[name]
            same_template = current is not None and current.state.template == state.template
            target = Target(
                state=state,
                release_root=built[name].root,
                rollout=Rollout(revision=revision.number, started=now),
                previous=None if current is None or same_template else current.state,
                previous_root=None if current is None or same_template else current.release_root,
                known_app=desired.apps.get(name),
            )
            if same_template and current is not None:
                target.previous, target.previous_root = current.previous, current.previous_root
            ops.append(Put(target_key(name), target.to_json()))
            new_targets[name] = target
            revision.apps[name] = {"phase": ChangePhase.ROLLING, "message": ""}
        revision.status = RevisionStatus.ROLLING
        ops.append(self.revisions.put_op(revision))
        await self._store.commit(ops)

        self._supersede(set(new_targets))
        self._pending[revision.number] = set(new_targets)
        for name, maybe in new_targets.items():
            if maybe is None:
                self._deleting[name] = revision.number
        self.controller.set_targets(new_targets)
        in_use: dict[str, set[ReleaseId]] = {}
        for name in built:
            kept = self.controller.target(name)
            in_use[name] = set()
            if kept is not None:
                in_use[name].add(ReleaseId(kept.state.release))
                if kept.previous is not None:
                    in_use[name].add(ReleaseId(kept.previous.release))

        def collect() -> None:
            for name, releases in in_use.items():
                try:
                    self._releases.gc(name, releases)
                except Exception:
                    # Committed already: a release left behind is only disk space.
                    log.exception("removing old releases of app %s failed", name)

        await asyncio.to_thread(collect)

    def _supersede(self, names: set[str]) -> None:
        for number, pending in list(self._pending.items()):
            touched = pending & names
            if not touched:
                continue
            pending -= touched
            self._spawn(
                self._mark(
                    number, touched, ChangePhase.SUPERSEDED, "changed again by a newer revision"
                )
            )

    def _spawn(self, coro: Any) -> None:
        self._tasks.spawn(coro, getattr(coro, "__name__", "task"))

    # -- secrets -----------------------------------------------------------------------

    async def _secret_env(self, target: Target) -> dict[str, str]:
        if not secret_refs.references(target.app):
            return {}
        if self._secrets is None:
            raise ConfigError(f"app {target.name} references secrets but no engine runs")
        return await secret_refs.values(self._secrets, target.app)

    async def _watch_secrets(self) -> None:
        """Roll apps whose referenced secrets got a new version (the version is part of
        the instance template, so the change goes through the same health-gated update)."""
        while True:
            await asyncio.sleep(self._secret_check_seconds)
            try:
                await self.roll_changed_secrets()
            except Exception:
                log.exception("checking secret versions failed; will retry")

    async def roll_changed_secrets(self) -> Revision | None:
        if self._secrets is None or self._apply_lock.locked():
            return None
        states: dict[str, AppState] = {}
        apps: dict[str, App] = {}
        changed = False
        for name, target in self.controller.targets().items():
            state = target.state
            if secret_refs.references(target.app):
                found, problems = await secret_refs.versions(self._secrets, target.app)
                if not problems and found != state.secrets:
                    state = app_state(target.app, state.release, found)
                    changed = True
            states[name] = state
            apps[name] = target.app
        if not changed:
            return None
        _, revision = await self._start_apply(
            Desired(states, apps, None),
            who="socle (secret changed)",
            source="secrets",
            env=None,
            digest="",
        )
        return revision

    # -- rollout events ----------------------------------------------------------------

    def _on_rollout(self, name: str, status: str, message: str) -> None:
        if status == "deleted":
            number = self._deleting.pop(name, None)
            if number is not None:
                self._spawn(self._mark(number, {name}, ChangePhase.DELETED, ""))
            return
        target = self.controller.target(name)
        if target is None:
            return
        number = target.rollout.revision
        if status == RolloutStatus.COMPLETE:
            self._spawn(self._persist_target(target))
            self._spawn(self._mark(number, {name}, ChangePhase.READY, ""))
            return
        spec = target.app.spec
        if spec.update.auto_rollback and target.previous is not None and target.previous_root:
            back = Target(
                state=target.previous,
                release_root=target.previous_root,
                rollout=Rollout(
                    revision=number, started=time.time(), status=RolloutStatus.PROGRESSING
                ),
            )
            back.rollout.message = f"rolled back after: {message}"
            self.controller.set_target(name, back)
            self._spawn(self._persist_target(back))
            self._spawn(
                self._mark(
                    number,
                    {name},
                    ChangePhase.ROLLED_BACK,
                    f"{message}; rolled back to release {target.previous.release}",
                )
            )
        else:
            self._spawn(self._persist_target(target))
            self._spawn(self._mark(number, {name}, ChangePhase.FAILED, message))

    async def _persist_target(self, target: Target) -> None:
        await self._store.put(target_key(target.name), target.to_json())

    async def _mark(self, number: int, names: set[str], phase: str, message: str) -> None:
        """Record per-app outcomes. Each write rewrites the whole revision record, so outcomes
        that arrive together are queued and applied in one read-modify-write, in order."""
        self._marks.setdefault(number, []).append((set(names), phase, message))
        async with self._revision_lock:
            batch = self._marks.pop(number, None)
            if batch:
                await self._apply_marks(number, batch)

    async def _apply_marks(self, number: int, batch: list[tuple[set[str], str, str]]) -> None:
        try:
            revision = await self.revisions.get(number)
        except NotFoundError:
            return
        if revision.done:
            return  # e.g. an automatic rollback settling after its revision was recorded
        pending = self._pending.get(number)
        for names, phase, message in batch:
            for name in names:
                revision.apps[name] = {"phase": phase, "message": message}
            if pending is not None:
                pending -= names
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

    # -- status ------------------------------------------------------------------------

    def status(self) -> list[AppView]:
        names = set(self.controller.targets()) | {i.app for i in self._driver.instances()}
        return [self.controller.view(name) for name in sorted(names)]
