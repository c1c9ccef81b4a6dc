"""The Route handler lists routes in the order they claimed their host and path, so the
ingress gives a contested host and path to the first claim: a later Route (another team's,
another environment's) cannot take it over, not even after the first one is edited."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from socle.engine.kinds import HandlerDeps
from socle.engine.kinds.route import RouteHandler, RouteState
from socle.model.route import Route


def state(name: str, **spec: Any) -> RouteState:
    body = {"host": "shop.test", "target": {"app": name, "port": "http"}, **spec}
    route = Route.model_validate(
        {"apiVersion": "socle/v1", "kind": "Route", "metadata": {"name": name}, "spec": body}
    )
    return RouteState.of(route)


async def apply(handler: RouteHandler, name: str, new: RouteState, revision: int) -> bytes:
    record = handler.record(name, new, revision)
    await handler.activate({name: new}, revision)
    return record


async def test_the_first_claim_stays_first_across_edits_and_restarts() -> None:
    deps = cast(HandlerDeps, SimpleNamespace(report=lambda *args: None))
    handler = RouteHandler(deps)
    records = {"z-shop": await apply(handler, "z-shop", state("z-shop"), 1)}
    records["a-steal"] = await apply(handler, "a-steal", state("a-steal"), 2)
    assert list(handler.routes()) == ["z-shop", "a-steal"]
    # The owner edits its route (same host and path): it keeps its claim.
    records["z-shop"] = await apply(handler, "z-shop", state("z-shop", compression=False), 3)
    assert list(handler.routes()) == ["z-shop", "a-steal"]
    again = RouteHandler(deps)
    await again.restore(records)
    assert list(again.routes()) == ["z-shop", "a-steal"], "a restart keeps the order"
    # Moving to another path is a new claim, made now.
    await apply(handler, "z-shop", state("z-shop", path="/v2"), 4)
    assert list(handler.routes()) == ["a-steal", "z-shop"]
