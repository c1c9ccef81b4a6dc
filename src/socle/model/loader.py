"""Load a manifest repository into validated objects, or refuse it with every problem found.

``load(path, env)`` reads every manifest file (see :mod:`socle.model.discover` for which),
applies the ``environments/<env>/`` overlay (:mod:`socle.model.overlay`), validates each
object with its kind's model (:mod:`socle.model.kinds`) and checks what spans objects
(duplicates, ``dependsOn``, workdirs). Nothing is returned unless everything is valid; a
:class:`~socle.errors.ManifestError` lists each problem with file, line, field and reason.

It is built for repositories of thousands of objects: YAML is parsed by libyaml without
keeping nodes, and files are composed again for line numbers only when they have a problem.
A caller that loads the same repository again and again passes a
:class:`~socle.model.cache.ManifestCache`: unchanged files are then neither read nor parsed,
and unchanged objects are not validated again (overlays and cross-object checks still run,
so problems and their file:line are the same as without a cache).
"""

from __future__ import annotations

import gc
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from socle.errors import ManifestError, Problem
from socle.model import checks, discover, yamlsource
from socle.model.app import App
from socle.model.cache import CachedModel, DocKey, ManifestCache
from socle.model.diagnose import describe, format_path, problems_of
from socle.model.kinds import API_VERSIONS, KindRegistry, ObjectRef, Reference, default_kinds
from socle.model.overlay import Owners, merge
from socle.model.yamlsource import PathPart

__all__ = ["LoadedManifests", "environments", "load", "render_yaml"]


@dataclass(frozen=True)
class LoadedManifests:
    """A valid, environment-resolved set of manifests."""

    root: Path
    """Resolved repository root."""
    env: str | None
    objects: dict[ObjectRef, BaseModel]
    """Every object by ``(kind, name)``, sorted by kind then name."""
    origins: dict[str, str]
    """``"App/api"`` -> ``"apps/api.yaml:3"``: where each object's document starts."""
    canonical: dict[ObjectRef, str] = field(default_factory=dict, repr=False, compare=False)
    """Canonical JSON of the rendered objects already known (from a cache)."""
    apps: dict[str, App] = field(init=False, repr=False, compare=False)
    """The ``App`` objects by name: a view of ``objects`` for callers that run apps."""

    def __post_init__(self) -> None:
        apps = {n: o for (k, n), o in self.objects.items() if k == "App" and isinstance(o, App)}
        object.__setattr__(self, "apps", apps)

    def of_kind(self, kind: str) -> dict[str, BaseModel]:
        """The objects of one kind by name."""
        return {name: obj for (k, name), obj in self.objects.items() if k == kind}

    def rendered(self) -> list[dict[str, object]]:
        """Each object as plain JSON data, camelCase, defaults included, nulls left out."""
        with _gc_paused():
            return [
                obj.model_dump(mode="json", by_alias=True, exclude_none=True)
                for obj in self.objects.values()
            ]

    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON of all rendered objects (as a JSON list).

        Built from per-object canonical JSON, which a cached load already knows.
        """
        known = self.canonical
        with _gc_paused():
            parts = [known.get(ref) or canonical_json(obj) for ref, obj in self.objects.items()]
        return hashlib.sha256(("[" + ",".join(parts) + "]").encode()).hexdigest()


def canonical_json(obj: BaseModel) -> str:
    """The rendered object as canonical JSON: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(
        obj.model_dump(mode="json", by_alias=True, exclude_none=True),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def load(
    path: Path,
    env: str | None = None,
    *,
    cache: ManifestCache | None = None,
    kinds: KindRegistry | None = None,
) -> LoadedManifests:
    """Every manifest under ``path`` with the ``env`` overlay; raises ManifestError.

    With ``cache``, files and objects unchanged since an earlier load with the same cache
    are reused (see :mod:`socle.model.cache`); the result is the same either way. ``kinds``
    defaults to :func:`~socle.model.kinds.default_kinds`.
    """
    registry = kinds if kinds is not None else default_kinds()
    with _gc_paused():
        if cache is None or not cache.begin():
            return _Load(path, env, None, registry).run()
        try:
            return _Load(path, env, cache, registry).run()
        finally:
            cache.end()


def environments(path: Path) -> list[str]:
    """Names of the overlays in ``environments/`` (sorted); empty if there are none.

    Hidden folders and symlinks that lead out of the repository are not environments.
    """
    root = Path(path).resolve()
    folder = root / discover.ENVIRONMENTS
    if not folder.is_dir():
        return []
    return sorted(
        child.name
        for child in folder.iterdir()
        if child.is_dir()
        and not child.name.startswith(".")
        and child.resolve().is_relative_to(root)
    )


def render_yaml(loaded: LoadedManifests) -> str:
    """Multi-document YAML of the rendered objects; loading it gives the same objects."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text: str = yaml.dump_all(
        loaded.rendered(),
        Dumper=dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        explicit_start=True,
        width=100,
    )
    return text


@dataclass(frozen=True)
class _Source:
    """A document: file (relative to the root), position in the file, first line."""

    file: str
    index: int
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class _Entry:
    """One object on its way to validation, with where each part of it came from."""

    kind: str
    name: str
    data: dict[object, object]
    source: _Source
    owners: Owners[_Source] = field(default_factory=Owners)
    keys: tuple[DocKey, ...] | None = None
    """The cached documents ``data`` was made of (base, then patches), if all are cached."""
    cached: CachedModel | None = None
    """The cache's entry for the validated object, once validated."""


class _Load:
    """The state of one ``load`` call: problems are collected, never raised early."""

    def __init__(
        self, path: Path, env: str | None, cache: ManifestCache | None, kinds: KindRegistry
    ) -> None:
        self.kinds = kinds
        self.given = Path(path)
        self.cache = cache
        self.root = self.given.resolve()
        self.env = env
        self.problems: list[Problem] = []
        self.texts: dict[str, str] = {}
        self.nodes: dict[str, list[yaml.Node | None]] = {}
        self.complete = True
        self.entries: dict[tuple[str, str], _Entry] = {}

    def run(self) -> LoadedManifests:
        if not self.root.is_dir():
            raise ManifestError(
                [Problem(str(self.given), None, "", "no such directory")],
                hint="give the folder that holds the manifests",
            )
        rules, ignore_issues = discover.IgnoreRules.read(self.root)
        for issue in ignore_issues:
            self._file_issue(issue.file, issue.issue)
        files, refusals = discover.manifest_files(
            self.root, self.root, rules, skip_environments=True
        )
        for refusal in refusals:
            self._file_issue(refusal.file, refusal.issue)
        self._read_base(files)
        if self.env is not None:
            self._apply_environment(self.env, rules)
        objects = self._validate()
        self._check(objects)
        if self.problems:
            raise ManifestError(sorted(set(self.problems), key=_problem_order))
        return LoadedManifests(
            root=self.root,
            env=self.env,
            objects={ref: objects[ref] for ref in sorted(objects)},
            origins={
                f"{kind}/{name}": str(entry.source)
                for (kind, name), entry in sorted(self.entries.items())
            },
            canonical=self._canonical(objects),
        )

    def _canonical(self, objects: dict[ObjectRef, BaseModel]) -> dict[ObjectRef, str]:
        """Canonical JSON of each cached object, computed once per validated object."""
        known: dict[ObjectRef, str] = {}
        for ref, entry in self.entries.items():
            cached = entry.cached
            if cached is None or cached.model is not objects.get(ref):
                continue
            if cached.canonical is None:
                cached.canonical = canonical_json(objects[ref])
            known[ref] = cached.canonical
        return known

    # -- reading ---------------------------------------------------------------------------

    def _documents(self, rel: str) -> Iterator[tuple[_Source, object, DocKey | None]]:
        serial: int | None = None
        if self.cache is not None:
            cached, issue = self.cache.read(self.root, rel)
            text = parsed = None
            if cached is not None:
                text, parsed, serial = cached.text, cached.parsed, cached.serial
        else:
            text, issue = discover.read_file(self.root, rel)
            parsed = yamlsource.parse(text) if text is not None else None
        if text is None or parsed is None:
            self.complete = False
            if issue is not None:
                self._file_issue(rel, issue)
            return
        self.texts[rel] = text
        self.complete = self.complete and parsed.complete
        for issue in parsed.issues:
            self._file_issue(rel, issue)
        for doc in parsed.documents:
            key = None if serial is None else (serial, doc.index)
            yield _Source(rel, doc.index, doc.line), doc.data, key

    def _header(self, source: _Source, data: object, *, patch: bool) -> tuple[str, str] | None:
        """``(kind, name)`` of a document, or None after reporting why it has none.

        A base document without a name gets ``""``: it is still validated, so that all its
        problems are reported, but it matches and depends on nothing.
        """
        if not isinstance(data, dict):
            self._report(source, (), f"a manifest must be a mapping, not {describe(data)}")
            return None
        version = data.get("apiVersion")
        kind = data.get("kind")
        usable = True
        if version is not None and version not in API_VERSIONS:
            known = ", ".join(API_VERSIONS)
            self._report(
                source, ("apiVersion",), f"unknown apiVersion {describe(version)} (known: {known})"
            )
            usable = False
        kinds = ", ".join(self.kinds)
        if kind is None:
            reason = f"required field is missing (known kinds: {kinds})"
            if version is None and not patch:
                reason += "; if this file is not a manifest, list it in .socleignore"
            self._report(source, ("kind",), reason)
            usable = False
        elif not isinstance(kind, str) or kind not in self.kinds:
            self._report(source, ("kind",), f"unknown kind {describe(kind)} (known kinds: {kinds})")
            usable = False
        if not usable:
            if version is None and not patch:
                self._report(source, ("apiVersion",), "required field is missing")
            return None
        assert isinstance(kind, str)
        metadata = data.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        if isinstance(name, str):
            return kind, name
        if patch:
            self._report(source, ("metadata", "name"), "a patch needs metadata.name")
            return None
        return kind, ""

    def _read_base(self, files: list[str]) -> None:
        first: dict[tuple[str, str], _Source] = {}
        for rel in files:
            for source, data, doc in self._documents(rel):
                key = self._header(source, data, patch=False)
                if key is None:
                    continue
                assert isinstance(data, dict)
                if not key[1]:
                    self._validate_one(_Entry(key[0], "", data, source))
                    continue
                if key in first:
                    self._duplicate(key, first[key], source)
                    continue
                first[key] = source
                keys = None if doc is None else (doc,)
                self.entries[key] = _Entry(key[0], key[1], data, source, keys=keys)

    def _duplicate(self, key: tuple[str, str], first: _Source, again: _Source) -> None:
        what = f"duplicate {key[0]} {key[1]!r}"
        self._report(again, ("metadata", "name"), f"{what}: also defined at {first}")
        self._report(first, ("metadata", "name"), f"{what}: also defined at {again}")

    def _apply_environment(self, env: str, rules: discover.IgnoreRules) -> None:
        known = environments(self.root)
        folder = self.root / discover.ENVIRONMENTS / env
        if env not in known:
            available = ", ".join(known) if known else "none: there is no environments/ folder"
            self.problems.append(
                Problem(
                    f"{discover.ENVIRONMENTS}/",
                    None,
                    "",
                    f"unknown environment {env!r} (available: {available})",
                )
            )
            return
        files, refusals = discover.manifest_files(self.root, folder, rules, skip_environments=False)
        for refusal in refusals:
            self._file_issue(refusal.file, refusal.issue)
        for rel in files:
            for source, data, doc in self._documents(rel):
                self._apply_patch(source, data, doc)

    def _apply_patch(self, source: _Source, data: object, doc: DocKey | None) -> None:
        key = self._header(source, data, patch=True)
        if key is None:
            return
        assert isinstance(data, dict)
        entry = self.entries.get(key)
        if entry is not None:
            entry.data = merge(entry.data, data, source, entry.owners)
            entry.keys = None if entry.keys is None or doc is None else (*entry.keys, doc)
        elif "apiVersion" not in data:
            names = sorted(name for kind, name in self.entries if kind == key[0])
            self._report(
                source,
                ("metadata", "name"),
                f"patch for {key[0]} {key[1]!r} matches nothing in the base manifests "
                f"({', '.join(names[:10]) or 'none'}); a new object needs apiVersion and spec",
            )
        else:
            keys = None if doc is None else (doc,)
            self.entries[key] = _Entry(key[0], key[1], data, source, keys=keys)

    # -- validation ------------------------------------------------------------------------

    def _validate(self) -> dict[ObjectRef, BaseModel]:
        objects: dict[ObjectRef, BaseModel] = {}
        for ref, entry in self.entries.items():
            model = self._validate_one(entry)
            if model is not None:
                objects[ref] = model
        return objects

    def _validate_one(self, entry: _Entry) -> BaseModel | None:
        cache, keys = self.cache, entry.keys
        if cache is not None and keys is not None:
            entry.cached = cache.model(keys)
            if entry.cached is not None:
                return entry.cached.model
        model_class = self.kinds.model(entry.kind)
        try:
            # Manifests use the camelCase names only, like the schema editors check against.
            model = model_class.model_validate(entry.data, by_alias=True, by_name=False)
        except ValidationError as exc:
            for path, reason in problems_of(exc, entry.data, model_class):
                self._report_in(entry, path, reason)
            return None
        if cache is not None and keys is not None:
            entry.cached = cache.keep_model(keys, model)
        return model

    def _check(self, objects: dict[ObjectRef, BaseModel]) -> None:
        findings: list[tuple[ObjectRef, tuple[PathPart, ...], str]] = []
        by_kind: dict[str, dict[str, BaseModel]] = {}
        for (kind, name), obj in objects.items():
            by_kind.setdefault(kind, {})[name] = obj
        references: dict[ObjectRef, list[Reference]] = {}
        for kind, info in self.kinds.items():
            found = by_kind.get(kind, {})
            for check in info.checks:
                findings += [((kind, n), p, r) for n, p, r in check(self.root, found)]
            for name, obj in found.items():
                refs = info.references(obj)
                if refs:
                    references[(kind, name)] = refs
        if self.complete:
            findings += checks.missing_references(references, self.entries)
        # Every object takes part in cycles, so an edge to an object without references
        # of its own (a Volume) is still an edge.
        graph = {ref: references.get(ref, []) for ref in objects}
        findings += checks.dependency_cycles(graph)
        for ref, path, reason in findings:
            self._report_in(self.entries[ref], path, reason)

    # -- problems --------------------------------------------------------------------------

    def _report_in(self, entry: _Entry, path: tuple[PathPart, ...], reason: str) -> None:
        """A problem at ``path`` of an object: in the patch that set it, else the base."""
        owner = entry.owners.find(path)
        self._report(owner[0] if owner else entry.source, path, reason)

    def _report(self, source: _Source, path: tuple[PathPart, ...], reason: str) -> None:
        nodes = self.nodes.get(source.file)
        if nodes is None:
            nodes = self.nodes[source.file] = yamlsource.compose(self.texts[source.file])
        root = nodes[source.index] if source.index < len(nodes) else None
        line = yamlsource.locate(root, path) or source.line
        self.problems.append(Problem(source.file, line, format_path(path), reason))

    def _file_issue(self, rel: str, issue: yamlsource.Issue) -> None:
        self.problems.append(
            Problem(rel, issue.line, format_path(issue.path), issue.reason, issue.column)
        )


def _problem_order(problem: Problem) -> tuple[str, int, int, str, str]:
    return (
        problem.file or "",
        problem.line or 0,
        problem.column or 0,
        problem.path,
        problem.reason,
    )


class _GcPause:
    """Pause the cyclic GC while building many small objects: it triples load time otherwise.

    Counted, so that concurrent loads (the API runs them in threads) restore it exactly once,
    and only if it was enabled before the first of them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._was_enabled = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0 and self._was_enabled:
                    gc.enable()


_gc_paused = _GcPause()
