"""Token roles (``auth/token/roles/NAME``): a named recipe for ``auth/token/create/NAME``.

A role lets an operator hand out the right to create one kind of token without ``sudo``:
the role, not the caller, decides orphan, period, renewability, type and the path suffix,
and bounds the policies. Vault's rules, applied by :func:`apply_role`:

* with ``allowed_policies`` (or ``allowed_policies_glob``) the requested policies must all be
  allowed (``default`` always is, unless ``token_no_default_policy``); no policies asked
  means all the allowed ones; the *parent's* policies are then not a limit;
* without them, policies follow the ordinary child rules (subset of the parent's);
* ``disallowed_policies`` (and globs) refuse any policy they name, whatever the source;
* ``token_type``: ``service`` or ``batch`` fix the type; ``default-service`` and
  ``default-batch`` only choose it when the request does not; a batch role must make
  orphans and cannot have an explicit max TTL (a batch token cannot be capped later).

Roles live behind the barrier at ``token/role/<name>`` as JSON.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from socle.secrets.backend import SecretsError
from socle.secrets.core.barrier import Barrier, StorageView
from socle.secrets.core.fields import parse_bool, parse_duration, parse_str, parse_str_list

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_SUFFIX = re.compile(r"\w[\w\-.]+\w", re.ASCII)
"""Vault's pattern; Go's ``\\w`` is ASCII, Python's is not unless told."""
TOKEN_TYPES = ("service", "batch", "default-service", "default-batch")


def _go_list(items: list[str]) -> str:
    """A list as Go's ``%q`` prints it (Vault's error messages quote lists this way)."""
    return "[" + " ".join('"' + item.replace('"', '\\"') + '"' for item in items) + "]"


@dataclass
class TokenRole:
    name: str
    allowed_policies: list[str] = field(default_factory=list)
    disallowed_policies: list[str] = field(default_factory=list)
    allowed_policies_glob: list[str] = field(default_factory=list)
    disallowed_policies_glob: list[str] = field(default_factory=list)
    orphan: bool = False
    renewable: bool = True
    path_suffix: str = ""
    explicit_max_ttl: int = 0
    period: int = 0
    token_type: str = "default-service"  # noqa: S105 - a token type name
    token_no_default_policy: bool = False

    def describe(self) -> dict[str, Any]:
        """The ``data`` of a role read, in OpenBao's shape (old and ``token_`` names)."""
        return {
            "allowed_entity_aliases": None,
            "allowed_policies": list(self.allowed_policies),
            "allowed_policies_glob": list(self.allowed_policies_glob),
            "disallowed_policies": list(self.disallowed_policies),
            "disallowed_policies_glob": list(self.disallowed_policies_glob),
            "explicit_max_ttl": self.explicit_max_ttl,
            "name": self.name,
            "orphan": self.orphan,
            "path_suffix": self.path_suffix,
            "period": self.period,
            "renewable": self.renewable,
            "token_explicit_max_ttl": self.explicit_max_ttl,
            "token_no_default_policy": self.token_no_default_policy,
            "token_period": self.period,
            "token_type": self.token_type,
        }

    def update(self, data: dict[str, Any]) -> None:
        """Apply a write: only the fields present change (Vault merges role updates)."""
        for name in (
            "allowed_policies",
            "disallowed_policies",
            "allowed_policies_glob",
            "disallowed_policies_glob",
        ):
            if name in data:
                values = [p.lower() for p in parse_str_list(data[name], name)]
                setattr(self, name, values)
        for name in ("orphan", "renewable", "token_no_default_policy"):
            if name in data:
                setattr(self, name, parse_bool(data[name], name))
        if "path_suffix" in data:
            suffix = parse_str(data["path_suffix"], "path_suffix").strip("/")
            if suffix and (not _SUFFIX.fullmatch(suffix) or ".." in suffix):
                raise SecretsError(
                    400,
                    "given role path suffix contains invalid characters; must match "
                    r"\w[\w-.]+\w",
                )
            self.path_suffix = suffix
        for names, attr in (
            (("token_explicit_max_ttl", "explicit_max_ttl"), "explicit_max_ttl"),
            (("token_period", "period"), "period"),
        ):
            for name in names:
                if name in data:
                    setattr(self, attr, parse_duration(data[name], name))
                    break
        if "token_type" in data:
            token_type = parse_str(data["token_type"], "token_type").strip().lower()
            token_type = "default-service" if token_type in ("", "default") else token_type
            if token_type not in TOKEN_TYPES:
                raise SecretsError(400, f"invalid 'token_type' value \"{token_type}\"")
            self.token_type = token_type
        if self.token_type == "batch":  # noqa: S105 - a token type name
            if not self.orphan:
                raise SecretsError(
                    400,
                    "'token_type' cannot be 'batch' when role is set to generate non-orphan tokens",
                )
            if self.explicit_max_ttl:
                raise SecretsError(
                    400,
                    "'token_type' cannot be 'batch' when role is set to generate tokens with "
                    "an explicit max TTL",
                )


@dataclass(frozen=True)
class RoleDecision:
    """What a role makes of a create request."""

    policies: list[str]
    """The policies to give (before ``default`` is added by the token store)."""
    parent_bound: bool
    """True when the ordinary "subset of the parent's policies" rule still applies."""
    token_type: str
    path: str


def apply_role(
    role: TokenRole, requested: list[str], token_type: str, no_default: bool
) -> RoleDecision:
    """The policies, type and path of a token created through ``role`` (module docstring)."""
    no_default = no_default or role.token_no_default_policy
    policies = [p.lower() for p in requested]
    bounded = bool(role.allowed_policies or role.allowed_policies_glob)
    if bounded:
        allowed = set(role.allowed_policies) | (set() if no_default else {"default"})
        if not policies:
            policies = list(role.allowed_policies)
        final = sorted(set(policies) | (set() if no_default else {"default"}))
        outside = [
            p
            for p in final
            if p not in allowed
            and not any(fnmatch.fnmatchcase(p, g) for g in role.allowed_policies_glob)
        ]
        if outside:
            raise SecretsError(
                400,
                f"token policies ({_go_list(final)}) must be subset of the role's allowed "
                f"policies ({_go_list(role.allowed_policies)}) or glob policies "
                f"({_go_list(role.allowed_policies_glob)})",
            )
    for policy in sorted(set(policies) | (set() if no_default else {"default"})):
        if policy in role.disallowed_policies or any(
            fnmatch.fnmatchcase(policy, g) for g in role.disallowed_policies_glob
        ):
            raise SecretsError(400, f'token policy "{policy}" is disallowed by this role')
    if role.token_type in ("service", "batch"):
        if token_type not in ("", "default", role.token_type):
            raise SecretsError(
                400, f"role {role.name!r} creates {role.token_type} tokens, not {token_type}"
            )
        chosen = role.token_type
    elif token_type in ("", "default"):
        chosen = role.token_type.removeprefix("default-")
    else:
        chosen = token_type
    path = f"auth/token/create/{role.name}"
    if role.path_suffix:
        path += "/" + role.path_suffix
    return RoleDecision(policies, not bounded, chosen, path)


class TokenRoles:
    def __init__(self, barrier: Barrier) -> None:
        self._storage = StorageView(barrier, "token/role/")

    @staticmethod
    def check_name(name: str) -> str:
        name = name.strip().lower()
        if not _NAME.fullmatch(name):
            raise SecretsError(400, f"invalid role name {name!r}")
        return name

    async def get(self, name: str) -> TokenRole | None:
        raw = await self._storage.get_json(self.check_name(name))
        return None if raw is None else TokenRole(**raw)

    async def put(self, role: TokenRole) -> None:
        await self._storage.put_json(role.name, asdict(role))

    async def delete(self, name: str) -> None:
        await self._storage.delete(self.check_name(name))

    async def names(self) -> list[str]:
        return sorted(n for n in await self._storage.list("") if not n.endswith("/"))
