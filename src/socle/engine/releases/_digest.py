"""Content digests of an app's workdir, cheap enough to compute on every plan.

A release is named after what it is built from: the files of ``spec.run.workdir`` and the
build steps. Planning asks for that name for every app on every sync, so the work must grow
with what changed, not with the size of the repository or the number of apps:

* a walk lists the tree with one ``lstat`` per file and reads nothing; the listing (paths,
  kinds, exec bits, sizes, mtimes, ctimes, inodes, link targets) is the tree's *signature*;
* if the signature equals the one seen last time for that workdir, the cached tree digest is
  the answer; otherwise only files whose stat changed are read again (a per-file cache);
* inside :meth:`TreeHasher.batch` the caller promises the tree does not change, so each
  workdir is walked once however many apps share it.

"Racy" entries, whose ctime is within :data:`RACY_NS` of the walk, are never cached: a second
write in the same timestamp tick, with the same size, would otherwise go unnoticed (the
"racy git" problem). ``ctime`` is part of the key as well, because tools that restore mtimes
(``rsync -t``, ``tar``) cannot restore it.

What the digest covers and how it treats symlinks is the contract of :func:`walk`; the copy
made for a build (:func:`copy_tree`) walks the same way and hashes what it copies, so a
release folder always holds exactly what its name says.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import operator
import os
import posixpath
import re
import stat
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from socle.errors import BuildError
from socle.model.app import App

MARKER_NAME = ".socle-release.json"
"""Written last into a finished release; also never taken from a source tree."""
IGNORE_FILE = ".socleignore"
IGNORED_NAMES = frozenset({".git", "__pycache__", ".venv", "node_modules", MARKER_NAME})
"""Never part of a release: VCS data, caches and environments that the build recreates."""
IGNORED_SUFFIXES = (".pyc",)
RACY_NS = 1_000_000_000
"""Entries changed this recently (ctime) are re-read next time instead of cached."""
MAX_TREES = 4096
"""Workdirs whose last walk is remembered; beyond that the least recently used is dropped."""
DIGEST_FORMAT = b"socle-release/1"
"""Bump when the digest input changes, so old and new ids never collide."""

_CHUNK = 1 << 20


class Entry(NamedTuple):
    """One thing in a release tree. A tuple, so that signature comparison runs in C."""

    rel: str
    """POSIX path inside the release."""
    kind: str
    """``d`` directory, ``f`` file, ``l`` symlink kept as a link."""
    source: str
    """Absolute path the content comes from (the real target for a dereferenced link)."""
    executable: bool
    target: str
    """Link text for ``l`` entries, else empty."""
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int


@dataclass(frozen=True)
class IgnoreRules:
    """Patterns from ``.socleignore``: one glob per line, ``#`` comments.

    A pattern without ``/`` matches a name at any depth (``*.log``); one with ``/`` matches
    the path from the workdir (``docs/build``, a leading ``/`` is allowed); a trailing ``/``
    matches directories only. A matched directory is skipped with all it holds. Negation
    (``!``) is refused rather than silently ignored, because users would expect gitignore's
    meaning.
    """

    by_name: tuple[tuple[re.Pattern[str], bool], ...] = ()
    by_path: tuple[tuple[re.Pattern[str], bool], ...] = ()

    @classmethod
    def parse(cls, text: str, where: str) -> IgnoreRules:
        by_name: list[tuple[re.Pattern[str], bool]] = []
        by_path: list[tuple[re.Pattern[str], bool]] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("!"):
                raise BuildError(
                    f"{where}:{number}: negated patterns ({line!r}) are not supported",
                    hint="list only what to leave out; .socleignore is simple globs, not gitignore",
                )
            dir_only = line.endswith("/")
            pattern = line.rstrip("/")
            if not pattern:
                continue
            compiled = re.compile(fnmatch.translate(pattern.lstrip("/")))
            if "/" in pattern:
                by_path.append((compiled, dir_only))
            else:
                by_name.append((compiled, dir_only))
        return cls(tuple(by_name), tuple(by_path))

    def match(self, rel: str, name: str, is_dir: bool) -> bool:
        for pattern, dir_only in self.by_name:
            if (is_dir or not dir_only) and pattern.match(name):
                return True
        for pattern, dir_only in self.by_path:
            if (is_dir or not dir_only) and pattern.match(rel):
                return True
        return False


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass(frozen=True)
class Tree:
    """Where a workdir is, checked: real paths, so that moves and links cannot fool us."""

    repo_real: str
    workdir_real: str
    workdir_shown: str
    """The workdir as the manifest writes it, for error messages."""

    @classmethod
    def locate(cls, repo_root: Path, app: App) -> Tree:
        workdir = app.spec.run.workdir
        shown = f"workdir {workdir!r} of app {app.name!r}"
        repo_real = os.path.realpath(repo_root)
        if not os.path.isdir(repo_real):
            raise BuildError(
                f"{shown}: the repository folder {str(repo_root)!r} does not exist",
            )
        candidate = os.path.join(repo_real, workdir)
        if not os.path.lexists(candidate):
            raise BuildError(
                f"{shown} does not exist in the repository {str(repo_root)!r}",
                hint="fix spec.run.workdir (a folder relative to the repository root)",
            )
        workdir_real = os.path.realpath(candidate)
        if not _inside(workdir_real, repo_real):
            raise BuildError(f"{shown} is a symlink that leads outside the repository")
        if not os.path.isdir(workdir_real):
            raise BuildError(f"{shown} is not a folder")
        return cls(repo_real, workdir_real, shown)


_by_name = operator.attrgetter("name")


class _Walker:
    """One listing of a workdir, following the symlink rules of :func:`walk`."""

    def __init__(self, tree: Tree, rules: IgnoreRules) -> None:
        self.tree = tree
        self.rules = rules
        self.entries: list[Entry] = []

    def _fail(self, rel: str, why: str) -> BuildError:
        return BuildError(
            f"{self.tree.workdir_shown}: {rel}: {why}",
            hint="release trees may only hold files of the repository; "
            "replace the link by a copy or list it in .socleignore",
        )

    def _skip(self, rel: str, name: str, is_dir: bool) -> bool:
        return (
            name in IGNORED_NAMES
            or name.endswith(IGNORED_SUFFIXES)
            or self.rules.match(rel, name, is_dir)
        )

    def walk_dir(self, real_dir: str, rel_dir: str, stack: frozenset[str], deref: bool) -> None:
        try:
            with os.scandir(real_dir) as listing:
                items = sorted(listing, key=_by_name)
        except OSError as exc:
            raise BuildError(
                f"{self.tree.workdir_shown}: cannot list {rel_dir or '.'}: {exc.strerror}"
            ) from exc
        rules = self.rules if self.rules.by_name or self.rules.by_path else None
        entries = self.entries
        for item in items:  # the hot loop of every plan: kept flat on purpose
            name = item.name
            if name in IGNORED_NAMES or name.endswith(IGNORED_SUFFIXES):
                continue
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if item.is_symlink():
                self._link(item.path, rel, rel_dir, name, stack, deref)
            elif item.is_dir(follow_symlinks=False):
                if rules is not None and rules.match(rel, name, True):
                    continue
                entries.append(Entry(rel, "d", item.path, False, "", 0, 0, 0, 0))
                self.walk_dir(item.path, rel, self._push(stack, item.path, rel), deref)
            elif item.is_file(follow_symlinks=False):
                if rules is not None and rules.match(rel, name, False):
                    continue
                st = item.stat(follow_symlinks=False)
                entries.append(
                    Entry(
                        rel,
                        "f",
                        item.path,
                        bool(st.st_mode & stat.S_IXUSR),
                        "",
                        st.st_size,
                        st.st_mtime_ns,
                        st.st_ctime_ns,
                        st.st_ino,
                    )
                )
            # sockets, fifos and devices are not release content: left out on purpose

    def _push(self, stack: frozenset[str], real_dir: str, rel: str) -> frozenset[str]:
        if real_dir in stack:
            raise self._fail(rel, "symlink loop: this folder contains itself")
        return stack | {real_dir}

    def _file(self, source: str, rel: str, st: os.stat_result) -> None:
        executable = bool(st.st_mode & stat.S_IXUSR)
        self.entries.append(
            Entry(
                rel,
                "f",
                source,
                executable,
                "",
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
                st.st_ino,
            )
        )

    def _parent_inside(self, path: str, text: str) -> bool:
        """Whether the folder ``text`` names its target in really is inside the workdir.

        Lexical checks alone are fooled by ``..`` after a link; fully resolving the target
        would refuse links into folders the build recreates (``.venv/bin/python`` while a
        local ``.venv`` points at the system Python). So resolve all but the last name.
        """
        head, last = posixpath.split(text)
        if last in ("", ".", ".."):
            head = text
        base = os.path.join(os.path.dirname(path), head)
        return _inside(os.path.realpath(base), self.tree.workdir_real)

    def _link(
        self, path: str, rel: str, rel_dir: str, name: str, stack: frozenset[str], deref: bool
    ) -> None:
        try:
            text = os.readlink(path)
        except OSError as exc:
            raise self._fail(rel, f"cannot read symlink: {exc.strerror}") from exc
        tree = self.tree
        if not deref:
            # A link that stays inside the workdir is kept as a link; relative text is kept
            # verbatim (it resolves the same way in the copy), absolute text is rewritten.
            if os.path.isabs(text):
                lexical = os.path.normpath(text)
                kept = (
                    posixpath.relpath(
                        "/" + os.path.relpath(lexical, tree.workdir_real), "/" + rel_dir
                    )
                    if _inside(lexical, tree.workdir_real)
                    else None
                )
            else:
                lexical = posixpath.normpath(posixpath.join(rel_dir, text))
                kept = text if lexical != ".." and not lexical.startswith("../") else None
            if kept is not None and not self._parent_inside(path, text):
                kept = None  # e.g. "d/up/../x" with d/up -> "..": lexically in, really out
            if kept is not None:
                if self._skip(rel, name, False):
                    return
                self.entries.append(Entry(rel, "l", path, False, kept, 0, 0, 0, 0))
                return
        resolved = os.path.realpath(path)
        if not _inside(resolved, tree.repo_real):
            raise self._fail(rel, f"symlink to {text!r} points outside the repository")
        try:
            st = os.stat(resolved)
        except OSError as exc:
            raise self._fail(rel, f"symlink to {text!r} is dangling ({exc.strerror})") from exc
        is_dir = stat.S_ISDIR(st.st_mode)
        if self._skip(rel, name, is_dir):
            return
        # Leaves the workdir but stays in the repository: copied as what it points to,
        # because the relative link would dangle in the release folder.
        if is_dir:
            self.entries.append(Entry(rel, "d", resolved, False, "", 0, 0, 0, 0))
            self.walk_dir(resolved, rel, self._push(stack, resolved, rel), True)
        elif stat.S_ISREG(st.st_mode):
            self._file(resolved, rel, st)
        else:
            raise self._fail(rel, f"symlink to {text!r} is not a file or a folder")


def read_rules(tree: Tree) -> IgnoreRules:
    path = os.path.join(tree.workdir_real, IGNORE_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return IgnoreRules()
    except (OSError, UnicodeDecodeError) as exc:
        raise BuildError(f"{tree.workdir_shown}: cannot read {IGNORE_FILE}: {exc}") from exc
    return IgnoreRules.parse(text, f"{tree.workdir_shown}: {IGNORE_FILE}")


def walk(tree: Tree) -> list[Entry]:
    """List a workdir as it would be copied into a release, in a stable order.

    Left out: ``.git``, ``__pycache__``, ``*.pyc``, ``.venv``, ``node_modules``, a stray
    ``.socle-release.json``, what ``.socleignore`` matches, sockets and devices.
    Symlinks: one that stays inside the workdir is kept as a link (absolute text rewritten
    to relative); one that leaves the workdir but stays in the repository is replaced by
    what it points to; one that leaves the repository, dangles outside the workdir or loops
    is a :class:`BuildError` naming it.
    """
    walker = _Walker(tree, read_rules(tree))
    walker.walk_dir(tree.workdir_real, "", frozenset({tree.workdir_real}), False)
    return walker.entries


def tree_digest(entries: list[Entry], content: Callable[[Entry], str]) -> str:
    """sha256 over paths, kinds, exec bits, link texts and content digests.

    Fields are NUL-separated (no path or link text can hold a NUL) and each kind has a fixed
    number of fields, so distinct trees cannot produce the same byte stream.
    """
    digest = hashlib.sha256()
    for entry in entries:
        rel = os.fsencode(entry.rel)
        if entry.kind == "d":
            digest.update(b"d\0" + rel + b"\0")
        elif entry.kind == "l":
            digest.update(b"l\0" + rel + b"\0" + os.fsencode(entry.target) + b"\0")
        else:
            mode = b"x" if entry.executable else b"-"
            digest.update(b"f\0" + rel + b"\0" + mode + b"\0" + content(entry).encode() + b"\0")
    return digest.hexdigest()


def build_json(app: App) -> str:
    """``spec.build`` as canonical JSON: the only part of the spec that shapes the artefact."""
    steps = [step.model_dump(mode="json") for step in app.spec.build]
    return json.dumps(steps, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def release_digest(tree_hex: str, build: str) -> str:
    data = DIGEST_FORMAT + b"\0" + tree_hex.encode() + b"\0" + build.encode()
    return hashlib.sha256(data).hexdigest()


def _hash_file(path: str, rel: str, shown: str) -> str:
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise BuildError(f"{shown}: cannot read {rel}: {exc.strerror}") from exc


_batch: ContextVar[dict[tuple[str, str], str] | None] = ContextVar(
    "socle_release_batch", default=None
)


class TreeHasher:
    """Tree digests with the two caches described in the module docstring.

    Memory follows the repository, not its history: file digests of files that left a tree
    are dropped when that tree is walked again or falls out of the ``max_trees`` most recent.
    Safe to share between threads in the sense that matters here: every cache write is one
    dict operation on an immutable value, so the worst a race does is hash a file twice.
    """

    def __init__(self, max_trees: int = MAX_TREES) -> None:
        self._max_trees = max_trees
        self._files: dict[str, tuple[tuple[int, int, int, int], str]] = {}
        self._trees: dict[tuple[str, str], tuple[list[Entry], str | None]] = {}
        """Last walk per workdir, least recently used first; digest None = racy, recheck."""

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Trust each workdir's first digest for the rest of this block.

        For planning loops over many apps: the caller promises the files do not change
        until the block ends. Scoped with a context variable, so other tasks are unaffected.
        """
        token = _batch.set({})
        try:
            yield
        finally:
            _batch.reset(token)

    def digest(self, repo_root: Path, app: App) -> str:
        """The tree digest of ``app``'s workdir; :class:`BuildError` if it cannot be read."""
        memo = _batch.get()
        memo_key = (os.fspath(repo_root), app.spec.run.workdir)
        if memo is not None and memo_key in memo:
            return memo[memo_key]
        tree = Tree.locate(repo_root, app)
        key = (tree.repo_real, tree.workdir_real)
        started = time.time_ns()
        entries = walk(tree)
        cached = self._trees.pop(key, None)
        if cached is not None and cached[1] is not None and cached[0] == entries:
            result: str = cached[1]
            self._trees[key] = cached
        else:
            racy_after = started - RACY_NS
            result = tree_digest(entries, lambda entry: self._content(entry, tree, racy_after))
            racy = any(entry.ctime_ns >= racy_after for entry in entries)
            self._trees[key] = (entries, None if racy else result)
            if cached is not None:
                self._forget(cached[0], entries)
            while len(self._trees) > self._max_trees:
                oldest = next(iter(self._trees))
                self._forget(self._trees.pop(oldest)[0], [])
        if memo is not None:
            memo[memo_key] = result
        return result

    def _forget(self, old: list[Entry], new: list[Entry]) -> None:
        """Drop file digests of a tree's files that are gone, so memory follows the repo."""
        keep = {entry.source for entry in new}
        for entry in old:
            if entry.kind == "f" and entry.source not in keep:
                self._files.pop(entry.source, None)

    def _content(self, entry: Entry, tree: Tree, racy_after: int) -> str:
        stamp = (entry.size, entry.mtime_ns, entry.ctime_ns, entry.ino)
        cached = self._files.get(entry.source)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        value = _hash_file(entry.source, entry.rel, tree.workdir_shown)
        if entry.ctime_ns < racy_after:
            self._files[entry.source] = (stamp, value)
        else:
            self._files.pop(entry.source, None)
        return value


def copy_tree(tree: Tree, dest: Path) -> str:
    """Copy a fresh walk of ``tree`` into the new folder ``dest``; return its tree digest.

    The digest is computed from the bytes written, not from caches, so the caller can check
    that the copy is what the release id promised even if files changed meanwhile. Modes
    are normalised (0755 / 0644) because only the exec bit is part of the digest.
    """
    entries = walk(tree)
    dest.mkdir(mode=0o700)
    written: dict[str, str] = {}
    for entry in entries:
        target = dest / entry.rel
        if entry.kind == "d":
            target.mkdir(mode=0o700)
        elif entry.kind == "l":
            os.symlink(entry.target, target)
        else:
            digest = hashlib.sha256()
            try:
                with open(entry.source, "rb") as src, open(target, "wb") as dst:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        dst.write(chunk)
            except OSError as exc:
                raise BuildError(
                    f"{tree.workdir_shown}: cannot copy {entry.rel}: {exc.strerror}"
                ) from exc
            # Owner-only like everything under SOCLE_HOME; the digest covers only the x bit.
            os.chmod(target, 0o700 if entry.executable else 0o600)
            written[entry.rel] = digest.hexdigest()
    return tree_digest(entries, lambda entry: written[entry.rel])


# -- sealed releases --------------------------------------------------------------------

SEAL_FORMAT = b"socle-sealed/1"


class _SealKey(NamedTuple):
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int
    mode: int


SealCache = dict[str, tuple[_SealKey, str]]
"""path -> (stat key, sha256) of sealed files: a re-check reads only what changed.

``ctime`` is in the key and only the kernel sets it (any write, chmod or rename changes
it), so an unchanged key means unchanged content even against someone who resets mtimes.
"""
_SEAL_CACHE_MAX = 1 << 18


SPARSE_SLACK = 64 * 2**20
"""How much of a release file may be holes (bytes it claims beyond what it occupies)."""


def seal_tree(root: Path, *, owner: tuple[int, int] | None = (0, 0)) -> None:
    """Make a finished release read-only for everyone but its owner (root by default):
    folders 0755, files 0644 or 0755 (any exec bit kept), nothing setuid, setgid or
    sticky; symlinks are left as they are (their own mode means nothing).

    A sparse file (a step's ``truncate -s 1T``) is refused: it costs the step nothing, but
    the control plane would read all of it to digest the release, again before every
    rollback, and write all of it into every backup."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_size > st.st_blocks * 512 + SPARSE_SLACK:
                rel = os.path.relpath(path, root)
                raise BuildError(
                    f"the build left a sparse file {rel!r} of {st.st_size} bytes that "
                    f"occupies only {st.st_blocks * 512}",
                    hint="a release holds real files; make large files in a volume at run time",
                )
            if owner is not None:
                os.lchown(path, *owner)
            if stat.S_ISLNK(st.st_mode):
                continue
            # Readable by the app's uid inside its sandbox; on the host the releases folder
            # above is owner-only, so nobody else reaches these.
            if stat.S_ISDIR(st.st_mode):
                os.chmod(path, 0o755)  # noqa: S103 - see above
            elif stat.S_ISREG(st.st_mode):
                os.chmod(path, 0o755 if st.st_mode & 0o111 else 0o644)
            else:  # a fifo or socket a build left behind: nothing a release needs
                os.unlink(path)
    if owner is not None:
        os.chown(root, *owner)
    os.chmod(root, 0o755)  # noqa: S103 - as above


def sealed_digest(root: Path, cache: SealCache | None = None) -> str:
    """sha256 over everything in a release folder, build outputs included (``.venv``...),
    except the marker: paths, kinds, modes, owners, symlink texts and file contents.

    Recorded in the marker when the release is sealed and compared before a release is
    reused (apply, rollback), so a modified release is never run again.
    """
    digest = hashlib.sha256(SEAL_FORMAT)
    base = str(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, base)
        entries = sorted([*dirnames, *filenames])
        for name in entries:
            path = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rel == MARKER_NAME:
                continue
            st = os.lstat(path)
            head = f"{rel}\0{st.st_mode:o}\0{st.st_uid}:{st.st_gid}\0"
            if stat.S_ISLNK(st.st_mode):
                body = "l" + os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                body = "f" + _sealed_file(path, st, {} if cache is None else cache)
            else:
                body = "d"
            digest.update(f"{head}{body}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _sealed_file(path: str, st: os.stat_result, cache: SealCache) -> str:
    key = _SealKey(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
    cached = cache.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
    value = sha.hexdigest()
    if time.time_ns() - st.st_ctime_ns > RACY_NS:  # see RACY_NS: never cache a racy entry
        if len(cache) >= _SEAL_CACHE_MAX:
            cache.clear()
        cache[path] = (key, value)
    return value
