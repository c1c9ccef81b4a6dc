"""The NetworkPolicy kind's handler: policies handed to the firewall.

Nothing runs and nothing is built: an applied policy is given to the connect layer's
firewall (:class:`~socle.engine.kinds.FirewallSink`), which recompiles table ``inet socle``
and loads it; a deleted one is removed from it. At start the stored targets are handed over
again. Plans show each policy as readable rules: a change lists the rules added and removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self, cast

from socle.engine.kinds import FirewallSink, HandlerDeps
from socle.engine.kinds.record import ManifestState, RecordKindHandler, rendered
from socle.engine.planner import Action
from socle.errors import ManifestError, Problem
from socle.model.app import App
from socle.model.loader import LoadedManifests
from socle.model.networkpolicy import NetworkPolicy, NetworkPolicySpec, describe
from socle.model.status import AppHealth

KIND = "NetworkPolicy"


@dataclass(frozen=True)
class PolicyState(ManifestState):
    rules: tuple[str, ...]
    """The policy as readable rules (what plans diff)."""
    kind: ClassVar[str] = KIND

    @classmethod
    def of(cls, policy: NetworkPolicy) -> PolicyState:
        return cls(policy.name, *rendered(policy), tuple(describe(policy.spec)))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        spec = NetworkPolicySpec.model_validate(data["manifest"]["spec"])
        return cls(data["name"], data["manifest"], data["digest"], tuple(describe(spec)))

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.manifest["spec"])

    @property
    def create_reason(self) -> str:
        """What a plan says when the policy is new: every rule it adds."""
        return "new networkpolicy; rules added: " + "; ".join(f"+ {r}" for r in self.rules)

    def comparable(self) -> dict[str, Any]:
        return {"spec": self.manifest["spec"], "labels": self.manifest["metadata"].get("labels")}

    def change(self, old: Any) -> tuple[Action, str]:
        before = set(old.rules) if isinstance(old, PolicyState) else set()
        added = [r for r in self.rules if r not in before]
        removed = [r for r in getattr(old, "rules", ()) if r not in set(self.rules)]
        parts = [f"+ {r}" for r in added] + [f"- {r}" for r in removed]
        text = "; ".join(parts) if parts else "same rules"
        return Action.UPDATE, f"firewall rules reloaded atomically (nothing restarts): {text}"


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


class NetworkPolicyHandler(RecordKindHandler[NetworkPolicy, PolicyState]):
    """Network policies: compiled into the firewall, never run."""

    kind = KIND
    remove_after_deps = True
    deleted_message = "rules removed"

    def __init__(self, deps: HandlerDeps) -> None:
        super().__init__(deps)
        self._sink: FirewallSink | None = deps.firewall
        self._environment = deps.environment

    def state_of(self, obj: NetworkPolicy) -> PolicyState:
        return PolicyState.of(obj)

    def decode(self, data: Mapping[str, Any]) -> PolicyState:
        return PolicyState.from_json(data)

    async def check(self, loaded: LoadedManifests, states: Mapping[str, PolicyState]) -> None:
        problems: list[Problem] = []
        for name, obj in loaded.of_kind(KIND).items():
            problems += _check_ports(loaded, name, cast(NetworkPolicy, obj))
        if problems:
            raise ManifestError(problems)

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

    def row(self, name: str, state: PolicyState, revision: int) -> dict[str, Any]:
        if self._sink is None:
            enforced, message = False, "not enforced: no firewall on this control plane"
        else:
            enforced, message = self._sink.policy_status(name)
        return {
            "kind": KIND,
            "name": name,
            "health": AppHealth.HEALTHY if enforced else AppHealth.DEGRADED,
            "revision": revision,
            "message": message,
            "enforced": enforced,
            "rules": list(state.rules),
        }
