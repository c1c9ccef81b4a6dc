"""The release store: build each (app, content digest) once, keep it for rollbacks.

Layout under ``releases_dir``::

    <app>/<id>/                  the release: a copy of the workdir plus build outputs
    <app>/<id>/.socle-release.json   marker, written last; no marker = incomplete
    <app>/<id>.build.log         output of the last build of that id (kept after failures)
    <app>/<id>.lock              flock held while building, so two processes build once

Why builds happen in the final folder instead of a temporary one renamed at the end:
build outputs are often not relocatable (``python3 -m venv`` writes absolute paths into
scripts and ``pyvenv.cfg``), so the folder a release is built in must be the folder it runs
from. Atomicity comes from the marker instead of a rename: readers only trust folders with a
valid marker, and a folder without one is wiped and rebuilt by the next build, whether it
was left by a failed step or by a control plane killed mid-build.

Why one folder per app even when apps share a workdir and steps (hence a release id): build
steps run as the app's own uid with the release as their only writable folder, so a shared
folder would let one app's build change the code of another.

Sealing: once the steps are done the release is handed back to root (folders 0755, files
0644/0755, see :func:`seal_tree`) and a digest of *everything* in it (build outputs
included) goes into the marker. Apps get the release read-only; before a kept release is
reused (:meth:`ReleaseStore.get`: apply, rollback) the digest is checked again, and a
release that changed is dropped (rebuilt by the next apply, refused by a rollback), never
run. Build logs are owner-only (0600). Releases without build steps are only a copy, made in a
single thread hop (lock, copy, check, marker) with up to :data:`COPY_PARALLEL` at once; a
build waits for a slot *before* taking its lock, so many waiting builds hold no descriptor.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from socle.engine.releases._digest import (
    MARKER_NAME,
    SealCache,
    Tree,
    TreeHasher,
    build_json,
    copy_tree,
    release_digest,
    seal_tree,
    sealed_digest,
)
from socle.engine.releases._steps import Confine, run_step
from socle.errors import BuildError, ConfigError
from socle.fs import lock as fs_lock
from socle.fs import open_private_append
from socle.model.app import NAME_RE, App
from socle.runtime.driver import BuildSandbox, ReleaseId

log = logging.getLogger(__name__)

RELEASE_ID_RE = re.compile(r"^r[0-9a-f]{16}$")
TAIL_LINES = 20
"""Lines of a failed step's output quoted in the :class:`BuildError`."""
LOCK_POLL_SECONDS = 0.05
MARKER_FORMAT = 1
BUILD_MEMORY = 2 * 2**30
"""Default address-space limit (RLIMIT_AS) of a sandboxed build step: 2 GiB."""
BUILD_LOG_MAX = 16 * 2**20
"""Bytes of a build's output kept in its log file; the rest is counted, not written. A step
that prints without end (``yes``) would otherwise fill the disk before its timeout."""
COPY_PARALLEL = 8
"""Releases without build steps (a copy of the workdir) made at once: disk work only."""

OutputListener = Callable[[str], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Release:
    """A complete, immutable build of one app at one content digest."""

    id: ReleaseId
    app: str
    root: Path
    workdir: Path
    """Where the app runs from; today the same folder as ``root``."""
    created: float
    digest: str
    sealed: str = ""
    """Digest of the whole folder when it was sealed (empty for an unsealed release)."""


@dataclass
class _Build:
    """One in-flight build, shared by every ensure() that asks for the same release."""

    listeners: list[OutputListener] = field(default_factory=list)
    waiters: int = 0
    task: asyncio.Task[Release] | None = None


def _default_env() -> dict[str, str]:
    """The control plane's own PATH/HOME/LANG: what an operator expects builds to find."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.path.expanduser("~"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }


class ReleaseStore:
    """Builds and keeps releases. One instance per ``releases_dir`` and event loop.

    ``base_env`` is the environment every build step starts from (plus the step's own
    ``env``); by default PATH, HOME and LANG of this process and nothing else, so that no
    credential of the control plane leaks into a build. ``sandbox`` confines build steps
    (the runtime's, as the app's uid); without one they run as plain processes, which only
    tests and ``isolation="none"`` hosts should do. ``build_memory`` limits a sandboxed
    step's address space.
    """

    def __init__(
        self,
        releases_dir: Path,
        *,
        keep: int = 5,
        max_parallel: int = 2,
        base_env: Mapping[str, str] | None = None,
        sandbox: BuildSandbox | None = None,
        build_memory: int | None = BUILD_MEMORY,
    ) -> None:
        if keep < 0:
            raise ConfigError(f"releases keep must be 0 or more, not {keep}")
        if max_parallel < 1:
            raise ConfigError(f"releases max_parallel must be at least 1, not {max_parallel}")
        self.releases_dir = Path(releases_dir)
        self.keep = keep
        self._hasher = TreeHasher()
        self._slots = asyncio.Semaphore(max_parallel)
        self._copy_slots = asyncio.Semaphore(max(max_parallel, COPY_PARALLEL))
        self._inflight: dict[tuple[str, ReleaseId], _Build] = {}
        self._base_env = dict(base_env) if base_env is not None else _default_env()
        self._sandbox = sandbox
        self._build_memory = build_memory
        self._seal_cache: SealCache = {}
        self._refused: set[tuple[str, ReleaseId]] = set()

    # -- naming ---------------------------------------------------------------------------

    def compute_id(self, repo_root: Path, app: App) -> ReleaseId:
        """The release id ``app`` would get from the files under ``repo_root`` now.

        Pure: reads files, writes nothing. Fast when little changed (see ``_digest``).
        """
        return self._identify(repo_root, app)[0]

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Within this block each workdir is walked once, however many apps share it.

        Use it around a planning pass over many apps; the caller promises that the
        repository does not change until the block ends.
        """
        return self._hasher.batch()

    def _identify(self, repo_root: Path, app: App) -> tuple[ReleaseId, str]:
        digest = release_digest(self._hasher.digest(repo_root, app), build_json(app))
        return ReleaseId("r" + digest[:16]), digest

    # -- reading --------------------------------------------------------------------------

    def get(self, app: str, release_id: ReleaseId) -> Release | None:
        """The complete, untouched release, or None (never built, still building, failed,
        removed, or changed since it was sealed). Blocking: it re-checks the release's
        digest (cheap when nothing changed: only files whose stat changed are read)."""
        if not NAME_RE.fullmatch(app) or not RELEASE_ID_RE.fullmatch(release_id):
            return None
        release = _load(self.releases_dir / app / release_id, app, release_id)
        if release is None or self.intact(release):
            return release
        return None

    def intact(self, release: Release) -> bool:
        """True if ``release`` is exactly what was sealed (blocking).

        A release that changed, or that an older version built without a seal (apps could
        write it then), is never reused: the next apply rebuilds it in place, a rollback to
        it is refused. Its folder is left alone until then, since instances may still run
        from it.
        """
        try:
            now = sealed_digest(release.root, self._seal_cache) if release.sealed else ""
        except OSError as exc:
            now = f"unreadable: {exc}"
        if release.sealed and now == release.sealed:
            return True
        key = (release.app, release.id)
        if key not in self._refused:
            self._refused.add(key)
            why = "changed since it was sealed" if release.sealed else "was never sealed"
            log.warning(
                "release %s of app %s %s: it will not be run again (rebuilt on the next apply)",
                release.id,
                release.app,
                why,
            )
        return False

    def seal_unsealed(self) -> int:
        """Seal, as they are, the complete releases an earlier version built (blocking).

        Called once, when a home made by an earlier version is migrated: those releases are
        what the apps run and what revisions roll back to, and nothing recorded what they
        held, so the upgrade is the point from which they are trusted (as they are) and
        checked (any later change is refused). Returns how many were sealed.
        """
        count = 0
        if not self.releases_dir.is_dir():
            return 0
        for app_dir in sorted(self.releases_dir.iterdir()):
            if not app_dir.is_dir() or not NAME_RE.fullmatch(app_dir.name):
                continue
            for root in sorted(app_dir.iterdir()):
                if not RELEASE_ID_RE.fullmatch(root.name):
                    continue
                release = _load(root, app_dir.name, ReleaseId(root.name))
                if release is None or release.sealed:
                    continue
                marker = json.loads((root / MARKER_NAME).read_text(encoding="utf-8"))
                _seal_and_mark(root, marker)
                count += 1
        if count:
            log.warning(
                "sealed %d release(s) built by an earlier version as they are; from now on "
                "a change to them is refused (apply again to rebuild one you do not trust)",
                count,
            )
        return count

    def list(self, app: str) -> list[Release]:
        """Complete releases of ``app``, newest first."""
        if not NAME_RE.fullmatch(app):
            return []
        app_dir = self.releases_dir / app
        try:
            names = os.listdir(app_dir)
        except FileNotFoundError:
            return []
        found = [
            release
            for name in names
            if RELEASE_ID_RE.fullmatch(name)
            and (release := _load(app_dir / name, app, ReleaseId(name))) is not None
        ]
        found.sort(key=lambda release: (release.created, release.id), reverse=True)
        return found

    # -- building -------------------------------------------------------------------------

    async def ensure(
        self, repo_root: Path, app: App, *, on_output: OutputListener | None = None
    ) -> Release:
        """The release for ``app``'s current files, built now if it does not exist yet.

        Concurrent calls for the same release share one build (late callers get the output
        lines from when they joined). If every caller waiting on a build is cancelled, the
        build is cancelled too and leaves nothing behind.
        """
        release_id, digest = await asyncio.to_thread(self._identify, repo_root, app)
        existing = await asyncio.to_thread(self.get, app.name, release_id)
        if existing is not None:
            return existing
        key = (app.name, release_id)
        build = self._inflight.get(key)
        if build is None:
            build = _Build()
            build.task = asyncio.create_task(
                self._build(repo_root, app, release_id, digest, build),
                name=f"socle-build-{app.name}-{release_id}",
            )
            self._inflight[key] = build
            build.task.add_done_callback(lambda task: self._finished(key, build, task))
        task = build.task
        assert task is not None
        if on_output is not None:
            build.listeners.append(on_output)
        build.waiters += 1
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if build.waiters == 1 and not task.done():
                task.cancel()
                # New callers must not join a build that is being torn down; they start
                # another one, which waits on the file lock until this one has cleaned up.
                if self._inflight.get(key) is build:
                    del self._inflight[key]
            raise
        finally:
            build.waiters -= 1
            if on_output is not None:
                with contextlib.suppress(ValueError):
                    build.listeners.remove(on_output)

    def _finished(
        self, key: tuple[str, ReleaseId], build: _Build, task: asyncio.Task[Release]
    ) -> None:
        if self._inflight.get(key) is build:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: an error nobody awaited is not worth a warning

    async def close(self) -> None:
        """Cancel builds still running (each kills its processes and removes its folder)."""
        tasks = [build.task for build in self._inflight.values() if build.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _build(
        self, repo_root: Path, app: App, release_id: ReleaseId, digest: str, build: _Build
    ) -> Release:
        app_dir = self.releases_dir / app.name
        # The slot before the lock: builds waiting for a slot hold no file descriptor, so
        # ten thousand apps applied at once do not open ten thousand lock files.
        async with self._slots if app.spec.build else self._copy_slots:
            if not app.spec.build:
                copied = await self._copy_only(repo_root, app, release_id, digest, build)
                if copied is not None:
                    return copied
            await asyncio.to_thread(app_dir.mkdir, parents=True, exist_ok=True, mode=0o700)
            async with _locked(app_dir / f"{release_id}.lock"):
                # Another process may have finished it while we waited for the lock.
                done = self.get(app.name, release_id)
                if done is not None:
                    return done
                return await self._build_locked(repo_root, app, release_id, digest, build)

    async def _build_locked(
        self, repo_root: Path, app: App, release_id: ReleaseId, digest: str, build: _Build
    ) -> Release:
        app_dir = self.releases_dir / app.name
        root = app_dir / release_id
        log_path = app_dir / f"{release_id}.build.log"
        steps = app.spec.build
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        started = time.monotonic()
        log.info("building release %s of app %s (%d steps)", release_id, app.name, len(steps))
        with _private_log(log_path) as log_file:
            logged = [0, 0]  # bytes written to the file, lines left out of it

            def sink(line: str, own: bool = False) -> None:
                """``own``: a line of Socle's, always kept (a step's output is capped; it
                could print ``[socle] ...`` lines itself)."""
                text = line + "\n"
                fits = not logged[1] and logged[0] + len(text) <= BUILD_LOG_MAX
                if fits or own:
                    log_file.write(text)
                    log_file.flush()
                    logged[0] += len(text)
                else:
                    if not logged[1]:
                        notice = f"[socle] output beyond {BUILD_LOG_MAX} bytes left out\n"
                        log_file.write(notice)
                        log_file.flush()
                    logged[1] += 1
                tail.append(line)
                for listener in list(build.listeners):
                    try:
                        listener(line)
                    except Exception:
                        log.exception("build output listener failed; detaching it")
                        with contextlib.suppress(ValueError):
                            build.listeners.remove(listener)

            try:
                sink(f"[socle] copying {app.spec.run.workdir} into {root}", own=True)
                # One thread hop for all the disk work before the steps; without steps the
                # marker is written in it too, so a plain copy is one hop in all.
                created, sealed = await _run_to_end(
                    self._copy, repo_root, app, release_id, digest, None if steps else started
                )
                if steps and self._sandbox is not None:
                    await _run_to_end(self._sandbox.prepare, app.name, root)
                step_confine = self._confine(app.name, root)
                base_env = dict(self._base_env)
                if self._sandbox is not None and "PATH" in base_env:
                    # the control plane's PATH, as far as it means something in the sandbox
                    base_env["PATH"] = self._sandbox.search_path(base_env["PATH"])
                records: list[dict[str, Any]] = []
                for index, step in enumerate(steps):
                    where = (
                        f"app {app.name!r}: build step {index + 1} of {len(steps)} "
                        f"(spec.build[{index}]) `{shlex.join(step.command)}`"
                    )
                    sink(
                        f"[socle] step {index + 1}/{len(steps)}: {shlex.join(step.command)}",
                        own=True,
                    )
                    tail.clear()
                    try:
                        outcome = await run_step(
                            step.command,
                            cwd=root,
                            env={**base_env, **step.env},
                            timeout=step.timeout,
                            sink=sink,
                            confine=step_confine({**base_env, **step.env}),
                        )
                    except BuildError as exc:
                        raise BuildError(f"{where}: {exc.message}", hint=exc.hint) from exc
                    if outcome.exit_code != 0:
                        raise _step_failed(where, outcome.exit_code, step.timeout, tail, log_path)
                    sink(f"[socle] step {index + 1} done in {outcome.seconds:.1f}s", own=True)
                    records.append(
                        {
                            "command": step.command,
                            "env": sorted(step.env),
                            "timeout": step.timeout,
                            "seconds": round(outcome.seconds, 3),
                        }
                    )
                if steps:
                    created = time.time()
                    marker = _marker(app, release_id, digest, created, records, started)
                    sealed = await _run_to_end(_seal_and_mark, root, marker)
                sink(
                    f"[socle] release {release_id} ready in {time.monotonic() - started:.1f}s",
                    own=True,
                )
            except BaseException as exc:
                # Shielded: a cancelled build must still leave no half-built folder.
                await asyncio.shield(asyncio.to_thread(shutil.rmtree, root, ignore_errors=True))
                with contextlib.suppress(Exception):
                    sink(f"[socle] build failed: {type(exc).__name__}: {exc}", own=True)
                raise
        log.info("release %s of app %s built", release_id, app.name)
        return Release(release_id, app.name, root, root, created, digest, sealed)

    def _confine(self, app: str, root: Path) -> Callable[[dict[str, str]], Confine | None]:
        """Per step env, the callback that puts a step's argv into the app's sandbox."""
        sandbox = self._sandbox
        memory = self._build_memory

        def for_env(env: dict[str, str]) -> Confine | None:
            if sandbox is None:
                return None
            return lambda argv: sandbox.wrap(
                app, argv, release_root=root, cwd=root, env=env, memory=memory
            )

        return for_env

    async def _copy_only(
        self, repo_root: Path, app: App, release_id: ReleaseId, digest: str, build: _Build
    ) -> Release | None:
        """A release without build steps, made in one thread hop (it is only disk work).

        None if another process holds its lock: the caller then waits for it like for any
        build. Output lines reach the listeners when the copy is done.
        """
        lines: builtins.list[str] = []
        task = asyncio.ensure_future(
            asyncio.to_thread(self._copy_release, repo_root, app, release_id, digest, lines)
        )
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            # The thread cannot be stopped: let it end, then remove what it made.
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is None:
                made = task.result()
                if made is not None and made[1]:
                    await asyncio.shield(asyncio.to_thread(self._discard, app.name, release_id))
            raise
        finally:
            for line in lines:
                for listener in list(build.listeners):
                    try:
                        listener(line)
                    except Exception:
                        log.exception("build output listener failed; detaching it")
                        with contextlib.suppress(ValueError):
                            build.listeners.remove(listener)
        return None if result is None else result[0]

    def _copy_release(
        self,
        repo_root: Path,
        app: App,
        release_id: ReleaseId,
        digest: str,
        lines: builtins.list[str],
    ) -> tuple[Release, bool] | None:
        """Lock, copy, mark: the whole of a release without steps. Synchronous.

        Returns the release and whether this call made it (False: it already existed);
        None, having done nothing, if the lock is held elsewhere.
        """
        app_dir = self.releases_dir / app.name
        app_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _try_locked(app_dir / f"{release_id}.lock") as held:
            if not held:
                return None
            done = self.get(app.name, release_id)
            if done is not None:
                return done, False
            root = app_dir / release_id
            started = time.monotonic()
            log.info("building release %s of app %s (no steps)", release_id, app.name)
            with _private_log(app_dir / f"{release_id}.build.log") as log_file:

                def sink(line: str) -> None:
                    log_file.write(line + "\n")
                    lines.append(line)

                try:
                    sink(f"[socle] copying {app.spec.run.workdir} into {root}")
                    created, sealed = self._copy(repo_root, app, release_id, digest, started)
                    sink(f"[socle] release {release_id} ready in {time.monotonic() - started:.1f}s")
                except BaseException as exc:
                    shutil.rmtree(root, ignore_errors=True)
                    with contextlib.suppress(Exception):
                        sink(f"[socle] build failed: {type(exc).__name__}: {exc}")
                    raise
        log.info("release %s of app %s built", release_id, app.name)
        return Release(release_id, app.name, root, root, created, digest, sealed), True

    def _discard(self, app: str, release_id: ReleaseId) -> None:
        """Remove a release this store just made for a build nobody waits for any more."""
        app_dir = self.releases_dir / app
        with _try_locked(app_dir / f"{release_id}.lock") as held:
            if held:
                with contextlib.suppress(FileNotFoundError):
                    (app_dir / release_id / MARKER_NAME).unlink()
                shutil.rmtree(app_dir / release_id, ignore_errors=True)

    def _copy(
        self,
        repo_root: Path,
        app: App,
        release_id: ReleaseId,
        digest: str,
        marker_started: float | None,
    ) -> tuple[float, str]:
        """Wipe stale folders, copy the workdir and check it is what ``release_id`` names.

        With ``marker_started`` (a build without steps) also seal it and write the marker.
        Returns the creation time and the sealed digest ("" when not sealed yet).
        Synchronous; called with the release's lock held.
        """
        app_dir = self.releases_dir / app.name
        root = app_dir / release_id
        _clean_incomplete(app_dir, release_id)
        tree = Tree.locate(repo_root, app)
        copied = copy_tree(tree, root)
        if release_digest(copied, build_json(app)) != digest:
            raise BuildError(
                f"app {app.name!r}: {tree.workdir_shown} changed while it was being "
                f"copied for release {release_id}",
                hint="run again once the repository has settled",
            )
        created = time.time()
        sealed = ""
        if marker_started is not None:
            marker = _marker(app, release_id, digest, created, [], marker_started)
            sealed = _seal_and_mark(root, marker)
        return created, sealed

    # -- cleaning -------------------------------------------------------------------------

    def gc(self, app: str, in_use: set[ReleaseId]) -> builtins.list[ReleaseId]:
        """Remove ``app``'s releases except the ``keep`` newest and those in ``in_use``.

        Returns the removed ids. Logs of failed builds beyond the ``keep`` latest go too.
        Synchronous (it deletes trees): call it from a thread in async code. A release whose
        lock is held (being rebuilt right now) is left alone.
        """
        if not NAME_RE.fullmatch(app):
            return []
        releases = self.list(app)
        keep = {release.id for release in releases[: self.keep]} | in_use
        removed: builtins.list[ReleaseId] = []
        app_dir = self.releases_dir / app
        for release in releases:
            if release.id in keep:
                continue
            with _try_locked(app_dir / f"{release.id}.lock") as held:
                if not held:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    (release.root / MARKER_NAME).unlink()  # incomplete from here on
                shutil.rmtree(release.root, ignore_errors=True)
                with contextlib.suppress(FileNotFoundError):
                    (app_dir / f"{release.id}.build.log").unlink()
                with contextlib.suppress(FileNotFoundError):
                    (app_dir / f"{release.id}.lock").unlink()
            removed.append(release.id)
        self._forget_failed(app_dir, {release.id for release in releases})
        return removed

    def _forget_failed(self, app_dir: Path, complete: set[ReleaseId]) -> None:
        """Logs of builds that failed are kept for reading, but only the ``keep`` latest."""
        try:
            names = os.listdir(app_dir)
        except FileNotFoundError:
            return
        logs = []
        for name in names:
            release_id = name.removesuffix(".build.log")
            if name == release_id or not RELEASE_ID_RE.fullmatch(release_id):
                continue
            if release_id in complete or (app_dir / release_id).exists():
                continue
            with contextlib.suppress(FileNotFoundError):
                logs.append(((app_dir / name).stat().st_mtime_ns, ReleaseId(release_id)))
        logs.sort(reverse=True)
        for _, release_id in logs[self.keep :]:
            lock = app_dir / f"{release_id}.lock"
            with _try_locked(lock) as held:
                if held and not (app_dir / release_id).exists():
                    (app_dir / f"{release_id}.build.log").unlink(missing_ok=True)
                    lock.unlink(missing_ok=True)


def _step_failed(
    where: str, exit_code: int | None, timeout: float, tail: deque[str], log_path: Path
) -> BuildError:
    if exit_code is None:
        why = f"timed out after {timeout:g}s (its process group was killed)"
    elif exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        why = f"was killed by {name}"
    else:
        why = f"failed with exit code {exit_code}"
    lines = "\n".join(f"  | {line}" for line in tail) or "  (no output)"
    return BuildError(
        f"{where} {why}\nlast {len(tail)} lines of output:\n{lines}",
        hint=f"full log: {log_path}; fix the build and apply again (the release is retried)",
    )


def _marker(
    app: App,
    release_id: ReleaseId,
    digest: str,
    created: float,
    steps: builtins.list[dict[str, Any]],
    started: float,
) -> dict[str, Any]:
    return {
        "format": MARKER_FORMAT,
        "id": release_id,
        "app": app.name,
        "digest": digest,
        "created": created,
        "workdir": app.spec.run.workdir,
        "steps": steps,
        "seconds": round(time.monotonic() - started, 3),
    }


async def _run_to_end(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a thread. A thread cannot be stopped: if the caller is cancelled,
    wait until ``fn`` returns, then raise, so that cleanup never races with its writes."""
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what the caller sees
        raise


def _load(root: Path, app: str, release_id: ReleaseId) -> Release | None:
    try:
        data = json.loads((root / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("id") != release_id or data.get("app") != app:
        return None
    digest, created = data.get("digest"), data.get("created")
    if not isinstance(digest, str) or not digest.startswith(release_id[1:]):
        return None
    if not isinstance(created, int | float) or isinstance(created, bool):
        return None
    sealed = data.get("sealed")
    sealed = sealed if isinstance(sealed, str) else ""
    return Release(release_id, app, root, root, float(created), digest, sealed)


def _seal_and_mark(root: Path, marker: dict[str, Any]) -> str:
    """Seal the finished release (root-owned, read-only for others), record the digest of
    everything in it in the marker, write the marker last. Returns that digest."""
    _clear_marker_tmp(root)
    seal_tree(root, owner=(0, 0) if os.geteuid() == 0 else None)
    sealed = sealed_digest(root)
    _write_marker(root, {**marker, "sealed": sealed})
    return sealed


@contextlib.contextmanager
def _private_log(path: Path) -> Iterator[Any]:
    """A build log opened for writing, owner-only (0600) even if it existed before."""
    fd = open_private_append(path)
    os.ftruncate(fd, 0)
    with open(fd, "w", encoding="utf-8") as handle:
        yield handle


def _clear_marker_tmp(root: Path) -> Path:
    """Remove whatever is at the marker's temporary name. The folder was the build steps'
    (the app's) until now: a symlink left there (to /etc/passwd) would have root's marker
    write go through it. Called before sealing too, so the sealed digest stays true."""
    tmp = root / f"{MARKER_NAME}.tmp"
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp)
    tmp.unlink(missing_ok=True)
    return tmp


def _write_marker(root: Path, marker: dict[str, Any]) -> None:
    """Write the marker durably, then atomically: it is what makes a release exist."""
    tmp = _clear_marker_tmp(root)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with open(fd, "w", encoding="utf-8") as handle:
        json.dump(marker, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, root / MARKER_NAME)


def _clean_incomplete(app_dir: Path, building: ReleaseId) -> None:
    """Wipe release folders without a marker that nobody is building.

    Called with ``building``'s lock held, so its folder is always stale here; the others
    are checked with a non-blocking lock so a build in another process is never touched.
    """
    shutil.rmtree(app_dir / building, ignore_errors=True)
    for name in os.listdir(app_dir):
        path = app_dir / name
        if name == building or not RELEASE_ID_RE.fullmatch(name) or not path.is_dir():
            continue
        if _load(path, app_dir.name, ReleaseId(name)) is not None:
            continue
        lock = app_dir / f"{name}.lock"
        with _try_locked(lock) as held:
            if held and _load(path, app_dir.name, ReleaseId(name)) is None:
                log.info("removing incomplete release folder %s", path)
                shutil.rmtree(path, ignore_errors=True)
                lock.unlink(missing_ok=True)


@contextlib.contextmanager
def _try_locked(path: Path) -> Iterator[bool]:
    fd = fs_lock(path, blocking=False)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)


@contextlib.asynccontextmanager
async def _locked(path: Path) -> AsyncIterator[None]:
    """Hold ``path``'s flock, polling so the event loop never blocks and cancel works."""
    while (fd := fs_lock(path, blocking=False)) is None:
        await asyncio.sleep(LOCK_POLL_SECONDS)
    try:
        yield
    finally:
        os.close(fd)
