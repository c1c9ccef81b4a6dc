"""One unprivileged host uid/gid per app, allocated once and kept in a private ledger.

Why a host uid per app (and not uid 0 in a namespace, nor one shared "socle" user): the
kernel's own checks then stand between apps and between an app and the host. A file of one
app is not writable by another, ``/proc/<pid>`` of another app is not readable, signals do
not cross, and a kernel tunable or root-owned file stays out of reach even if a bind mount
is ever wrong.

Allocation: ``run_dir/uids.json`` (0600) maps app name -> id, with ``uid == gid``. Ids come
from a dedicated high range, :data:`BASE` and up, in a block of :data:`BLOCK` ids per home;
any id that ``/etc/passwd`` or ``/etc/group`` already uses, or that
``/etc/subuid``/``/etc/subgid`` hand to a user's namespaces, is skipped. Ids are never
reused for another app within a home, even after the app is deleted: files it left (in a
volume) must not become another app's.

Blocks are handed out host-wide (:func:`claim_block`): ``/var/lib/socle/uid-blocks.json``
(root's, 0600, changed under an ``flock``) records which run folder owns which block. A
home first tries the block its path hashes to, and takes the next free one if another home
already owns it (a hash alone collides 1 in :data:`BLOCKS`, and two homes with one block
share uids: each could read, signal and ptrace the other's apps). A block whose ids are the
real uid of a running process is not handed out either (a home from before the registry).
A home whose run folder is gone gives its block back.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from socle.errors import RuntimeDriverError
from socle.fs import lock, private_dir, write_private

BASE = 200_000
"""First id of the range; far above what distributions give to users (1000-60000)."""
BLOCK = 1024
"""Ids per home: apps one home can ever have."""
BLOCKS = 2048
"""Blocks in the range: ids BASE .. BASE + BLOCK * BLOCKS (about 2.3 million)."""
LEDGER = "uids.json"
HOST_REGISTRY = Path("/var/lib/socle/uid-blocks.json")
"""Which run folder owns which block, for every home of this host (root's, 0600)."""


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


def _process_uids() -> set[int]:
    """Real uids of the host's running processes (from /proc; vanished ones are skipped)."""
    found: set[int] = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if entry.isdigit():
            try:
                found.add(os.stat(f"/proc/{entry}").st_uid)
            except OSError:
                continue
    return found


def _load_registry(path: Path) -> dict[int, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise RuntimeDriverError(
            f"the host's uid block registry {path} is unreadable: {exc}",
            hint="it lists which home owns which uid block; rebuild it from the homes' "
            "uids.json files (their 'base'), or remove it only if no other home runs here",
        ) from exc
    blocks = data.get("blocks") if isinstance(data, dict) else None
    if not isinstance(blocks, dict) or not all(
        isinstance(k, str) and k.isdigit() and isinstance(v, str) for k, v in blocks.items()
    ):
        raise RuntimeDriverError(f"the host's uid block registry {path} is malformed")
    return {int(k): v for k, v in blocks.items()}


def claim_block(run_dir: Path, recorded: int | None, registry: Path = HOST_REGISTRY) -> int:
    """The first id of ``run_dir``'s block, owned by it alone on this host (blocking).

    ``recorded`` is the block the home's ledger already uses (its apps' files carry those
    ids, so it cannot move): it is kept, and refused if another live home owns it. A new
    home gets its hashed block, or the next one that no live home owns and no process runs
    in. Owners whose run folder no longer exists are forgotten.
    """
    owner = str(run_dir.absolute())
    private_dir(registry.parent)
    fd = lock(registry.with_name(registry.name + ".lock"), blocking=True)
    assert fd is not None  # a blocking lock returns a descriptor or raises
    try:
        blocks = {
            start: who
            for start, who in _load_registry(registry).items()
            if who == owner or os.path.isdir(who)
        }
        mine = next((start for start, who in blocks.items() if who == owner), None)
        if recorded is not None:
            other = blocks.get(recorded)
            if other is not None and other != owner:
                raise RuntimeDriverError(
                    f"uid block {recorded}..{recorded + BLOCK - 1} of {run_dir} is also "
                    f"the block of the home at {other}: their apps would share uids",
                    hint="the two homes were made before uid blocks were registered; move "
                    "the apps of one home to a new home (socle backup create, then restore "
                    "into a new SOCLE_HOME) and delete the old one",
                )
            mine = recorded
        elif mine is None:
            busy = {uid - (uid - BASE) % BLOCK for uid in _process_uids() if uid >= BASE}
            first = (block_start(run_dir) - BASE) // BLOCK
            for step in range(BLOCKS):
                start = BASE + ((first + step) % BLOCKS) * BLOCK
                if start not in blocks and start not in busy:
                    mine = start
                    break
            if mine is None:
                raise RuntimeDriverError(
                    f"every uid block of this host is owned by a home (see {registry})",
                    hint="delete homes that are not used any more",
                )
        blocks = {k: v for k, v in blocks.items() if v != owner}
        blocks[mine] = owner
        body = {"format": 1, "blocks": {str(k): v for k, v in sorted(blocks.items())}}
        write_private(registry, json.dumps(body, indent=1), durable=True)
        return mine
    finally:
        os.close(fd)


class UidAllocator:
    """``uid(app)``: the app's id, allocated and recorded on first use (blocking, tiny I/O)."""

    def __init__(self, run_dir: Path, registry: Path = HOST_REGISTRY) -> None:
        self.run_dir = run_dir
        self.path = run_dir / LEDGER
        self.registry = registry
        self._start: int | None = None
        self._lock = threading.Lock()
        self._known: dict[str, int] | None = None

    @property
    def start(self) -> int:
        """First id of this home's block, claimed host-wide on first use (blocking)."""
        if self._start is None:
            self._start = claim_block(self.run_dir, self._recorded_base(), self.registry)
        return self._start

    def _recorded_base(self) -> int | None:
        """The block an existing ledger already hands ids from (None for a new home)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            self._load()  # raises the ledger's own, explained error
            return None
        base = data.get("base") if isinstance(data, dict) else None
        apps = data.get("apps") if isinstance(data, dict) else None
        if isinstance(base, int) and not isinstance(base, bool) and apps:
            return base
        return None

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
            _ = self.start  # the home owns its block before any of its apps runs
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
