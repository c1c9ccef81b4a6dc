"""Refuse a control-plane start that would orphan or kill running apps.

A control plane that starts on an empty (or missing, hence new and empty) state store while
instances of this home still run believes no app is wanted: its first reconcile would stop
every one of them. That happens when the state file was lost or ``SOCLE_STORE`` points at the
wrong database, exactly when the apps are the only thing left. So the start is refused,
loudly, and the operator chooses: restore a backup, fix ``SOCLE_STORE``, or stop the
instances on purpose with ``socle down --force``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from socle.errors import ConfigError
from socle.runtime.local.records import RecordStore
from socle.state.store import StateStore


def live_instances(run_dir: Path) -> list[str]:
    """Ids of the instances of ``run_dir`` whose shim or app process is still alive."""
    live = []
    for record in RecordStore(run_dir).load_all():
        refs = (record.shim, record.child, record.app)
        if any(ref is not None and ref.alive() for ref in refs):
            live.append(str(record.id))
    return live


async def check_start_safe(store: StateStore, run_dir: Path, *, store_name: str) -> None:
    """Raise :class:`~socle.errors.ConfigError` if ``store`` holds nothing while instances run.

    Call it right after opening the store, before anything writes to it (the admin token,
    the secrets engine): a store is "empty" when it has no key at all."""
    if await store.keys(""):
        return
    live = await asyncio.to_thread(live_instances, run_dir)
    if not live:
        return
    shown = ", ".join(live[:5]) + (f" and {len(live) - 5} more" if len(live) > 5 else "")
    raise ConfigError(
        f"refusing to start: the state store ({store_name}) is empty or missing, but "
        f"{len(live)} instance(s) of this home still run ({shown}); starting would stop them",
        hint="restore the state with `socle backup restore FILE --force`, point SOCLE_STORE "
        "at the right database, or stop those instances on purpose with `socle down --force`",
    )


__all__ = ["check_start_safe", "live_instances"]
