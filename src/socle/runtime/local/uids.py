"""One unprivileged host uid/gid per app, allocated once and kept in a private ledger.

Why a host uid per app (and not uid 0 in a namespace, nor one shared "socle" user): the
kernel's own checks then stand between apps and between an app and the host. A file of one
app is not writable by another, ``/proc/<pid>`` of another app is not readable, signals do
not cross, and a kernel tunable or root-owned file stays out of reach even if a bind mount
is ever wrong.

Allocation: ``run_dir/uids.json`` (0600) maps app name -> id, with ``uid == gid``. Ids come
from a dedicated high range, :data:`BASE` and up, in a block of :data:`BLOCK` ids chosen
from the run folder's path, so two homes on one host use disjoint ids unless their blocks
collide (1 in :data:`BLOCKS`); any id that ``/etc/passwd`` or ``/etc/group`` already uses,
or that ``/etc/subuid``/``/etc/subgid`` hand to a user's namespaces, is skipped. Ids are never reused for another app within a home, even after the app is
deleted: files it left (in a volume) must not become another app's.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from socle.errors import RuntimeDriverError
from socle.fs import write_private

BASE = 200_000
"""First id of the range; far above what distributions give to users (1000-60000)."""
BLOCK = 1024
"""Ids per home: apps one home can ever have."""
BLOCKS = 2048
"""Blocks in the range: ids BASE .. BASE + BLOCK * BLOCKS (about 2.3 million)."""
LEDGER = "uids.json"


def _subordinate_ranges() -> list[range]:
    """Ranges of /etc/subuid and /etc/subgid: user namespaces of host users map onto them."""
    ranges: list[range] = []
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    parts = line.strip().split(":")
                    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                        start = int(parts[1])
                        ranges.append(range(start, start + int(parts[2])))
        except OSError:
            continue
    return ranges


def _used_host_ids() -> set[int]:
    used: set[int] = set()
    for path in ("/etc/passwd", "/etc/group"):
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    parts = line.split(":")
                    if len(parts) > 2 and parts[2].isdigit():
                        used.add(int(parts[2]))
        except OSError:
            continue
    return used


def block_start(run_dir: Path) -> int:
    """First id of this home's block (stable for a given run folder path)."""
    digest = hashlib.sha256(str(run_dir).encode()).digest()
    return BASE + (int.from_bytes(digest[:4], "big") % BLOCKS) * BLOCK


class UidAllocator:
    """``uid(app)``: the app's id, allocated and recorded on first use (blocking, tiny I/O)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LEDGER
        self.start = block_start(run_dir)
        self._lock = threading.Lock()
        self._known: dict[str, int] | None = None

    def _load(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RuntimeDriverError(
                f"the uid ledger {self.path} is unreadable: {exc}",
                hint="restore it from a backup; deleting it would give apps new uids and "
                "leave their volumes owned by the old ones",
            ) from exc
        apps = data.get("apps") if isinstance(data, dict) else None
        if not isinstance(apps, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in apps.values()
        ):
            raise RuntimeDriverError(f"the uid ledger {self.path} is malformed")
        return {str(k): int(v) for k, v in apps.items()}

    def _save(self, apps: dict[str, int]) -> None:
        body = json.dumps({"format": 1, "base": self.start, "apps": apps}, indent=1)
        write_private(self.path, body, durable=True)

    def known(self) -> dict[str, int]:
        with self._lock:
            if self._known is None:
                self._known = self._load()
            return dict(self._known)

    def uid(self, app: str) -> int:
        with self._lock:
            if self._known is None:
                self._known = self._load()
            found = self._known.get(app)
            if found is not None:
                return found
            # One writer: the driver holds the run folder's lock (one driver per run
            # folder) and this thread lock. No flock of our own: a shim forked by another
            # thread would inherit it for a moment and make the next allocation fail.
            apps = self._load()
            found = apps.get(app)
            if found is None:
                taken = set(apps.values()) | _used_host_ids()
                subordinate = _subordinate_ranges()
                found = next(
                    (
                        i
                        for i in range(self.start, self.start + BLOCK)
                        if i not in taken and not any(i in r for r in subordinate)
                    ),
                    None,
                )
                if found is None:
                    raise RuntimeDriverError(
                        f"no free uid left for app {app!r} in {self.start}.."
                        f"{self.start + BLOCK - 1}",
                        hint="this home has allocated a uid to every app it ever ran; "
                        "use a new home",
                    )
                apps[app] = found
                self._save(apps)
            self._known = apps
            return found
