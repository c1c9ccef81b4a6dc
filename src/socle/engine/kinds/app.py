"""The App kind's handler: releases, rollouts through the controller, secrets, status.

Planning turns each App into an :class:`~socle.engine.planner.AppState` (release id from
the code's digest, template digest, secret versions; cached between plans). ``prepare``
builds the releases a plan needs (nothing committed if one fails). After the commit the
targets go to the :class:`~socle.engine.controller.Controller`, which converges the
runtime and reports each app's outcome (ready, failed, rolled back, deleted).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from socle.engine import secret_refs
from socle.engine.controller import Controller, health_word
from socle.engine.kinds import ApplyContext, HandlerDeps
from socle.engine.planner import Action, AppState, Change, ObjectState
from socle.engine.releases import Release
from socle.engine.targets import (
    AppStateCache,
    Rollout,
    Target,
    app_state,
    state_from_dict,
    state_to_dict,
)
from socle.errors import (
    ConfigError,
    ConflictError,
    ManifestError,
    NotFoundError,
    Problem,
    SocleError,
)
from socle.model.app import App
from socle.model.loader import LoadedManifests
from socle.model.status import ChangePhase, RolloutStatus
from socle.runtime.driver import Mount, ReleaseId
from socle.tasks import TaskMonitor

log = logging.getLogger(__name__)

KIND = "App"


def _default_environment(_: tuple[str, str]) -> str:
    return "default"


class AppHandler:
    """Apps: long-running workloads with releases, replicas, health and rolling updates."""

    kind = KIND

    def __init__(self, deps: HandlerDeps) -> None:
        self._driver = deps.driver
        self._releases = deps.releases
        self._targets = deps.targets
        self._report = deps.report
        self._secrets = deps.secrets
        self._volumes = deps.volumes
        self.state_cache = AppStateCache()
        """Planner states of unchanged apps, kept between plans."""
        monitor = deps.tasks if deps.tasks is not None else TaskMonitor()
        self.controller = Controller(
            deps.driver,
            self._on_rollout,
            resolve_secrets=self._secret_env,
            resolve_mounts=self._mounts,
            tasks=monitor,
            instance_env=deps.instance_env,
            templates=deps.templates,
        )
        self._templates = deps.templates
        self._built: dict[int, dict[str, Release]] = {}
        self._staged: dict[int, dict[str, Target]] = {}
        self._known: dict[int, tuple[AppState, App]] = {}
        """The App each state of the last plan was made from (saves validating it again)."""
        self._deleting: dict[str, int] = {}
        self._tasks = monitor.group("apps")
        self._environment = deps.environment or _default_environment

    # -- lifecycle ---------------------------------------------------------------------

    async def restore(self, records: Mapping[str, bytes]) -> dict[str, int]:
        pending: dict[str, int] = {}
        for name in set(self.controller.targets()) - set(records):
            self.controller.set_target(name, None)
        for raw in records.values():
            target = Target.from_json(raw)
            target.environment = self._environment((KIND, target.name))
            target.release_root = self._relocated(target.release_root)
            if target.previous_root is not None:
                target.previous_root = self._relocated(target.previous_root)
            self.controller.set_target(target.name, target)
            if target.rollout.status == RolloutStatus.PROGRESSING:
                pending[target.name] = target.rollout.revision
        return pending

    def _relocated(self, root: Path) -> Path:
        """``root`` (``<releases_dir>/<app>/<id>``, recorded as an absolute path), moved
        under this home's releases folder when the home was restored somewhere else (a
        backup restored into a new SOCLE_HOME: the old folder is gone)."""
        if root.is_dir():
            return root
        moved = Path(self._releases.releases_dir) / root.parent.name / root.name
        return moved if moved.is_dir() else root

    async def start(self) -> None:
        self.controller.start()

    async def stop(self) -> None:
        await self.controller.stop()
        await self._tasks.close()

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.spawn(coro, name)

    # -- planning ----------------------------------------------------------------------

    def current(self) -> dict[str, ObjectState]:
        return {name: t.state for name, t in self.controller.targets().items()}

    async def desired(self, loaded: LoadedManifests) -> dict[str, ObjectState]:
        cache = self.state_cache
        apps = loaded.apps

        def compute() -> dict[str, AppState]:
            with self._releases.batch():
                return {
                    name: cache.state(app, self._releases.compute_id(loaded.root, app))
                    for name, app in apps.items()
                }

        states = await asyncio.to_thread(compute)
        problems: list[Problem] = []
        for name, app in apps.items():
            if not secret_refs.references(app):
                continue
            if self._secrets is None:
                raise ConfigError("apps reference secrets but no secrets engine is running")
            found, bad = await secret_refs.versions(
                self._secrets, app, loaded.origins.get(f"{KIND}/{name}")
            )
            problems.extend(bad)
            states[name] = cache.state(app, states[name].release, found)
        cache.end_pass()
        self._known = {id(states[name]): (states[name], app) for name, app in apps.items()}
        if problems:
            raise ManifestError(
                problems,
                hint="each line says what to run: `socle secrets put` writes a secret, "
                "`socle secrets grant APP PATH` lets the App read it (policy app-APP); "
                "nothing was changed",
            )
        return dict(states)

    def encode(self, name: str, state: ObjectState) -> dict[str, Any]:
        current = self.controller.target(name)
        root = str(current.release_root) if current is not None else ""
        return {**state_to_dict(cast(AppState, state)), "release_root": root}

    def decode(self, data: Mapping[str, Any]) -> ObjectState:
        return state_from_dict(data)

    async def check_reapply(self, states: Mapping[str, ObjectState], revision: int) -> None:
        for name, state in states.items():
            release = cast(AppState, state).release
            if self._releases.get(name, ReleaseId(release)) is None:
                raise NotFoundError(
                    f"release {release} of app {name} from revision {revision} is no longer kept",
                    hint="apply that version of the manifests again to rebuild it",
                )

    # -- apply -------------------------------------------------------------------------

    async def prepare(
        self, changes: list[Change], desired: Mapping[str, ObjectState], ctx: ApplyContext
    ) -> dict[str, str]:
        wanted = [c.name for c in changes if c.action != Action.DELETE]
        states = {name: cast(AppState, desired[name]) for name in wanted}

        def kept() -> tuple[dict[str, Release], list[str]]:
            # Scale-only changes keep the current release: nothing to build.
            found: dict[str, Release] = {}
            missing: list[str] = []
            for name in wanted:
                existing = self._releases.get(name, ReleaseId(states[name].release))
                if existing is not None:
                    found[name] = existing
                elif ctx.root is None:
                    raise NotFoundError(f"release {states[name].release} of app {name} is not kept")
                else:
                    missing.append(name)
            return found, missing

        results, to_build = await asyncio.to_thread(kept)
        self._built[ctx.revision] = results
        if not to_build:
            return {}
        root = ctx.root
        assert root is not None
        for name in to_build:
            ctx.mark(name, ChangePhase.BUILDING, "")
        await ctx.save()

        async def build_one(name: str) -> None:
            known = self._known.get(id(states[name]))
            app = (
                known[1]
                if known is not None and known[0] is states[name]
                else App.model_validate(states[name].manifest)
            )
            release = await self._releases.ensure(root, app)
            results[name] = release
            await ctx.progress(name, ChangePhase.BUILT, release.id)

        # One walk of each workdir for all the apps that share it; ensure() still checks
        # every copy against its id, so a file changed meanwhile fails that build.
        with self._releases.batch():
            outcomes = await asyncio.gather(
                *(build_one(n) for n in to_build), return_exceptions=True
            )
        failures: dict[str, str] = {}
        for name, outcome in zip(to_build, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failures[name] = (
                    outcome.message if isinstance(outcome, SocleError) else repr(outcome)
                )
        if failures:
            self._built.pop(ctx.revision, None)
        return failures

    def record(self, name: str, state: ObjectState, revision: int) -> bytes:
        app_state_ = cast(AppState, state)
        built = self._built.get(revision, {})
        current = self.controller.target(name)
        same_template = current is not None and current.state.template == app_state_.template
        known = self._known.get(id(state))
        target = Target(
            state=app_state_,
            release_root=built[name].root,
            rollout=Rollout(revision=revision, started=time.time()),
            previous=None if current is None or same_template else current.state,
            previous_root=None if current is None or same_template else current.release_root,
            environment=self._environment((KIND, name)),
            known_app=known[1] if known is not None and known[0] is state else None,
        )
        if same_template and current is not None:
            target.previous, target.previous_root = current.previous, current.previous_root
        self._staged.setdefault(revision, {})[name] = target
        return target.to_json()

    async def activate(self, applied: Mapping[str, ObjectState | None], revision: int) -> set[str]:
        staged = self._staged.pop(revision, {})
        built = self._built.pop(revision, {})
        new_targets: dict[str, Target | None] = {}
        for name, state in applied.items():
            if state is None:
                new_targets[name] = None
                self._deleting[name] = revision
            else:
                new_targets[name] = staged[name]
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

        self._spawn(asyncio.to_thread(collect), f"gc-releases:{revision}")
        return set(applied)

    async def delete(self, name: str, revision: int) -> None:
        """Nothing left to do: the controller stopped the instances at activation."""

    # -- secrets and mounts ------------------------------------------------------------

    def _template_status(self, name: str) -> Any:
        status = getattr(self._templates, "status", None)
        return status(name) if status is not None else None

    def _template_problem(self, name: str) -> str:
        problem = getattr(self._templates, "problem", None)
        found = problem(name) if problem is not None else None
        return f"template not rendered: {found}" if found else ""

    async def _secret_env(self, target: Target) -> dict[str, str]:
        if not secret_refs.references(target.app):
            return {}
        if self._secrets is None:
            raise ConfigError(f"app {target.name} references secrets but no engine runs")
        return await secret_refs.values(self._secrets, target.app)

    async def _mounts(self, target: Target) -> list[Mount]:
        """Each mounted Volume's folder, from the volume provider (which made it exist
        before this target was committed: Volumes come first in dependency order)."""
        mounts = target.app.spec.volumes
        if not mounts:
            return []
        if self._volumes is None:
            raise ConfigError(f"app {target.name} mounts volumes but no volume provider runs")
        found: list[Mount] = []
        for mount in mounts:
            info = await self._volumes.info(mount.name)
            if info is None:
                raise NotFoundError(f"volume {mount.name} of app {target.name} does not exist")
            found.append(Mount(info.path, mount.mount_path, mount.read_only))
        return found

    async def refreshed(self) -> dict[str, ObjectState]:
        """Apps whose referenced secrets got a new version (the version is part of the
        instance template, so the change goes through the same health-gated update)."""
        if self._secrets is None:
            return {}
        changed: dict[str, ObjectState] = {}
        for name, target in self.controller.targets().items():
            if not secret_refs.references(target.app):
                continue
            found, problems = await secret_refs.versions(self._secrets, target.app)
            if not problems and found != target.state.secrets:
                changed[name] = app_state(target.app, target.state.release, found)
        return changed

    # -- rollout events ----------------------------------------------------------------

    def _on_rollout(self, name: str, status: str, message: str) -> None:
        if status == "deleted":
            number = self._deleting.pop(name, None)
            if number is not None:
                self._report(number, KIND, name, ChangePhase.DELETED, "")
            return
        target = self.controller.target(name)
        if target is None:
            return
        number = target.rollout.revision
        if status == RolloutStatus.COMPLETE:
            self._spawn(self._persist(target), f"persist:{name}")
            self._report(number, KIND, name, ChangePhase.READY, "")
            return
        spec = target.app.spec
        if spec.update.auto_rollback and target.previous is not None and target.previous_root:
            back = Target(
                state=target.previous,
                release_root=target.previous_root,
                rollout=Rollout(
                    revision=number, started=time.time(), status=RolloutStatus.PROGRESSING
                ),
                environment=target.environment,
            )
            back.rollout.message = f"rolled back after: {message}"
            self.controller.set_target(name, back)
            self._spawn(self._persist(back), f"persist:{name}")
            self._report(
                number,
                KIND,
                name,
                ChangePhase.ROLLED_BACK,
                f"{message}; rolled back to release {target.previous.release}",
            )
        else:
            self._spawn(self._persist(target), f"persist:{name}")
            self._report(number, KIND, name, ChangePhase.FAILED, message)

    async def _persist(self, target: Target) -> None:
        """Write a target the controller changed (compare-and-swap). A lost race means
        another writer stored a newer target: read it and follow it instead."""
        ref = (KIND, target.name)
        for _ in range(3):
            if self.controller.target(target.name) is not target:
                return  # replaced meanwhile; whoever replaced it writes it
            try:
                await self._targets.put(ref, target.to_json())
                return
            except ConflictError:
                record = await self._targets.refresh(ref)
                if record is None:
                    return
                stored = Target.from_json(record.value)
                if stored.rollout.revision > target.rollout.revision:
                    log.warning("target of app %s was changed by another writer", target.name)
                    self.controller.set_target(target.name, stored)
                    return
        log.error("could not write the target of app %s: it keeps changing", target.name)

    def export_cache(self) -> Any:
        return self.state_cache.export()

    def adopt_cache(self, exported: Any) -> None:
        self.state_cache.adopt(exported)

    # -- status ------------------------------------------------------------------------

    def names(self) -> list[str]:
        names = set(self.controller.targets()) | {i.app for i in self._driver.instances()}
        return sorted(names)

    async def status(self) -> list[dict[str, Any]]:
        rows = []
        for name in self.names():
            view = self.controller.view(name)
            target = self.controller.target(name)
            rows.append(
                {
                    "kind": KIND,
                    "name": view.name,
                    "desired": view.desired,
                    "ready": view.ready,
                    "updated": view.updated,
                    "health": health_word(view),
                    "rollout": view.rollout,
                    "message": view.message or self._template_problem(name),
                    "templates": self._template_status(name),
                    "restarts": sum(i.restarts for i in view.instances),
                    "release": target.state.release if target else None,
                    "revision": target.rollout.revision if target else None,
                    "volumes": [
                        {"name": m.name, "mountPath": m.mount_path, "readOnly": m.read_only}
                        for m in (target.app.spec.volumes if target else [])
                    ],
                    "instances": [i.to_dict() for i in view.instances],
                }
            )
        return rows
