"""The secrets core: seal, barrier, tokens, policies, mounts, leases and audit, served as a
subset of the Vault HTTP API by a lean ASGI app.

Layers, inside out::

    shamir, keyring, barrier      crypto and storage (state store holds ciphertext only)
    seal                          init / unseal progress / seal
    tokens, policy, policy_store  who the caller is and what they may do
    router, mounts, leases, audit where a request goes, what it leaves behind
    sys_*, token_api, cubbyhole   built-in backends
    pipeline                      one request: auth -> ACL -> audit -> backend -> envelope
    http                          ASGI: paths, bodies, JSON, status codes

The lead's server mounts :attr:`SecretsCore.asgi` at ``/v1`` and calls :meth:`start` and
:meth:`stop`; the runtime calls :meth:`read_for_app` to hand secrets to apps at deploy time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from socle.errors import SecretUnavailable
from socle.fs import write_private
from socle.secrets.backend import Operation, SecretsError
from socle.secrets.core.barrier import Barrier
from socle.secrets.core.errors import SealedError
from socle.secrets.core.http import VaultHTTP
from socle.secrets.core.key_ceremony import Rekey, RootGeneration
from socle.secrets.core.paths import check_path
from socle.secrets.core.pipeline import Pipeline, runtime_caller
from socle.secrets.core.seal import SealManager, decode_share
from socle.secrets.core.services import Services
from socle.secrets.core.tokens import TokenParams
from socle.state.store import StateStore
from socle.tasks import TaskMonitor

if TYPE_CHECKING:
    from socle.secrets.registry import BackendRegistry

__all__ = ["DEV_KEY_FILE", "SecretsCore"]

log = logging.getLogger("socle.secrets")
DEV_KEY_FILE = "secrets-dev-unseal.key"


class SecretsCore:
    """The secrets engine for one state store. Sealed until :meth:`submit_unseal` has seen
    enough key shares (or, in dev mode, until :meth:`start` unseals it from a key file)."""

    def __init__(
        self,
        store: StateStore,
        home: Path,
        registry: BackendRegistry,
        *,
        dev: bool = False,
        max_body_bytes: int = 1 << 20,
        clock: Callable[[], float] = time.time,
        tasks: TaskMonitor | None = None,
        audit_dirs: Sequence[Path] = (),
    ) -> None:
        self.home = home
        self._tasks = tasks
        self.audit_dirs = (home / "audit", *audit_dirs)
        """Where audit devices may write: ``home/audit`` and what the operator allowed."""
        self.dev = dev
        self.registry = registry
        self.barrier = Barrier(store)
        self.seal = SealManager(self.barrier)
        self._lock = asyncio.Lock()
        self.root_generation = RootGeneration(self.seal, self.barrier, self._lock)
        """``sys/generate-root``: progress toward a new root token (memory only)."""
        self.rekey = Rekey(self.seal, self.barrier, self._lock)
        """``sys/rekey``: progress toward new unseal key shares (memory only)."""
        self.services: Services | None = None
        self.pipeline: Pipeline | None = None
        self.dev_root_token: str | None = None
        """In dev mode, the root token (also in the dev key file)."""
        self._clock = clock
        self.asgi = VaultHTTP(self, max_body_bytes)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.seal.load()
        if self.dev:
            await self._dev_unseal()

    async def stop(self) -> None:
        async with self._lock:
            await self._teardown()

    async def _dev_unseal(self) -> None:
        key_file = self.home / DEV_KEY_FILE
        if not self.seal.initialized:
            result = await self.initialize(1, 1)
            self.home.mkdir(parents=True, exist_ok=True)
            write_private(
                key_file,
                json.dumps(
                    {"unseal_key": result["keys_base64"][0], "root_token": result["root_token"]}
                ),
                durable=True,
            )
        if not key_file.exists():
            log.error("dev mode: %s is missing; the secrets engine stays sealed", key_file)
            return
        saved = json.loads(key_file.read_text())
        await self.submit_unseal(str(saved["unseal_key"]))
        self.dev_root_token = saved.get("root_token")
        log.warning(
            "DEV MODE: the secrets engine unsealed itself with the key in %s. Anyone who can "
            "read that file can read every secret. Never use dev mode with real secrets.",
            key_file,
        )

    # -- seal / unseal ------------------------------------------------------------------

    async def initialize(self, shares: int, threshold: int) -> dict[str, Any]:
        """``sys/init``: create the keys, the first tables and the root token; stay sealed."""
        async with self._lock:
            result = await self.seal.initialize(shares, threshold)
            try:
                services = Services.build(
                    self.barrier, self.registry, self._clock, self._tasks, self.audit_dirs
                )
                await services.load(first=True, dev=self.dev)
                token, _, _ = await services.tokens.create(
                    TokenParams(policies=["root"], display_name="root", path="auth/token/root"),
                    None,
                )
                await self.seal.commit(result)  # only now does the store count as initialised
            finally:
                self.barrier.lock()
        return {
            "keys": [share.hex() for share in result.shares],
            "keys_base64": [base64.b64encode(share).decode() for share in result.shares],
            "root_token": token,
        }

    async def submit_unseal(self, key: str | None, *, reset: bool = False) -> dict[str, object]:
        """``sys/unseal``: add a share (or reset); unseal once the threshold is reached."""
        async with self._lock:
            if reset:
                self.seal.reset()
            elif key is not None and self.barrier.sealed:
                if not self.seal.initialized:
                    raise SecretsError(400, "Vault is not initialized")
                if await self.seal.submit(decode_share(key, self.seal.share_bytes)):
                    await self._post_unseal()
            return self.seal.status()

    async def _post_unseal(self) -> None:
        services = Services.build(
            self.barrier, self.registry, self._clock, self._tasks, self.audit_dirs
        )
        try:
            await services.load(first=False, dev=self.dev)
            await services.start()
        except BaseException:
            await services.stop()
            self.barrier.lock()
            raise
        self.services = services
        self.pipeline = Pipeline(services)
        log.info("secrets engine unsealed")

    def lease_summary(self) -> dict[str, tuple[int, float | None]]:
        """Per mount path: lease count and soonest final expiry (nothing while sealed)."""
        services = self.services
        return {} if services is None else services.leases.summary()

    async def seal_now(self) -> None:
        async with self._lock:
            await self._teardown()
        log.info("secrets engine sealed")

    async def _teardown(self) -> None:
        services, self.services, self.pipeline = self.services, None, None
        self.root_generation.cancel()
        self.rekey.cancel()
        if services is not None:
            await services.stop()
        self.barrier.lock()
        self.seal.reset()

    # -- runtime ------------------------------------------------------------------------

    async def read_for_app(self, policies: list[str], path: str, key: str) -> tuple[str, int]:
        """One value of a secret for an app, checked against exactly ``policies``.

        The engine's side of the boundary: every refusal becomes
        :class:`~socle.errors.SecretUnavailable` (see :meth:`_read_for_app`).
        """
        try:
            return await self._read_for_app(policies, path, key)
        except SecretsError as exc:
            raise SecretUnavailable("; ".join(exc.errors) or str(exc), status=exc.status) from None

    async def call_as(
        self, policies: list[str], operation: str, path: str, data: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One request to the secrets API on behalf of a platform part (the ingress issuing
        a certificate with policy ``ingress``), checked against exactly ``policies`` (deny
        by default: the operator grants the paths). Returns the response's ``data``; every
        refusal becomes :class:`~socle.errors.SecretUnavailable`."""
        services, pipeline = self.services, self.pipeline
        try:
            if services is None or pipeline is None:
                raise SealedError()
            path = path.strip("/")
            check_path(path)
            acl = await services.policies.acl(policies)
            outcome = await pipeline.handle(
                Operation(operation),
                path,
                data or {},
                {},
                caller=runtime_caller(acl, policies),
                remote_address="socle-platform",
            )
        except SecretsError as exc:
            raise SecretUnavailable("; ".join(exc.errors) or str(exc), status=exc.status) from None
        if outcome.status >= 400 or outcome.body is None:
            errors = (outcome.body or {}).get("errors") or [f"nothing at {path!r}"]
            raise SecretUnavailable("; ".join(map(str, errors)), status=outcome.status)
        body: dict[str, Any] = outcome.body.get("data") or {}
        return body

    async def _read_for_app(self, policies: list[str], path: str, key: str) -> tuple[str, int]:
        """One value of a secret for an app, checked against exactly ``policies``.

        ``path`` is an API path (``secret/data/app/db``); on a KV v2 mount the ``data/``
        segment may be left out (``secret/app/db``), as with ``vault kv get``. Returns the
        value (non-strings as JSON) and the KV v2 version (0 when not versioned). Raises
        SecretsError 403 (ACL), 404 (missing path or key) or 503 (sealed).
        """
        services, pipeline = self.services, self.pipeline
        if services is None or pipeline is None:
            raise SealedError()
        path = path.strip("/")
        check_path(path)
        match = services.router.match(path)
        versioned = False
        if match is not None:
            mounted, relative = match
            versioned = mounted.entry.type == "kv" and mounted.entry.options.get("version") == "2"
            if versioned and not relative.startswith("data/"):
                path = mounted.entry.path + "data/" + relative
        acl = await services.policies.acl(policies)
        outcome = await pipeline.handle(
            Operation.READ,
            path,
            {},
            {},
            caller=runtime_caller(acl, policies),
            remote_address="socle-runtime",
        )
        if outcome.status >= 400 or outcome.body is None:
            errors = (outcome.body or {}).get("errors") or [f"no secret at {path!r}"]
            raise SecretsError(404 if outcome.status == 204 else outcome.status, *errors)
        data = outcome.body.get("data") or {}
        version = 0
        if versioned:
            version = int((data.get("metadata") or {}).get("version") or 0)
            data = data.get("data") or {}
        if key not in data:
            raise SecretsError(404, f"no key {key!r} in the secret at {path!r}")
        value = data[key]
        return (value if isinstance(value, str) else json.dumps(value)), version
