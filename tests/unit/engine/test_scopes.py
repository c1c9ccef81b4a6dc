"""Environments scope objects, sources own them: two folders in one environment never
delete each other's objects, one object has one owner, the same app runs in two
environments side by side, and a home made before environments keeps running as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from socle.engine.scopes import ADOPTED, DEFAULT_ENV, Scope, path_owner, source_owner
from socle.engine.service import Engine
from socle.errors import DeleteAllRefused, ManifestError
from socle.model.kinds import declared_name
from socle.state.sqlite import SqliteStore
from tests.unit.engine.test_engine_kinds import (
    Parts,
    app,
    apply,
    setup,  # noqa: F401  (the fixture)
    volume,
    write,
)


def labels(the_plan: object) -> list[str]:
    return [f"{c.action.value} {c.label}" for c in the_plan.changes]  # type: ignore[attr-defined]


async def test_two_sources_in_one_environment_never_delete_each_other(
    setup: tuple[Engine, Parts, SqliteStore],  # noqa: F811
    tmp_path: Path,
) -> None:
    engine, parts, _ = setup
    team_a = write(tmp_path / "a", app("api"), app("worker"))
    team_b = write(tmp_path / "b", app("shop"))
    await apply(engine, parts, team_a)
    the_plan, status = await apply(engine, parts, team_b)
    assert status == "succeeded"
    assert labels(the_plan) == ["create shop"], "team b's folder plans nothing of team a's"
    assert set(engine.controller.targets()) == {"api", "worker", "shop"}
    # Team a drops worker: only team a's worker goes.
    the_plan, _ = await apply(engine, parts, write(team_a, app("api")))
    assert labels(the_plan) == ["delete worker"]
    assert set(engine.controller.targets()) == {"api", "shop"}
    rows = {row["name"]: row for row in await engine.status()}
    assert rows["shop"]["owner"] == path_owner(team_b.resolve())
    assert rows["api"]["environment"] == DEFAULT_ENV


async def test_same_object_from_two_sources_is_refused_naming_both(
    setup: tuple[Engine, Parts, SqliteStore],  # noqa: F811
    tmp_path: Path,
) -> None:
    engine, parts, store = setup
    await apply(engine, parts, write(tmp_path / "a", app("api")))
    before = {r.key: r.version for r in await store.scan("")}
    with pytest.raises(ManifestError) as caught:
        await engine.apply(write(tmp_path / "b", app("api")), None, "test")
    text = str(caught.value.problems[0])
    assert "all.yaml:1" in text and f"path:{(tmp_path / 'a').resolve()}" in text
    assert "App api in environment default is already declared" in text
    assert {r.key: r.version for r in await store.scan("")} == before, "nothing changed"


async def test_same_app_in_two_environments_runs_side_by_side(
    setup: tuple[Engine, Parts, SqliteStore],  # noqa: F811
    tmp_path: Path,
) -> None:
    engine, parts, _ = setup
    docs = (
        app("db", "volumes:\n- {name: data, mountPath: /data}\n"),
        app("api", "dependsOn: [db]\n"),
        volume("data"),
    )
    repo = write(tmp_path / "repo", *docs)
    owner = source_owner("platform")
    _, dev = await engine.apply(repo, None, "t", environment="dev", owner=owner)
    _, prod = await engine.apply(repo, None, "t", environment="prod", owner=owner)
    assert dev is not None and prod is not None
    from tests.unit.engine.test_engine_kinds import settle

    assert await settle(engine, parts.driver, prod.number) == "succeeded"
    targets = engine.controller.targets()
    assert set(targets) == {"api", "db", "api--prod", "db--prod"}
    # References follow the rename: prod's api waits for prod's db, mounts prod's volume.
    assert targets["api--prod"].app.spec.depends_on == ["db--prod"]
    assert targets["db--prod"].app.spec.volumes[0].name == "data--prod"
    assert targets["api--prod"].environment == "prod"
    assert targets["api"].environment == "dev"
    envs = {i.app: i.environment for i in parts.driver.instances()}
    assert envs["api--prod"] == "prod" and envs["api"] == "dev"
    rows = {row["name"]: row for row in await engine.status()}
    assert rows["api--prod"]["declared"] == "api"
    # Dev is unchanged; an empty prod is refused; dropping prod's apps touches prod only.
    _, the_plan = await engine.plan(repo, None, environment="dev", owner=owner)
    assert the_plan.empty
    with pytest.raises(DeleteAllRefused):
        await engine.plan(write(tmp_path / "empty"), None, environment="prod", owner=owner)
    (repo / "all.yaml").write_text(docs[2])
    _, partial = await engine.plan(repo, None, environment="prod", owner=owner)
    assert sorted(labels(partial)) == ["delete api--prod", "delete db--prod"]


async def test_objects_made_before_environments_are_adopted(
    setup: tuple[Engine, Parts, SqliteStore],  # noqa: F811
    tmp_path: Path,
) -> None:
    engine, parts, store = setup
    repo = write(tmp_path / "repo", app("api"))
    await apply(engine, parts, repo)
    # An older home: no scope records, revisions without owner.
    for record in await store.scan("owners/"):
        await store.delete(record.key)
    await engine.stop()
    again = await parts.engine(store)
    try:
        assert again.scopes.get(("App", "api")) == Scope(
            DEFAULT_ENV, "api", path_owner(repo.resolve()), ADOPTED
        )
        _, the_plan = await again.plan(repo, None)
        assert the_plan.empty, "the same folder still owns its apps"
        # The folder moved since: its new place takes the adopted objects over.
        moved = write(tmp_path / "moved", app("api"), app("extra"))
        the_plan, status = await apply(again, parts, moved)
        assert labels(the_plan) == ["create extra"] and status == "succeeded"
        assert again.scopes.get(("App", "api")) == Scope(
            DEFAULT_ENV, "api", path_owner(moved.resolve()), "all.yaml:1"
        )
    finally:
        await again.stop()


def test_declared_name_for_readers_of_instances() -> None:
    assert declared_name("api--prod", "prod") == "api"
    assert declared_name("api", "dev") == "api"
    assert declared_name("api--prod", "dev") == "api--prod"


async def test_a_name_with_the_separator_cannot_impersonate_or_squat(
    setup: tuple[Engine, Parts, SqliteStore],  # noqa: F811
    tmp_path: Path,
) -> None:
    """``api--prod`` declared in prod would be ``api`` to DNS and the catalog (a neighbour's
    traffic); declared anywhere it squats the name prod's copy of ``api`` needs."""
    engine, parts, store = setup
    team_a = source_owner("team-a")
    _, first = await engine.apply(
        write(tmp_path / "a", app("api")), None, "t", environment="prod", owner=team_a
    )
    from tests.unit.engine.test_engine_kinds import settle

    assert first is not None and await settle(engine, parts.driver, first.number) == "succeeded"
    before = {r.key: r.version for r in await store.scan("")}
    impostor = write(tmp_path / "b", app("api--prod"))
    with pytest.raises(ManifestError) as caught:
        await engine.plan(impostor, None, environment="prod", owner=source_owner("team-b"))
    assert "would read as the declared name 'api' in environment prod" in str(
        caught.value.problems[0]
    )
    with pytest.raises(ManifestError) as caught:
        await engine.apply(write(tmp_path / "c", app("web--staging")), None, "t")
    assert "'--' is reserved" in str(caught.value.problems[0])
    assert {r.key: r.version for r in await store.scan("")} == before, "nothing changed"
    # The generated names still work: a second environment's copy of api.
    _, rev = await engine.apply(
        write(tmp_path / "d", app("api")), None, "t", environment="staging", owner=team_a
    )
    assert rev is not None and await settle(engine, parts.driver, rev.number) == "succeeded"
    assert engine.scopes.get(("App", "api--staging")) == Scope(
        "staging", "api", team_a, "all.yaml:1"
    )


def route(name: str, host: str, target: str, path: str = "/") -> str:
    return (
        f"apiVersion: socle/v1\nkind: Route\nmetadata: {{name: {name}}}\n"
        f"spec: {{host: {host!r}, path: {path}, target: {{app: {target}, port: http}}}}\n"
    )


async def test_a_host_has_one_owner(
    setup: tuple[Engine, Parts, SqliteStore],  # noqa: F811
    tmp_path: Path,
) -> None:
    """Another team's Route may not add a path to a host a first team serves, nor take a
    name under its wildcard; the same folder in a second environment needs its own host."""
    engine, parts, store = setup
    port = "ports: [{name: http}]\n"
    team_a = write(
        tmp_path / "a",
        app("shop", port),
        route("shop", "shop.test", "shop"),
        route("docs", "*.docs.test", "shop"),
    )
    the_plan, status = await apply(engine, parts, team_a)
    assert status == "succeeded"
    before = {r.key: r.version for r in await store.scan("")}
    for host in ("shop.test", "admin.docs.test"):
        thief = write(
            tmp_path / "b", app("evil", port), route("admin", host, "evil", path="/admin")
        )
        with pytest.raises(ManifestError) as caught:
            await engine.plan(thief, None)
        text = str(caught.value.problems[0])
        assert "all.yaml" in text and f"host {host} is already held by Route" in text
        assert f"path:{team_a.resolve()}" in text
    with pytest.raises(ManifestError, match="environment default"):
        await engine.plan(team_a, None, environment="prod")
    assert {r.key: r.version for r in await store.scan("")} == before, "nothing changed"
    # The owner itself edits its routes freely; another host is anyone's.
    _, the_plan = await engine.plan(
        write(team_a, app("shop", port), route("shop", "shop.test", "shop", path="/v2")), None
    )
    assert labels(the_plan) == ["update Route/shop", "delete Route/docs"]
    other = write(tmp_path / "c", app("evil", port), route("admin", "evil.test", "evil"))
    _, the_plan = await engine.plan(other, None)
    assert sorted(labels(the_plan)) == ["create Route/admin", "create evil"]


async def test_a_rollback_never_reaches_other_owners_objects(
    setup: tuple[Engine, Parts, SqliteStore],  # noqa: F811
    tmp_path: Path,
) -> None:
    """A re-apply of every object (a changed secret) is unscoped: rolling back to it used
    to revert and delete every team's objects made since."""
    from socle.engine.service import Desired
    from socle.errors import ConflictError
    from tests.unit.engine.test_engine_kinds import settle

    engine, parts, store = setup
    team_a = write(tmp_path / "a", app("api"))
    await apply(engine, parts, team_a)
    _, changed = await engine.desired_from(write(team_a, app("api", "env: {X: y}")), None)
    _, everything = await engine._start_apply(
        Desired(changed.states, None),
        who="socle (secret changed)",
        source="secrets",
        env=None,
        digest="",
    )
    assert everything is not None
    assert await settle(engine, parts.driver, everything.number) == "succeeded"
    await apply(engine, parts, write(tmp_path / "b", app("shop")))
    before = {r.key: r.version for r in await store.scan("")}
    with pytest.raises(ConflictError, match="belongs to no source or environment"):
        await engine.rollback(everything.number, "test")
    assert {r.key: r.version for r in await store.scan("")} == before, "nothing changed"
    assert "shop" in engine.controller.targets()
