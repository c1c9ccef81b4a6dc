"""Running ``nft``: load a whole ruleset atomically, read Socle's table back as JSON.

Only ever Socle's table (``inet socle``, or ``inet socle_<bridge>`` on another bridge): the
load script replaces that one table in one transaction (see :mod:`.compiler`), reads list
only it, and :meth:`Nft.remove` deletes only it. Commands are
argument lists; the script goes to ``nft -f -`` on stdin, never through a shell.
Optionally inside a named network namespace (``ip netns exec``), which is how tests load
rulesets without touching the machine's own.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from socle.errors import FirewallError
from socle.network.firewall.compiler import FAMILY, TABLE

TIMEOUT = 30.0


@dataclass(frozen=True)
class Counter:
    packets: int
    bytes: int


class Nft:
    """``nft`` on this machine (or inside network namespace ``netns``)."""

    def __init__(
        self, *, netns: str | None = None, binary: str | None = None, table: str = TABLE
    ) -> None:
        self.netns = netns
        self.table_name = table
        self.binary = binary or shutil.which("nft") or "/usr/sbin/nft"

    def _argv(self, *args: str) -> list[str]:
        base = [self.binary, *args]
        if self.netns is None:
            return base
        return [shutil.which("ip") or "/usr/sbin/ip", "netns", "exec", self.netns, *base]

    def _run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                self._argv(*args),
                input=stdin,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FirewallError(
                f"cannot run nft: {exc}",
                hint="install nftables (scripts/install.sh) and run as root",
            ) from exc

    def load_sync(self, script: str, *, check_only: bool = False) -> None:
        """``nft -f -`` of ``script`` (one transaction: on error nothing changes). The
        script goes through stdin: no file is left behind if we are killed meanwhile."""
        args = ["-c", "-f", "-"] if check_only else ["-f", "-"]
        done = self._run(*args, stdin=script)
        if done.returncode != 0:
            detail = done.stderr.strip().replace("/dev/stdin", "<ruleset>")
            raise FirewallError(
                f"nft refused the ruleset (the previous ruleset is still loaded): {detail[:2000]}",
                hint="this is a bug in Socle's compiler or a kernel without nftables support",
            )

    async def load(self, script: str) -> None:
        await asyncio.to_thread(self.load_sync, script)

    def _list(self, *flags: str) -> str | None:
        done = self._run(*flags, "list", "table", FAMILY, self.table_name)
        if done.returncode != 0:
            if "No such file or directory" in done.stderr or "does not exist" in done.stderr:
                return None
            raise FirewallError(
                f"nft could not list table {FAMILY} {self.table_name}: {done.stderr[:500]}"
            )
        return done.stdout

    def listing_sync(self) -> str | None:
        """The table as ``nft -s`` prints it (no counters: equal text, equal ruleset);
        None when the table is absent."""
        return self._list("-s")

    def table_sync(self) -> dict[str, Any] | None:
        """``nft -j list table inet socle`` parsed, None when the table is absent."""
        text = self._list("-j")
        if text is None:
            return None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise FirewallError(f"nft printed JSON that does not parse: {exc}") from exc
        return data if isinstance(data, dict) else None

    async def table(self) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.table_sync)

    def remove_sync(self) -> None:
        """Delete Socle's table (nothing else); absent is fine."""
        self.load_sync(
            f"table {FAMILY} {self.table_name}\ndelete table {FAMILY} {self.table_name}\n"
        )


def counters(table: dict[str, Any] | None) -> dict[str, Counter]:
    """Per-rule counters by rule comment, from :meth:`Nft.table`'s JSON."""
    out: dict[str, Counter] = {}
    for item in (table or {}).get("nftables", []):
        rule = item.get("rule") if isinstance(item, dict) else None
        if not isinstance(rule, dict) or "comment" not in rule:
            continue
        for expr in rule.get("expr", []):
            if isinstance(expr, dict) and isinstance(expr.get("counter"), dict):
                c = expr["counter"]
                out[str(rule["comment"])] = Counter(
                    int(c.get("packets", 0)), int(c.get("bytes", 0))
                )
    return out


__all__ = ["Counter", "Nft", "counters"]
