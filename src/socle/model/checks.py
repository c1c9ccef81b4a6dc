"""Checks across fields and objects that a single model cannot make on its own.

Each check is a pure function of the validated apps (and the repository root for paths)
returning findings ``(app name, field path, reason)``; the loader turns them into located
problems. Graph walks are iterative: a chain of 10,000 apps must not hit the recursion limit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path

from socle.model.app import App
from socle.model.yamlsource import PathPart

Finding = tuple[str, tuple[PathPart, ...], str]


def missing_dependencies(apps: Mapping[str, App], known: Iterable[str]) -> list[Finding]:
    """``dependsOn`` entries that name no app (``known`` includes apps that failed validation)."""
    names = set(known)
    findings: list[Finding] = []
    for name, app in apps.items():
        for index, dep in enumerate(app.spec.depends_on):
            if dep not in names:
                hint = ", ".join(sorted(names)[:10]) or "none"
                findings.append(
                    (
                        name,
                        ("spec", "dependsOn", index),
                        f"dependsOn names {dep!r}, which is not an App in these manifests "
                        f"(apps: {hint})",
                    )
                )
    return findings


def dependency_cycles(apps: Mapping[str, App]) -> list[Finding]:
    """One finding per cycle, on its alphabetically first app: ``a -> b -> a``."""
    graph = {
        name: sorted({d for d in app.spec.depends_on if d in apps}) for name, app in apps.items()
    }
    findings: list[Finding] = []
    for component in _strongly_connected(graph):
        start = min(component)
        if len(component) == 1 and start not in graph[start]:
            continue
        cycle = _shortest_cycle(graph, start, component)
        index = apps[start].spec.depends_on.index(cycle[1])
        findings.append(
            (
                start,
                ("spec", "dependsOn", index),
                f"dependency cycle: {' -> '.join(cycle)}",
            )
        )
    return sorted(findings)


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


def workdirs(root: Path, apps: Mapping[str, App]) -> list[Finding]:
    """``spec.run.workdir`` must be a folder inside the repository, symlinks resolved."""
    findings: list[Finding] = []
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
