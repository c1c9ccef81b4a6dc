"""Env values that reference secrets: resolved at deploy time, never stored in plaintext.

An app's references are read with the ACL policy ``app-<name>`` only (deny by default:
the operator grants each app exactly the paths it may read). Plans, targets and revisions
keep the reference and the secret's version; the value exists only in the instance's
environment (and in memory while starting it).
"""

from __future__ import annotations

from typing import Protocol

from socle.errors import Problem, SecretUnavailable
from socle.model.app import App, SecretRef


class SecretReader(Protocol):
    async def read_for_app(self, policies: list[str], path: str, key: str) -> tuple[str, int]:
        """The value (text) and version of ``path#key`` as ``policies`` allow;
        :class:`~socle.errors.SecretUnavailable` when they do not, or it does not exist."""
        ...


def app_policy(name: str) -> str:
    return f"app-{name}"


def grant_command(app: str, path: str) -> str:
    """The command an operator runs so that ``app`` may read ``path``."""
    return f"socle secrets grant {app} {path}"


def _fix(app: App, ref: SecretRef, status: int) -> str:
    """What to run so that the reference resolves, by the engine's answer."""
    if status == 403:
        return f"run `{grant_command(app.name, ref.path)}`"
    if status == 503:
        return "unseal the secrets engine (`socle operator unseal`)"
    mount, _, rest = ref.path.partition("/")
    rest = rest.removeprefix("data/")
    if mount == "secret" and rest:
        return f"write it (`socle secrets put {rest} {ref.key}=...`)"
    return "write it first"


def references(app: App) -> dict[str, SecretRef]:
    """Env name → secret reference, for the env values that are references."""
    return {k: v for k, v in app.spec.env.items() if isinstance(v, SecretRef)}


async def versions(
    reader: SecretReader, app: App, origin: str | None = None
) -> tuple[dict[str, int], list[Problem]]:
    """Current version of each referenced secret, or a Problem per unreadable one."""
    found: dict[str, int] = {}
    problems: list[Problem] = []
    for env_name, ref in references(app).items():
        try:
            _, version = await reader.read_for_app([app_policy(app.name)], ref.path, ref.key)
        except SecretUnavailable as exc:
            file, _, line = (origin or "").rpartition(":")
            problems.append(
                Problem(
                    file or None,
                    int(line) if line.isdigit() else None,
                    f"spec.env.{env_name}",
                    f"secret {ref.secret!r} cannot be read with policy "
                    f"{app_policy(app.name)!r}: {exc.message}; {_fix(app, ref, exc.status)}",
                )
            )
            continue
        found[ref.secret] = version
    return found, problems


async def values(reader: SecretReader, app: App) -> dict[str, str]:
    """Env name → secret value, for starting instances."""
    resolved: dict[str, str] = {}
    for env_name, ref in references(app).items():
        value, _ = await reader.read_for_app([app_policy(app.name)], ref.path, ref.key)
        resolved[env_name] = value
    return resolved
