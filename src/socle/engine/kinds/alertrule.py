"""Handlers of the kinds that become Prometheus rules: ``AlertRule`` and ``SLO``.

Nothing runs for them: the target is the rendered manifest. ``desired`` compiles every
object of the kind to Prometheus rule groups and runs ``promtool check rules`` on them, so a
bad PromQL expression or duration is a manifest problem (file, line, ``spec.expr``) before
anything changes; the result is cached by content digest, so unchanged rules are not
checked again. After a commit, listeners (the embedded Prometheus) are told to rewrite
their rule files (:meth:`AlertRuleHandler.subscribe`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

from socle.engine.kinds import HandlerDeps
from socle.engine.kinds.record import RecordKindHandler
from socle.engine.planner import Action
from socle.errors import ManifestError, Problem
from socle.model.alertrule import to_rule_group
from socle.model.kinds import ObjectRef
from socle.model.loader import LoadedManifests
from socle.model.slo import to_rule_groups as slo_rule_groups
from socle.tasks import within

log = logging.getLogger(__name__)

KIND = "AlertRule"
CHECK_TIMEOUT = 60.0

UNSET_DROPPED = ("expr", "logQuery", "above")
"""AlertRule fields left out of the recorded manifest when unset: a rule applied before
``logQuery`` existed keeps its digest (no spurious update after an upgrade)."""

LogQueryCheck = Callable[[str], str | None]
"""A LogQL query -> why it is refused (None: accepted); the log store's parser."""

Compiler = Callable[[str, dict[str, Any]], list[dict[str, Any]]]
"""``(name, rendered spec)`` -> Prometheus rule groups."""


def alert_groups(name: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [to_rule_group(name, spec)]


@dataclass(frozen=True)
class AlertRuleState:
    name: str
    manifest: dict[str, Any]
    digest: str
    kind: str = KIND

    @classmethod
    def of(cls, obj: Any, kind: str = KIND) -> AlertRuleState:
        manifest = obj.model_dump(mode="json", by_alias=True)
        spec = manifest.get("spec") or {}
        for key in UNSET_DROPPED:
            if key in spec and spec[key] is None:
                del spec[key]
        text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
        return cls(obj.name, manifest, hashlib.sha256(text.encode()).hexdigest(), kind)

    @property
    def actions(self) -> list[Any]:
        """``"restart"``, ``"rollback"`` or ``{"run": {"command": [...], "timeout": s}}``."""
        return list(self.manifest["spec"].get("actions") or [])

    def dependencies(self) -> list[ObjectRef]:
        return []

    def comparable(self) -> dict[str, Any]:
        return self.manifest

    def change(self, old: Any) -> tuple[Action, str]:
        return Action.UPDATE, "rule files rewritten, Prometheus reloaded (apps not restarted)"


def _decode(data: Mapping[str, Any], kind: str) -> AlertRuleState:
    return AlertRuleState(data["name"], data["manifest"], data["digest"], kind)


def promtool() -> str | None:
    return shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )


async def check_groups(tool: str, groups: list[dict[str, Any]]) -> str | None:
    """promtool's complaint about ``groups`` (None: accepted)."""
    with tempfile.TemporaryDirectory(prefix="socle-rules-") as folder:
        path = Path(folder) / "rules.yml"
        path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        proc = await asyncio.create_subprocess_exec(
            tool,
            "check",
            "rules",
            str(path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await within(proc.communicate(), CHECK_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return f"promtool timed out after {CHECK_TIMEOUT:g}s"
        if proc.returncode == 0:
            return None
        text = out.decode(errors="replace").replace(str(path), "rules").strip()
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        useful = [line for line in lines if not line.startswith(("Checking", "FAILED"))]
        return "; ".join(useful or lines)[:500]


class AlertRuleHandler(RecordKindHandler[Any, AlertRuleState]):
    """AlertRules: checked with promtool when planned, handed to Prometheus when applied.

    :class:`SLOHandler` is the same with another kind and compiler."""

    kind = KIND
    compile: ClassVar[Compiler] = staticmethod(alert_groups)

    def rule_groups(self, name: str, state: AlertRuleState) -> list[dict[str, Any]]:
        return type(self).compile(name, state.manifest["spec"])

    def __init__(self, deps: HandlerDeps) -> None:
        super().__init__(deps)
        # Nothing else of the deps is used: tests build these handlers from a bare object.
        self._log_query_check: LogQueryCheck | None = getattr(deps, "log_query_check", None)
        self._checked: set[str] = set()

    def state_of(self, obj: Any) -> AlertRuleState:
        return AlertRuleState.of(obj, self.kind)

    def decode(self, data: Mapping[str, Any]) -> AlertRuleState:
        return _decode(data, self.kind)

    def rules(self) -> dict[str, AlertRuleState]:
        """The applied AlertRules by name (what the webhook looks actions up in)."""
        return {name: state for name, (state, _) in self._targets.items()}

    async def check(self, loaded: LoadedManifests, states: Mapping[str, AlertRuleState]) -> None:
        await self._check(states, loaded.origins)

    async def _check(
        self, states: Mapping[str, AlertRuleState], origins: Mapping[str, str]
    ) -> None:
        fresh = {n: s for n, s in states.items() if s.digest not in self._checked}
        if not fresh:
            return
        # In a thread: the log store checks the queries' regular expressions (its worker).
        await asyncio.to_thread(self._check_log_queries, fresh, origins)
        tool = promtool()
        if tool is None:
            log.warning("promtool not found: AlertRule expressions are not checked at plan time")
            return
        groups = [g for n, s in sorted(fresh.items()) for g in self.rule_groups(n, s)]
        if await check_groups(tool, groups) is None:
            self._checked.update(s.digest for s in fresh.values())
            return
        problems: list[Problem] = []
        for name, state in sorted(fresh.items()):
            reason = await check_groups(tool, self.rule_groups(name, state))
            if reason is None:
                self._checked.add(state.digest)
                continue
            origin = origins.get(f"{self.kind}/{name}", "")
            file, _, line = origin.rpartition(":")
            problems.append(
                Problem(
                    file or None,
                    int(line) if line.isdigit() else None,
                    "spec.expr" if self.kind == KIND else "spec",
                    f"Prometheus refuses this rule: {reason}",
                )
            )
        if problems:
            raise ManifestError(problems, hint="fix the PromQL (see `socle metrics query`)")

    def _check_log_queries(
        self, states: Mapping[str, AlertRuleState], origins: Mapping[str, str]
    ) -> None:
        """A ``logQuery`` the log store's parser refuses is a manifest problem, like bad
        PromQL (no checker: not checked here, the evaluator reports it instead)."""
        if self._log_query_check is None:
            return
        problems: list[Problem] = []
        for name, state in sorted(states.items()):
            query = state.manifest["spec"].get("logQuery")
            if query is None:
                continue
            reason = self._log_query_check(query)
            if reason is None:
                continue
            file, _, line = origins.get(f"{self.kind}/{name}", "").rpartition(":")
            problems.append(
                Problem(
                    file or None,
                    int(line) if line.isdigit() else None,
                    "spec.logQuery",
                    f"the log store refuses this query: {reason}",
                )
            )
        if problems:
            raise ManifestError(
                problems, hint='a LogQL metric query, e.g. count_over_time({app="api"}[5m])'
            )

    def row(self, name: str, state: AlertRuleState, revision: int) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": name,
            "health": "ready",
            "revision": revision,
            "message": self.describe(state)[:200],
            "severity": state.manifest["spec"].get("severity", "warning"),
            "actions": state.actions,
        }

    def describe(self, state: AlertRuleState) -> str:
        spec = state.manifest["spec"]
        if spec.get("expr") is None:
            return f"logs: {spec.get('logQuery')} > {float(spec.get('above') or 0):g}"
        return str(spec["expr"])


class SLOHandler(AlertRuleHandler):
    """SLOs: recording rules and burn-rate alerts (see :mod:`socle.model.slo`)."""

    kind = "SLO"
    compile: ClassVar[Compiler] = staticmethod(slo_rule_groups)

    def describe(self, state: AlertRuleState) -> str:
        spec = state.manifest["spec"]
        return f"{spec['objective']}% over {spec.get('window')}"
