"""``socle validate``, ``socle render`` and ``socle schema``: manifests only, nothing touched.

These work without a control plane, so they fit pre-commit hooks and CI. Problems are
printed one per line as ``file:line: field: reason`` with the file relative to the current
folder, so editors and terminals can jump to it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import click

from socle.cli.output import console, json_option, print_json, safe
from socle.errors import ManifestError, Problem
from socle.model.loader import LoadedManifests, load, render_yaml
from socle.model.schema import json_schema

_path_argument = click.argument(
    "path", type=click.Path(path_type=Path, exists=True, file_okay=False), default=Path(".")
)
_env_option = click.option(
    "--env", "-e", default=None, metavar="ENV", help="Apply the environments/ENV overlay."
)


def register(group: click.Group) -> None:
    group.add_command(validate)
    group.add_command(render)
    group.add_command(schema)


def _shown(path: Path, problem: Problem) -> Problem:
    """The problem with its file relative to the current folder instead of the repository."""
    if problem.file is None:
        return problem
    return dataclasses.replace(problem, file=os.path.normpath(path / problem.file))


def _load(path: Path, env: str | None) -> LoadedManifests:
    try:
        return load(path, env)
    except ManifestError as exc:
        raise ManifestError([_shown(path, p) for p in exc.problems], hint=exc.hint) from None


@click.command()
@_path_argument
@_env_option
@json_option
def validate(path: Path, env: str | None, as_json: bool) -> None:
    """Check the manifests under PATH (default: here); exit 1 and list every problem if bad.

    Touches nothing: no control plane is needed.
    """
    try:
        loaded = load(path, env)
    except ManifestError as exc:
        if as_json:
            print_json(
                {
                    "valid": False,
                    "env": env,
                    "apps": [],
                    "problems": [p.to_dict() for p in exc.problems],
                }
            )
        else:
            for problem in exc.problems:
                console.print(safe(str(_shown(path, problem))), soft_wrap=True)
            count = len(exc.problems)
            console.print(
                f"[bold red]{count} problem{'s' if count != 1 else ''}[/] in "
                f"{safe(str(path))}; nothing was changed",
                soft_wrap=True,
            )
        raise SystemExit(1) from None
    if as_json:
        objects = [
            {"kind": kind, "name": name, "origin": loaded.origins[f"{kind}/{name}"]}
            for kind, name in loaded.objects
        ]
        print_json(
            {
                "valid": True,
                "env": env,
                "digest": loaded.digest(),
                "objects": objects,
                "apps": [o for o in objects if o["kind"] == "App"],
                "problems": [],
            }
        )
        return
    counts: dict[str, int] = {}
    for kind, _ in loaded.objects:
        counts[kind] = counts.get(kind, 0) + 1
    where = f" (env {safe(env)})" if env else ""
    summary = (
        ", ".join(f"{n} {k.lower()}{'s' if n != 1 else ''}" for k, n in counts.items())
        or "0 objects"
    )
    console.print(f"[green]{summary} valid{where}[/]")


@click.command()
@_path_argument
@_env_option
@json_option
def render(path: Path, env: str | None, as_json: bool) -> None:
    """Print the manifests under PATH as Socle sees them: overlay applied, defaults filled in."""
    loaded = _load(path, env)
    if as_json:
        print_json(loaded.rendered())
    else:
        sys.stdout.write(render_yaml(loaded))


@click.command()
def schema() -> None:
    """Print the JSON Schema of every manifest kind (for editors and CI linters).

    With the YAML language server: `# yaml-language-server: $schema=socle.schema.json`.
    """
    print_json(json_schema())
