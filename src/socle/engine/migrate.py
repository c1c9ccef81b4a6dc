"""Migration of state written by earlier versions, run at every start (idempotent).

Schema 1 (Socle up to the single-kind engine) kept App targets at ``apps/<name>`` and each
revision's desired state as ``{"apps": {name: state}}``. Schema 2 addresses every object by
``(kind, name)``: targets at ``objects/<Kind>/<name>``, desired states as
``{"objects": {kind: {name: state}}}``.

Each step is one atomic, compare-and-swap commit per record (the new record written, the
old one removed or replaced in the same commit), so a crash midway leaves every record
either old or new, never both or neither, and the next start finishes the job. Rendered
manifests are validated again with today's model so that fields added since (with their
defaults, e.g. ``spec.volumes: []``) do not show up as changes in the next plan; the
instance template is kept as it was, so no app restarts because of the upgrade.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from socle.engine.targets import Target, app_state, object_key, state_from_dict, state_to_dict
from socle.errors import ConflictError
from socle.model.app import App
from socle.state.store import Delete, Put, StateStore

log = logging.getLogger(__name__)

SCHEMA_KEY = "meta/schema"
SCHEMA = 2
OLD_TARGETS = "apps/"
DESIRED = "desired/"


async def migrate(store: StateStore) -> int:
    """Bring the store to :data:`SCHEMA`; returns how many records were rewritten."""
    marker = await store.get(SCHEMA_KEY)
    if marker is not None and int(marker.value) >= SCHEMA:
        return 0
    moved = 0
    for record in await store.scan(OLD_TARGETS):
        name = record.key[len(OLD_TARGETS) :]
        target = Target.from_json(record.value)
        target.state = _refresh(state_to_dict(target.state))
        if target.previous is not None:
            target.previous = _refresh(state_to_dict(target.previous))
        new_key = object_key("App", name)
        try:
            await store.commit(
                [Put(new_key, target.to_json(), 0), Delete(record.key, record.version)]
            )
        except ConflictError:
            # Already moved by an earlier, interrupted run (or another writer): keep the
            # newer record and drop the old one if it is still the same.
            if await store.get(new_key) is not None:
                await store.commit([Delete(record.key, record.version)])
            continue
        moved += 1
    for record in await store.scan(DESIRED):
        data: dict[str, Any] = json.loads(record.value)
        if "objects" in data or "apps" not in data:
            continue
        apps = {name: _refresh_entry(entry) for name, entry in data["apps"].items()}
        new = {"objects": {"App": apps} if apps else {}}
        encoded = json.dumps(new, separators=(",", ":")).encode()
        await store.commit([Put(record.key, encoded, record.version)])
        moved += 1
    await store.commit(
        [Put(SCHEMA_KEY, str(SCHEMA).encode(), marker.version if marker is not None else 0)]
    )
    if moved:
        log.warning("migrated %d record(s) of the state store to schema %d", moved, SCHEMA)
    return moved


def _refresh(data: dict[str, Any]) -> Any:
    """An AppState rendered again by today's model, its template kept as recorded."""
    state = state_from_dict(data)
    app = App.model_validate(state.manifest)
    fresh = app_state(app, state.release, state.secrets)
    if fresh.template != state.template:
        # Today's template of the same app differs: keep the recorded one, so that the
        # running instances (named by it) are re-adopted, not replaced.
        log.warning("app %s: template recomputed differently; keeping the recorded one", app.name)
    return type(state)(
        name=state.name,
        manifest=fresh.manifest,
        release=state.release,
        template=state.template,
        digest=fresh.digest if fresh.template == state.template else state.digest,
        secrets=state.secrets,
    )


def _refresh_entry(entry: dict[str, Any]) -> dict[str, Any]:
    state = _refresh(entry)
    return {**state_to_dict(state), "release_root": entry.get("release_root", "")}
