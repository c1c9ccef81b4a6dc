"""Audit devices: one JSON line per request and per response, secrets HMAC'd, fail closed.

The entry shapes follow Vault's file audit device (``type``, ``time``, ``auth``,
``request``, ``response``, ``error``) and so does what is hashed: tokens, accessors and
every string *value* inside request and response data, auth metadata included, become
``hmac-sha256:<hex>`` under a per-device salt kept behind the barrier. Numbers in data are
hashed too, a deliberate difference from Vault, so a numeric secret cannot leak. Paths,
operations, policy names and lease ids stay readable: an audit log must say who did what
where. ``sys/audit-hash/<device>`` hashes a value with the same salt, so an operator can
search the log for a known secret.

Durability: a line is written with one ``write(2)`` on an ``O_APPEND`` descriptor, so it is
in the kernel once the request proceeds; there is no ``fsync`` per line (that would cap
throughput at the disk's flush rate); a host crash can lose the last lines, a process
crash cannot. Fail closed: if devices are enabled and none can write the request line, the
request is refused with 500 before anything is done. Before each request line a device
checks that its file still has a name (link count > 0) and reopens the path if it was
removed; if that fails the device is failing. A response line is written where its request
line went, without a second check: a file removed in the middle of a request may keep that
one response line (response lines are best effort in Socle), and the next request line
starts a new chain at the path. Each check is an ``fstat`` that releases the GIL, which on
the server costs a thread switch; once per request is what the fail-closed rule needs.

Cost per request (the hot path of every audited read): an :class:`AuditEvent` carries the
request to every device twice, as the request line and then the response line. A device
hashes and serialises the ``auth`` and ``request`` blocks once per request and splices the
same JSON text into both lines; the ``auth`` block and the HMACs of the caller's token and
accessor are kept per token (keyed by the token store's HMAC of the token, never the token
itself), since they are the same on every request that token makes. The lines are the bytes
``json.dumps`` would give for the whole entry, so the verifier and log tools see no change.

Where a device may write: a device is enabled through the API, so its ``file_path`` is
input from a client holding a sudo token, and the server runs as root. It may only name a
file under ``SOCLE_HOME/audit/`` (created 0700 on demand) or under a folder the operator
allowed (``SOCLE_AUDIT_DIRS``), or be ``stdout`` (Vault's spelling: the server's own
output). ``..``, relative paths, control characters and a symbolic link anywhere between
the allowed folder and the file are refused with 400 before anything is created, opened or
chmodded; the file itself is opened with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from socle.secrets.backend import SecretsError
from socle.secrets.core.audit_chain import dumps, last_line_hash, seal_body
from socle.secrets.core.barrier import Barrier
from socle.secrets.core.errors import AuditFailure
from socle.secrets.core.fields import rfc3339

if TYPE_CHECKING:
    from socle.secrets.core.context import Caller

log = logging.getLogger("socle.secrets")
STDOUT = "stdout"
TABLE_KEY = "core/audit"
_TOKEN_CACHE_LIMIT = 10_000


@dataclass
class AuditConfig:
    path: str
    type: str
    uuid: str
    description: str = ""
    options: dict[str, str] = field(default_factory=dict)
    local: bool = False

    def describe(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "description": self.description,
            "options": dict(self.options),
            "local": self.local,
            "path": self.path,
        }


class Hasher:
    """HMAC-SHA256 of strings, and of every string inside JSON-like data."""

    def __init__(self, salt: bytes) -> None:
        self._mac = hmac.new(salt, digestmod=hashlib.sha256)  # keyed once, copied per value
        self._empty = self._hmac("")  # e.g. every live KV version's "deletion_time"

    def _hmac(self, value: str) -> str:
        mac = self._mac.copy()
        mac.update(value.encode())
        return "hmac-sha256:" + mac.hexdigest()

    def hash(self, value: str) -> str:
        return self._hmac(value) if value else self._empty

    def walk(self, value: Any) -> Any:
        """Hash every string, and numbers too (unlike Vault): a secret such as a PIN sent as
        a JSON number must not reach the log in clear. Booleans and nulls stay."""
        if isinstance(value, str):
            return self.hash(value)
        if isinstance(value, dict):
            return {k: self.walk(v) for k, v in value.items()}
        if isinstance(value, int | float) and not isinstance(value, bool):
            return self.hash(repr(value))
        if isinstance(value, list | tuple):
            return [self.walk(v) for v in value]
        return value


class AuditEvent:
    """One request as the devices record it: its request line, then its response line.

    ``request`` is the raw (unhashed) request block, as the pipeline builds it; ``caller``
    gives the ``auth`` block. Each device keeps here the JSON of the two blocks once hashed,
    so the response line re-uses the request line's work.
    """

    __slots__ = ("caller", "request", "shared")

    def __init__(self, caller: Caller | None, request: dict[str, Any]) -> None:
        self.caller = caller
        self.request = request
        self.shared: dict[FileDevice, tuple[bytes, bytes]] = {}
        """Per device: the serialised hashed ``auth`` and ``request`` blocks."""


def auth_block(caller: Caller | None) -> dict[str, Any] | None:
    """The raw ``auth`` block of an entry (Vault's shape), before hashing."""
    if caller is None:
        return None
    entry = caller.entry
    info: dict[str, Any] = {
        "client_token": caller.token,
        "accessor": entry.accessor if entry else "",
        "display_name": caller.display_name,
        "policies": list(caller.policies),
        "token_policies": list(caller.policies),
        "metadata": (entry.meta or None) if entry else None,
        "entity_id": "",
        "token_type": entry.type if entry else "service",
    }
    if entry is not None:
        info["token_ttl"] = entry.ttl
        info["token_issue_time"] = rfc3339(entry.creation_time)
    return info


def _refuse(message: str) -> SecretsError:
    return SecretsError(400, f"file audit device: {message}")


def check_file_path(raw: str, allowed: Sequence[Path]) -> Path | None:
    """The file a device may write (None: ``stdout``), or a 400 saying why not.

    Checks only; creates nothing. ``allowed[0]`` is ``SOCLE_HOME/audit``, which
    :func:`prepare_folder` may create; other allowed folders must exist.
    """
    if raw == STDOUT:
        return None
    if not raw or not os.path.isabs(raw):
        raise _refuse("options.file_path must be an absolute path (or 'stdout')")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in raw):
        raise _refuse("options.file_path must not contain control characters")
    if any(part in ("..", ".") for part in raw.split("/")) or raw.endswith("/"):
        raise _refuse(f"options.file_path {raw!r} must be a plain path to a file (no '..')")
    path = Path(raw)
    if allowed and allowed[0].is_symlink():
        raise _refuse(f"{allowed[0]} is a symbolic link; refused")
    for base in allowed:
        if path.parent != base and base not in path.parent.parents:
            continue
        folder = path.parent
        if folder.exists() or folder != base:
            real_base = Path(os.path.realpath(base))
            expected = real_base / folder.relative_to(base)
            if Path(os.path.realpath(folder)) != expected:
                raise _refuse(f"{folder} is reached through a symbolic link; refused")
        if path.is_symlink():
            raise _refuse(f"{path} is a symbolic link; refused")
        return path
    places = ", ".join(str(b) for b in allowed)
    raise SecretsError(
        400,
        f"file audit device: {raw} is outside the folders audit logs may be written to "
        f"({places}) and is not 'stdout'; the operator can allow a folder with SOCLE_AUDIT_DIRS",
    )


def prepare_folder(path: Path, allowed: Sequence[Path]) -> None:
    """Create ``SOCLE_HOME/audit`` (0700) when a device writes straight into it."""
    if allowed and path.parent == allowed[0]:
        allowed[0].mkdir(mode=0o700, parents=False, exist_ok=True)


class FileDevice:
    def __init__(self, config: AuditConfig, salt: bytes) -> None:
        self.config = config
        self.hasher = Hasher(salt)
        file_path = config.options.get("file_path", "")
        if file_path != STDOUT and (not file_path or not os.path.isabs(file_path)):
            raise SecretsError(400, "file audit device: options.file_path must be an absolute path")
        self.stdout = file_path == STDOUT
        """Lines go to the server's standard output (no chain across restarts)."""
        self.refused: str | None = None
        """Why this device may not write (its path broke the folder rule): it never reopens."""
        self.file_path = Path(file_path)
        self._fd: int | None = None
        self._prev = ""
        self._tokens: dict[str, tuple[bytes, str, str]] = {}
        """Token entry id -> (hashed ``auth`` block JSON, hashed token, hashed accessor)."""
        self.failing = False

    def open(self) -> None:
        self.close()
        if self.stdout:
            self._fd = os.dup(1)
            self._prev = ""
            return
        prev = last_line_hash(self.file_path)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self.file_path, flags, 0o600)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(f"{self.file_path} is not a regular file")
            os.fchmod(fd, 0o600)
            if info.st_size and not self._ends_with_newline():
                os.write(fd, b"\n")  # a torn last line stays bad; new lines start clean
                prev = ""
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._prev = prev

    def _ends_with_newline(self) -> bool:
        with self.file_path.open("rb") as handle:
            handle.seek(-1, 2)
            return handle.read(1) == b"\n"

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None

    def _healthy_fd(self, check_link: bool) -> int:
        if self.refused is not None:
            raise OSError(errno.EACCES, self.refused)
        if self._fd is not None and (not check_link or os.fstat(self._fd).st_nlink > 0):
            return self._fd
        self.open()  # removed or never opened: reopen the path (raises when impossible)
        assert self._fd is not None
        return self._fd

    # -- hashing --------------------------------------------------------------------------

    def _caller(self, caller: Caller | None) -> tuple[bytes, str, str]:
        """The hashed ``auth`` block (JSON) and the hashed token and accessor of a caller,
        computed once per token: they are the same on every request it makes."""
        entry = caller.entry if caller is not None else None
        if entry is not None:
            cached = self._tokens.get(entry.id)
            if cached is not None:
                return cached
        auth = auth_block(caller)
        if not auth:
            return b"{}", "", ""
        hashed = _hash_auth(self.hasher, auth)
        result = (dumps(hashed), hashed["client_token"], hashed["accessor"])
        if entry is not None:
            if len(self._tokens) >= _TOKEN_CACHE_LIMIT:
                del self._tokens[next(iter(self._tokens))]  # oldest first
            self._tokens[entry.id] = result
        return result

    def _shared(self, event: AuditEvent) -> tuple[bytes, bytes]:
        """The hashed ``auth`` and ``request`` blocks of ``event`` as JSON, made once."""
        shared = event.shared.get(self)
        if shared is None:
            auth, token, accessor = self._caller(event.caller)
            request = dict(event.request)
            if request["client_token"]:
                request["client_token"] = token or self.hasher.hash(request["client_token"])
            if request["client_token_accessor"]:
                request["client_token_accessor"] = accessor or self.hasher.hash(
                    request["client_token_accessor"]
                )
            if request["data"] is not None:
                request["data"] = self.hasher.walk(request["data"])
            shared = event.shared[self] = (auth, dumps(request))
        return shared

    def line(
        self, moment: bytes, event: AuditEvent, response: dict[str, Any] | None, error: str
    ) -> bytes:
        """The body of one entry, as ``json.dumps`` gives it (without the chain fields):
        ``time``, ``type``, ``auth``, ``request``, then ``response`` (response lines only)
        and ``error`` (when there is one)."""
        auth, request = self._shared(event)
        kind = b"request" if response is None else b"response"
        parts = [b'{"time":"', moment, b'","type":"', kind, b'","auth":', auth]
        parts += [b',"request":', request]
        if response is not None:
            parts += [b',"response":', dumps(hash_response(self.hasher, response))]
        if error:
            parts += [b',"error":', dumps(error)]
        return b"".join(parts)

    def write(self, line: bytes, *, check_link: bool = True) -> None:
        """Chain and append one entry made by :meth:`line`. ``check_link``: first make
        sure the file still has a name (one ``fstat``), reopening the path if not."""
        fd = self._healthy_fd(check_link)  # first: a reopened file restarts the chain
        sealed, digest = seal_body(line, self._prev)
        data = memoryview(sealed + b"\n")
        while data:
            written = os.write(fd, data)
            data = data[written:]
        self._prev = digest


class AuditBroker:
    """The enabled devices, their table (behind the barrier) and the fail-closed rule."""

    def __init__(self, barrier: Barrier, allowed: Sequence[Path] = ()) -> None:
        self._barrier = barrier
        self.allowed = tuple(allowed)
        """Folders device files may be in; the first is ``SOCLE_HOME/audit``."""
        self.devices: dict[str, FileDevice] = {}

    def _checked(self, device: FileDevice) -> None:
        if device.stdout:
            return
        check_file_path(str(device.file_path), self.allowed)
        prepare_folder(device.file_path, self.allowed)

    @property
    def enabled(self) -> bool:
        return bool(self.devices)

    async def load(self) -> None:
        raw = await self._barrier.get(TABLE_KEY)
        for item in json.loads(raw) if raw else []:
            config = AuditConfig(**item)
            salt = await self._barrier.get(f"audit/salt/{config.uuid}")
            device = FileDevice(config, salt or b"")
            try:
                self._checked(device)  # a device enabled before the folder rule fails closed
                device.open()
            except OSError as exc:
                device.failing = True
                log.error("audit device %s cannot open its file: %s", config.path, exc.strerror)
            except SecretsError as exc:
                device.failing = True
                device.refused = str(exc)
                log.error("audit device %s refused: %s", config.path, exc)
            self.devices[config.path] = device

    async def _save(self) -> None:
        table = [d.config.__dict__ for d in self.devices.values()]
        await self._barrier.put(TABLE_KEY, json.dumps(table).encode())

    async def enable(
        self, path: str, type_: str, description: str, options: dict[str, str], local: bool
    ) -> None:
        if path in self.devices:
            raise SecretsError(400, f"path already in use: {path}")
        if type_ != "file":
            raise SecretsError(
                400, f"unknown audit device type {type_!r}: only 'file' is supported"
            )
        config = AuditConfig(path, type_, str(uuid.uuid4()), description, options, local)
        salt = secrets.token_bytes(32)
        device = FileDevice(config, salt)
        self._checked(device)
        try:
            device.open()
        except OSError as exc:
            raise SecretsError(
                400, f"file audit device: cannot open {device.file_path}: {exc.strerror or exc}"
            ) from None
        await self._barrier.put(f"audit/salt/{config.uuid}", salt)
        self.devices[path] = device
        try:
            await self._save()
        except BaseException:
            del self.devices[path]
            device.close()
            raise

    async def disable(self, path: str) -> bool:
        device = self.devices.pop(path, None)
        if device is None:
            return False
        device.close()
        await self._save()
        await self._barrier.delete(f"audit/salt/{device.config.uuid}")
        return True

    def close(self) -> None:
        for device in self.devices.values():
            device.close()
        self.devices.clear()

    def hash(self, path: str, value: str) -> str:
        device = self.devices.get(path)
        if device is None:
            raise SecretsError(400, f"unknown audit device {path!r}")
        return device.hasher.hash(value)

    def log_request(self, event: AuditEvent, *, error: str = "") -> None:
        """The request line, on every device; fail closed: raise :class:`AuditFailure` if
        devices exist and none could write it."""
        self._log(event, None, error, required=True)

    def log_response(
        self, event: AuditEvent, *, response: dict[str, Any] | None = None, error: str = ""
    ) -> None:
        """The response line (``response``: the raw response block), best effort."""
        self._log(event, response or {}, error, required=False)

    def _log(
        self,
        event: AuditEvent,
        response: dict[str, Any] | None,
        error: str,
        *,
        required: bool,
    ) -> None:
        if not self.devices:
            return
        moment = _now().encode()
        ok = 0
        for device in self.devices.values():
            try:
                # The link check guards the lines that must land (request lines); a
                # response line follows its request line within the same request.
                device.write(device.line(moment, event, response, error), check_link=required)
                ok += 1
                if device.failing:
                    device.failing = False
                    log.warning("audit device %s recovered", device.config.path)
            except OSError as exc:
                if not device.failing:
                    log.error(
                        "audit device %s failed: %s",
                        device.config.path,
                        exc.strerror or type(exc).__name__,
                    )
                device.failing = True
                device.close()
        if ok == 0 and required:
            raise AuditFailure()


def hash_response(hasher: Hasher, response: dict[str, Any]) -> dict[str, Any]:
    """The response block with its data and auth hashed."""
    if not response:
        return response
    response = dict(response)
    if response.get("data") is not None:
        response["data"] = hasher.walk(response["data"])
    if response.get("auth"):
        response["auth"] = _hash_auth(hasher, response["auth"])
    if response.get("wrap_info"):
        wrap_info = dict(response["wrap_info"])
        for key in ("token", "accessor", "wrapped_accessor"):
            if wrap_info.get(key):
                wrap_info[key] = hasher.hash(wrap_info[key])
        response["wrap_info"] = wrap_info
    return response


def _hash_auth(hasher: Hasher, auth: dict[str, Any]) -> dict[str, Any]:
    auth = dict(auth)
    for key in ("client_token", "accessor"):
        if auth.get(key):
            auth[key] = hasher.hash(auth[key])
    if auth.get("metadata"):
        auth["metadata"] = hasher.walk(auth["metadata"])
    return auth


_second: list[Any] = [0, ""]


def _now() -> str:
    """RFC 3339 time, formatting the date part once per second (two lines per request)."""
    now = time.time()
    whole = int(now)
    if whole != _second[0]:
        _second[0], _second[1] = whole, rfc3339(whole)[:19]
    return f"{_second[1]}.{int((now - whole) * 1e6):06d}Z"
