"""The Volume kind's handler: persistent folders made by a :class:`VolumeProvider`.

A created or grown Volume is ensured in ``prepare`` (before the commit: a refused size
changes nothing, and the folder exists before any App that mounts it starts, since Volumes
come first in dependency order). A deleted Volume is released only once every object of the
revision that mounted it has settled: retained (``retain: true``, the default) until
``socle volume delete NAME --purge``, else purged. Changing a Volume never restarts apps:
an App's instance template holds its mounts (name, path, read-only), not the Volume's size.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from socle.engine.kinds import ApplyContext, HandlerDeps
from socle.engine.kinds.record import ManifestState, RecordKindHandler, rendered
from socle.engine.planner import Action, Change, ObjectState
from socle.errors import ConfigError, SocleError
from socle.model.status import ChangePhase, VolumeHealth
from socle.model.volume import Volume
from socle.runtime.volumes import VolumeInfo, VolumeProvider

log = logging.getLogger(__name__)

KIND = "Volume"


@dataclass(frozen=True)
class VolumeState(ManifestState):
    """A Volume as the planner sees it: its rendered manifest and its digest."""

    kind: ClassVar[str] = KIND

    @classmethod
    def of(cls, volume: Volume) -> VolumeState:
        return cls(volume.name, *rendered(volume, exclude_none=False))

    @property
    def size(self) -> int:
        return int(self.manifest["spec"]["size"])

    @property
    def retain(self) -> bool:
        return bool(self.manifest["spec"].get("retain", True))

    def change(self, old: Any) -> tuple[Action, str]:
        if old.size != self.size:
            return Action.UPDATE, f"resize {old.size} -> {self.size} bytes (data kept)"
        return Action.UPDATE, "settings only (data kept, apps not restarted)"


class VolumeHandler(RecordKindHandler[Volume, VolumeState]):
    """Volumes: folders that outlive releases, made and released by the provider."""

    kind = KIND
    remove_after_deps = True

    def __init__(self, deps: HandlerDeps) -> None:
        super().__init__(deps)
        self._provider = deps.volumes
        self._pending_delete: dict[str, VolumeState] = {}

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

    def state_of(self, obj: Volume) -> VolumeState:
        return VolumeState.of(obj)

    def decode(self, data: Mapping[str, Any]) -> VolumeState:
        return VolumeState.from_json(data)

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

    def declared(self) -> dict[str, VolumeState]:
        """Volumes the last applied manifests declare, by name."""
        return {name: state for name, (state, _) in self._targets.items()}

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

    def _drop(self, name: str) -> None:
        old = self._targets.pop(name, None)
        if old is not None:
            self._pending_delete[name] = old[0]

    async def delete(self, name: str, revision: int) -> None:
        old = self._pending_delete.pop(name, None)
        if name in self._targets:
            # Declared again by a later revision meanwhile: its data stays in use.
            self._report(revision, name, ChangePhase.DELETED, "declared again; data kept")
            return
        retain = old.retain if old is not None else True
        try:
            await self._need_provider().release(name, purge=not retain)
        except Exception as exc:
            log.exception("releasing volume %s failed", name)
            message = exc.message if isinstance(exc, SocleError) else repr(exc)
            self._report(revision, name, ChangePhase.FAILED, f"release failed: {message}")
            return
        note = "data retained until `socle volume delete --purge`" if retain else "data purged"
        self._report(revision, name, ChangePhase.DELETED, note)

    async def info(self, name: str) -> VolumeInfo | None:
        return await self._need_provider().info(name)

    async def status(self) -> list[dict[str, Any]]:
        rows = []
        for name, (state, revision) in sorted(self._targets.items()):
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
                    "revision": revision,
                    "message": (info.warning or "") if info is not None else "not on disk",
                    "size_bytes": state.size,
                    "used_bytes": info.used_bytes if info is not None else None,
                    "enforced": info.enforced if info is not None else None,
                    "retain": state.retain,
                }
            )
        return rows


def _describe(info: VolumeInfo) -> str:
    limit = "enforced" if info.enforced else "not enforced"
    return f"{info.size_bytes} bytes ({limit}), {info.used_bytes} used"
