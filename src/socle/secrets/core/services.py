"""Everything that exists only while the barrier is unsealed, built at unseal, dropped at seal.

Keeping the unsealed subsystems in one object makes sealing simple and safe: the core drops
its reference (after stopping the expiry task and closing audit files) and any request
still holding the old object fails at the barrier, which has forgotten its keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from socle.secrets.core.audit import AuditBroker
from socle.secrets.core.barrier import Barrier, StorageView
from socle.secrets.core.cubbyhole import Cubbyhole
from socle.secrets.core.leases import ExpirationManager
from socle.secrets.core.mounts import MountManager
from socle.secrets.core.policy_store import PolicyStore
from socle.secrets.core.router import Router
from socle.secrets.core.tokens import TokenEntry, TokenStore
from socle.secrets.core.wrapping import Wrapping
from socle.tasks import TaskMonitor

if TYPE_CHECKING:
    from socle.secrets.registry import BackendRegistry

Clock = Callable[[], float]


@dataclass
class Services:
    barrier: Barrier
    registry: BackendRegistry
    policies: PolicyStore
    tokens: TokenStore
    router: Router
    mounts: MountManager
    leases: ExpirationManager
    audit: AuditBroker
    clock: Clock
    wrapping: Wrapping

    @classmethod
    def build(
        cls,
        barrier: Barrier,
        registry: BackendRegistry,
        clock: Clock = time.time,
        tasks: TaskMonitor | None = None,
        audit_dirs: Sequence[Path] = (),
    ) -> Services:
        """``audit_dirs``: folders audit device files may be in (``SOCLE_HOME/audit`` first)."""
        # Imported here: the built-in backends import this module for the type.
        from socle.secrets.core.sys_backend import SystemBackend
        from socle.secrets.core.token_api import TokenBackend

        router = Router()
        tokens = TokenStore(barrier, clock)
        builtins: dict[str, Any] = {}
        cubbyhole = Cubbyhole(StorageView(barrier, "cubbyhole/"))
        services = cls(
            barrier=barrier,
            registry=registry,
            policies=PolicyStore(barrier),
            tokens=tokens,
            router=router,
            mounts=MountManager(barrier, registry, router, builtins),
            leases=ExpirationManager(barrier, router, tokens, clock, tasks),
            audit=AuditBroker(barrier, audit_dirs),
            clock=clock,
            wrapping=Wrapping(tokens, cubbyhole, clock),
        )
        builtins.update(
            system=SystemBackend(services), token=TokenBackend(services), cubbyhole=cubbyhole
        )

        async def on_revoke(entry: TokenEntry) -> None:
            await services.leases.revoke_token(entry)
            if entry.accessor:  # batch tokens have neither an accessor nor a cubbyhole
                await cubbyhole.destroy(entry.accessor)

        tokens.on_revoke = on_revoke
        tokens.on_schedule = services.leases.schedule_token
        services.mounts.on_unmount = lambda entry: _revoke_mount(services, entry.path)
        services.mounts.on_remount = lambda source, target: _move_leases(services, source, target)
        return services

    async def load(self, *, first: bool, dev: bool) -> None:
        """Bring every subsystem up from storage (``first``: write the initial state)."""
        await self.tokens.load(create=first)
        if first:
            await self.policies.setup()
            await self.mounts.setup(dev=dev)
        await self.mounts.load()
        await self.audit.load()

    async def start(self) -> None:
        await self.leases.start()

    async def stop(self) -> None:
        await self.leases.stop()
        self.audit.close()


async def _revoke_mount(services: Services, path: str) -> None:
    await services.leases.revoke_prefix(path)


async def _move_leases(services: Services, source: str, target: str) -> None:
    await services.leases.move_prefix(source, target)
