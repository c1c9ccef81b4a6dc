"""Early detection: a new release whose error ratio departs from the previous release's is
rolled back, without waiting for a fixed threshold or for users to notice.

An App opts in with ``spec.metrics.releaseCheck`` (its own counters, scraped with the
``release`` label Socle adds to every target)::

    metrics:
      port: http
      releaseCheck:
        total: http_requests_total                  # every request
        errors: http_requests_total{code=~"5.."}    # the failed ones
        factor: 2          # the new release is bad at more than twice the previous' ratio
        minRatio: 0.05     # ... and at least 5 % errors (no rollback for 0.1 % vs 0 %)
        window: 2m         # rate window; both releases are compared over it

Every ``interval`` the watch asks Prometheus, per opted-in App, for the error ratio of the
instances of the release that should run now (its instance template: new code, or only new
settings) and of the app's other instances seen in the window (the previous release's,
whose last samples stay in range for a while after a rollout). While both
exist and the new one is worse as above, the ``rollback`` remediation runs under the rule
name ``release-check/APP`` -- recorded and rate-limited like any alert's (see
:mod:`socle.observe.alerts.service`).

When the previous release's samples already left the window (it was replaced before
Prometheus scraped it twice, or long ago), the new one is compared with the last ratio the
watch measured for the release that ran before it (kept in memory: after a control-plane
restart, only what Prometheus still holds counts). With neither, the watch stays quiet: it
judges *new* releases against what ran before, never against a fixed threshold.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from socle.errors import SocleError
from socle.observe.alerts.service import Alerts, EngineLike
from socle.observe.metrics.prometheus import PrometheusQuery
from socle.units import parse_duration

log = logging.getLogger("socle.observe.alerts")
RULE_PREFIX = "release-check/"


def _scoped(selector: str, app: str, template: str, *, same: bool) -> str:
    """``selector`` narrowed to one app and to (or away from) the instances of one
    template (their ids are ``APP-TEMPLATE10-N``)."""
    pattern = f"{re.escape(app)}-{template[:10]}-[0-9]+".replace("\\", "\\\\")
    matchers = f'app="{app}",instance{"=~" if same else "!~"}"{pattern}"'
    name, brace, rest = selector.partition("{")
    if brace:
        inner = rest.rsplit("}", 1)[0].strip()
        return f"{name}{{{inner + ',' if inner else ''}{matchers}}}"
    return f"{selector}{{{matchers}}}"


def ratio_query(check: Mapping[str, Any], app: str, template: str, *, same: bool) -> str:
    window = f"{int(parse_duration(check.get('window') or '2m'))}s"
    errors = _scoped(str(check["errors"]), app, template, same=same)
    total = _scoped(str(check["total"]), app, template, same=same)
    return f"sum(rate({errors}[{window}])) / sum(rate({total}[{window}]))"


def departs(new: float, old: float, check: Mapping[str, Any]) -> bool:
    """Whether the new release's ratio is bad compared with the previous one's."""
    factor = float(check.get("factor") or 2.0)
    floor = float(check.get("minRatio") or 0.05)
    return new >= floor and new > factor * old


class ReleaseWatch:
    def __init__(
        self,
        engine: EngineLike,
        alerts: Alerts,
        query: Callable[[], PrometheusQuery | None],
        *,
        interval: float = 10.0,
    ) -> None:
        self._engine = engine
        self._alerts = alerts
        self._query = query
        self._interval = interval
        self._acted: dict[str, str] = {}
        """App → the template last rolled back: judged once, not at every pass while
        the rollback rolls out."""
        self._measured: dict[str, tuple[str, float]] = {}
        """App → (template, its last measured ratio)."""
        self._before: dict[str, tuple[str, float]] = {}
        """App → (template, last ratio) of the release that ran before the current one."""

    def checks(self) -> dict[str, tuple[str, Mapping[str, Any]]]:
        """Opted-in apps: name → (the template that should run, its releaseCheck)."""
        found = {}
        for name, state in self._engine.handler("App").current().items():
            manifest = getattr(state, "manifest", None) or {}
            check = ((manifest.get("spec") or {}).get("metrics") or {}).get("releaseCheck")
            if check:
                found[name] = (str(getattr(state, "template", "")), check)
        return found

    async def _value(self, query: PrometheusQuery, promql: str) -> float | None:
        data = await query.get("query", {"query": promql})
        result = data.get("result") or []
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if value != value else value  # NaN: no requests in the window

    async def check_once(self) -> list[dict[str, object]]:
        """One pass over every opted-in app; returns the remediations taken."""
        query = self._query()
        if query is None:
            return []
        taken: list[dict[str, object]] = []
        for app, (template, check) in sorted(self.checks().items()):
            if self._acted.get(app) == template:
                continue
            new = await self._value(query, ratio_query(check, app, template, same=True))
            old = await self._value(query, ratio_query(check, app, template, same=False))
            old = self._remember(app, template, new, old)
            if new is None or old is None or not departs(new, old, check):
                continue
            log.warning(
                "the new release of %s (template %s) fails %.1f%% of requests, the "
                "previous one %.1f%%: rolling back",
                app,
                template[:10],
                new * 100,
                old * 100,
            )
            self._acted[app] = template
            labels = {"app": app, "socle_rule": RULE_PREFIX + app}
            done = await self._alerts.remediate(RULE_PREFIX + app, ["rollback"], labels)
            await self._alerts.persist(done)
            taken.extend(r.to_dict() for r in done)
        return taken

    def _remember(
        self, app: str, template: str, new: float | None, old: float | None
    ) -> float | None:
        """The previous release's ratio: measured now, or else the last one measured while
        it ran (so that a release replaced before two scrapes still has a baseline)."""
        measured = self._measured.get(app)
        if measured is not None and measured[0] != template:
            self._before[app] = measured  # a new release: what ran before is the baseline
        if new is not None:
            self._measured[app] = (template, new)
        elif measured is not None and measured[0] != template:
            self._measured.pop(app)
        if old is not None:
            return old
        before = self._before.get(app)
        return before[1] if before is not None and before[0] != template else None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check_once()
            except SocleError as exc:  # Prometheus restarting: the next pass tries again
                log.info("release check skipped: %s", exc.message)


__all__ = ["RULE_PREFIX", "ReleaseWatch", "departs", "ratio_query"]
