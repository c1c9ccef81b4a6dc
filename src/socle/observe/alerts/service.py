"""Alerts and remediation: Alertmanager's webhook, the actions it triggers, silences.

Alertmanager calls ``POST /api/v1/alerts/webhook`` (with its own API token) with groups of
alerts. For each *firing* alert, :meth:`Alerts.webhook` looks up the AlertRule named by its
``socle_rule`` label among the **applied** AlertRules -- the actions come from the rule Socle
applied, never from what the alert carries -- and runs each action:

The alert itself is not taken on trust either: Alertmanager's API listens on loopback without
authentication (every app sandbox shares the host's network), so anyone there can post an alert
to it and Alertmanager relays it with its token. An action runs only when Prometheus, asked
at that moment (``/api/v1/alerts``), has an alert *firing* for the same ``socle_rule``, ``app``
and ``instance``; otherwise the decision is ``unconfirmed`` and nothing is done.

- ``restart``: the instance named by the alert's ``instance`` label (the per-instance
  exporter's), or every running instance of its ``app`` label, is restarted per its
  restart policy (like a failed liveness check). An app-wide alert restarts its instances
  **one at a time**: the next one only once the previous one is ready again (health
  checks passing), so the app keeps serving; the first is restarted at once, the others
  are ``queued`` and get their own ``done`` record when their turn comes. When a restarted
  instance is not ready again within ``roll_timeout`` seconds, the roll stops and the
  instances left are recorded ``failed`` (restarting them would take the app down).
- ``rollback``: the app of the alert's ``app`` label goes back to its previous healthy
  state (the newest succeeded revision that held it differently), other objects untouched;
  a new revision by ``socle (alert RULE)`` records it in ``socle history``.
- ``{run: {command, timeout}}``: the command runs in each alerting instance's sandbox, as
  the app; exit 0 is ``done``, anything else ``failed``.
- ``{scale: {by: N}}``: the app's instance count changes by N within its
  ``spec.autoscale`` bounds (an app without them is not scaled).

Every decision is recorded (kept in memory, newest last, and counted in
``socle_remediations_total{action,result}``): ``done``, ``rate-limited`` (the same rule acted
on the same instance less than ``min_interval`` seconds ago: a flapping app cannot cause a storm),
``no-target`` (nothing running matches the labels), ``unconfirmed`` (Prometheus does not
have that alert firing). Resolved alerts change nothing.
Decisions are also appended to ``home/observe/remediations.jsonl`` (owner-only), so the
record outlives the control plane. The file is bounded: past ``max_record_bytes`` it becomes
``remediations.jsonl.1`` (replacing the previous one) and a new one starts, so a flapping
app over months cannot fill the disk; :meth:`Alerts.load` reads both.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from socle.errors import ConfigError, SocleError
from socle.fs import open_private_append
from socle.observe.alerts.forward import AlertForwarder
from socle.observe.alerts.manager import AlertmanagerServer
from socle.observe.metrics.registry import ControlPlaneMetrics
from socle.runtime.driver import InstanceId, InstanceStatus
from socle.tasks import TaskGroup
from socle.units import parse_duration

log = logging.getLogger("socle.observe.alerts")

MAX_RECORDS = 500
MAX_RECORD_BYTES = 1024 * 1024
"""Size of ``remediations.jsonl`` past which it is rotated (about 4,000 decisions)."""
ROLL_TIMEOUT = 120.0
RESUME_WITHIN = 3600.0
"""A rolling restart cut short by a stop of the control plane resumes at the next start if
it began less than this many seconds ago; an older one is closed as abandoned."""
"""Seconds a restarted instance has to be ready again before a rolling restart stops."""
MAX_ALERTS_PER_CALL = 1000


class RuleSource(Protocol):
    def rules(self) -> Mapping[str, Any]:
        """Applied AlertRules by name; each has ``actions``."""
        ...


class Restarter(Protocol):
    def instances(self) -> list[InstanceStatus]: ...

    def replace(self, instance_id: InstanceId, reason: str) -> bool: ...

    async def run_in(self, instance_id: InstanceId, argv: list[str], timeout: float) -> str | None:
        """Run ``argv`` in the instance's sandbox; None if it exited 0, else why not."""
        ...


class EngineLike(Protocol):
    def handler(self, kind: str) -> Any: ...

    async def rollback_object(self, kind: str, name: str, who: str) -> tuple[Any, Any]:
        """Roll one object back to its previous healthy state; (plan, revision or None)."""
        ...


@dataclass(frozen=True)
class Remediation:
    """One decision taken for a firing alert."""

    time: float
    rule: str
    action: str
    app: str
    instance: str | None
    result: str
    message: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class _Roll:
    """A rolling restart as the record file tells it: the instance restarted last and
    those still queued behind it."""

    rule: str
    app: str
    started: float
    previous: str | None
    queued: list[str]
    total: int


def _unfinished_rolls(records: Sequence[Remediation]) -> list[_Roll]:
    """Rolling restarts whose queued instances were never restarted nor given up (the
    control plane stopped meanwhile), oldest first."""
    rolls: dict[tuple[str, str, float], _Roll] = {}
    for r in records:
        if r.action == "restart" and r.result == "queued" and r.instance:
            key = (r.rule, r.app, r.time)
            roll = rolls.setdefault(key, _Roll(r.rule, r.app, r.time, None, [], 1))
            roll.queued.append(r.instance)
            roll.total += 1
    for r in records:
        if r.action != "restart" or r.result == "queued" or not r.instance:
            continue
        for roll in rolls.values():
            if (r.rule, r.app) != (roll.rule, roll.app) or r.time < roll.started:
                continue
            if r.instance in roll.queued:
                roll.queued.remove(r.instance)
            elif r.time != roll.started:
                continue  # another restart of the app, not part of this roll
            if r.result == "done":
                roll.previous = r.instance
    return [roll for roll in rolls.values() if roll.queued]


class Alerts:
    """Remediation on alerts, and access to the Alertmanager (see the module docstring)."""

    def __init__(
        self,
        *,
        engine: EngineLike,
        driver: Restarter,
        metrics: ControlPlaneMetrics,
        min_interval: float = 300.0,
        clock: Callable[[], float] = time.time,
        record_file: Path | None = None,
        max_record_bytes: int = MAX_RECORD_BYTES,
        tasks: TaskGroup | None = None,
        roll_timeout: float = ROLL_TIMEOUT,
        roll_poll: float = 0.5,
    ) -> None:
        self._engine = engine
        self._driver = driver
        self._metrics = metrics
        self._min_interval = min_interval
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self.records: deque[Remediation] = deque(maxlen=MAX_RECORDS)
        self.manager: AlertmanagerServer | None = None
        self._record_file = record_file
        """Every decision as a JSON line (owner-only), kept across restarts."""
        self.forwarder: AlertForwarder | None = None
        """Also hands every firing and resolved alert to the notifiers (see :mod:`.forward`)."""
        self._max_record_bytes = max_record_bytes
        self._write_lock = threading.Lock()
        self._tasks = tasks if tasks is not None else TaskGroup("alerts")
        """Where rolling restarts run (they outlive the webhook call that starts them)."""
        self._roll_timeout = roll_timeout
        self._roll_poll = roll_poll
        self._unfinished: list[_Roll] = []
        """Rolling restarts the last run left half done (see :meth:`resume_rolls`)."""

    def load(self) -> None:
        """The last decisions recorded by earlier runs, and the rate limit they set
        (blocking: call it in a thread)."""
        if self._record_file is None:
            return
        lines: list[str] = []
        for path in (_rotated(self._record_file), self._record_file):
            try:
                lines += path.read_text().splitlines()
            except OSError:
                continue
        lines = lines[-MAX_RECORDS:]
        for line in lines:
            try:
                record = Remediation(**json.loads(line))
            except (ValueError, TypeError):
                continue  # a line cut by a crash
            self.records.append(record)
            if record.result != "done":
                continue
            # The rate limit outlives a restart of the control plane too: Alertmanager
            # notifies again, and a restart loop must not restart the app each time.
            if record.action == "restart" and record.instance:
                key = (record.rule, record.instance)
            elif record.action in ("rollback", "run", "scale") and record.app:
                key = (f"{record.rule}:{record.action}", record.app)
            else:
                continue
            self._last[key] = max(self._last.get(key, 0.0), record.time)
        self._unfinished = _unfinished_rolls(list(self.records))

    async def resume_rolls(self) -> list[Remediation]:
        """Carry on the rolling restarts an earlier run left half done (after
        :meth:`load`, once the runtime re-adopted its instances): the instance restarted
        last must be ready again, then the queued ones restart one at a time. A roll older
        than :data:`RESUME_WITHIN`, or whose instances are gone, is closed in the record."""
        now = self._clock()
        closed: list[Remediation] = []
        running: dict[str, InstanceStatus] = {s.id: s for s in self._driver.instances()}
        for roll in self._unfinished:
            rest = [running[i] for i in roll.queued if i in running]
            late = now - roll.started > RESUME_WITHIN
            for iid in roll.queued:
                if late or iid not in running:
                    why = "the control plane was stopped for too long" if late else "gone"
                    closed.append(
                        self._record(
                            Remediation(
                                now, roll.rule, "restart", roll.app, iid, "no-target",
                                f"rolling restart abandoned: {why}",
                            )
                        )
                    )  # fmt: skip
            if late or not rest:
                continue
            for status in rest:  # the roll holds the rate limit again
                self._last[(roll.rule, status.id)] = now
            log.info(
                "resuming the rolling restart of %s (%d of %d left)",
                roll.app,
                len(rest),
                roll.total,
            )
            number = roll.total - len(rest) + 1
            self._tasks.spawn(
                self._roll_on(roll.rule, roll.previous, rest, roll.total, number),
                f"roll {roll.app}",
            )
        self._unfinished = []
        await self._persist_quietly(closed)
        return closed

    async def persist(self, done: list[Remediation]) -> None:
        """Append ``done`` to the record file (in a thread: never blocks the loop)."""
        if self._record_file is None or not done:
            return
        path = self._record_file
        text = "".join(json.dumps(r.to_dict(), sort_keys=True) + "\n" for r in done).encode()

        def write() -> None:
            with self._write_lock:  # one writer at a time: a rotation never loses a line
                fd = open_private_append(path)
                try:
                    os.write(fd, text)
                    full = os.fstat(fd).st_size > self._max_record_bytes
                finally:
                    os.close(fd)
                if full:
                    os.replace(path, _rotated(path))

        await asyncio.to_thread(write)

    def _rules(self) -> Mapping[str, Any]:
        """Applied rules by their ``socle_rule`` label: ``name`` (AlertRule), ``SLO/name``."""
        rules = dict(self._engine.handler("AlertRule").rules())
        try:
            slos = self._engine.handler("SLO").rules()
        except KeyError:
            slos = {}
        rules.update({f"SLO/{name}": state for name, state in slos.items()})
        return rules

    def record(self, item: Remediation) -> Remediation:
        """Record a decision taken elsewhere (the autoscaler's) with the others."""
        return self._record(item)

    def _record(self, item: Remediation) -> Remediation:
        self.records.append(item)
        self._metrics.remediations.labels(item.action, item.result).inc()
        log.warning(
            "remediation %s of %s (rule %s): %s %s",
            item.action,
            item.instance or item.app,
            item.rule,
            item.result,
            item.message,
        )
        return item

    async def webhook(
        self, payload: Mapping[str, Any], firing: Sequence[Mapping[str, Any]]
    ) -> list[Remediation]:
        """Act on one Alertmanager webhook call; returns the decisions taken.

        ``firing`` is what Prometheus reports as active alerts right now (its
        ``/api/v1/alerts`` list): an alert of the payload that matches none of them firing is
        not acted on (see the module docstring).
        """
        alerts = payload.get("alerts")
        if not isinstance(alerts, list):
            raise ConfigError("webhook payload has no 'alerts' list")
        if self.forwarder is not None:
            self.forwarder.forward(alerts, firing)
        rules = self._rules()
        done: list[Remediation] = []
        for alert in alerts[:MAX_ALERTS_PER_CALL]:
            if not isinstance(alert, dict) or alert.get("status") != "firing":
                continue
            labels = alert.get("labels")
            if not isinstance(labels, dict):
                continue
            name = str(labels.get("socle_rule") or "")
            rule = rules.get(name)
            if rule is None:
                continue
            confirmed = _confirmed(name, labels, firing)
            done.extend(await self.remediate(name, rule.actions, labels, confirmed=confirmed))
        return done

    async def remediate(
        self,
        rule: str,
        actions: list[Any],
        labels: Mapping[str, Any],
        *,
        confirmed: bool = True,
    ) -> list[Remediation]:
        """Run ``actions`` (from an applied rule, or Socle's own checks) for one alert;
        ``confirmed`` False (Prometheus has no such alert firing) records and does nothing."""
        done: list[Remediation] = []
        for action in actions:
            if action == "restart":
                done.extend(self._restart(rule, labels, confirmed=confirmed))
                continue
            if not confirmed:
                kind = action if isinstance(action, str) else next(iter(action), "action")
                done.append(
                    self._record(
                        Remediation(
                            self._clock(),
                            rule,
                            str(kind),
                            str(labels.get("app") or ""),
                            str(labels.get("instance") or "") or None,
                            "unconfirmed",
                            "Prometheus has no such alert firing: not acted on",
                        )
                    )
                )
                continue
            if action == "rollback":
                done.append(await self._rollback(rule, labels))
            elif isinstance(action, dict) and isinstance(action.get("run"), dict):
                done.extend(await self._run(rule, labels, action["run"]))
            elif isinstance(action, dict) and isinstance(action.get("scale"), dict):
                done.append(self._scale(rule, labels, int(action["scale"].get("by") or 0)))
        return done

    def _scale(self, rule: str, labels: Mapping[str, Any], by: int) -> Remediation:
        app = str(labels.get("app") or "")
        now = self._clock()

        def decision(result: str, message: str) -> Remediation:
            return self._record(Remediation(now, rule, "scale", app, None, result, message))

        controller = self._engine.handler("App").controller
        target = controller.target(app) if app else None
        if target is None:
            return decision("no-target", "the alert names no applied app")
        bounds = target.state.manifest["spec"].get("autoscale")
        if not bounds:
            return decision(
                "no-target", f"app {app} has no spec.autoscale: no bounds to scale within"
            )
        ago = self._limited((f"{rule}:scale", app), now)
        if ago is not None:
            return decision("rate-limited", self._limited_message(ago))
        current = int(controller.replicas_of(target))
        wanted = max(int(bounds.get("min", 1)), min(int(bounds["max"]), current + by))
        if wanted == current:
            return decision("done", f"already at the bound ({current} instances)")
        self._last[(f"{rule}:scale", app)] = now
        controller.scale(app, wanted)
        return decision("done", f"{current} -> {wanted} instances")

    def _limited(self, key: tuple[str, str], now: float) -> float | None:
        """Seconds since the last remediation under ``key`` if within the interval."""
        last = self._last.get(key)
        if last is not None and now - last < self._min_interval:
            return now - last
        return None

    def _limited_message(self, ago: float) -> str:
        return f"last remediation {ago:.0f}s ago (at most one per {self._min_interval:g}s)"

    async def _rollback(self, rule: str, labels: Mapping[str, Any]) -> Remediation:
        app = str(labels.get("app") or "")
        now = self._clock()
        if not app:
            return self._record(
                Remediation(now, rule, "rollback", "", None, "no-target", "the alert has no app")
            )
        ago = self._limited((f"{rule}:rollback", app), now)
        if ago is not None:
            return self._record(
                Remediation(
                    now, rule, "rollback", app, None, "rate-limited", self._limited_message(ago)
                )
            )
        # Taken before the rollback runs: two alerts arriving together roll back once.
        self._last[(f"{rule}:rollback", app)] = now
        try:
            _, revision = await self._engine.rollback_object("App", app, f"socle (alert {rule})")
        except SocleError as exc:
            return self._record(
                Remediation(now, rule, "rollback", app, None, "no-target", exc.message)
            )
        if revision is None:
            message = "already at the previous healthy state"
        else:
            message = (
                f"revision {revision.number} rolls {app} back to its state in revision "
                f"{revision.rollback_of}"
            )
        return self._record(Remediation(now, rule, "rollback", app, None, "done", message))

    async def _run(
        self, rule: str, labels: Mapping[str, Any], spec: Mapping[str, Any]
    ) -> list[Remediation]:
        command = [str(a) for a in spec.get("command") or []]
        timeout = parse_duration(spec.get("timeout") or 30.0)
        app = str(labels.get("app") or "")
        now = self._clock()
        targets = self._targets(labels)
        if not targets or not command:
            return [
                self._record(
                    Remediation(
                        now,
                        rule,
                        "run",
                        app,
                        str(labels.get("instance") or "") or None,
                        "no-target",
                        "no running instance matches the alert's labels",
                    )
                )
            ]
        # Limited per rule and app (not per instance): instances replaced since (a
        # restart, a rollback) must not make the same command run again at once.
        results = []
        limited: dict[str, float | None] = {}
        for status in targets:
            if status.app not in limited:
                limited[status.app] = self._limited((f"{rule}:run", status.app), now)
            ago = limited[status.app]
            if ago is not None:
                results.append(
                    self._record(
                        Remediation(
                            now,
                            rule,
                            "run",
                            status.app,
                            status.id,
                            "rate-limited",
                            self._limited_message(ago),
                        )
                    )
                )
                continue
            self._last[(f"{rule}:run", status.app)] = now
            failure = await self._driver.run_in(status.id, command, timeout)
            results.append(
                self._record(
                    Remediation(
                        now,
                        rule,
                        "run",
                        status.app,
                        status.id,
                        "failed" if failure else "done",
                        failure or f"{command[0]} exited 0",
                    )
                )
            )
        return results

    def _targets(self, labels: Mapping[str, Any]) -> list[InstanceStatus]:
        app = str(labels.get("app") or "")
        instance = str(labels.get("instance") or "")
        running = self._driver.instances()
        targets = [s for s in running if s.id == instance and (not app or s.app == app)]
        if not targets and app:
            targets = [s for s in running if s.app == app and s.pid is not None]
        return targets

    def _restart(
        self, rule: str, labels: Mapping[str, Any], *, confirmed: bool
    ) -> list[Remediation]:
        app = str(labels.get("app") or "")
        instance = str(labels.get("instance") or "")
        running = self._driver.instances()
        targets = [s for s in running if s.id == instance and (not app or s.app == app)]
        whole_app = False
        if not targets and app:
            targets = [s for s in running if s.app == app and s.pid is not None]
            whole_app = True
        now = self._clock()
        if not targets:
            return [
                self._record(
                    Remediation(
                        now,
                        rule,
                        "restart",
                        app,
                        instance or None,
                        "no-target",
                        "no running instance matches the alert's labels",
                    )
                )
            ]
        results = []
        eligible: list[InstanceStatus] = []
        for status in targets:
            last = self._last.get((rule, status.id))
            if last is not None and now - last < self._min_interval:
                results.append(
                    self._record(
                        Remediation(
                            now,
                            rule,
                            "restart",
                            status.app,
                            status.id,
                            "rate-limited",
                            f"last remediation {now - last:.0f}s ago "
                            f"(at most one per {self._min_interval:g}s)",
                        )
                    )
                )
                continue
            if not confirmed:
                results.append(
                    self._record(
                        Remediation(
                            now,
                            rule,
                            "restart",
                            status.app,
                            status.id,
                            "unconfirmed",
                            "Prometheus has no such alert firing: not acted on",
                        )
                    )
                )
                continue
            eligible.append(status)
        if whole_app and len(eligible) > 1:
            return results + self._roll(rule, eligible, now)
        for status in eligible:
            started = self._driver.replace(status.id, f"alert {rule}")
            if started:
                self._last[(rule, status.id)] = now
                self._forget_before(now - self._min_interval)
            results.append(
                self._record(
                    Remediation(
                        now,
                        rule,
                        "restart",
                        status.app,
                        status.id,
                        "done" if started else "no-target",
                        "restart requested" if started else "instance is not running",
                    )
                )
            )
        return results

    def _roll(self, rule: str, targets: list[InstanceStatus], now: float) -> list[Remediation]:
        """Restart ``targets`` (one app's instances) one at a time: the first now, each
        next one once the previous one is ready again (in the background)."""
        for status in targets:  # the whole roll holds the rate limit: no second roll
            self._last[(rule, status.id)] = now
        self._forget_before(now - self._min_interval)
        first, rest = targets[0], targets[1:]
        started = self._driver.replace(first.id, f"alert {rule}")
        total = len(targets)
        results = [
            self._record(
                Remediation(
                    now,
                    rule,
                    "restart",
                    first.app,
                    first.id,
                    "done" if started else "no-target",
                    f"restart requested (rolling, 1 of {total})"
                    if started
                    else "instance is not running",
                )
            )
        ]
        previous = first.id if started else None
        for status in rest:
            results.append(
                self._record(
                    Remediation(
                        now,
                        rule,
                        "restart",
                        status.app,
                        status.id,
                        "queued",
                        "rolling restart: waits for the previous instance to be ready again",
                    )
                )
            )
        self._tasks.spawn(self._roll_on(rule, previous, rest, total), f"roll {first.app}")
        return results

    async def _roll_on(
        self,
        rule: str,
        previous: str | None,
        rest: list[InstanceStatus],
        total: int,
        number: int = 2,
    ) -> None:
        """Restart ``rest`` one at a time, each once the one before is ready again;
        ``number`` is the first one's place in the whole roll (for the record)."""
        for index, status in enumerate(rest):
            if previous is not None and not await self._ready_again(previous):
                message = (
                    f"rolling restart stopped: {previous} was not ready again within "
                    f"{self._roll_timeout:g}s"
                )
                failed = [
                    self._record(
                        Remediation(self._clock(), rule, "restart", s.app, s.id, "failed", message)
                    )
                    for s in rest[index:]
                ]
                await self._persist_quietly(failed)
                return
            started = self._driver.replace(status.id, f"alert {rule}")
            item = self._record(
                Remediation(
                    self._clock(),
                    rule,
                    "restart",
                    status.app,
                    status.id,
                    "done" if started else "no-target",
                    f"restart requested (rolling, {index + number} of {total})"
                    if started
                    else "instance is not running",
                )
            )
            await self._persist_quietly([item])
            previous = status.id if started else previous

    async def _ready_again(self, instance_id: str) -> bool:
        """Whether the restarted instance is ready again (health checks passing) within
        the roll timeout; an instance that is gone (stopped by an apply) does not hold the
        roll back."""
        deadline = asyncio.get_running_loop().time() + self._roll_timeout
        while True:
            status = next((s for s in self._driver.instances() if s.id == instance_id), None)
            if status is None or status.ready:
                return True
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(self._roll_poll)

    async def _persist_quietly(self, done: list[Remediation]) -> None:
        try:
            await self.persist(done)
        except OSError as exc:  # recorded in memory anyway; the roll goes on
            log.error("cannot record remediations: %s", exc)

    def _forget_before(self, when: float) -> None:
        """Rate-limit entries older than the interval limit nothing: drop them."""
        if len(self._last) > 1000:
            self._last = {k: t for k, t in self._last.items() if t >= when}

    def history(self, limit: int = 100) -> list[dict[str, object]]:
        return [r.to_dict() for r in list(self.records)[-limit:]]


def _rotated(path: Path) -> Path:
    return path.with_name(path.name + ".1")


CONFIRMED_BY = ("socle_rule", "app", "instance")
"""The labels an alert must share with one Prometheus has firing: the ones that choose the
rule and the targets."""


def _confirmed(rule: str, labels: Mapping[str, Any], firing: Sequence[Mapping[str, Any]]) -> bool:
    """Whether Prometheus has ``rule`` firing with the same targeting labels as ``labels``."""
    wanted = {key: str(labels.get(key) or "") for key in CONFIRMED_BY}
    wanted["socle_rule"] = rule
    for alert in firing:
        if not isinstance(alert, Mapping) or alert.get("state") != "firing":
            continue
        have = alert.get("labels")
        if not isinstance(have, Mapping):
            continue
        if all(str(have.get(key) or "") == value for key, value in wanted.items()):
            return True
    return False


__all__ = ["CONFIRMED_BY", "Alerts", "Remediation"]
