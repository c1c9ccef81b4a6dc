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
request is refused with 500 before anything is done. A device notices its file was
removed (link count 0) and reopens the path; if that fails the device is failing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from socle.secrets.backend import SecretsError
from socle.secrets.core.audit_chain import last_line_hash, seal_line
from socle.secrets.core.barrier import Barrier
from socle.secrets.core.errors import AuditFailure
from socle.secrets.core.fields import rfc3339

log = logging.getLogger("socle.secrets")
TABLE_KEY = "core/audit"


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
        self._salt = salt

    def hash(self, value: str) -> str:
        return "hmac-sha256:" + hmac.digest(self._salt, value.encode(), "sha256").hex()

    def walk(self, value: Any) -> Any:
        """Hash every string, and numbers too (unlike Vault): a secret such as a PIN sent as
        a JSON number must not reach the log in clear. Booleans and nulls stay."""
        if isinstance(value, str):
            return self.hash(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return self.hash(repr(value))
        if isinstance(value, dict):
            return {k: self.walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.walk(v) for v in value]
        return value


class FileDevice:
    def __init__(self, config: AuditConfig, salt: bytes) -> None:
        self.config = config
        self.hasher = Hasher(salt)
        file_path = config.options.get("file_path", "")
        if not file_path or not os.path.isabs(file_path):
            raise SecretsError(400, "file audit device: options.file_path must be an absolute path")
        self.file_path = Path(file_path)
        self._fd: int | None = None
        self._prev = ""
        self._memo: tuple[Any, Any, Any, Any] | None = None
        self.failing = False

    def open(self) -> None:
        self.close()
        prev = last_line_hash(self.file_path)
        fd = os.open(self.file_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
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

    def _healthy_fd(self) -> int:
        if self._fd is not None and os.fstat(self._fd).st_nlink > 0:
            return self._fd
        self.open()  # removed or never opened: reopen the path (raises when impossible)
        assert self._fd is not None
        return self._fd

    def hashed(self, entry: dict[str, Any]) -> dict[str, Any]:
        """:func:`hash_entry`, reusing the hashed ``auth`` and ``request`` blocks of the
        request line for the response line (same objects): half the HMACs per request."""
        auth, request = entry.get("auth"), entry["request"]
        memo = self._memo
        if memo is not None and memo[0] is auth and memo[1] is request:
            out = hash_entry(self.hasher, entry, skip=True)
            out["auth"], out["request"] = memo[2], memo[3]
            return out
        out = hash_entry(self.hasher, entry)
        self._memo = (auth, request, out["auth"], out["request"])
        return out

    def write(self, entry: dict[str, Any]) -> None:
        fd = self._healthy_fd()  # first: a reopened file restarts the chain from its last line
        line = seal_line(entry, self._prev)
        data = memoryview(line + b"\n")
        while data:
            written = os.write(fd, data)
            data = data[written:]
        self._prev = hashlib.sha256(line).hexdigest()


class AuditBroker:
    """The enabled devices, their table (behind the barrier) and the fail-closed rule."""

    def __init__(self, barrier: Barrier) -> None:
        self._barrier = barrier
        self.devices: dict[str, FileDevice] = {}

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
                device.open()
            except OSError as exc:
                device.failing = True
                log.error("audit device %s cannot open its file: %s", config.path, exc.strerror)
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

    def log(self, entry: dict[str, Any], *, required: bool) -> None:
        """Write to every device. With ``required`` (the request line), raise
        :class:`AuditFailure` if devices exist and none succeeded."""
        if not self.devices:
            return
        ok = 0
        for device in self.devices.values():
            try:
                device.write(device.hashed(entry))
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


def hash_entry(hasher: Hasher, entry: dict[str, Any], *, skip: bool = False) -> dict[str, Any]:
    """Apply the hashing rules to a raw entry built by :func:`build_entry` (``skip``: leave
    ``auth`` and ``request`` to the caller, who has them hashed already)."""
    out = dict(entry)
    if not skip:
        auth = entry.get("auth")
        if auth:
            out["auth"] = _hash_auth(hasher, auth)
        request = dict(entry["request"])
        for key in ("client_token", "client_token_accessor"):
            if request.get(key):
                request[key] = hasher.hash(request[key])
        if request.get("data") is not None:
            request["data"] = hasher.walk(request["data"])
        out["request"] = request
    response = entry.get("response")
    if response:
        response = dict(response)
        if response.get("data") is not None:
            response["data"] = hasher.walk(response["data"])
        if response.get("auth"):
            response["auth"] = _hash_auth(hasher, response["auth"])
        out["response"] = response
    return out


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


def build_entry(
    kind: str,
    *,
    auth: dict[str, Any] | None,
    request: dict[str, Any],
    response: dict[str, Any] | None = None,
    error: str = "",
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "time": _now(),
        "type": kind,
        "auth": auth or {},
        "request": request,
    }
    if kind == "response":
        entry["response"] = response or {}
    if error:
        entry["error"] = error
    return entry
