"""Checks across fields and objects that a single model cannot make on its own.

Each check is a pure function of the validated objects (and the repository root for paths)
returning findings ``((kind, name), field path, reason)``; the loader turns them into
located problems. References and cycles span kinds: ``dependsOn: [Volume/data]`` and an
App's ``spec.volumes`` are edges like ``dependsOn: [api]``. Graph walks are iterative: a chain of 10,000 apps must not hit the recursion limit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from socle.model.app import App
from socle.model.kinds import Finding, ObjectRef, Reference, format_reference
from socle.model.yamlsource import PathPart

NameFinding = tuple[str, tuple[PathPart, ...], str]


def missing_references(
    references: Mapping[ObjectRef, list[Reference]], known: Iterable[ObjectRef]
) -> list[Finding]:
    """References to objects that do not exist (``known`` includes objects that failed
    validation, so that one bad object does not make every reference to it an error too)."""
    names = set(known)
    findings: list[Finding] = []
    for ref, refs in references.items():
        for reference in refs:
            if reference.ref in names:
                continue
            same = sorted(name for kind, name in names if kind == reference.kind)
            plural = reference.kind.lower() + "s"
            hint = ", ".join(same[:10]) or "none"
            written = (
                reference.name if reference.field == "volumes" else format_reference(reference.ref)
            )
            findings.append(
                (
                    ref,
                    reference.path,
                    f"{reference.field} names {written!r}, which is not "
                    f"a{'n' if reference.kind[0] in 'AEIOU' else ''} {reference.kind} "
                    f"in these manifests ({plural}: {hint})",
                )
            )
    return findings


def dependency_cycles(references: Mapping[ObjectRef, list[Reference]]) -> list[Finding]:
    """One finding per cycle, on its first object: ``a -> Volume/x -> a``.

    Objects are ordered by their written form (``api`` for an App, ``Kind/name`` else).
    """
    text = {ref: format_reference(ref) for ref in references}
    by_text = {t: ref for ref, t in text.items()}
    graph = {
        text[ref]: sorted({format_reference(r.ref) for r in refs if r.ref in references})
        for ref, refs in references.items()
    }
    findings: list[Finding] = []
    for component in _strongly_connected(graph):
        start = min(component)
        if len(component) == 1 and start not in graph[start]:
            continue
        cycle = _shortest_cycle(graph, start, component)
        first = by_text[start]
        path = next(r.path for r in references[first] if format_reference(r.ref) == cycle[1])
        findings.append((first, path, f"dependency cycle: {' -> '.join(cycle)}"))
    return sorted(findings)


def app_dependency_cycles(apps: Mapping[str, App]) -> list[NameFinding]:
    """:func:`dependency_cycles` of Apps alone, by app name (for callers holding only apps)."""
    from socle.model.app import app_references

    refs = {("App", name): app_references(app) for name, app in apps.items()}
    return [(ref[1], path, reason) for ref, path, reason in dependency_cycles(refs)]


def _strongly_connected(graph: Mapping[str, list[str]]) -> list[set[str]]:
    """Tarjan's algorithm without recursion."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            successors = graph[node]
            if child < len(successors):
                work.append((node, child + 1))
                nxt = successors[child]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def _shortest_cycle(graph: Mapping[str, list[str]], start: str, within: set[str]) -> list[str]:
    parents: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in graph[node]:
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(parents[path[-1]])
                return [*reversed(path), start]
            if nxt in within and nxt not in parents:
                parents[nxt] = node
                queue.append(nxt)
    return [start, start]  # pragma: no cover - a component always closes a cycle


def workdirs(root: Path, apps: Mapping[str, Any]) -> list[NameFinding]:
    """``spec.run.workdir`` must be a folder inside the repository, symlinks resolved."""
    findings: list[NameFinding] = []
    reasons: dict[str, str | None] = {}
    for name, app in apps.items():
        workdir = app.spec.run.workdir
        if workdir not in reasons:
            reasons[workdir] = _workdir_problem(root, workdir)
        reason = reasons[workdir]
        if reason:
            findings.append((name, ("spec", "run", "workdir"), reason))
    return findings


def _workdir_problem(root: Path, workdir: str) -> str | None:
    target = (root / workdir).resolve()
    if not target.is_relative_to(root):
        return f"workdir {workdir!r} resolves outside the repository (symlink?)"
    if not target.exists():
        return f"workdir {workdir!r} does not exist in the repository"
    if not target.is_dir():
        return f"workdir {workdir!r} is not a folder"
    return None
