"""The Volume kind's handler: persistent folders made by a :class:`VolumeProvider`.

A created or grown Volume is ensured in ``prepare`` (before the commit: a refused size
changes nothing, and the folder exists before any App that mounts it starts, since Volumes
come first in dependency order). A deleted Volume is released only once every object of the
revision that mounted it has settled: retained (``retain: true``, the default) until
``socle volume delete NAME --purge``, else purged. Changing a Volume never restarts apps:
an App's instance template holds its mounts (name, path, read-only), not the Volume's size.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

from socle.engine.kinds import ApplyContext, HandlerDeps
from socle.engine.planner import Action, Change, ObjectState
from socle.errors import ConfigError, SocleError
from socle.model.kinds import ObjectRef
from socle.model.loader import LoadedManifests
from socle.model.status import ChangePhase, VolumeHealth
from socle.model.volume import Volume
from socle.runtime.volumes import VolumeInfo, VolumeProvider

log = logging.getLogger(__name__)

KIND = "Volume"


@dataclass(frozen=True)
class VolumeState:
    """A Volume as the planner sees it: its rendered manifest and its digest."""

    name: str
    manifest: dict[str, Any]
    digest: str
    kind: ClassVar[str] = KIND

    @classmethod
    def of(cls, volume: Volume) -> VolumeState:
        manifest = volume.model_dump(mode="json", by_alias=True)
        text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
        return cls(volume.name, manifest, hashlib.sha256(text.encode()).hexdigest())

    @property
    def size(self) -> int:
        return int(self.manifest["spec"]["size"])

    @property
    def retain(self) -> bool:
        return bool(self.manifest["spec"].get("retain", True))

    def dependencies(self) -> list[ObjectRef]:
        return []

    def comparable(self) -> dict[str, Any]:
        return self.manifest

    def change(self, old: Any) -> tuple[Action, str]:
        if old.size != self.size:
            return Action.UPDATE, f"resize {old.size} -> {self.size} bytes (data kept)"
        return Action.UPDATE, "settings only (data kept, apps not restarted)"


@dataclass
class _Target:
    state: VolumeState
    revision: int
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        data = {"state": _encode(self.state), "revision": self.revision}
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> _Target:
        data = json.loads(raw)
        return cls(_decode(data["state"]), int(data["revision"]))


def _encode(state: VolumeState) -> dict[str, Any]:
    return {"name": state.name, "manifest": state.manifest, "digest": state.digest}


def _decode(data: Mapping[str, Any]) -> VolumeState:
    return VolumeState(data["name"], data["manifest"], data["digest"])


class VolumeHandler:
    """Volumes: folders that outlive releases, made and released by the provider."""

    kind = KIND

    def __init__(self, deps: HandlerDeps) -> None:
        self._provider = deps.volumes
        self._report = deps.report
        self._targets: dict[str, _Target] = {}
        self._pending_delete: dict[str, _Target] = {}
        self._states: dict[int, tuple[Volume, VolumeState]] = {}

    @property
    def provider(self) -> VolumeProvider | None:
        return self._provider

    def _need_provider(self) -> VolumeProvider:
        if self._provider is None:
            raise ConfigError(
                "Volume objects need a volume provider, and this control plane has none",
                hint="run a control plane with the local volume provider (socle server)",
            )
        return self._provider

    async def restore(self, records: Mapping[str, bytes]) -> dict[str, int]:
        self._targets = {name: _Target.from_json(raw) for name, raw in records.items()}
        return {}

    async def start(self) -> None:
        """Nothing runs for a Volume; but a volume the stored targets no longer declare and
        the provider does not mark retained lost its release to a crash between a commit
        and the release: mark it retained now (never purge on a guess: data is kept)."""
        if self._provider is None:
            return
        for info in await self._provider.list():
            if info.name not in self._targets and not info.retained:
                log.warning("volume %s is no longer declared: keeping its data", info.name)
                await self._provider.release(info.name, purge=False)

    async def stop(self) -> None:
        """Nothing to stop."""

    def current(self) -> dict[str, ObjectState]:
        return {name: t.state for name, t in self._targets.items()}

    def declared(self) -> dict[str, VolumeState]:
        """Volumes the last applied manifests declare, by name."""
        return {name: t.state for name, t in self._targets.items()}

    async def desired(self, loaded: LoadedManifests) -> dict[str, ObjectState]:
        """States by model identity: the manifest cache hands the same object out again
        while its documents are unchanged (entries hold the model, so ids stay unique)."""
        known = self._states
        fresh: dict[int, tuple[Volume, VolumeState]] = {}
        states: dict[str, ObjectState] = {}
        for name, obj in loaded.of_kind(KIND).items():
            volume = cast(Volume, obj)
            entry = known.get(id(volume))
            if entry is None or entry[0] is not volume:
                entry = (volume, VolumeState.of(volume))
            fresh[id(volume)] = entry
            states[name] = entry[1]
        self._states = fresh
        return states

    def export_cache(self) -> Any:
        return list(self._states.values())

    def adopt_cache(self, exported: Any) -> None:
        self._states = {id(volume): (volume, state) for volume, state in exported}

    def encode(self, name: str, state: ObjectState) -> dict[str, Any]:
        return _encode(cast(VolumeState, state))

    def decode(self, data: Mapping[str, Any]) -> ObjectState:
        return _decode(data)

    async def check_reapply(self, states: Mapping[str, ObjectState], revision: int) -> None:
        """A recorded Volume can always be applied again (its data was never removed unless
        purged, and then it starts empty)."""

    async def prepare(
        self, changes: list[Change], desired: Mapping[str, ObjectState], ctx: ApplyContext
    ) -> dict[str, str]:
        wanted = [c.name for c in changes if c.action != Action.DELETE]
        if not wanted:
            return {}
        provider = self._need_provider()
        failures: dict[str, str] = {}
        for name in wanted:
            state = cast(VolumeState, desired[name])
            try:
                info = await provider.ensure(name, state.size)
            except SocleError as exc:
                failures[name] = exc.message
                continue
            except (OSError, ValueError) as exc:
                failures[name] = f"volume {name}: {exc}"
                continue
            await ctx.progress(name, ChangePhase.ENSURED, _describe(info))
        return failures

    def record(self, name: str, state: ObjectState, revision: int) -> bytes:
        target = _Target(cast(VolumeState, state), revision)
        return target.to_json()

    async def activate(self, applied: Mapping[str, ObjectState | None], revision: int) -> set[str]:
        pending: set[str] = set()
        for name, state in applied.items():
            if state is None:
                old = self._targets.pop(name, None)
                if old is not None:
                    self._pending_delete[name] = old
                pending.add(name)
            else:
                self._targets[name] = _Target(cast(VolumeState, state), revision)
        return pending

    async def delete(self, name: str, revision: int) -> None:
        old = self._pending_delete.pop(name, None)
        if name in self._targets:
            # Declared again by a later revision meanwhile: its data stays in use.
            self._report(revision, KIND, name, ChangePhase.DELETED, "declared again; data kept")
            return
        retain = old.state.retain if old is not None else True
        try:
            await self._need_provider().release(name, purge=not retain)
        except Exception as exc:
            log.exception("releasing volume %s failed", name)
            message = exc.message if isinstance(exc, SocleError) else repr(exc)
            self._report(revision, KIND, name, ChangePhase.FAILED, f"release failed: {message}")
            return
        note = "data retained until `socle volume delete --purge`" if retain else "data purged"
        self._report(revision, KIND, name, ChangePhase.DELETED, note)

    async def refreshed(self) -> dict[str, ObjectState]:
        return {}

    async def info(self, name: str) -> VolumeInfo | None:
        return await self._need_provider().info(name)

    async def status(self) -> list[dict[str, Any]]:
        rows = []
        for name, target in sorted(self._targets.items()):
            info = await self._provider.info(name) if self._provider is not None else None
            if info is None:
                health = VolumeHealth.MISSING
            else:
                health = VolumeHealth.WARNING if info.warning else VolumeHealth.READY
            rows.append(
                {
                    "kind": KIND,
                    "name": name,
                    "health": health,
                    "revision": target.revision,
                    "message": (info.warning or "") if info is not None else "not on disk",
                    "size_bytes": target.state.size,
                    "used_bytes": info.used_bytes if info is not None else None,
                    "enforced": info.enforced if info is not None else None,
                    "retain": target.state.retain,
                }
            )
        return rows


def _describe(info: VolumeInfo) -> str:
    limit = "enforced" if info.enforced else "not enforced"
    return f"{info.size_bytes} bytes ({limit}), {info.used_bytes} used"
