"""ACL policies: parsing (HCL or JSON) and the access decision.

Matching follows Vault's documented rules. An exact path rule wins outright. Otherwise,
among the glob (``secret/*``) and segment-wildcard (``secret/+/db``) rules that match, the
highest priority one is used, where P1 has *lower* priority than P2 when, in order:

1. the first ``+`` or ``*`` occurs earlier in P1;
2. P1 ends in ``*`` and P2 does not;
3. P1 has more ``+`` segments;
4. P1 is shorter;
5. P1 is smaller lexicographically.

Rules with the same pattern in several policies merge: capabilities are unioned, and a
``deny`` anywhere makes that rule deny everything. Only the chosen rule counts: a broad
``secret/*`` grant does not survive a more specific ``secret/admin/*`` deny, and nothing is
allowed without a matching rule. The ``root`` policy allows everything.

Decisions are cached per ACL (one ACL per distinct set of policies) and path; policy writes
drop every ACL, so the cache never outlives a change.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from socle.secrets.backend import Operation
from socle.secrets.core import hcl

DENY = 1
CREATE = 2
READ = 4
UPDATE = 8
DELETE = 16
LIST = 32
SUDO = 64
PATCH = 128
_IGNORED = 256  # capabilities we parse but never grant anything with (subscribe, recover)
ALL = CREATE | READ | UPDATE | DELETE | LIST | SUDO | PATCH

CAPABILITIES = {
    "deny": DENY,
    "create": CREATE,
    "read": READ,
    "update": UPDATE,
    "delete": DELETE,
    "list": LIST,
    "sudo": SUDO,
    "patch": PATCH,
    "subscribe": _IGNORED,
    "recover": _IGNORED,
}
_LEGACY = {
    "deny": DENY,
    "read": READ | LIST,
    "write": CREATE | READ | UPDATE | DELETE | LIST,
    "sudo": CREATE | READ | UPDATE | DELETE | LIST | SUDO,
}
OPERATION_CAP = {
    Operation.READ: READ,
    Operation.LIST: LIST,
    Operation.CREATE: CREATE,
    Operation.UPDATE: UPDATE,
    Operation.DELETE: DELETE,
    Operation.PATCH: PATCH,
}
_PARAM_OPS = (Operation.READ, Operation.CREATE, Operation.UPDATE, Operation.PATCH)
_KNOWN_KEYS = {
    "capabilities",
    "policy",
    "allowed_parameters",
    "denied_parameters",
    "required_parameters",
    "min_wrapping_ttl",
    "max_wrapping_ttl",
    "mfa_methods",
    "control_group",
}
_NAME = re.compile(r"[a-z0-9][a-z0-9_.@\-]*")


class PolicyError(ValueError):
    """A policy document that cannot be used; the message says where and why."""


def cap_names(caps: int) -> list[str]:
    if caps & DENY or not caps:
        return ["deny"]
    return [name for name, bit in CAPABILITIES.items() if bit & caps and bit != _IGNORED]


@dataclass(frozen=True)
class PathRule:
    pattern: str
    caps: int
    allowed: Mapping[str, tuple[Any, ...]] | None = None
    denied: Mapping[str, tuple[Any, ...]] | None = None
    required: tuple[str, ...] = ()

    @property
    def has_params(self) -> bool:
        return bool(self.allowed or self.denied or self.required)

    def merged(self, other: PathRule) -> PathRule:
        caps = DENY if (self.caps | other.caps) & DENY else self.caps | other.caps
        return PathRule(
            self.pattern,
            caps,
            _merge_params(self.allowed, other.allowed),
            _merge_params(self.denied, other.denied),
            tuple(dict.fromkeys(self.required + other.required)),
        )


def _merge_params(
    a: Mapping[str, tuple[Any, ...]] | None, b: Mapping[str, tuple[Any, ...]] | None
) -> Mapping[str, tuple[Any, ...]] | None:
    if not a or not b:
        return a or b
    out = dict(a)
    for key, values in b.items():
        if key in out and out[key] and values:
            out[key] = out[key] + values
        else:
            out[key] = () if key in out else values
    return out


@dataclass(frozen=True)
class Policy:
    name: str
    raw: str
    rules: tuple[PathRule, ...]
    warnings: tuple[str, ...] = field(default=())


def valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name)) and len(name) <= 128


# -- parsing ---------------------------------------------------------------------------


def parse_policy(name: str, text: str) -> Policy:
    """Parse an HCL or JSON policy document; raises :class:`PolicyError`."""
    if text.lstrip().startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"failed to parse policy: line {exc.lineno}: {exc.msg}") from None
        return _from_json(name, text, document)
    try:
        body = hcl.parse(text)
    except hcl.HCLError as exc:
        raise PolicyError(f"failed to parse policy: {exc}") from None
    return _from_hcl(name, text, body)


def _from_hcl(name: str, text: str, body: hcl.Body) -> Policy:
    rules: list[PathRule] = []
    warnings: list[str] = []
    for item in body.items:
        if item.key == "name":
            continue
        if item.key != "path":
            raise PolicyError(f"failed to parse policy: line {item.line}: invalid key {item.key!r}")
        if len(item.labels) != 1 or not isinstance(item.value, hcl.Body):
            raise PolicyError(
                f'failed to parse policy: line {item.line}: expected path "<pattern>" {{ ... }}'
            )
        fields = {sub.key: (sub.value, sub.line) for sub in item.value.items}
        rules.append(_rule(item.labels[0], fields, item.line, warnings))
    return Policy(name, text, tuple(rules), tuple(warnings))


def _from_json(name: str, text: str, document: Any) -> Policy:
    if not isinstance(document, dict):
        raise PolicyError("failed to parse policy: the JSON document must be an object")
    paths = document.get("path", {})
    if isinstance(paths, list):
        merged: dict[str, Any] = {}
        for chunk in paths:
            if not isinstance(chunk, dict):
                raise PolicyError("failed to parse policy: 'path' entries must be objects")
            merged.update(chunk)
        paths = merged
    if not isinstance(paths, dict):
        raise PolicyError("failed to parse policy: 'path' must be an object")
    for key in document:
        if key not in ("path", "name"):
            raise PolicyError(f"failed to parse policy: invalid key {key!r}")
    rules: list[PathRule] = []
    warnings: list[str] = []
    for pattern, body in paths.items():
        if not isinstance(body, dict):
            raise PolicyError(f"failed to parse policy: path {pattern!r} must be an object")
        fields = {key: (_json_value(value), 0) for key, value in body.items()}
        rules.append(_rule(pattern, fields, 0, warnings))
    return Policy(name, text, tuple(rules), tuple(warnings))


def _json_value(value: Any) -> hcl.Value:
    if isinstance(value, dict):
        return hcl.Body(tuple(hcl.Item(str(k), (), _json_value(v), 0) for k, v in value.items()), 0)
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value  # type: ignore[no-any-return]


def _where(pattern: str, line: int) -> str:
    return f"line {line}: path {pattern!r}" if line else f"path {pattern!r}"


def _rule(
    pattern: str, fields: dict[str, tuple[hcl.Value, int]], line: int, warnings: list[str]
) -> PathRule:
    prefix = "failed to parse policy: "
    if pattern.startswith("/"):
        pattern = pattern[1:]
    for key, (_, key_line) in fields.items():
        if key not in _KNOWN_KEYS:
            raise PolicyError(f"{prefix}{_where(pattern, key_line or line)}: invalid key {key!r}")
    caps = 0
    if "capabilities" in fields:
        value, cline = fields["capabilities"]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PolicyError(
                f"{prefix}{_where(pattern, cline or line)}: capabilities must be a list of strings"
            )
        for cap in value:
            assert isinstance(cap, str)
            if cap.lower() not in CAPABILITIES:
                raise PolicyError(
                    f"{prefix}{_where(pattern, cline or line)}: invalid capability {cap!r}"
                )
            caps |= CAPABILITIES[cap.lower()]
    if "policy" in fields:
        value, pline = fields["policy"]
        if not isinstance(value, str) or value.lower() not in _LEGACY:
            raise PolicyError(
                f"{prefix}{_where(pattern, pline or line)}: policy must be one of "
                "deny, read, write, sudo"
            )
        caps |= _LEGACY[value.lower()]
    if "capabilities" not in fields and "policy" not in fields:
        raise PolicyError(f"{prefix}{_where(pattern, line)}: no capabilities given")
    caps &= ~_IGNORED
    if caps & DENY:
        caps = DENY
    for ignored in ("min_wrapping_ttl", "max_wrapping_ttl", "mfa_methods", "control_group"):
        if ignored in fields:
            warnings.append(f"{_where(pattern, fields[ignored][1] or line)}: {ignored} is ignored")
    return PathRule(
        pattern,
        caps,
        _params(fields, "allowed_parameters", pattern, line),
        _params(fields, "denied_parameters", pattern, line),
        _required(fields, pattern, line),
    )


def _params(
    fields: dict[str, tuple[hcl.Value, int]], key: str, pattern: str, line: int
) -> Mapping[str, tuple[Any, ...]] | None:
    if key not in fields:
        return None
    value, vline = fields[key]
    if not isinstance(value, hcl.Body):
        raise PolicyError(
            f"failed to parse policy: {_where(pattern, vline or line)}: {key} must be an object"
        )
    out: dict[str, tuple[Any, ...]] = {}
    for item in value.items:
        if not isinstance(item.value, list):
            raise PolicyError(
                f"failed to parse policy: {_where(pattern, item.line or line)}: "
                f"{key}.{item.key} must be a list"
            )
        out[item.key] = tuple(item.value)
    return out


def _required(fields: dict[str, tuple[hcl.Value, int]], pattern: str, line: int) -> tuple[str, ...]:
    if "required_parameters" not in fields:
        return ()
    value, vline = fields["required_parameters"]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(
            f"failed to parse policy: {_where(pattern, vline or line)}: "
            "required_parameters must be a list of strings"
        )
    return tuple(str(v) for v in value)


# -- decisions -------------------------------------------------------------------------


def _priority(pattern: str) -> tuple[int, bool, int, int, str]:
    """Sort key: a higher key is a higher-priority (more specific) rule."""
    positions = [i for i in (pattern.find("+"), pattern.find("*")) if i >= 0]
    first = min(positions) if positions else len(pattern)
    plus = sum(1 for segment in pattern.split("/") if segment == "+")
    return (first, not pattern.endswith("*"), -plus, len(pattern), pattern)


def _is_exact(pattern: str) -> bool:
    return not pattern.endswith("*") and "+" not in pattern.split("/")


def _compile(pattern: str) -> re.Pattern[str]:
    glob = pattern.endswith("*")
    body = pattern[:-1] if glob else pattern
    parts = [r"[^/]*" if segment == "+" else re.escape(segment) for segment in body.split("/")]
    return re.compile("/".join(parts) + (".*" if glob else ""), re.DOTALL)


def _value_matches(expected: Any, actual: Any) -> bool:
    if isinstance(expected, str) and isinstance(actual, str) and "*" in expected:
        if expected == "*":
            return True
        if expected.endswith("*") and actual.startswith(expected[:-1]):
            return True
        if expected.startswith("*") and actual.endswith(expected[1:]):
            return True
    return bool(expected == actual)


def _params_allowed(rule: PathRule, data: Mapping[str, Any]) -> bool:
    """Vault's allowed/denied/required parameter semantics for one request."""
    denied = rule.denied or {}
    if "*" in denied and data:
        return False
    for key, value in data.items():
        if key in denied:
            values = denied[key]
            if not values or any(_value_matches(v, value) for v in values):
                return False
    allowed = rule.allowed
    if allowed:
        for key, value in data.items():
            permitted = allowed.get(key)
            if permitted is None:
                if "*" not in allowed:
                    return False
                permitted = allowed["*"]
            if permitted and not any(_value_matches(v, value) for v in permitted):
                return False
    return all(key in data for key in rule.required)


class ACL:
    """The access decision for one set of policies."""

    _CACHE_LIMIT = 50_000

    def __init__(self, policies: Sequence[Policy]) -> None:
        self.root = any(p.name == "root" for p in policies)
        merged: dict[str, PathRule] = {}
        for policy in policies:
            for rule in policy.rules:
                previous = merged.get(rule.pattern)
                merged[rule.pattern] = rule if previous is None else previous.merged(rule)
        self._exact = {p: r for p, r in merged.items() if _is_exact(p)}
        ranked = sorted(
            (r for p, r in merged.items() if not _is_exact(p)),
            key=lambda r: _priority(r.pattern),
            reverse=True,
        )
        self._wild = [(_compile(r.pattern), r) for r in ranked]
        self._cache: dict[str, PathRule | None] = {}

    def _match(self, path: str) -> PathRule | None:
        try:
            return self._cache[path]
        except KeyError:
            pass
        rule = self._exact.get(path)
        if rule is None:
            for regex, candidate in self._wild:
                if regex.fullmatch(path):
                    rule = candidate
                    break
        if len(self._cache) >= self._CACHE_LIMIT:
            self._cache.clear()
        self._cache[path] = rule
        return rule

    def rule(self, path: str, operation: Operation) -> PathRule | None:
        """The rule deciding ``operation`` on ``path`` (None: default deny)."""
        if operation is Operation.LIST:
            rule = self._exact.get(path)
            if rule is None and path.endswith("/"):
                rule = self._exact.get(path.rstrip("/"))
            if rule is None:
                rule = self._match(path)
            if rule is None and path.endswith("/"):
                rule = self._match(path.rstrip("/"))
            return rule
        return self._match(path)

    def capabilities(self, path: str, operation: Operation = Operation.READ) -> int:
        if self.root:
            return ALL
        rule = self.rule(path, operation)
        if rule is None or rule.caps & DENY:
            return 0
        caps = rule.caps
        if operation is not Operation.LIST and path.endswith("/") and path.rstrip("/"):
            # "x/" must not reach what "x" is denied: a backend may fold the slash.
            other = self._match(path.rstrip("/"))
            caps = 0 if other is None or other.caps & DENY else caps & other.caps
        return caps

    def reaches_under(self, prefix: str) -> bool:
        """Whether any rule grants something at or below ``prefix`` (a mount path). This is
        Vault's mount-access check for ``sys/internal/ui/mounts``: a client may learn a
        mount's type and options only if its policies reach into that mount."""
        if self.root:
            return True
        rules = [*self._exact.values(), *(rule for _, rule in self._wild)]
        for rule in rules:
            if not rule.caps or rule.caps & DENY:
                continue
            literal = re.split(r"[+*]", rule.pattern, maxsplit=1)[0]
            if literal.startswith(prefix) or prefix.startswith(literal):
                return True
        return False

    def allows(
        self,
        path: str,
        operation: Operation,
        data: Mapping[str, Any] | None = None,
        *,
        sudo: bool = False,
    ) -> bool:
        if self.root:
            return True
        caps = self.capabilities(path, operation)
        need = OPERATION_CAP[operation] | (SUDO if sudo else 0)
        if caps & need != need:
            return False
        if operation in _PARAM_OPS:
            rule = self.rule(path, operation)
            if rule is not None and rule.has_params and not _params_allowed(rule, data or {}):
                return False
        return True
