"""The NetworkPolicy kind's handler: policies handed to the firewall.

Nothing runs and nothing is built: an applied policy is given to the connect layer's
firewall (:class:`~socle.engine.kinds.FirewallSink`), which recompiles table ``inet socle``
and loads it; a deleted one is removed from it. At start the stored targets are handed over
again. Plans show each policy as readable rules: a change lists the rules added and removed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from socle.engine.kinds import ApplyContext, FirewallSink, HandlerDeps
from socle.engine.planner import Action, Change, ObjectState
from socle.errors import ManifestError, Problem
from socle.model.app import App
from socle.model.kinds import ObjectRef
from socle.model.loader import LoadedManifests
from socle.model.networkpolicy import NetworkPolicy, NetworkPolicySpec, describe
from socle.model.status import AppHealth, ChangePhase

KIND = "NetworkPolicy"


@dataclass(frozen=True)
class PolicyState:
    name: str
    manifest: dict[str, Any]
    rules: tuple[str, ...]
    """The policy as readable rules (what plans diff)."""
    digest: str
    kind: ClassVar[str] = KIND

    @classmethod
    def of(cls, policy: NetworkPolicy) -> PolicyState:
        manifest = policy.model_dump(mode="json", by_alias=True, exclude_none=True)
        text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(text.encode()).hexdigest()
        return cls(policy.name, manifest, tuple(describe(policy.spec)), digest)

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.manifest["spec"])

    @property
    def create_reason(self) -> str:
        """What a plan says when the policy is new: every rule it adds."""
        return "new networkpolicy; rules added: " + "; ".join(f"+ {r}" for r in self.rules)

    def dependencies(self) -> list[ObjectRef]:
        return []

    def comparable(self) -> dict[str, Any]:
        return {"spec": self.manifest["spec"], "labels": self.manifest["metadata"].get("labels")}

    def change(self, old: Any) -> tuple[Action, str]:
        before = set(old.rules) if isinstance(old, PolicyState) else set()
        added = [r for r in self.rules if r not in before]
        removed = [r for r in getattr(old, "rules", ()) if r not in set(self.rules)]
        parts = [f"+ {r}" for r in added] + [f"- {r}" for r in removed]
        text = "; ".join(parts) if parts else "same rules"
        return Action.UPDATE, f"firewall rules reloaded atomically (nothing restarts): {text}"


def _encode(state: PolicyState) -> dict[str, Any]:
    return {"name": state.name, "manifest": state.manifest, "digest": state.digest}


def _decode(data: Mapping[str, Any]) -> PolicyState:
    spec = NetworkPolicySpec.model_validate(data["manifest"]["spec"])
    return PolicyState(data["name"], data["manifest"], tuple(describe(spec)), data["digest"])


def _check_ports(loaded: LoadedManifests, name: str, policy: NetworkPolicy) -> list[Problem]:
    """Named ports must be ports of the app the policy selects (by name); labels may select
    apps without them, so only ``spec.app`` is checked."""
    spec = policy.spec
    if spec.app is None:
        return []
    app = loaded.objects.get(("App", spec.app))
    if not isinstance(app, App):
        return []
    known = {p.name for p in app.spec.ports}
    origin = loaded.origins.get(f"{KIND}/{name}", "")
    file, _, line = origin.rpartition(":")
    problems = []
    for r, rule in enumerate(spec.ingress):
        for p, port in enumerate(rule.ports or []):
            if isinstance(port, str) and port not in known:
                problems.append(
                    Problem(
                        file or None,
                        int(line) if line.isdigit() else None,
                        f"spec.ingress[{r}].ports[{p}]",
                        f"app {spec.app} has no port named {port!r} "
                        f"(its ports: {', '.join(sorted(known)) or 'none'})",
                    )
                )
    return problems


class NetworkPolicyHandler:
    """Network policies: compiled into the firewall, never run."""

    kind = KIND

    def __init__(self, deps: HandlerDeps) -> None:
        self._sink: FirewallSink | None = deps.firewall
        self._environment = deps.environment
        self._report = deps.report
        self._targets: dict[str, tuple[PolicyState, int]] = {}
        self._states: dict[int, tuple[NetworkPolicy, PolicyState]] = {}

    async def restore(self, records: Mapping[str, bytes]) -> dict[str, int]:
        targets = {}
        for name, raw in records.items():
            data = json.loads(raw)
            targets[name] = (_decode(data["state"]), int(data["revision"]))
        for gone in set(self._targets) - set(targets):
            self._tell(gone, None)
        self._targets = targets
        for name, (state, _) in targets.items():
            self._tell(name, state)
        return {}

    def _tell(self, name: str, state: PolicyState | None) -> None:
        if self._sink is None:
            return
        if state is None:
            self._sink.set(name, None)
            return
        spec = state.spec
        # Like a Kubernetes namespace: a policy that lives in an environment (a GitOps
        # source's) and names none protects that environment's instances only.
        own = self._environment((KIND, name)) if self._environment is not None else "default"
        if own != "default" and not spec.get("host") and "environment" not in spec:
            spec["environment"] = own
        self._sink.set(name, spec)

    async def start(self) -> None:
        """Nothing runs; the targets were handed to the firewall by :meth:`restore`."""

    async def stop(self) -> None:
        """The loaded ruleset stays: apps outlive the control plane, so do their rules."""

    def current(self) -> dict[str, ObjectState]:
        return {name: state for name, (state, _) in self._targets.items()}

    async def desired(self, loaded: LoadedManifests) -> dict[str, ObjectState]:
        known = self._states
        fresh: dict[int, tuple[NetworkPolicy, PolicyState]] = {}
        states: dict[str, ObjectState] = {}
        problems: list[Problem] = []
        for name, obj in loaded.of_kind(KIND).items():
            policy = cast(NetworkPolicy, obj)
            problems += _check_ports(loaded, name, policy)
            entry = known.get(id(policy))
            if entry is None or entry[0] is not policy:
                entry = (policy, PolicyState.of(policy))
            fresh[id(policy)] = entry
            states[name] = entry[1]
        if problems:
            raise ManifestError(problems)
        self._states = fresh
        return states

    def export_cache(self) -> Any:
        return list(self._states.values())

    def adopt_cache(self, exported: Any) -> None:
        self._states = {id(policy): (policy, state) for policy, state in exported}

    def encode(self, name: str, state: ObjectState) -> dict[str, Any]:
        return _encode(cast(PolicyState, state))

    def decode(self, data: Mapping[str, Any]) -> ObjectState:
        return _decode(data)

    async def check_reapply(self, states: Mapping[str, ObjectState], revision: int) -> None:
        """A recorded policy can always be compiled again."""

    async def prepare(
        self, changes: list[Change], desired: Mapping[str, ObjectState], ctx: ApplyContext
    ) -> dict[str, str]:
        return {}

    def record(self, name: str, state: ObjectState, revision: int) -> bytes:
        data = {"state": _encode(cast(PolicyState, state)), "revision": revision}
        return json.dumps(data, separators=(",", ":")).encode()

    async def activate(self, applied: Mapping[str, ObjectState | None], revision: int) -> set[str]:
        pending: set[str] = set()
        for name, state in applied.items():
            if state is None:
                self._targets.pop(name, None)
                pending.add(name)  # removed from the firewall in `delete`
            else:
                policy = cast(PolicyState, state)
                self._targets[name] = (policy, revision)
                self._tell(name, policy)
        return pending

    async def delete(self, name: str, revision: int) -> None:
        if name in self._targets:
            self._report(revision, KIND, name, ChangePhase.DELETED, "declared again; kept")
            return
        self._tell(name, None)
        self._report(revision, KIND, name, ChangePhase.DELETED, "rules removed")

    async def refreshed(self) -> dict[str, ObjectState]:
        return {}

    async def status(self) -> list[dict[str, Any]]:
        rows = []
        for name, (state, revision) in sorted(self._targets.items()):
            if self._sink is None:
                enforced, message = False, "not enforced: no firewall on this control plane"
            else:
                enforced, message = self._sink.policy_status(name)
            rows.append(
                {
                    "kind": KIND,
                    "name": name,
                    "health": AppHealth.HEALTHY if enforced else AppHealth.DEGRADED,
                    "revision": revision,
                    "message": message,
                    "enforced": enforced,
                    "rules": list(state.rules),
                }
            )
        return rows
