"""The rollout controller: makes the runtime's instances match each app's target.

Like a Kubernetes Deployment controller, it never runs processes itself: it asks the
runtime driver to start or stop instances, and the driver keeps each one alive and healthy.
Reconciliation is event driven (a target changed, an instance changed); a timer re-checks
only apps whose rollout is in progress (for ``minHealthySeconds`` and progress deadlines).

Instance ids are ``<app>-<template[:10]>-<ordinal>``: the template part tells old from new
instances during a rolling update, and makes re-adoption after a restart exact.

Every start failure counts. A rollout fails *at once*, with the instance's reason, when an
instance of the new release is in a state that waiting cannot fix (``FAILED``: it can never
start; ``CRASHLOOP``: it exits again and again) or when the driver refuses its spec; any
other error while starting it (a secret that cannot be read now, a store hiccup) is
retried with a delay and counted against ``progressDeadlineSeconds``, which is checked on
a timer, so the deadline fires even if no instance ever reports anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from socle.engine.targets import Target
from socle.errors import ConfigError, SocleError, StartRefused
from socle.model.app import App
from socle.model.status import AppHealth, RolloutStatus
from socle.runtime.driver import (
    FINAL_FAILURES,
    InstanceId,
    InstanceSpec,
    InstanceState,
    InstanceStatus,
    Mount,
    ReleaseId,
    RuntimeDriver,
)
from socle.tasks import TaskMonitor
from socle.tracing import tracer

log = logging.getLogger(__name__)
_tracer = tracer("socle.engine")

RECHECK_SECONDS = 0.5
RETRY_SECONDS = 2.0
"""Delay before trying again to start an instance after an error that may pass."""
SecretResolver = Callable[[Target], Awaitable[dict[str, str]]]
MountResolver = Callable[[Target], Awaitable[list[Mount]]]
RolloutListener = Callable[[str, str, str], None]
Drain = Callable[[InstanceId], Awaitable[None]]
"""Called with (app, "complete" | "failed" | "deleted", message)."""


class TemplateHook(Protocol):
    """Runtime configuration (``spec.templates``): files rendered before an instance
    starts and shown to it; the connect layer implements it (it reads the registry)."""

    async def prepare(
        self, app: App, environment: str, release_root: Path, template: str
    ) -> tuple[list[Mount], dict[str, str]]:
        """Mounts and env for an instance of this release template (rendered at most once
        per template digest); raises a SocleError when the files cannot be rendered."""
        ...

    def forget(self, name: str) -> None:
        """The app is gone: drop its rendered files."""
        ...


def instance_id(app: str, template: str, ordinal: int) -> InstanceId:
    return InstanceId(f"{app}-{template[:10]}-{ordinal}")


def template_of(instance: InstanceId) -> str:
    parts = instance.rsplit("-", 2)
    return parts[1] if len(parts) == 3 else ""


@dataclass
class AppView:
    """What the controller can say about one app, for status."""

    name: str
    desired: int
    ready: int
    updated: int
    instances: list[InstanceStatus]
    rollout: str
    message: str


async def _no_secrets(_: Target) -> dict[str, str]:
    return {}


async def _no_mounts(_: Target) -> list[Mount]:
    return []


class Controller:
    def __init__(
        self,
        driver: RuntimeDriver,
        on_rollout: RolloutListener,
        *,
        resolve_secrets: SecretResolver = _no_secrets,
        tasks: TaskMonitor | None = None,
        resolve_mounts: MountResolver = _no_mounts,
        instance_env: Mapping[str, str] | None = None,
        templates: TemplateHook | None = None,
    ) -> None:
        self._driver = driver
        self._templates = templates
        self._instance_env = dict(instance_env or {})
        """Platform values (``SOCLE_DNS``) every instance gets; the app cannot override them."""
        self._on_rollout = on_rollout
        self._resolve_secrets = resolve_secrets
        self._resolve_mounts = resolve_mounts
        self._targets: dict[str, Target] = {}
        self._dependents: dict[str, set[str]] = {}
        self._dirty: set[str] = set()
        self._scaled: dict[str, int] = {}
        """Instance counts set by the autoscaler, by app."""
        self._running: set[str] = set()
        self._stopping: set[InstanceId] = set()
        self._refreshed: set[InstanceId] = set()
        self._start_errors: dict[str, str] = {}
        """Per app: the last error that kept an instance of its current rollout from
        starting (a transient one, retried); shown when the deadline passes."""
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks = (tasks if tasks is not None else TaskMonitor()).group("controller")
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._drain: Drain | None = None

    def set_drain(self, drain: Drain | None) -> None:
        """Call ``drain(instance_id)`` before stopping any instance (the ingress takes it
        out of its upstreams first, so a rolling update loses no request)."""
        self._drain = drain

    # -- targets -----------------------------------------------------------------------

    def set_target(self, name: str, target: Target | None) -> None:
        """Set (or with None, remove) one app's target and reconcile it.

        Costs O(its dependencies), not O(apps): applies and restarts set every target.
        """
        old = self._targets.pop(name, None) if target is None else self._targets.get(name)
        if target is not None:
            self._targets[name] = target
        if (
            self._templates is not None
            and old is not None
            and old.app.spec.templates
            and (target is None or not target.app.spec.templates)
        ):
            self._templates.forget(name)  # deleted, or its templates removed
        old_deps = old.app.spec.depends_on if old is not None else ()
        new_deps = target.app.spec.depends_on if target is not None else ()
        if old_deps != new_deps:
            for dep in old_deps:
                dependents = self._dependents.get(dep)
                if dependents is not None:
                    dependents.discard(name)
                    if not dependents:
                        del self._dependents[dep]
            for dep in new_deps:
                self._dependents.setdefault(dep, set()).add(name)
        self.kick(name)

    def set_targets(self, targets: Mapping[str, Target | None]) -> None:
        """:meth:`set_target` for each entry (None removes)."""
        for name, target in targets.items():
            self.set_target(name, target)

    def target(self, name: str) -> Target | None:
        return self._targets.get(name)

    def targets(self) -> dict[str, Target]:
        return dict(self._targets)

    def dependents(self, name: str) -> set[str]:
        """Apps whose target depends on ``name``."""
        return set(self._dependents.get(name, ()))

    # -- loop --------------------------------------------------------------------------

    def start(self) -> None:
        self._driver.subscribe(self._on_status)
        self._loop_task = asyncio.create_task(self._run(), name="socle-controller")
        for name in set(self._targets) | {i.app for i in self._driver.instances()}:
            self.kick(name)

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        if self._loop_task:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        await self._tasks.close()

    def replicas_of(self, target: Target) -> int:
        """How many instances ``target`` should have: its manifest's ``replicas``, or the
        count the autoscaler set (:meth:`scale`) while the App has ``spec.autoscale``."""
        scaled = self._scaled.get(target.name)
        if scaled is None or target.app.spec.autoscale is None:
            return target.app.spec.replicas
        return scaled

    def scale(self, name: str, replicas: int | None) -> None:
        """Run ``replicas`` instances of ``name`` (None: back to its manifest's count).
        Not a new revision: the manifest keeps saying what Git says; the autoscaler (or a
        remediation) owns the count within ``spec.autoscale``'s bounds."""
        if replicas is None:
            self._scaled.pop(name, None)
        else:
            self._scaled[name] = replicas
        self.kick(name)

    def kick(self, name: str) -> None:
        self._dirty.add(name)
        self._wake.set()

    def _kick_later(self, name: str, delay: float) -> None:
        if name in self._timers:
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.pop(name, None)
            self.kick(name)

        self._timers[name] = loop.call_later(delay, fire)

    def _on_status(self, status: InstanceStatus) -> None:
        self.kick(status.app)
        for dependent in self._dependents.get(status.app, ()):
            self.kick(dependent)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            for name in list(self._dirty):
                if name in self._running:
                    continue
                self._dirty.discard(name)
                self._running.add(name)
                self._tasks.spawn(self._reconcile_guarded(name), f"reconcile:{name}")

    async def _reconcile_guarded(self, name: str) -> None:
        try:
            await self.reconcile(name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._tasks.monitor.report(
                f"controller/reconcile:{name}", exc, message="reconcile failed; retrying in 2s"
            )
            self._start_errors[name] = _reason(exc)
            self._kick_later(name, RETRY_SECONDS)
            self._judge_deadline(name)  # whatever fails above, the deadline still holds
        finally:
            self._running.discard(name)
            if name in self._dirty:
                self._wake.set()

    # -- reconcile ---------------------------------------------------------------------

    def _instances(self, name: str) -> list[InstanceStatus]:
        return [i for i in self._driver.instances() if i.app == name]

    def _stop(self, instance: InstanceStatus) -> None:
        if instance.id in self._stopping:
            return
        self._stopping.add(instance.id)

        async def run() -> None:
            try:
                if self._drain is not None:
                    try:
                        await self._drain(instance.id)
                    except Exception as exc:  # a failed drain must not keep it running
                        self._tasks.monitor.report(f"controller/drain:{instance.id}", exc)
                await self._driver.stop(instance.id)
            finally:
                self._stopping.discard(instance.id)
                self._refreshed.discard(instance.id)
                self.kick(instance.app)

        self._tasks.spawn(run(), f"stop:{instance.id}")

    def available(self, name: str) -> bool:
        """An app others may depend on: its current rollout has every replica ready."""
        target = self._targets.get(name)
        if target is None:
            return True
        if self.replicas_of(target) == 0:
            return True
        tpl = target.state.template[:10]
        ready = [i for i in self._instances(name) if template_of(i.id) == tpl and i.ready]
        return len(ready) >= self.replicas_of(target)

    async def _spec(self, target: Target, ordinal: int) -> InstanceSpec:
        spec = target.app.spec
        env = {k: v for k, v in spec.env.items() if isinstance(v, str)}
        # Where to find peers: the resolver, this app's environment and its own DNS name.
        env.update(self._instance_env)
        env["SOCLE_ENVIRONMENT"] = target.environment
        env["SOCLE_SERVICE"] = f"{target.name}.{target.environment}.socle.internal"
        mounts = await self._resolve_mounts(target)
        if spec.templates:
            if self._templates is None:
                raise ConfigError(f"app {target.name} has templates but nothing renders them")
            extra, files_env = await self._templates.prepare(
                target.app, target.environment, target.release_root, target.state.template
            )
            mounts = [*mounts, *extra]
            env.update(files_env)
        ident = instance_id(target.name, target.state.template, ordinal)
        if "OTEL_EXPORTER_OTLP_ENDPOINT" in self._instance_env:
            # The standard OpenTelemetry variables: any SDK in the app exports its spans to
            # Socle's receiver, named after the app; the app's own values win.
            env.setdefault("OTEL_SERVICE_NAME", target.name)
            attributes = {
                "deployment.environment": target.environment,
                "service.instance.id": ident,
                "socle.release": str(target.state.release),
            }
            own = spec.env.get("OTEL_RESOURCE_ATTRIBUTES")
            env["OTEL_RESOURCE_ATTRIBUTES"] = ",".join(
                [*(f"{k}={quote(v, safe='')}" for k, v in attributes.items())]
                + ([own] if isinstance(own, str) and own else [])
            )
        if any(not isinstance(v, str) for v in spec.env.values()):
            with _tracer.start_as_current_span(
                "secret request", attributes={"socle.app": target.name}
            ):
                secret_env = await self._resolve_secrets(target)
        else:
            secret_env = await self._resolve_secrets(target)
        return InstanceSpec(
            id=ident,
            app=target.name,
            release=ReleaseId(target.state.release),
            ordinal=ordinal,
            command=list(spec.run.command),
            workdir=target.release_root,
            env=env,
            secret_env=secret_env,
            ports=[p.name for p in spec.ports],
            health=spec.health,
            restart=spec.restart,
            stop_grace=spec.stop_grace,
            memory=spec.resources.memory,
            cpu=spec.resources.cpu,
            release_root=target.release_root,
            mounts=mounts,
            environment=target.environment,
            labels=dict(target.app.metadata.labels),
        )

    async def reconcile(self, name: str) -> None:
        target = self._targets.get(name)
        live = [i for i in self._instances(name) if i.id not in self._stopping]
        if target is None:
            for instance in live:
                self._stop(instance)
            if not live and not any(i.app == name for i in self._driver.instances()):
                self._on_rollout(name, "deleted", "all instances stopped")
            return

        spec = target.app.spec
        replicas = self.replicas_of(target)
        tpl = target.state.template[:10]
        now = time.time()
        new = [i for i in live if template_of(i.id) == tpl]
        old = [i for i in live if template_of(i.id) != tpl]

        for instance in new:
            if instance.ordinal >= replicas:
                self._stop(instance)
        new = [i for i in new if i.ordinal < replicas]

        refused: str | None = None
        for instance in new:
            if instance.id not in self._refreshed:
                # Re-adopted instances get their spec (and secrets) back for later restarts.
                try:
                    await self._driver.run(await self._spec(target, instance.ordinal))
                except Exception as exc:
                    refused = refused or self._start_failed(target, instance.id, exc)
                    continue
                self._refreshed.add(instance.id)

        def settled(i: InstanceStatus) -> bool:
            return (
                i.ready
                and i.ready_since is not None
                and now - i.ready_since >= spec.update.min_healthy_seconds
            )

        recreate = spec.update.strategy == "recreate"
        if recreate and old:
            for instance in old:
                self._stop(instance)
            old = []
            waiting_for_old = True
        else:
            waiting_for_old = False

        deps_ready = all(self.available(dep) for dep in spec.depends_on)
        if deps_ready and not waiting_for_old:
            have = {i.ordinal for i in new}
            if old:
                budget = replicas + spec.update.max_surge - len(new) - len(old)
            else:
                budget = replicas - len(new)
            for ordinal in range(replicas):
                if budget <= 0:
                    break
                if ordinal in have:
                    continue
                budget -= 1
                iid = instance_id(target.name, target.state.template, ordinal)
                try:
                    status = await self._driver.run(await self._spec(target, ordinal))
                except Exception as exc:
                    refused = refused or self._start_failed(target, iid, exc)
                    continue
                self._start_errors.pop(name, None)  # that error passed
                self._refreshed.add(status.id)
                new.append(status)

        if old:
            new_ready = sum(1 for i in new if settled(i))
            old_ready = [i for i in old if i.ready]
            for instance in old:
                if not instance.ready:
                    self._stop(instance)
            removable = new_ready + len(old_ready) - max(replicas - spec.update.max_unavailable, 0)
            for instance in sorted(old_ready, key=lambda i: -i.ordinal):
                if removable <= 0:
                    break
                self._stop(instance)
                removable -= 1

        new_done = (
            not old
            and not waiting_for_old
            and len(new) == replicas
            and all(settled(i) for i in new)
        )
        rollout = target.rollout
        if rollout.status != RolloutStatus.PROGRESSING:
            return
        if new_done:
            # Instances still draining or stopping count too: a rollout reported complete
            # leaves exactly the new replicas running. Their stop kicks us again, and no
            # deadline fails a release whose replicas are all ready.
            if any(
                template_of(i.id) != tpl or i.ordinal >= replicas for i in self._instances(name)
            ):
                return
            self._start_errors.pop(name, None)
            rollout.status = RolloutStatus.COMPLETE
            self._on_rollout(name, RolloutStatus.COMPLETE, "")
            return
        hopeless = next((i for i in new if i.state in FINAL_FAILURES), None)
        if refused is not None:
            self._fail(target, refused)
        elif hopeless is not None:
            self._fail(target, self._hopeless_message(target, hopeless))
        elif not self._judge_deadline(name, new):
            self._kick_later(name, RECHECK_SECONDS)

    def _start_failed(self, target: Target, iid: InstanceId, exc: Exception) -> str | None:
        """An instance could not be asked to start. A spec the driver refuses for good
        (:class:`StartRefused`) fails the rollout at once (returns why); anything else, a
        driver shutting down included, is retried later (returns None)."""
        reason = _reason(exc)
        if isinstance(exc, StartRefused):
            return (
                f"release {target.state.release} cannot start: instance {iid} was refused: {reason}"
            )
        if not isinstance(exc, SocleError):  # a bug, not a state: keep its traceback
            self._tasks.monitor.report(
                f"controller/start:{iid}", exc, message="starting an instance failed; retrying"
            )
        self._start_errors[target.name] = f"instance {iid} could not be started: {reason}"
        self._kick_later(target.name, RETRY_SECONDS)
        return None

    def _fail(self, target: Target, message: str) -> None:
        rollout = target.rollout
        rollout.status = RolloutStatus.FAILED
        rollout.message = message
        self._start_errors.pop(target.name, None)
        self._on_rollout(target.name, RolloutStatus.FAILED, message)

    def _judge_deadline(self, name: str, new: list[InstanceStatus] | None = None) -> bool:
        """Fail the app's rollout if its progress deadline passed; True if it did.

        Needs nothing from the instances: also called when reconciling itself failed."""
        target = self._targets.get(name)
        if target is None or target.rollout.status != RolloutStatus.PROGRESSING:
            return False
        deadline = target.app.spec.update.progress_deadline_seconds
        if time.time() - target.rollout.started <= deadline:
            return False
        if new is None:
            tpl = target.state.template[:10]
            new = [i for i in self._instances(name) if template_of(i.id) == tpl]
        self._fail(target, self._failure_message(target, new))
        return True

    def _hopeless_message(self, target: Target, instance: InstanceStatus) -> str:
        """A rollout stopped early: which instance, in which state, and its own words."""
        why = "cannot start" if instance.state is InstanceState.FAILED else "is in a crash loop"
        detail = f": {instance.message}" if instance.message else ""
        return (
            f"release {target.state.release} {why}: instance {instance.id} is "
            f"{instance.state.value}{detail}"
        )

    def _failure_message(self, target: Target, new: list[InstanceStatus]) -> str:
        deadline = target.app.spec.update.progress_deadline_seconds
        ready = sum(1 for i in new if i.ready)
        detail = ""
        bad = [i for i in new if not i.ready]
        if bad:
            worst = bad[0]
            detail = f"; instance {worst.id} is {worst.state.value}"
            if worst.message:
                detail += f": {worst.message}"
        elif len(new) < self.replicas_of(target) and target.name in self._start_errors:
            detail = f"; {self._start_errors[target.name]}"
        return (
            f"release {target.state.release} not ready within {deadline:g}s "
            f"({ready}/{self.replicas_of(target)} ready){detail}"
        )

    # -- status ------------------------------------------------------------------------

    def view(self, name: str) -> AppView:
        target = self._targets.get(name)
        instances = sorted(self._instances(name), key=lambda i: (i.release, i.ordinal))
        if target is None:
            return AppView(name, 0, 0, 0, instances, "deleting", "")
        tpl = target.state.template[:10]
        current = [i for i in instances if template_of(i.id) == tpl]
        return AppView(
            name=name,
            desired=self.replicas_of(target),
            ready=sum(1 for i in current if i.ready),
            updated=len(current),
            instances=instances,
            rollout=target.rollout.status,
            message=target.rollout.message,
        )


def _reason(exc: BaseException) -> str:
    return exc.message if isinstance(exc, SocleError) else f"{type(exc).__name__}: {exc}"


def health_word(view: AppView) -> AppHealth:
    """One word for a table: healthy, progressing, degraded, failed, stopped."""
    if view.desired == 0:
        return AppHealth.STOPPED
    if any(i.state == InstanceState.CRASHLOOP for i in view.instances):
        return AppHealth.CRASHLOOP
    if view.rollout == RolloutStatus.FAILED:
        return AppHealth.FAILED
    if view.ready >= view.desired and view.updated == len(view.instances):
        return AppHealth.HEALTHY
    if view.rollout == RolloutStatus.PROGRESSING:
        return AppHealth.PROGRESSING
    return AppHealth.DEGRADED
