"""The GitOps service: sources, their sync (poll, webhook, on demand), per-environment
status, pins and drift.

A sync of one source, under that source's lock (syncs of one source never overlap):

1. fetch the mirror and resolve the branch/tag/SHA (unreachable remote, deleted branch:
   status ``failed`` with the reason; nothing changes);
2. an environment pinned by a rollback stays pinned until a new commit arrives;
3. with auto-sync off (poll), a new commit only marks the source ``out of sync``;
4. a commit already refused (broken manifests) is not tried again until a new one comes;
5. check the commit's folder out into a clean tree and apply it as the source's objects in
   its environment (:meth:`socle.engine.service.Engine.apply` with ``owner`` and
   ``environment``): an empty folder refuses to delete everything, bad manifests are
   refused with their errors attached to the commit, and the environment stays on its
   last good revision;
6. wait for the revision, record ``synced`` (or ``failed`` with the rollout's reason).

Records in the state store: ``gitops/sources/<name>`` (the Source manifest, never a
credential: those are secrets-engine paths), ``gitops/status/<name>``,
``gitops/pins/<env>`` and ``gitops/events/<n>`` (drift and sync events).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from socle.engine.scopes import source_owner
from socle.engine.secret_refs import SecretReader
from socle.engine.service import Engine
from socle.errors import (
    ConfigError,
    ConflictError,
    ManifestError,
    NotFoundError,
    SecretUnavailable,
    SocleError,
    SourceError,
)
from socle.fs import private_dir
from socle.gitops.git import CommitInfo, Credentials, Mirror
from socle.gitops.notify import Notifications
from socle.gitops.webhook import Deliveries, Push, verify
from socle.model.loader import environments, load
from socle.model.notifier import Notifier
from socle.model.source import Source
from socle.model.status import RevisionStatus
from socle.state.store import StateStore
from socle.tasks import TaskMonitor
from socle.tracing import tracer

log = logging.getLogger(__name__)
_tracer = tracer("socle.gitops")

SOURCES = "gitops/sources/"
STATUS = "gitops/status/"
PINS = "gitops/pins/"
PROMOTIONS = "gitops/promotions/"
EVENTS = "gitops/events/"
DELIVERIES = "gitops/deliveries/"
KEEP_DELIVERIES = 1000
"""Webhook delivery ids kept in the state store per source, so that a replay is refused
after a restart too (bounded: the newest ones)."""
KEEP_CHECKOUTS = 3
KEEP_EVENTS = 1000
"""Events kept in the state store (older ones are dropped, 100 at a time)."""
JITTER = 0.1
REVISION_POLL_SECONDS = 0.02
DRIFT_CHECK_SECONDS = 10.0
STATUS_REFRESH_SECONDS = 300.0
"""A poll that changes nothing but its timestamps writes the status at most this often
(50 sources polling wrote the store, and checkpointed its log, on every poll); the
served status is always the live one, only a restart may show an older ``last_sync``."""
STAMPS = ("last_sync", "last_duration")


def _load_file_or_folder(path: Path) -> Any:
    """The manifests of folder ``path``, or of the single file ``path`` (a bootstrap file)."""
    if not path.is_file():
        return load(path)
    with tempfile.TemporaryDirectory(prefix="socle-bootstrap-") as folder:
        shutil.copyfile(path, Path(folder) / path.name)
        return load(Path(folder))


class SyncState:
    SYNCED = "synced"
    OUT_OF_SYNC = "out of sync"
    SYNCING = "syncing"
    FAILED = "failed"
    PINNED = "pinned"
    WAITING = "waiting for approval"
    NEW = "new"


@dataclass
class SourceStatus:
    state: str = SyncState.NEW
    reason: str = ""
    revision: int | None = None
    """The engine revision the environment runs for this source (last good)."""
    commit: dict[str, str] | None = None
    """The commit of :attr:`revision`."""
    seen: str | None = None
    """The SHA the branch/tag named at the last fetch."""
    refused: str | None = None
    """A SHA refused (broken manifests, failed rollout): not tried again until a new one."""
    errors: list[str] = field(default_factory=list)
    """The refused commit's errors (file:line: field: reason)."""
    last_sync: float | None = None
    last_duration: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SyncEvents(Protocol):
    """Who hears about finished syncs (the control plane's metrics)."""

    def synced(self, result: str, seconds: float) -> None: ...


class GitOps:
    """Every source of one control plane and what keeps them synced."""

    def __init__(
        self,
        store: StateStore,
        engine: Engine,
        home: Path,
        *,
        secrets: SecretReader | None = None,
        tasks: TaskMonitor | None = None,
        drift_seconds: float = DRIFT_CHECK_SECONDS,
        events: SyncEvents | None = None,
    ) -> None:
        self._events = events
        self._store = store
        self._engine = engine
        self._dir = home / "gitops"
        self._secrets = secrets
        self._tasks = (tasks or TaskMonitor()).group("gitops")
        self._sources: dict[str, Source] = {}
        self._status: dict[str, SourceStatus] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._polls: dict[str, asyncio.Task[None]] = {}
        self._deliveries = Deliveries()
        self._drift_seconds = drift_seconds
        self._drifting: set[str] = set()
        self._event_counter = 0
        self._persisted: dict[str, tuple[dict[str, Any], float]] = {}
        """What the store holds of each status (timestamps aside) and when it was written."""
        self.notifications = Notifications(store, self._tasks, self._notifier_secret)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        private_dir(self._dir)
        for record in await self._store.scan(SOURCES):
            source = Source.model_validate(json.loads(record.value))
            self._sources[source.name] = source
        for record in await self._store.scan(STATUS):
            name = record.key[len(STATUS) :]
            self._status[name] = SourceStatus(**json.loads(record.value))
        for record in await self._store.scan(DELIVERIES):
            self._deliveries.restore(record.key[len(DELIVERIES) :], json.loads(record.value))
        keys = await self._store.keys(EVENTS)
        self._event_counter = int(keys[-1][len(EVENTS) :]) if keys else 0
        await self.notifications.start()
        for name in self._sources:
            self._start_poll(name, first=0.0)
        self._tasks.spawn(self._watch_drift(), "drift")

    async def stop(self) -> None:
        await self._tasks.close()

    def _start_poll(self, name: str, *, first: float | None = None) -> None:
        old = self._polls.pop(name, None)
        if old is not None:
            old.cancel()
        self._polls[name] = self._tasks.spawn(self._poll(name, first), f"poll:{name}")

    async def _poll(self, name: str, first: float | None) -> None:
        delay = first
        while name in self._sources:
            source = self._sources[name]
            if delay is None:
                delay = source.spec.interval * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311 (jitter, not crypto)
            await asyncio.sleep(delay)
            delay = None
            if name not in self._sources:
                return
            try:
                await self.sync(name, trigger="poll")
            except Exception:
                log.exception("sync of source %s failed", name)

    # -- sources ---------------------------------------------------------------------

    def sources(self) -> list[Source]:
        return [self._sources[n] for n in sorted(self._sources)]

    def get(self, name: str) -> Source:
        source = self._sources.get(name)
        if source is None:
            raise NotFoundError(f"source {name!r} does not exist", hint="see `socle source list`")
        return source

    def status_of(self, name: str) -> SourceStatus:
        return self._status.setdefault(name, SourceStatus())

    async def add(self, source: Source, *, replace: bool = False) -> Source:
        """Register ``source`` (or replace it with ``replace``), then sync it at once."""
        if source.name in self._sources and not replace:
            raise ConflictError(
                f"source {source.name!r} already exists",
                hint="remove it first (`socle source remove`) or apply the Source manifest",
            )
        for other in self._sources.values():
            same_env = other.spec.env == source.spec.env and other.name != source.name
            if same_env and (other.spec.repo, other.spec.path) == (
                source.spec.repo,
                source.spec.path,
            ):
                raise ConflictError(
                    f"source {other.name!r} already feeds {source.spec.path} of "
                    f"{source.spec.repo} into environment {source.spec.env}"
                )
        data = json.dumps(source.model_dump(mode="json", by_alias=True, exclude_none=True))
        await self._store.put(SOURCES + source.name, data.encode())
        self._sources[source.name] = source
        self._start_poll(source.name, first=0.0)
        return source

    async def apply_bootstrap(self, path: Path) -> list[Source]:
        """Add (or replace) every ``Source`` in the manifests under ``path`` (a bootstrap
        manifest kept in Git); bad manifests are refused with file and line, nothing added.
        Sources whose spec did not change keep syncing undisturbed."""
        loaded = await asyncio.to_thread(_load_file_or_folder, path)
        found = [obj for obj in loaded.of_kind("Source").values() if isinstance(obj, Source)]
        notifiers = [n for n in loaded.of_kind("Notifier").values() if isinstance(n, Notifier)]
        if not found and not notifiers:
            raise NotFoundError(f"no Source or Notifier manifest under {path}")
        for notifier in notifiers:
            await self.notifications.add(notifier)
        for source in found:
            if self._sources.get(source.name) != source:
                await self.add(source, replace=True)
        return found

    async def remove(self, name: str) -> None:
        """Forget the source; its objects keep running (now owned by nobody who syncs)."""
        self.get(name)
        self._sources.pop(name)
        task = self._polls.pop(name, None)
        if task is not None:
            task.cancel()
        await self._store.delete(SOURCES + name)
        await self._store.delete(STATUS + name)
        await self._store.delete(DELIVERIES + name)
        self._status.pop(name, None)
        self._persisted.pop(name, None)
        await asyncio.to_thread(shutil.rmtree, self._dir / name, True)

    # -- sync ------------------------------------------------------------------------

    async def sync_env(
        self, env: str, *, force: bool = False, allow_delete_all: bool = False
    ) -> list[dict[str, Any]]:
        names = [s.name for s in self.sources() if s.spec.env == env]
        if not names:
            raise NotFoundError(
                f"no source feeds environment {env!r}", hint="see `socle source list`"
            )
        results = []
        for name in names:
            status = await self.sync(
                name, trigger="manual", force=force, allow_delete_all=allow_delete_all
            )
            results.append({"source": name, **status.to_dict()})
        return results

    async def sync(
        self, name: str, *, trigger: str, force: bool = False, allow_delete_all: bool = False
    ) -> SourceStatus:
        """Sync one source now (see the module docstring); returns its status."""
        self.get(name)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            started = time.monotonic()
            # The sync's span: fetch, plan and the apply it starts are its children.
            with _tracer.start_as_current_span(
                "sync", attributes={"socle.source": name, "socle.trigger": trigger}
            ) as span:
                status = await self._sync(
                    name, trigger, force or allow_delete_all, allow_delete_all
                )
                span.set_attribute("socle.state", str(status.state))
            status.last_sync = time.time()
            status.last_duration = round(time.monotonic() - started, 4)
            if self._events is not None:
                self._events.synced(status.state, time.monotonic() - started)
            if self._status_moved(name, status):
                await self._save_status(name, status)
            return status

    def _status_moved(self, name: str, status: SourceStatus) -> bool:
        """Whether ``status`` differs from what the store holds, or that is old."""
        persisted = self._persisted.get(name)
        if persisted is None:
            return True
        data, when = persisted
        if time.monotonic() - when >= STATUS_REFRESH_SECONDS:
            return True
        return _without_stamps(status.to_dict()) != data

    async def _sync(
        self, name: str, trigger: str, force: bool, allow_delete_all: bool = False
    ) -> SourceStatus:
        source = self._sources[name]
        spec = source.spec
        status = self.status_of(name)
        promotion = await self._promotion(spec.env)
        if promotion is not None and name not in promotion["sources"]:
            promotion = None
        if promotion is not None and not promotion.get("approved"):
            status.state = SyncState.WAITING
            status.reason = (
                f"promotion of {promotion['sha'][:12]} from {promotion['from']} "
                f"waits for `socle approve {spec.env}`"
            )
            return status
        try:
            credentials = await self._credentials(source)
            mirror = Mirror(self._dir / name / "mirror", spec.repo, credentials)
            with _tracer.start_as_current_span("fetch"):
                sha = await self._fetch(mirror, spec.branch, spec.ref, status, promotion)
        except (SourceError, ConfigError) as exc:
            status.state, status.reason = SyncState.FAILED, exc.message
            await self._event(spec.env, name, "sync failed", exc.message)
            return status
        new_commit = sha != status.seen
        status.seen = sha
        pin = await self._pin(spec.env)
        if pin is not None:
            if pin.get("sha") == sha or not new_commit:
                status.state = SyncState.PINNED
                status.reason = f"pinned to revision {pin['revision']} by a rollback"
                return status
            await self.unpin(spec.env)
            await self._event(spec.env, name, "unpinned", f"new commit {sha[:12]}")
        applied = (status.commit or {}).get("sha")
        if sha == applied and not force and status.state == SyncState.SYNCED:
            status.state, status.reason = SyncState.SYNCED, ""
            return status
        if sha == status.refused and not force:
            return status  # already failed with its errors; wait for a new commit
        if not spec.auto_sync and trigger == "poll":
            status.state = SyncState.OUT_OF_SYNC
            status.reason = (
                f"commit {sha[:12]} not applied (auto-sync off: `socle sync {spec.env}`)"
            )
            return status
        status.state, status.reason = SyncState.SYNCING, f"commit {sha[:12]}"
        await self._save_status(name, status)
        await self._event(spec.env, name, "sync started", f"commit {sha[:12]} ({trigger})")
        info = await asyncio.to_thread(mirror.commit, sha)
        if spec.signed_commits:
            try:
                signer = await asyncio.to_thread(
                    mirror.verify_signature,
                    sha,
                    spec.signing_keys,
                    spec.allowed_signers,
                    self._dir / name / "verify",
                )
            except SourceError as exc:
                status.errors = []
                return await self._refuse(name, status, info, exc.message)
            await self._event(spec.env, name, "signature verified", f"{sha[:12]} by {signer}")
        if not await asyncio.to_thread(mirror.has_folder, sha, spec.path):
            return await self._refuse(
                name, status, info, f"folder {spec.path!r} does not exist at commit {sha[:12]}"
            )
        checkout = self._dir / name / "checkouts" / sha
        try:
            await asyncio.to_thread(mirror.checkout, sha, spec.path, checkout)
        except SourceError as exc:
            return await self._refuse(name, status, info, exc.message)
        overlay = await self._overlay(checkout, spec.env)
        commit = {**info.to_dict(), "source": name, "ref": spec.branch or spec.ref or ""}
        try:
            _, revision = await self._engine.apply(
                checkout,
                overlay,
                f"gitops:{name}",
                environment=spec.env,
                owner=source_owner(name),
                commit=commit,
                prune=spec.prune,
                allow_delete_all=allow_delete_all,
            )
        except ManifestError as exc:
            status.errors = [str(p) for p in exc.problems]
            return await self._refuse(name, status, info, exc.message)
        except SocleError as exc:
            status.errors = []
            return await self._refuse(name, status, info, exc.message)
        finally:
            await asyncio.to_thread(self._prune_checkouts, name, sha)
        if revision is not None:
            status.reason = f"commit {sha[:12]}: revision {revision.number} rolling out"
            await self._save_status(name, status)
            final = await self._wait(revision.number)
            if final.status != RevisionStatus.SUCCEEDED:
                return await self._refuse(
                    name,
                    status,
                    info,
                    f"revision {revision.number} {final.status}: {final.message}",
                )
            await self._event(spec.env, name, "sync succeeded", f"revision {revision.number}")
        self._good(status, info, revision.number if revision else status.revision)
        if not spec.prune:
            kept = await self._kept(source, checkout, overlay)
            if kept:
                status.state = SyncState.OUT_OF_SYNC
                status.reason = (
                    f"{len(kept)} object(s) left Git but are kept (prune off): "
                    + ", ".join(kept[:10])
                )
        return status

    async def _fetch(
        self,
        mirror: Mirror,
        branch: str | None,
        ref: str | None,
        status: SourceStatus,
        promotion: dict[str, Any] | None,
    ) -> str:
        """The SHA to sync, fetching the mirror only when the remote moved: a poll of an
        unchanged branch or tag costs one ``git ls-remote`` (50 sources polling spent
        most of their CPU in ``git fetch`` and ``rev-parse`` forks that found nothing)."""
        if promotion is not None:
            await asyncio.to_thread(mirror.fetch)
            return await asyncio.to_thread(mirror.resolve, None, promotion["sha"])
        if status.seen is not None:
            remote = await asyncio.to_thread(mirror.remote_sha, branch, ref)
            if remote == status.seen:
                return remote
        await asyncio.to_thread(mirror.fetch)
        return await asyncio.to_thread(mirror.resolve, branch, ref)

    async def _kept(self, source: Source, checkout: Path, overlay: str | None) -> list[str]:
        """Objects the source owns that its commit no longer declares (kept: prune off)."""
        _, the_plan = await self._engine.plan(
            checkout,
            overlay,
            environment=source.spec.env,
            owner=source_owner(source.name),
            allow_delete_all=True,
        )
        return [c.label for c in the_plan.changes if c.action.value == "delete"]

    async def _overlay(self, checkout: Path, env: str) -> str | None:
        """``env`` when the commit has an ``environments/<env>/`` overlay, else None."""
        found = await asyncio.to_thread(environments, checkout)
        return env if env in found else None

    def _good(self, status: SourceStatus, info: CommitInfo, revision: int | None) -> SourceStatus:
        status.state, status.reason, status.errors = SyncState.SYNCED, "", []
        status.revision, status.commit, status.refused = revision, info.to_dict(), None
        return status

    async def _refuse(
        self, name: str, status: SourceStatus, info: CommitInfo, reason: str
    ) -> SourceStatus:
        status.state = SyncState.FAILED
        status.refused = info.sha
        last = (status.commit or {}).get("sha", "")
        status.reason = f"commit {info.sha[:12]} refused: {reason}" + (
            f"; staying on {last[:12]}" if last else ""
        )
        await self._event(
            self._sources[name].spec.env, name, "sync failed", status.reason, commit=info.to_dict()
        )
        return status

    async def _wait(self, number: int) -> Any:
        while True:
            revision = await self._engine.revisions.get(number)
            if revision.done:
                return revision
            await asyncio.sleep(REVISION_POLL_SECONDS)

    def _prune_checkouts(self, name: str, keep: str) -> None:
        folder = self._dir / name / "checkouts"
        if not folder.is_dir():
            return
        entries = sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[KEEP_CHECKOUTS:]:
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)

    async def _notifier_secret(self, notifier: Notifier) -> str | None:
        """The HMAC key of ``notifier`` (policy ``notifier-<name>``), or None if unsigned."""
        path = notifier.spec.secret
        if path is None:
            return None
        if self._secrets is None:
            raise ConfigError("a notifier's signing secret needs the secrets engine")
        value, _ = await self._secrets.read_for_app([f"notifier-{notifier.name}"], path, "secret")
        return value

    async def _credentials(self, source: Source) -> Credentials | None:
        path = source.spec.credentials
        if path is None:
            return None
        if self._secrets is None:
            raise ConfigError("source credentials need the secrets engine")
        policies = [f"gitops-{source.name}"]
        found: dict[str, str] = {}
        for key in ("token", "ssh_key", "username"):
            try:
                found[key], _ = await self._secrets.read_for_app(policies, path, key)
            except SecretUnavailable:
                continue
        if not found.get("token") and not found.get("ssh_key"):
            raise SourceError(
                f"credentials {path} of source {source.name} hold no readable token or ssh_key",
                hint=f"write them and a policy gitops-{source.name} granting read on {path}",
            )
        return Credentials(
            token=found.get("token"),
            ssh_key=found.get("ssh_key"),
            username=found.get("username", "git"),
        )

    async def _save_status(self, name: str, status: SourceStatus) -> None:
        if name not in self._sources:
            return
        data = {k: v for k, v in status.to_dict().items()}
        await self._store.put(STATUS + name, json.dumps(data).encode())
        self._persisted[name] = (_without_stamps(data), time.monotonic())

    # -- webhooks --------------------------------------------------------------------

    async def webhook(self, name: str, headers: Mapping[str, str], body: bytes) -> Push:
        """Verify a push and start the source's sync at once (not waiting for it)."""
        source = self._sources.get(name)
        secret = await self._webhook_secret(source) if source is not None else ""
        # Unknown sources and sources without a secret answer like a bad signature.
        push = verify(headers, body, secret)
        self._deliveries.accept(name, push.delivery)
        recent = self._deliveries.recent(name, KEEP_DELIVERIES)
        await self._store.put(DELIVERIES + name, json.dumps(recent).encode())
        assert source is not None  # verify() refused an unknown source (no secret)
        branch = source.spec.branch
        other_branch = (
            branch is not None
            and push.ref is not None
            and push.ref.startswith("refs/heads/")
            and push.ref != f"refs/heads/{branch}"
        )
        if not other_branch:  # a push to another branch changes nothing this source follows
            self._tasks.spawn(self.sync(name, trigger="webhook"), f"webhook:{name}")
        return push

    async def _webhook_secret(self, source: Source) -> str:
        path = source.spec.webhook_secret
        if path is None or self._secrets is None:
            return ""
        try:
            value, _ = await self._secrets.read_for_app([f"gitops-{source.name}"], path, "secret")
        except SecretUnavailable:
            log.warning("webhook secret of source %s cannot be read", source.name)
            return ""
        return value

    # -- environments: status, pins, history -----------------------------------------

    async def _pin(self, env: str) -> dict[str, Any] | None:
        record = await self._store.get(PINS + env)
        return json.loads(record.value) if record is not None else None

    async def unpin(self, env: str) -> None:
        await self._store.delete(PINS + env)

    async def rollback(self, env: str, number: int | None, who: str) -> dict[str, Any]:
        """Re-apply revision ``number`` (default: the one before the current good one) of
        each source of ``env`` and pin the environment until a new commit arrives."""
        revisions = [r for r in await self._engine.revisions.list(limit=0) if r.environment == env]
        if number is None:
            good = [r for r in revisions if r.status == RevisionStatus.SUCCEEDED and r.commit]
            if len(good) < 2:
                raise NotFoundError(f"environment {env} has no earlier good revision")
            number = good[1].number
        target = next((r for r in revisions if r.number == number), None)
        if target is None:
            raise NotFoundError(f"revision {number} did not change environment {env}")
        _, revision = await self._engine.rollback(number, who)
        sha = None
        name = (target.commit or {}).get("source")
        if name is not None and name in self._status:
            sha = self._status[name].seen
        pin = {"revision": number, "sha": sha, "who": who, "when": time.time()}
        await self._store.put(PINS + env, json.dumps(pin).encode())
        if name in self._status:
            self._status[name].state = SyncState.PINNED
            self._status[name].reason = f"pinned to revision {number} by a rollback"
            await self._save_status(name, self._status[name])
        await self._event(env, name or "", "rollback", f"to revision {number}")
        return {"pinned": pin, "revision": revision.to_dict() if revision else None}

    async def revert(self, env: str, number: int | None, who: str) -> dict[str, Any]:
        """``socle rollback ENV [REV] --revert``: instead of pinning, write a commit to the
        source's branch that puts its folder back as at revision ``number``'s commit (default:
        the good one before the current), push it, unpin and sync it like any commit."""
        revisions = [r for r in await self._engine.revisions.list(limit=0) if r.environment == env]
        good = [r for r in revisions if r.status == RevisionStatus.SUCCEEDED and r.commit]
        if number is None:
            if len(good) < 2:
                raise NotFoundError(f"environment {env} has no earlier good revision")
            number = good[1].number
        target = next((r for r in good if r.number == number), None)
        if target is None or not target.commit:
            raise NotFoundError(f"revision {number} is not a good revision of {env} from Git")
        name = target.commit.get("source", "")
        source = self.get(name)
        if source.spec.branch is None:
            raise ConflictError(
                f"source {name} follows {source.spec.ref}, not a branch: nothing to revert on",
                hint=f"use `socle rollback {env} {number}` (a pin) instead",
            )
        sha = target.commit["sha"]
        message = (
            f"Revert {source.spec.path} to {sha[:12]} (revision {number})\n\n"
            f"Written by `socle rollback {env} {number} --revert` for {who}."
        )
        async with self._locks.setdefault(name, asyncio.Lock()):
            credentials = await self._credentials(source)
            mirror = Mirror(self._dir / name / "mirror", source.spec.repo, credentials)
            await asyncio.to_thread(mirror.fetch)
            new = await asyncio.to_thread(
                mirror.revert_to, source.spec.branch, sha, source.spec.path, message
            )
        if await self._pin(env) is not None:
            await self.unpin(env)
        await self._event(env, name, "rollback",
                          f"revert commit {new[:12]} to {sha[:12]} (revision {number}) by {who}")  # fmt: skip
        status = await self.sync(name, trigger="revert", force=True)
        return {"revert": {"sha": new, "to": sha, "revision": number, "source": name},
                "status": status.to_dict()}  # fmt: skip

    def not_in_sync(self) -> list[tuple[str, str, str]]:
        """``(env, source, state)`` of every source whose environment does not run what Git
        says: a new commit not applied (auto-sync off, or drift seen), or a failed sync.
        Read from memory (no store, no Git): the metrics page asks at every scrape."""
        rows = []
        for source in self.sources():
            state = self.status_of(source.name).state
            if state in (SyncState.OUT_OF_SYNC, SyncState.FAILED):
                rows.append((source.spec.env, source.name, state.replace(" ", "_")))
        return sorted(rows)

    async def environments(self) -> list[dict[str, Any]]:
        """One row per environment with a source: its state and each source's status."""
        envs: dict[str, list[Source]] = {}
        for source in self.sources():
            envs.setdefault(source.spec.env, []).append(source)
        rows = []
        for env, sources in sorted(envs.items()):
            states = [self.status_of(s.name) for s in sources]
            order = [SyncState.FAILED, SyncState.SYNCING, SyncState.OUT_OF_SYNC,
                     SyncState.WAITING, SyncState.PINNED, SyncState.NEW,
                     SyncState.SYNCED]  # fmt: skip
            worst = min((s.state for s in states), key=order.index)
            rows.append(
                {
                    "env": env,
                    "state": worst,
                    "pinned": await self._pin(env),
                    "promotion": await self._promotion(env),
                    "drift": sorted(d for d in self._drifting if d.startswith(f"{env}/")),
                    "sources": [
                        {"source": s.name, **st.to_dict()}
                        for s, st in zip(sources, states, strict=True)
                    ],
                }
            )
        return rows

    async def history(self, env: str, limit: int = 50) -> list[dict[str, Any]]:
        rows = []
        async for revision in self._engine.revisions.newest():
            if revision.environment != env:
                continue
            finished = revision.finished
            rows.append(
                {
                    "number": revision.number,
                    "created": revision.created,
                    "status": revision.status,
                    "message": revision.message,
                    "who": revision.who,
                    "commit": revision.commit,
                    "rollback_of": revision.rollback_of,
                    "duration": round(finished - revision.created, 3) if finished else None,
                    "counts": revision.plan.get("counts", {}),
                }
            )
            if len(rows) >= limit:
                break
        for event in await self.events(env, limit=KEEP_EVENTS):
            if event["event"] == "sync failed" and event.get("commit"):
                rows.append(
                    {
                        "number": None,
                        "created": event["time"],
                        "status": "refused",
                        "message": event["message"],
                        "who": f"gitops:{event['source']}",
                        "commit": event["commit"],
                        "rollback_of": None,
                        "duration": None,
                        "counts": {},
                    }
                )
        rows.sort(key=lambda row: float(row["created"] or 0), reverse=True)
        return rows[:limit]

    async def diff(self, env: str, number: int | None) -> list[dict[str, Any]]:
        """Field-level diff of each source of ``env``: live vs Git (the last fetched
        commit), or live vs revision ``number``."""
        from socle.engine.planner import plan

        out = []
        if number is not None:
            desired, old = await self._engine.recorded(number)
            if old.environment != env:
                raise NotFoundError(f"revision {number} did not change environment {env}")
            current = self._engine.current_of(desired)
            the_plan = plan(desired.states, current, allow_delete_all=True)
            return [{"revision": number, **the_plan.to_dict()}]
        for source in self.sources():
            if source.spec.env != env:
                continue
            status = self.status_of(source.name)
            sha = status.seen
            if sha is None:
                out.append({"source": source.name, "error": "never fetched"})
                continue
            mirror = Mirror(self._dir / source.name / "mirror", source.spec.repo)
            checkout = self._dir / source.name / "checkouts" / sha
            if not checkout.is_dir():
                await asyncio.to_thread(mirror.checkout, sha, source.spec.path, checkout)
            overlay = await self._overlay(checkout, env)
            _, the_plan = await self._engine.plan(
                checkout,
                overlay,
                environment=env,
                owner=source_owner(source.name),
                prune=source.spec.prune,
                allow_delete_all=True,
            )
            out.append({"source": source.name, "commit": sha, **the_plan.to_dict()})
        return out

    # -- promotion -------------------------------------------------------------------

    async def _promotion(self, env: str) -> dict[str, Any] | None:
        record = await self._store.get(PROMOTIONS + env)
        return json.loads(record.value) if record is not None else None

    async def promote(
        self, from_env: str, to_env: str, sha: str | None, who: str
    ) -> dict[str, Any]:
        """Move exactly the commit that is healthy in ``from_env`` (or ``sha``, which must
        have been applied there successfully) to the sources of ``to_env`` that follow the
        same repository and folder. Environments whose sources require approval wait for
        ``socle approve``; the others sync at once."""

        def followers(origin: Source) -> list[str]:
            return [
                s.name
                for s in self.sources()
                if s.spec.env == to_env
                and (s.spec.repo, s.spec.path) == (origin.spec.repo, origin.spec.path)
            ]

        sources = [s for s in self.sources() if s.spec.env == from_env and followers(s)]
        if not sources:
            raise NotFoundError(
                f"no source of {to_env} follows a repository and folder that {from_env} has",
                hint=f"add one with `socle source add ... --env {to_env}`",
            )
        good = {
            (r.commit or {}).get("sha", ""): (r.commit or {}).get("source", "")
            for r in await self._engine.revisions.list(limit=0)
            if r.environment == from_env and r.status == RevisionStatus.SUCCEEDED and r.commit
        }
        if sha is None:
            current = {
                (self.status_of(s.name).commit or {}).get("sha"): s
                for s in sources
                if self.status_of(s.name).state == SyncState.SYNCED
            }
            if len(current) != 1 or None in current:
                raise ConflictError(
                    f"environment {from_env} has no single synced commit to promote",
                    hint="sync it first, or name the commit with --revision SHA",
                )
            sha = str(next(iter(current)))
        matches = [c for c in good if c == sha or (len(sha) >= 7 and c.startswith(sha))]
        if len(matches) != 1:
            raise NotFoundError(
                f"commit {sha} was never applied successfully in {from_env}",
                hint=f"see `socle history {from_env}`",
            )
        sha = matches[0]
        origin = next((s for s in sources if s.name == good[sha]), sources[0])
        targets = followers(origin)
        approval = any(self._sources[n].spec.require_approval for n in targets)
        promotion = {"sha": sha, "from": from_env, "sources": targets, "who": who,
                     "when": time.time(), "approved": not approval, "approved_by": None,
                     "approved_at": None}  # fmt: skip
        await self._store.put(PROMOTIONS + to_env, json.dumps(promotion).encode())
        if approval:
            await self._event(to_env, ",".join(targets), "promotion waiting for approval",
                              f"{sha[:12]} from {from_env} by {who}")  # fmt: skip
            for name in targets:
                self._tasks.spawn(self.sync(name, trigger="promotion"), f"promote:{name}")
            return {"promotion": promotion, "results": []}
        await self._event(to_env, ",".join(targets), "promotion", f"{sha[:12]} from {from_env}")
        results = [
            {"source": n, **(await self.sync(n, trigger="promotion", force=True)).to_dict()}
            for n in targets
        ]
        return {"promotion": promotion, "results": results}

    async def approve(self, env: str, who: str) -> dict[str, Any]:
        """Approve the promotion waiting in ``env`` (recorded: who, when), then sync."""
        promotion = await self._promotion(env)
        if promotion is None or promotion.get("approved"):
            raise NotFoundError(f"no promotion waits for approval in {env}")
        promotion.update(approved=True, approved_by=who, approved_at=time.time())
        await self._store.put(PROMOTIONS + env, json.dumps(promotion).encode())
        await self._event(env, ",".join(promotion["sources"]), "approval given",
                          f"{promotion['sha'][:12]} by {who}")  # fmt: skip
        results = [
            {"source": n, **(await self.sync(n, trigger="approval", force=True)).to_dict()}
            for n in promotion["sources"]
            if n in self._sources
        ]
        return {"promotion": promotion, "results": results}

    # -- preview ---------------------------------------------------------------------

    async def preview(self, repo: str, ref: str, path: str, env: str) -> dict[str, Any]:
        """What a branch, tag or commit of ``repo`` would change in ``env`` (a merge
        request's plan, for CI): compared with the objects of the source that follows the
        same repository and folder in ``env`` if there is one. Changes nothing."""
        data = {"apiVersion": "socle/v1", "kind": "Source", "metadata": {"name": "preview"},
                "spec": {"repo": repo, "ref": ref, "path": path, "env": env}}  # fmt: skip
        try:
            wanted = Source.model_validate(data)
        except ValueError as exc:
            raise ConfigError(f"invalid preview: {exc}") from None
        spec = wanted.spec
        follower = next(
            (s for s in self.sources()
             if (s.spec.repo, s.spec.path, s.spec.env) == (spec.repo, spec.path, env)),
            None,
        )  # fmt: skip
        key = hashlib.sha256(spec.repo.encode()).hexdigest()[:16]
        folder = self._dir / "_preview" / key
        credentials = await self._credentials(follower) if follower is not None else None
        mirror = Mirror(folder / "mirror", spec.repo, credentials)
        await asyncio.to_thread(mirror.fetch)
        sha = await asyncio.to_thread(mirror.resolve, None, spec.ref)
        info = await asyncio.to_thread(mirror.commit, sha)
        if not await asyncio.to_thread(mirror.has_folder, sha, spec.path):
            raise SourceError(f"folder {spec.path!r} does not exist at commit {sha[:12]}")
        checkout = await asyncio.to_thread(mirror.checkout, sha, spec.path, folder / "tree")
        overlay = await self._overlay(checkout, env)
        owner = source_owner(follower.name) if follower is not None else f"preview:{spec.repo}"
        _, the_plan = await self._engine.plan(
            checkout,
            overlay,
            environment=env,
            owner=owner,
            prune=follower.spec.prune if follower is not None else True,
            allow_delete_all=True,
        )
        return {
            "source": follower.name if follower is not None else None,
            "env": env,
            "commit": info.to_dict(),
            **the_plan.to_dict(),
        }

    # -- drift -----------------------------------------------------------------------

    async def _watch_drift(self) -> None:
        while True:
            await asyncio.sleep(self._drift_seconds)
            try:
                await self.check_drift()
            except Exception:
                log.exception("drift check failed; will retry")

    async def check_drift(self) -> list[str]:
        """Drift of synced sources, recorded as events once each (and corrected with
        self-heal, by applying the source's commit again):

        - a target that differs from what the applied commit declares (someone rolled the
          environment back or changed it behind GitOps' back);
        - an app whose rollout completed but whose instances are not all ready (an
          instance killed by hand: the supervisor restarts it, the event says it happened).
        """
        found: dict[str, tuple[str, str]] = {}
        heal: set[str] = set()
        for source in self.sources():
            if self.status_of(source.name).state != SyncState.SYNCED:
                continue
            for label, message in (await self._target_drift(source)).items():
                found[f"{source.spec.env}/{label}"] = (source.name, message)
                if source.spec.self_heal:
                    heal.add(source.name)
        owners = {source_owner(s.name): s for s in self.sources()}
        for row in await self._engine.status():
            owner = owners.get(row.get("owner", ""))
            if owner is None or row.get("kind") != "App":
                continue
            if row.get("rollout") != "complete" or row.get("ready", 0) >= row.get("desired", 0):
                continue
            found.setdefault(
                f"{owner.spec.env}/{row['name']}",
                (owner.name, f"{row.get('ready')}/{row.get('desired')} instances ready"),
            )
        for key, (name, message) in sorted(found.items()):
            if key not in self._drifting:
                env, _, label = key.partition("/")
                await self._event(env, name, "drift detected", f"{label}: {message}")
                status = self.status_of(name)
                if message.startswith("live differs"):
                    status.state = SyncState.OUT_OF_SYNC
                    status.reason = f"drift: {label}: {message}"
                    await self._save_status(name, status)
        for key in sorted(set(self._drifting) - set(found)):
            env, _, label = key.partition("/")
            await self._event(env, "", "drift corrected", f"{label} matches Git again")
        self._drifting = set(found)
        for name in heal:
            self._tasks.spawn(self.sync(name, trigger="self-heal", force=True), f"heal:{name}")
        return sorted(found)

    async def _target_drift(self, source: Source) -> dict[str, str]:
        """``label -> what differs`` between the targets and the applied commit."""
        status = self.status_of(source.name)
        sha = (status.commit or {}).get("sha")
        if sha is None or await self._pin(source.spec.env) is not None:
            return {}
        checkout = self._dir / source.name / "checkouts" / sha
        if not checkout.is_dir():
            mirror = Mirror(self._dir / source.name / "mirror", source.spec.repo)
            await asyncio.to_thread(mirror.checkout, sha, source.spec.path, checkout)
        env = source.spec.env
        overlay = await self._overlay(checkout, env)
        _, the_plan = await self._engine.plan(
            checkout,
            overlay,
            environment=env,
            owner=source_owner(source.name),
            prune=source.spec.prune,
            allow_delete_all=True,
        )
        return {
            c.label: f"live differs from commit {sha[:12]} ({c.action.value}: "
            + ", ".join(f.path for f in c.fields[:5])
            + ")"
            for c in the_plan.changes
        }

    async def _event(
        self,
        env: str,
        source: str,
        kind: str,
        message: str,
        *,
        commit: dict[str, str] | None = None,
    ) -> None:
        self._event_counter += 1
        data: dict[str, Any] = {"time": time.time(), "env": env, "source": source,
                                "event": kind, "message": message}  # fmt: skip
        if commit is not None:
            data["commit"] = commit
        log.info("gitops %s: %s %s: %s", env, source, kind, message)
        await self._store.put(f"{EVENTS}{self._event_counter:012d}", json.dumps(data).encode())
        self.notifications.emit(data)
        if self._event_counter % 100 == 0:
            keys = await self._store.keys(EVENTS)
            for key in keys[:-KEEP_EVENTS]:
                await self._store.delete(key)

    async def events(self, env: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        keys = await self._store.keys(EVENTS)
        out: list[dict[str, Any]] = []
        for key in reversed(keys):
            record = await self._store.get(key)
            if record is None:
                continue
            data = json.loads(record.value)
            if env is None or data["env"] == env:
                out.append(data)
            if len(out) >= limit:
                break
        return out


def _without_stamps(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in STAMPS}
