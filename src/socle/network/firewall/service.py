"""The firewall of one control plane: policies + running instances -> the loaded ruleset.

The engine's NetworkPolicy handler hands policies over with :meth:`Firewall.set`; the
runtime's instance statuses (pushed, plus a slow re-sync) give the members. Any change marks
the ruleset dirty; one background task recompiles and, when the table text differs from what
is loaded, loads it with ``nft -f`` (atomic). A failed load keeps the previous ruleset (nft's
transaction) and is shown in status; the next change retries.

The live table is also read back every ``drift_seconds`` (``nft -s``, no counters) and
compared with what was loaded: a table deleted, flushed or edited behind Socle's back is
loaded again at once, logged, and counted in status (``drift_corrections``), like any
other drift from the declared state.

Enforcement needs root and ``nft``; without them (or with the setting off) nothing is loaded
and :meth:`status` says plainly that the firewall is not enforced. At stop the ruleset stays
loaded: apps outlive the control plane, and so does what protects them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from socle.errors import FirewallError
from socle.model.networkpolicy import NetworkPolicySpec, describe
from socle.network.firewall.compiler import (
    FirewallConfig,
    Member,
    Ruleset,
    compile_ruleset,
    table_for,
)
from socle.network.firewall.nft import Nft, counters
from socle.network.registry import InstanceSource
from socle.runtime.driver import InstanceState, InstanceStatus
from socle.tasks import TaskGroup, TaskMonitor, within

log = logging.getLogger("socle.firewall")

RESYNC_SECONDS = 2.0
DRIFT_SECONDS = 10.0
"""How often the live table is compared with the loaded one (one ``nft -s list``)."""


@dataclass(frozen=True)
class Enforcement:
    enforced: bool
    reason: str
    """Why not (empty when enforced)."""
    isolated: bool = False
    """Instances run in their own network namespaces on the bridge (app policies apply)."""


def decide_enforcement(enabled: bool, *, isolated: bool, why: str = "") -> Enforcement:
    """Whether this control plane can enforce policies, and why not, in plain words.
    ``isolated``: instances run in their own network namespaces (else ``why`` not)."""
    if not enabled:
        return Enforcement(False, "turned off (SOCLE_FIREWALL=0)")
    if os.geteuid() != 0:
        return Enforcement(
            False, "the control plane does not run as root, so it cannot load nftables rules"
        )
    if shutil.which("nft") is None and not os.path.exists("/usr/sbin/nft"):
        return Enforcement(False, "nft is not installed (Debian package nftables)")
    return Enforcement(True, "" if isolated else why, isolated)


UP = frozenset(
    {InstanceState.STARTING, InstanceState.RUNNING, InstanceState.UNHEALTHY, InstanceState.STOPPING}
)
"""States in which an instance's process is up (and may be reached)."""


def members_of(statuses: list[InstanceStatus]) -> list[Member]:
    """Running instances with an address, as firewall members."""
    return [
        Member(s.app, s.environment, dict(s.labels), s.address, dict(s.ports))
        for s in statuses
        if s.address and s.state in UP
    ]


class Firewall:
    """Keeps table ``inet socle`` equal to the compiled policies (when enforced)."""

    def __init__(
        self,
        runtime: InstanceSource,
        config: FirewallConfig,
        enforcement: Enforcement,
        *,
        nft: Nft | None = None,
        tasks: TaskMonitor | None = None,
        resync_seconds: float = RESYNC_SECONDS,
        drift_seconds: float = DRIFT_SECONDS,
    ) -> None:
        self.runtime = runtime
        self.config = config
        self.enforcement = enforcement
        self.nft = nft or Nft()
        self.nft.table_name = table_for(config.bridge)  # the table the compiler writes
        self.policies: dict[str, NetworkPolicySpec] = {}
        self._monitor = tasks or TaskMonitor()
        self._tasks: TaskGroup = self._monitor.group("firewall")
        self._dirty = asyncio.Event()
        self._apply_lock = asyncio.Lock()
        self._resync_seconds = resync_seconds
        self._drift_seconds = drift_seconds
        self._drift_due = 0.0
        self._loaded: str | None = None
        self._listing: str | None = None
        """The table as nft printed it right after our last load (the drift baseline)."""
        self.drift_corrections = 0
        self.last_drift = ""
        self.last_drift_at: float | None = None
        self._ruleset: Ruleset | None = None
        self.last_error: str = ""
        self.loaded_at: float | None = None
        self.loads = 0
        self._members: list[Member] = []
        self._held = True
        """Nothing is loaded until :meth:`release`: at a restart the engine hands the stored
        policies over after the firewall started, and loading before that would replace
        the kept ruleset with one that has no policy (open, for a moment)."""

    # -- inputs ------------------------------------------------------------------------------

    def set(self, name: str, spec: Mapping[str, Any] | None) -> None:
        """Add, replace (``spec``: the manifest's spec, camelCase JSON) or remove a policy."""
        if spec is None:
            self.policies.pop(name, None)
        else:
            self.policies[name] = NetworkPolicySpec.model_validate(spec)
        self._dirty.set()

    def _on_status(self, _: InstanceStatus) -> None:
        self._dirty.set()

    async def release(self) -> None:
        """Every stored policy has been handed over: load now, and from now on."""
        self._held = False
        try:
            await self.apply()
        except FirewallError as exc:  # the previous ruleset stays; status shows why
            self._monitor.report("firewall/apply", exc)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self.runtime.subscribe(self._on_status)
        await self.apply()
        self._tasks.spawn(self._loop(), "apply")

    async def stop(self) -> None:
        await self._tasks.close()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await within(self._dirty.wait(), self._resync_seconds)
            try:
                if time.monotonic() >= self._drift_due:
                    self._drift_due = time.monotonic() + self._drift_seconds
                    await self.correct_drift()
                await self.apply()
            except Exception as exc:  # keep following; status shows the last failure
                self._monitor.report("firewall/apply", exc)

    async def correct_drift(self) -> bool:
        """Load our ruleset again if the live table is not what we loaded. True if it was."""
        if self._listing is None or self._loaded is None:
            return False
        live = await asyncio.to_thread(self.nft.listing_sync)
        if live == self._listing:
            return False
        what = "deleted" if live is None else "changed"
        self.last_drift = f"table inet {self.nft.table_name} was {what} outside Socle; loaded again"
        self.last_drift_at = time.time()
        self.drift_corrections += 1
        log.warning("firewall: %s", self.last_drift)
        # Load the whole table again; with nothing to load (no policy, no isolated
        # instance) there is no baseline any more either, so this is reported once.
        self._loaded = self._listing = None
        await self.apply()
        return True

    def compile(self) -> Ruleset:
        self._members = members_of(self.runtime.instances())
        return compile_ruleset(self.policies, self._members, self.config)

    async def apply(self) -> bool:
        """Compile and, if the table changed, load it. True when a load happened.

        One at a time (the loop and the engine's :meth:`release` both call it): what was
        loaded, and the listing kept as the drift baseline, always belong together."""
        async with self._apply_lock:
            return await self._apply()

    async def _apply(self) -> bool:
        self._dirty.clear()
        # Pure but not free (about 0.1 s for 600 instances and 200 policies): off the loop.
        self._members = members_of(self.runtime.instances())
        policies = dict(self.policies)
        ruleset = await asyncio.to_thread(compile_ruleset, policies, self._members, self.config)
        self._ruleset = ruleset
        if not self.enforcement.enforced or self._held:
            return False
        if not self.policies and self._loaded is None and not self.enforcement.isolated:
            # Nothing declared, nothing of ours loaded, and no instance on the bridge to
            # protect: leave the machine's firewall alone. With isolated instances the base
            # rules (nothing leaves the bridge, instances cannot reach the host) always load.
            return False
        if ruleset.body == self._loaded:
            return False
        try:
            self._listing = await asyncio.to_thread(self._load_and_read, ruleset.script)
        except FirewallError as exc:
            self.last_error = exc.message
            log.error("firewall: %s", exc.message)
            raise
        self._loaded = ruleset.body
        self.last_error = ""
        self.loaded_at = time.time()
        self.loads += 1
        log.info("firewall: loaded %d rules (%d policies)", len(ruleset.rules), len(self.policies))
        return True

    def _load_and_read(self, script: str) -> str | None:
        """Load, then read the table back as the drift baseline (None: no baseline, so no
        drift check until the next load; the load itself succeeded)."""
        self.nft.load_sync(script)
        try:
            return self.nft.listing_sync()
        except FirewallError as exc:
            log.warning("firewall: loaded, but could not read the table back: %s", exc.message)
            return None

    # -- reading -----------------------------------------------------------------------------

    def policy_status(self, name: str) -> tuple[bool, str]:
        """``(enforced, message)`` of one policy for ``socle status``."""
        if not self.enforcement.enforced:
            return False, f"not enforced: {self.enforcement.reason}"
        spec = self.policies.get(name)
        if spec is not None and not spec.host and not self.enforcement.isolated:
            return False, (
                "not enforced: instances share the host's network (no per-instance network "
                "namespace), so app policies cannot tell apps apart"
            )
        if self.last_error:
            return False, f"last load failed (previous ruleset kept): {self.last_error[:200]}"
        if self._loaded is None:
            return False, "not loaded yet"
        return True, "enforced"

    async def status(self) -> dict[str, Any]:
        """What ``socle firewall status`` shows: enforcement, every rule with its counters."""
        ruleset = self._ruleset or self.compile()
        table: dict[str, Any] | None = None
        read_error = ""
        if self.enforcement.enforced and self._loaded is not None:
            try:
                table = await self.nft.table()
            except FirewallError as exc:
                read_error = exc.message
        found = counters(table)
        rules = []
        for rule in ruleset.rules:
            counter = found.get(rule.comment)
            rules.append(
                {
                    "policy": rule.policy,
                    "rule": rule.comment,
                    "text": rule.text,
                    "packets": counter.packets if counter else None,
                    "bytes": counter.bytes if counter else None,
                }
            )
        return {
            "enforced": self.enforcement.enforced,
            "reason": self.enforcement.reason,
            "isolated": self.enforcement.isolated,
            "bridge": self.config.bridge,
            "table": f"inet {self.nft.table_name}",
            "drift_corrections": self.drift_corrections,
            "last_drift": self.last_drift,
            "last_drift_at": self.last_drift_at,
            "loaded": self._loaded is not None and table is not None,
            "loaded_at": self.loaded_at,
            "loads": self.loads,
            "last_error": self.last_error or read_error,
            "policies": {name: describe(spec) for name, spec in sorted(self.policies.items())},
            "members": len(self._members),
            "rules": rules,
        }


__all__ = ["Enforcement", "Firewall", "members_of"]
