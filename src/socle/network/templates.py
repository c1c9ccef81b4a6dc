"""Runtime configuration: files rendered from the registry, the Consul KV and secrets.

An App lists ``spec.templates`` (``{source, destination, onChange, signal}``). Before an
instance starts, :class:`TemplateService` renders each source (a Jinja2 template in the
app's release) into a per-app, per-template-digest folder under ``SOCLE_HOME/templates``
(owner-only parents, so only the bind mount reaches it), shown read-only to the app at
``/run/socle/templates`` (``$SOCLE_TEMPLATES_DIR``). A watcher re-renders when the
registry's index, the KV's index or a referenced secret's version changes (debounced) and,
when a rendered file changed, restarts the app's instances one at a time (each must be
ready again before the next) or sends them a signal. A render that fails keeps the last
good files and is shown in ``socle status``.

The template language is Jinja2's :class:`~jinja2.sandbox.SandboxedEnvironment`: no
attribute starting with ``_`` (``''.__class__`` fails), no loader (``include`` and
``import`` fail), :class:`~jinja2.StrictUndefined` (a typo is an error, not an empty
string), and limits: output size, numbers passed to functions and filters, ``*`` and
``**`` results, and a budget of executed template lines and of wall time (a ``for`` loop
in a ``for`` loop cannot keep a thread busy for ever). Functions:

- ``service("name", env="default", port="http")``: healthy endpoints (``address``,
  ``port``, ``instance``, ``url``), sorted by instance id;
- ``key("path")`` (text, error if missing), ``key_or_default("path", "x")``,
  ``keys("prefix")`` (a dict key → text);
- ``secret("mount/path#key")``: read with the app's own ACL policy ``app-<name>`` (deny
  by default, like env secret references); the value is masked in logs by the engine's
  redacting reader and never stored in state or plans.

Exceptions::

    SocleError
    └── TemplateError (ConfigError)   a template cannot be read or rendered
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import shutil
import signal as signals
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TypeVar

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import SandboxedEnvironment

from socle.errors import SecretUnavailable, SocleError, TemplateError
from socle.model.app import SECRET_REF_RE, App, TemplateSpec
from socle.network.kv import ConsulKV
from socle.network.registry import ServiceRegistry
from socle.runtime.driver import InstanceId, InstanceStatus, Mount
from socle.tasks import TaskMonitor, within

log = logging.getLogger("socle.network.templates")

MOUNT_POINT = "/run/socle/templates"
"""Where instances see their rendered files (read-only)."""
ENV_NAME = "SOCLE_TEMPLATES_DIR"
MAX_SOURCE_BYTES = 256 * 1024
MAX_OUTPUT_CHARS = 1024 * 1024
"""Per rendered file: a config file, not a data dump."""
MAX_NUMBER = 1_000_000
"""Largest number a function or filter takes, and largest repeat of ``*``."""
MAX_LINES = 2_000_000
"""Template lines executed per render (loops included)."""
MAX_SECONDS = 5.0
"""Wall time per render (functions waiting on the store included)."""
DEBOUNCE_SECONDS = 0.3
"""Changes closer than this are rendered once."""
SECRET_POLL_SECONDS = 5.0
"""How often referenced secrets' versions are checked (the engine has no secret watch)."""
_FILENAME = "<socle-template>"

T = TypeVar("T")


class SecretSource(Protocol):
    async def read_for_app(self, policies: list[str], path: str, key: str) -> tuple[str, int]: ...


class InstanceControl(Protocol):
    """What the watcher needs from the runtime to act on a change."""

    def instances(self) -> list[InstanceStatus]: ...

    def replace(self, instance_id: InstanceId, reason: str) -> bool: ...

    def signal(self, instance_id: InstanceId, name: str) -> bool: ...


# -- the sandbox ---------------------------------------------------------------------------


class _Budget(Exception):
    """Raised inside the render thread when a limit is passed."""


def _check_number(value: object) -> None:
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > MAX_NUMBER:
        raise jinja2.exceptions.SecurityError(f"number {value!r} is larger than {MAX_NUMBER}")


def _check_size(value: object) -> object:
    """``value`` unless it is a string or collection larger than a rendered file may be."""
    if isinstance(value, str | bytes | list | tuple | dict | set) and len(value) > MAX_OUTPUT_CHARS:
        raise jinja2.exceptions.SecurityError(
            f"a value of {len(value)} items is larger than {MAX_OUTPUT_CHARS}"
        )
    return value


def _bounded(func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter or function whose numeric arguments and result are bounded
    (``center(10**9)``, ``replace('', big)``)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            _check_number(value)
        return _check_size(func(*args, **kwargs))

    return wrapper


_UNSAFE_STR_METHODS = frozenset(
    {"replace", "ljust", "rjust", "center", "zfill", "expandtabs", "join", "format_map"}
)
"""String methods whose output can be far larger than their input: ``a.replace('', a)``
squares a string in one call, before any check after it could run."""


def _no_empty_old(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        old = args[2] if len(args) > 2 else kwargs.get("old")
        if old == "":
            raise jinja2.exceptions.SecurityError("replace() with an empty old string")
        return func(*args, **kwargs)

    return wrapper


class _Generator(CodeGenerator):
    """Compiles ``a ~ b`` to a size-checked join (doubling a string 40 times is 40 lines)."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Sandbox(SandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**", "+", "%"])
    code_generator_class = _Generator

    @staticmethod
    def bounded_concat(values: tuple[Any, ...]) -> str:
        total = sum(len(v) if isinstance(v, str) else 0 for v in values)
        if total > MAX_OUTPUT_CHARS:
            raise jinja2.exceptions.SecurityError("joined string is too large")
        return str(_check_size("".join(str(v) for v in values)))

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr in _UNSAFE_STR_METHODS:
            return False
        return bool(super().is_safe_attribute(obj, attr, value))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            _check_number(right)
            if isinstance(right, int) and abs(right) > 64:
                raise jinja2.exceptions.SecurityError("exponent larger than 64")
        if operator == "*":
            for a, b in ((left, right), (right, left)):
                if (
                    isinstance(a, str | list | tuple)
                    and isinstance(b, int)
                    and len(a) * b > MAX_OUTPUT_CHARS
                ):
                    raise jinja2.exceptions.SecurityError("repeated value is too large")
        if (
            operator == "+"
            and isinstance(left, str | list | tuple)
            and hasattr(right, "__len__")
            and len(left) + len(right) > MAX_OUTPUT_CHARS
        ):
            raise jinja2.exceptions.SecurityError("joined value is too large")
        return _check_size(super().call_binop(context, operator, left, right))

    def call(
        __self,
        __context: Any,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        for value in (*args, *kwargs.values()):
            _check_number(value)
            _check_size(value)
        return _check_size(super().call(__context, __obj, *args, **kwargs))


def make_environment() -> SandboxedEnvironment:
    """The sandbox every template renders in: no loader, strict undefined, bounded filters."""
    env = _Sandbox(
        loader=None,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        auto_reload=False,
        cache_size=0,
    )
    filters = dict(env.filters)
    filters["replace"] = _no_empty_old(filters["replace"])
    env.filters = {name: _bounded(f) for name, f in filters.items()}
    env.globals.pop("lipsum", None)  # megabytes of text from one call
    env.globals["range"] = _bounded(range)
    return env


def _tracer(deadline: float) -> Callable[[FrameType, str, Any], Any]:
    """A trace function counting template lines (only frames of template code)."""
    count = 0

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
            if count > MAX_LINES:
                raise _Budget(f"more than {MAX_LINES} template steps (a loop too large?)")
            if count % 4096 == 0 and time.monotonic() > deadline:
                raise _Budget(f"rendering took longer than {MAX_SECONDS:g}s")
        return local

    def global_(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename == _FILENAME:
            return local
        return None

    return global_


def render_text(
    source: str,
    functions: Mapping[str, Callable[..., Any]],
    *,
    name: str = "template",
    max_output: int = MAX_OUTPUT_CHARS,
    max_seconds: float = MAX_SECONDS,
) -> str:
    """Render ``source`` in the sandbox with ``functions`` (blocking: run it in a thread).

    Raises :class:`TemplateError` naming ``name``, the template line when known, and why.
    """
    env = make_environment()
    try:
        code = env.compile(source, name=name, filename=_FILENAME)
        template = env.template_class.from_code(env, code, env.make_globals(None), None)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{name}:{exc.lineno}: {exc.message}") from None
    deadline = time.monotonic() + max_seconds
    out: list[str] = []
    size = 0
    previous = sys.gettrace()
    sys.settrace(_tracer(deadline))
    try:
        for chunk in template.generate(**functions):
            size += len(chunk)
            if size > max_output:
                raise _Budget(f"output larger than {max_output} characters")
            out.append(chunk)
    except _Budget as exc:
        raise TemplateError(f"{name}: refused: {exc}") from None
    except SocleError as exc:
        raise TemplateError(f"{name}{_line_of(exc)}: {exc.message}", hint=exc.hint) from None
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(f"{name}{_line_of(exc)}: unsafe: {exc}") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{name}{_line_of(exc)}: {exc.message or exc}") from None
    except (ArithmeticError, TypeError, ValueError, LookupError, MemoryError) as exc:
        raise TemplateError(f"{name}{_line_of(exc)}: {type(exc).__name__}: {exc}") from None
    finally:
        sys.settrace(previous)
    return "".join(out)


def _line_of(exc: BaseException) -> str:
    """``:LINE`` of the innermost template frame in the traceback, if any."""
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    # Jinja maps template lines through its debug info; the raw line is close enough only
    # when compiled without it, so report what jinja itself says where it can.
    return "" if line is None else f":{_template_line(exc) or line}"


def _template_line(exc: BaseException) -> int | None:
    lineno = getattr(exc, "lineno", None)
    return lineno if isinstance(lineno, int) else None


# -- what a render used --------------------------------------------------------------------


@dataclass
class Uses:
    """What one render of an app read: the watcher re-renders only on those changes."""

    services: bool = False
    kv: bool = False
    secrets: dict[str, int] = field(default_factory=dict)
    """``path#key`` → version read."""


@dataclass
class AppTemplates:
    """One app's rendered files and where they came from."""

    app: App
    environment: str
    release_root: Path
    template: str
    folder: Path
    digest: str = ""
    """Digest of every rendered file (empty: never rendered good)."""
    files: dict[str, str] = field(default_factory=dict)
    """Destination → digest of its last good render."""
    uses: Uses = field(default_factory=Uses)
    error: str | None = None
    rendered_at: float = 0.0
    changes: int = 0
    """How many times a re-render changed the files (and acted on it)."""

    def status(self) -> dict[str, object]:
        return {
            "folder": MOUNT_POINT,
            "files": [t.destination for t in self.app.spec.templates],
            "renderedAt": self.rendered_at,
            "changes": self.changes,
            "error": self.error,
        }


class TemplateService:
    """Renders apps' templates, mounts them into instances and acts on changes."""

    def __init__(
        self,
        root: Path,
        registry: ServiceRegistry,
        kv: ConsulKV,
        runtime: InstanceControl,
        *,
        secrets: SecretSource | None = None,
        sandboxed: Callable[[], bool] = lambda: True,
        owner: Callable[[str], int | None] = lambda _app: None,
        tmpfs: bool = True,
        tasks: TaskMonitor | None = None,
        debounce: float = DEBOUNCE_SECONDS,
        secret_poll: float = SECRET_POLL_SECONDS,
    ) -> None:
        self._root = root
        self._registry = registry
        self._kv = kv
        self._runtime = runtime
        self._secrets = secrets
        self._sandboxed = sandboxed
        self._owner = owner
        self._tmpfs = tmpfs
        self._monitor = tasks if tasks is not None else TaskMonitor()
        self._tasks = self._monitor.group("templates")
        self._debounce = debounce
        self._secret_poll = secret_poll
        self._apps: dict[str, AppTemplates] = {}
        self._first_errors: dict[str, str] = {}
        """Why a release's first render failed (its instances cannot start yet)."""
        self._locks: dict[str, asyncio.Lock] = {}
        self._acting: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._dirty_services = False
        self._dirty_kv = False
        self._unsubscribe: Callable[[], None] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        # The tmpfs is mounted when the first app with templates starts: homes that
        # have none get no mount.
        await asyncio.to_thread(_private_folder, self._root, tmpfs=False)
        self._unsubscribe = self._registry.subscribe(self._on_registry)
        self._tasks.spawn(self._watch_kv(), "kv-watch")
        self._tasks.spawn(self._loop(), "render-loop")

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self._tasks.close()

    def _on_registry(self, _index: int) -> None:
        self._dirty_services = True
        self._wake.set()

    async def _watch_kv(self) -> None:
        index = self._kv.index
        while True:
            new = await self._kv.wait(index, 60.0)
            if new != index:
                index = new
                self._dirty_kv = True
                self._wake.set()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await within(self._wake.wait(), self._secret_poll)
            await asyncio.sleep(self._debounce)  # let a burst of changes settle
            self._wake.clear()
            services, kv = self._dirty_services, self._dirty_kv
            self._dirty_services = self._dirty_kv = False
            for name, entry in list(self._apps.items()):
                if not (
                    (services and entry.uses.services)
                    or (kv and entry.uses.kv)
                    or entry.uses.secrets
                    or entry.error is not None
                ):
                    continue
                try:
                    await self.refresh(name)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # one app's trouble never stops the watcher
                    self._monitor.report(f"templates/{name}", exc)

    # -- the controller's hook ---------------------------------------------------------

    async def prepare(
        self, app: App, environment: str, release_root: Path, template: str
    ) -> tuple[list[Mount], dict[str, str]]:
        """Render ``app``'s templates for its release ``template`` (once per template
        digest: instances of one release share the files) and say how to show them."""
        name = app.name
        if self._tmpfs:
            self._tmpfs = False  # once, even with starts in parallel
            await asyncio.to_thread(_private_folder, self._root, tmpfs=True)
        async with self._lock(name):
            entry = self._apps.get(name)
            if entry is None or entry.template != template:
                folder = self._root / name / template[:16]
                fresh = AppTemplates(app, environment, release_root, template, folder)
                # Files an earlier control plane rendered (instances it left running read
                # them): if they differ from this render, those instances are told.
                on_disk = await asyncio.to_thread(
                    _digests_on_disk, folder, [t.destination for t in app.spec.templates]
                )
                try:
                    await self._render(fresh, initial=True)  # raises: no instance starts
                except TemplateError as exc:
                    self._first_errors[name] = exc.message
                    raise
                self._first_errors.pop(name, None)
                old, self._apps[name] = entry, fresh
                if old is not None:
                    await asyncio.to_thread(self._prune, name, {fresh.folder})
                stale = {d for d, digest in on_disk.items() if fresh.files.get(d) != digest}
                if stale:
                    fresh.changes += 1
                    self._act(fresh, stale)
                entry = fresh
        target = MOUNT_POINT if self._sandboxed() else str(entry.folder)
        return [Mount(entry.folder, MOUNT_POINT, read_only=True)], {ENV_NAME: target}

    def forget(self, name: str) -> None:
        """The app is gone (or has no templates any more): stop following it, and drop its
        files once its instances are gone."""
        self._apps.pop(name, None)
        self._first_errors.pop(name, None)
        self._locks.pop(name, None)
        task = self._acting.pop(name, None)
        if task is not None:
            task.cancel()
        self._tasks.spawn(self._remove_when_unused(name), f"remove:{name}")

    async def _remove_when_unused(self, name: str) -> None:
        """Delete the app's files once none of its instances runs (they read them until
        they are stopped), unless the app came back meanwhile."""
        while any(i.app == name for i in self._runtime.instances()):
            await asyncio.sleep(1.0)
        if name not in self._apps:
            await asyncio.to_thread(shutil.rmtree, self._root / name, True)

    def status(self, name: str) -> dict[str, object] | None:
        entry = self._apps.get(name)
        return entry.status() if entry is not None else None

    def problem(self, name: str) -> str | None:
        """Why the app's files are not (or no longer) rendered, or None."""
        if name in self._first_errors:
            return (
                f"{self._first_errors[name]} (no instance of this release starts until it renders)"
            )
        entry = self._apps.get(name)
        if entry is None or entry.error is None:
            return None
        return f"{entry.error} (last good files kept)"

    # -- rendering ---------------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def refresh(self, name: str) -> bool:
        """Render ``name`` again; act when a file changed. True if it changed."""
        async with self._lock(name):
            entry = self._apps.get(name)
            if entry is None:
                return False
            only_secrets = entry.uses.secrets and not (entry.uses.services or entry.uses.kv)
            if only_secrets and entry.error is None and not await self._secrets_moved(entry):
                return False
            before = dict(entry.files)
            try:
                await self._render(entry, initial=False)
            except TemplateError:
                return False  # kept the last good files; the error is in status
            changed = {d for d, digest in entry.files.items() if before.get(d) != digest}
            if not changed:
                return False
            entry.changes += 1
        self._act(entry, changed)
        return True

    async def _secrets_moved(self, entry: AppTemplates) -> bool:
        if self._secrets is None:
            return False
        policy = [f"app-{entry.app.name}"]
        for ref, version in entry.uses.secrets.items():
            path, _, key = ref.partition("#")
            try:
                _, now = await self._secrets.read_for_app(policy, path, key)
            except SocleError:
                return True  # let the render say what is wrong
            if now != version:
                return True
        return False

    async def _render(self, entry: AppTemplates, *, initial: bool) -> None:
        """Render every file of ``entry``; on success swap them in (only changed files are
        rewritten, each atomically); on failure keep the last good ones and record why."""
        loop = asyncio.get_running_loop()
        uses = Uses()
        app = entry.app
        funcs = _Functions(self, app, entry.environment, uses, loop)
        rendered: dict[str, bytes] = {}
        try:
            for spec in app.spec.templates:
                source = await asyncio.to_thread(_read_source, entry.release_root, spec)
                text = await asyncio.to_thread(render_text, source, funcs.table(), name=spec.source)
                rendered[spec.destination] = text.encode()
        except TemplateError as exc:
            entry.error = exc.message
            if initial or not entry.digest:
                raise
            log.warning("app %s: template not rendered, last good files kept: %s", app.name, exc)
            raise
        files = {k: hashlib.sha256(v).hexdigest() for k, v in rendered.items()}
        digest = hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()
        if digest != entry.digest:
            await asyncio.to_thread(self._write, app.name, entry.folder, rendered)
        entry.digest = digest
        entry.files = files
        entry.uses = uses
        entry.error = None
        entry.rendered_at = time.time()

    def _write(self, app: str, folder: Path, files: Mapping[str, bytes]) -> None:
        _write_files(folder, files, self._owner(app))

    def _prune(self, name: str, keep: set[Path]) -> None:
        """Remove this app's folders no instance uses any more (blocking)."""
        base = self._root / name
        if not base.is_dir():
            return
        used = {
            f"{i.id}".rsplit("-", 2)[1] if i.id.count("-") >= 2 else ""
            for i in self._runtime.instances()
            if i.app == name
        }
        for folder in base.iterdir():
            if folder in keep or any(folder.name.startswith(u) for u in used if u):
                continue
            shutil.rmtree(folder, ignore_errors=True)

    # -- acting on a change ------------------------------------------------------------

    def _act(self, entry: AppTemplates, changed: set[str]) -> None:
        name = entry.app.name
        running = self._acting.get(name)
        if running is not None and not running.done():
            running.cancel()  # a newer change: start the roll over with it
        self._acting[name] = self._tasks.spawn(self._apply_change(entry, changed), f"act:{name}")

    async def _apply_change(self, entry: AppTemplates, changed: set[str]) -> None:
        """Restart the instances one at a time if a changed file says ``restart``;
        otherwise send each changed file's signal to every instance."""
        app = entry.app
        specs = [s for s in app.spec.templates if s.destination in changed]
        tpl = entry.template[:10]
        current = [i for i in self._runtime.instances() if i.app == app.name and f"-{tpl}-" in i.id]
        if any(s.on_change == "restart" for s in specs):
            deadline = app.spec.update.progress_deadline_seconds
            for instance in sorted(current, key=lambda i: i.ordinal):
                log.info("app %s: rendered files changed; restarting %s", app.name, instance.id)
                if not self._runtime.replace(instance.id, "rendered templates changed"):
                    continue
                await self._ready_again(instance, deadline)
            return
        for signame in sorted({s.signal for s in specs}):
            for instance in current:
                log.info("app %s: rendered files changed; %s to %s", app.name, signame, instance.id)
                self._runtime.signal(instance.id, signame)

    async def _ready_again(self, before: InstanceStatus, deadline: float) -> None:
        """Wait until ``before`` restarted and is ready (or gone, or the deadline passed)."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            await asyncio.sleep(0.1)
            now = next((i for i in self._runtime.instances() if i.id == before.id), None)
            if now is None:
                return
            if now.ready and (now.restarts > before.restarts or now.pid != before.pid):
                return
        log.warning("app %s: %s not ready again after a restart", before.app, before.id)


class _Functions:
    """The functions a template may call; each records what it read in ``uses``.

    Rendering runs in a worker thread; every read goes through the event loop
    (``run_coroutine_threadsafe``), which owns the registry, the KV and the secrets engine.
    """

    def __init__(
        self,
        service: TemplateService,
        app: App,
        environment: str,
        uses: Uses,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._service = service
        self._app = app
        self._environment = environment
        self._uses = uses
        self._loop = loop

    def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(MAX_SECONDS)
        except TimeoutError:
            future.cancel()
            raise TemplateError("reading the store took too long") from None

    def table(self) -> dict[str, Callable[..., Any]]:
        return {
            "service": self.service,
            "key": self.key,
            "key_or_default": self.key_or_default,
            "keys": self.keys,
            "secret": self.secret,
        }

    def service(
        self, name: str, env: str | None = None, port: str | None = None
    ) -> list[dict[str, object]]:
        self._uses.services = True
        environment = env or self._environment

        async def read() -> list[dict[str, object]]:
            out: list[dict[str, object]] = []
            registry = self._service._registry
            for entry in registry.instances(str(name), environment, healthy_only=True):
                names = [port] if port else sorted(entry.ports)
                for port_name in names:
                    number = entry.ports.get(str(port_name))
                    if number is None:
                        continue
                    out.append(
                        {
                            "instance": entry.id,
                            "address": entry.address,
                            "port": number,
                            "port_name": port_name,
                            "url": f"http://{entry.address}:{number}",
                        }
                    )
            return out

        return self._on_loop(read())

    def key(self, path: str) -> str:
        value = self._read_key(path)
        if value is None:
            raise TemplateError(f"KV key {path!r} does not exist")
        return value

    def key_or_default(self, path: str, default: str = "") -> str:
        value = self._read_key(path)
        return default if value is None else value

    def _read_key(self, path: str) -> str | None:
        self._uses.kv = True
        entry = self._on_loop(self._service._kv.get(str(path)))
        if entry is None:
            return None
        return (entry.value or b"").decode(errors="replace")

    def keys(self, prefix: str) -> dict[str, str]:
        self._uses.kv = True
        entries = self._on_loop(self._service._kv.entries(str(prefix)))
        return {e.key: (e.value or b"").decode(errors="replace") for e in entries}

    def secret(self, ref: str) -> str:
        ref = str(ref)
        path, _, key = ref.partition("#")
        if not SECRET_REF_RE.fullmatch(ref) or ".." in path.split("/"):
            raise TemplateError(
                f"invalid secret reference {ref!r}: use 'MOUNT/PATH#KEY', "
                "e.g. 'secret/data/db#password'"
            )
        reader = self._service._secrets
        if reader is None:
            raise TemplateError("no secrets engine runs")
        policy = f"app-{self._app.name}"

        async def read() -> tuple[str, int]:
            return await reader.read_for_app([policy], path, key)

        try:
            value, version = self._on_loop(read())
        except SecretUnavailable as exc:
            raise TemplateError(
                f"secret {ref!r} cannot be read with policy {policy!r}: {exc.message}",
                hint=f"socle secrets grant {self._app.name} {path}",
            ) from None
        self._uses.secrets[ref] = version
        return value


def _read_source(release_root: Path, spec: TemplateSpec) -> str:
    """The template's text, refusing anything outside the release (a symlink the app's
    build wrote to ``/etc/shadow`` must not be read by the control plane)."""
    root = release_root.resolve()
    path = (root / spec.source).resolve()
    if root not in path.parents:
        raise TemplateError(f"{spec.source}: resolves outside the app's folder")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise TemplateError(
            f"{spec.source}: no such file in the app's folder",
            hint="spec.templates[].source is relative to the app's folder (run.workdir)",
        ) from None
    except OSError as exc:
        raise TemplateError(f"{spec.source}: cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not os.path.isfile(path):
            raise TemplateError(f"{spec.source}: not a regular file")
        data = handle.read(MAX_SOURCE_BYTES + 1)
    if len(data) > MAX_SOURCE_BYTES:
        raise TemplateError(f"{spec.source}: larger than {MAX_SOURCE_BYTES} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise TemplateError(f"{spec.source}: not UTF-8 text") from None


TMPFS_SIZE = 64 * 2**20


def _private_folder(path: Path, *, tmpfs: bool) -> None:
    """The templates root, owner-only; as root a tmpfs (rendered secrets never reach a
    disk), mounted once and kept across restarts of the control plane (instances that
    outlive it keep reading their files through their bind mounts)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    if not tmpfs or os.geteuid() != 0 or os.path.ismount(path) or not shutil.which("mount"):
        return
    options = f"size={TMPFS_SIZE},mode=0700,nosuid,nodev,noexec"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "socle-templates", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        log.warning(
            "rendered templates are kept on disk at %s: cannot mount a tmpfs there: %s",
            path,
            done.stderr.strip()[-300:],
        )


def _write_files(folder: Path, files: Mapping[str, bytes], uid: int | None) -> None:
    """Write changed files atomically (blocking). With an app uid (root, sandboxed) the
    folder and files belong to root and the app's group (``0750``/``0640``): the app reads
    them, nobody else; otherwise owner-only (the app runs as our own uid)."""
    folder_mode, file_mode = (0o750, 0o640) if uid is not None else (0o700, 0o600)

    def own(path: Path, mode: int) -> None:
        if uid is not None:
            os.chown(path, 0, uid, follow_symlinks=False)
        os.chmod(path, mode, follow_symlinks=False)

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    own(folder, folder_mode)
    for destination, data in files.items():
        target = folder / destination
        for parent in reversed(target.relative_to(folder).parents):
            if str(parent) != ".":
                (folder / parent).mkdir(exist_ok=True, mode=0o700)
                own(folder / parent, folder_mode)
        try:
            if target.read_bytes() == data:
                continue
        except OSError:
            pass
        tmp = target.with_name(f".{target.name}.tmp-{threading.get_ident()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        own(tmp, file_mode)
        os.replace(tmp, target)


def _digests_on_disk(folder: Path, destinations: list[str]) -> dict[str, str]:
    """Destination → digest of the file already in ``folder`` (blocking)."""
    found: dict[str, str] = {}
    for destination in destinations:
        try:
            data = (folder / destination).read_bytes()
        except OSError:
            continue
        found[destination] = hashlib.sha256(data).hexdigest()
    return found


def signal_number(name: str) -> int:
    return int(getattr(signals, name))


__all__ = [
    "ENV_NAME",
    "MOUNT_POINT",
    "AppTemplates",
    "InstanceControl",
    "TemplateError",
    "TemplateService",
    "make_environment",
    "render_text",
    "signal_number",
]
