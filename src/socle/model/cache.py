"""Parsed and validated manifests kept between loads, so that planning the same repository
again costs a ``stat`` per file instead of a parse and a validation per object.

A control plane plans the same repository over and over (every sync, every ``plan``), and
almost nothing changes between two runs. :class:`ManifestCache` keeps, per file:

* the *stamp* ``(size, mtime_ns, inode, ctime_ns, device)``: if a later ``stat`` gives the
  same stamp, the file is not read at all;
* the text and what :func:`socle.model.yamlsource.parse` made of it: if the stamp changed
  but the text did not (a checkout that rewrote every file, ``touch``), nothing is parsed;
* per document, the validated model and its canonical JSON (for the manifests digest).

A file whose ctime is within :data:`RACY_NS` of the moment it was read is never trusted by
its stamp alone ("racy git": a second write in the same timestamp tick, with the same size,
would go unnoticed): it is read again next time, and reused only if its text is the same.

Validated models are keyed by the documents they were built from: the base document and,
in order, every overlay patch applied to it. Each file version gets a new serial number, so
an edited file (base or patch) can never hit a stale entry. Files and models not used by any
of the last :data:`KEEP_LOADS` loads are dropped, so memory follows the repositories being
planned, not their history.

The cache is owned by the caller (the engine keeps one for its lifetime) and passed to
:func:`socle.model.loader.load`; it is not thread-safe, so one load at a time may use it.
The cached objects are shared between loads: callers must not mutate them (pydantic models
are frozen; their plain ``dict``/``list`` fields must be treated as read-only too).
"""

from __future__ import annotations

import itertools
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from pydantic import BaseModel

from socle.model import discover, yamlsource

__all__ = [
    "KEEP_LOADS",
    "RACY_NS",
    "CachedFile",
    "CachedModel",
    "DocKey",
    "LoadStats",
    "ManifestCache",
]

RACY_NS = 1_000_000_000
"""Files changed this recently (ctime, relative to when they were read) are re-read."""
KEEP_LOADS = 8
"""Entries not used by one of this many most recent loads are dropped."""

DocKey = tuple[int, int]
"""``(file serial, document index)``: one document of one version of one file."""

_Stamp = tuple[int, int, int, int, int]


@dataclass
class CachedFile:
    """One version of one manifest file, parsed."""

    serial: int
    stamp: _Stamp
    trusted: bool
    """The stamp alone proves the file unchanged (its ctime was not racy when read)."""
    text: str
    parsed: yamlsource.Parsed
    seen: int
    """Generation of the last load that used it."""


@dataclass
class CachedModel:
    """A validated object and, lazily, its canonical JSON."""

    model: BaseModel
    seen: int
    canonical: str | None = None


@dataclass
class LoadStats:
    """What one load took from the cache and what it had to do again."""

    stat_hits: int = 0
    """Files not read: same stamp as last time."""
    text_hits: int = 0
    """Files read but not parsed: new stamp, same text."""
    parsed: int = 0
    model_hits: int = 0
    validated: int = 0
    """Objects validated (and now kept)."""


@dataclass
class ManifestCache:
    """What :func:`~socle.model.loader.load` may reuse from earlier loads (see module doc)."""

    keep_loads: int = KEEP_LOADS
    racy_ns: int = RACY_NS
    _files: dict[str, CachedFile] = field(default_factory=dict)
    _texts: dict[str, CachedFile] = field(default_factory=dict)
    """The same files by text: a new checkout of a repository (GitOps extracts each
    commit into its own folder) reuses what an identical file elsewhere parsed and
    validated, as a rewrite of the same path does."""
    _models: dict[tuple[DocKey, ...], CachedModel] = field(default_factory=dict)
    _serials: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _generation: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    stats: LoadStats = field(default_factory=LoadStats)
    """Counters of the last load (for benchmarks and tests, not for decisions)."""

    # -- one load ---------------------------------------------------------------------------

    def begin(self) -> bool:
        """Start a load: take the cache and reset ``stats``; call :meth:`end` after.

        False (and nothing taken) while another load uses it: that load runs uncached
        rather than waiting.
        """
        if not self._lock.acquire(blocking=False):
            return False
        self._generation += 1
        self.stats = LoadStats()
        return True

    def end(self) -> None:
        """End a load: drop what the last ``keep_loads`` loads did not use; release."""
        try:
            oldest = self._generation - self.keep_loads
            if any(entry.seen <= oldest for entry in self._files.values()):
                self._files = {k: v for k, v in self._files.items() if v.seen > oldest}
            if any(entry.seen <= oldest for entry in self._texts.values()):
                self._texts = {k: v for k, v in self._texts.items() if v.seen > oldest}
            if any(entry.seen <= oldest for entry in self._models.values()):
                self._models = {k: v for k, v in self._models.items() if v.seen > oldest}
        finally:
            self._lock.release()

    # -- files ------------------------------------------------------------------------------

    def read(self, root: Path, rel: str) -> tuple[CachedFile | None, yamlsource.Issue | None]:
        """The parsed file ``root/rel``, or why it cannot be read (not cached)."""
        path = os.path.join(root, rel)
        entry = self._files.get(path)
        try:
            info = os.stat(path)
        except OSError:
            info = None
        if info is not None and stat.S_ISREG(info.st_mode):
            stamp = (info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns, info.st_dev)
            if entry is not None and entry.trusted and entry.stamp == stamp:
                entry.seen = self._generation
                self.stats.stat_hits += 1
                return entry, None
        else:
            stamp = None
        read_at = time.time_ns()
        text, issue = discover.read_file(root, rel)
        if text is None or stamp is None:
            # Unreadable (discover.read_file says why), or replaced while we looked: kept
            # for this load only, under a serial that no later load will ask for.
            self._files.pop(path, None)
            if text is None:
                return None, issue
            return CachedFile(
                next(self._serials), (0, 0, 0, 0, 0), False, text, yamlsource.parse(text), 0
            ), None
        trusted = stamp[3] < read_at - self.racy_ns
        if entry is not None and entry.text == text:
            entry.stamp, entry.trusted, entry.seen = stamp, trusted, self._generation
            self._texts[text] = entry
            self.stats.text_hits += 1
            return entry, None
        same = self._texts.get(text)
        if same is not None:
            # Parsing and validating depend on the text only (never on where the file
            # is), so the same serial may stand for this path too.
            same.seen = self._generation
            entry = CachedFile(same.serial, stamp, trusted, same.text, same.parsed,
                               self._generation)  # fmt: skip
            self._files[path] = entry
            self.stats.text_hits += 1
            return entry, None
        entry = CachedFile(
            serial=next(self._serials),
            stamp=stamp,
            trusted=trusted,
            text=text,
            parsed=yamlsource.parse(text),
            seen=self._generation,
        )
        self._files[path] = entry
        self._texts[text] = entry
        self.stats.parsed += 1
        return entry, None

    # -- models -----------------------------------------------------------------------------

    def model(self, key: tuple[DocKey, ...]) -> CachedModel | None:
        """The model validated earlier from exactly these document versions, if any."""
        found = self._models.get(key)
        if found is not None:
            found.seen = self._generation
            self.stats.model_hits += 1
        return found

    def keep_model(self, key: tuple[DocKey, ...], model: BaseModel) -> CachedModel:
        """Remember a model validated from these documents (only valid ones are kept)."""
        entry = CachedModel(model, self._generation)
        self._models[key] = entry
        self.stats.validated += 1
        return entry

    def __len__(self) -> int:
        """Number of files kept."""
        return len(self._files)

    # -- across restarts --------------------------------------------------------------------

    def export(self) -> dict[str, object]:
        """What a later process may start from (see :meth:`adopt`); waits for a running load.

        The objects are shared with this cache, not copied: serialise them before the next
        load (callers pickle the result together with what else refers to the same models,
        so that identities survive).
        """
        with self._lock:
            return {
                "files": dict(self._files),
                "models": dict(self._models),
                "serial": next(self._serials),
                "generation": self._generation,
            }

    def adopt(self, exported: dict[str, object]) -> None:
        """Start from what :meth:`export` returned in an earlier process.

        Stamps include the inode, ctime and device, so a file changed while no control plane
        ran is read again; entries are trusted no more than they were when exported.
        """
        files = cast(dict[str, CachedFile], exported["files"])
        models = cast(dict[tuple[DocKey, ...], CachedModel], exported["models"])
        serial = cast(int, exported["serial"])
        generation = cast(int, exported["generation"])
        with self._lock:
            self._files, self._models = files, models
            self._texts = {entry.text: entry for entry in files.values()}
            self._serials = itertools.count(serial)
            self._generation = generation
