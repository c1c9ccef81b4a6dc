"""Reading manifest YAML: fast when the text is fine, precise when it is not, safe when hostile.

The fast path runs libyaml (``CSafeLoader``) and builds plain Python values straight from
its nodes, which is several times cheaper than PyYAML's generic constructor. It refuses what
a manifest never needs and what PyYAML would otherwise accept silently or dangerously:

* duplicate keys in a mapping (YAML keeps the last one without a word);
* tags other than the plain YAML types (``!!python/object`` and friends build nothing);
* aliases (``*name``): they defeat line numbers and allow "billion laughs" expansion;
* nesting deeper than :data:`MAX_DEPTH`: libyaml composes recursively in C, and a few
  megabytes of ``[[[[`` crash the interpreter, so suspicious texts are first checked
  with libyaml's event stream, which has no recursion and stops at the first excess.

Line numbers are only needed when something is wrong, so nodes are not kept: the caller
composes a file again with :func:`compose` and walks it with :func:`locate`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_FILE_BYTES = 5 * 1024 * 1024
"""Larger files are refused: manifests are small, and parsing time grows with size."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists accepted in a document."""
MAX_ISSUES_PER_FILE = 20

PathPart = str | int
"""One step of a field path: a mapping key or a list index."""

_LIBYAML: bool = bool(getattr(yaml, "__with_libyaml__", False))
_BaseLoader: type = yaml.CSafeLoader if _LIBYAML else yaml.SafeLoader
_EventLoader: type = yaml.CBaseLoader if _LIBYAML else yaml.BaseLoader

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_VALUE = "tag:yaml.org,2002:value"
_SCALAR_TAGS = frozenset(
    "tag:yaml.org,2002:" + t for t in ("null", "bool", "int", "float", "binary", "timestamp")
)

# Cheap, sound triggers for the slower safety scan (see module docstring):
# - a possible alias;
# - a line whose indentation and "- "/"? " indicators reach column 48 (block nesting needs
#   a new column per level, so without such a line block depth stays below 48);
# - a document with more than 48 "[" or "{" (flow nesting needs one each, and a flow
#   collection cannot span a "---" line; counting fewer boundaries only over-estimates).
_ALIAS_HINT = re.compile(r"(?:^|[\s\[{,:])\*[^\s\[\]{},]", re.MULTILINE)
_DEEP_LINE_HINT = re.compile(r"^[ \t\-?:]{48}", re.MULTILINE)
_FLOW_OPENERS_HINT = 48


@dataclass(frozen=True)
class Issue:
    """Something wrong in the YAML text itself (1-based line and column)."""

    line: int | None
    column: int | None
    reason: str
    path: tuple[PathPart, ...] = ()


@dataclass(frozen=True)
class Document:
    """One non-empty document of a file."""

    index: int
    """Position in the file, counting empty documents (the same in :func:`compose`)."""
    line: int
    """1-based line where the document's content starts."""
    data: object


@dataclass
class Parsed:
    documents: list[Document] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    complete: bool = True
    """False when some documents could not be read (syntax error, refused text)."""


def decode(raw: bytes) -> tuple[str | None, Issue | None]:
    """Text of a manifest file, or why it is not one (binary, not UTF-8, too big)."""
    if len(raw) > MAX_FILE_BYTES:
        return None, Issue(
            None,
            None,
            f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; "
            "split it or list it in .socleignore",
        )
    if b"\x00" in raw:
        return None, Issue(None, None, "binary file (contains NUL bytes), not YAML text")
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        return None, Issue(
            line, column, f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); save it as UTF-8"
        )


class _Loader(_BaseLoader):  # type: ignore[misc]
    """The safe loader with a per-file cache for implicit tag resolution (a hot spot)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._tags: dict[str, str] = {}

    def resolve(self, kind: type[Node], value: Any, implicit: Any) -> str:
        # No path resolvers are registered, so collections and quoted scalars take the
        # default tags, and plain scalars depend on their text alone. Called for every node.
        if kind is ScalarNode:
            if not implicit[0]:
                return _STR
            tag = self._tags.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(value) <= 64:
                    self._tags[value] = tag
            return tag
        return _MAP if kind is MappingNode else _SEQ


class _Refused(Exception):
    """Raised inside the builder; the document is reported, not loaded."""


class _Builder:
    """Plain values from a composed node tree, collecting issues instead of guessing.

    ``build`` is a closure over local names: it runs once per node of every manifest, and
    attribute lookups were a fifth of the parse time.
    """

    def __init__(self, loader: _Loader) -> None:
        self.issues: list[tuple[Node, str]] = []
        self.build = self._make_build(loader)

    def _make_build(self, loader: _Loader) -> Callable[[Node, int], object]:
        constructors = loader.yaml_constructors
        refuse = self._refuse
        check_duplicates = self._duplicates

        def build(node: Node, depth: int) -> object:
            cls = node.__class__
            if cls is ScalarNode:
                tag = node.tag
                if tag in (_STR, _VALUE):
                    return node.value
                if tag in _SCALAR_TAGS:
                    return constructors[tag](loader, node)
                refuse(node, _tag_reason(tag))
            elif depth > MAX_DEPTH:
                refuse(node, f"nested deeper than {MAX_DEPTH} levels")
            elif cls is MappingNode and node.tag == _MAP:
                out: dict[object, object] = {}
                deeper = depth + 1
                for key_node, value_node in node.value:
                    if key_node.__class__ is not ScalarNode or key_node.tag == _MERGE:
                        refuse(key_node, _key_reason(key_node))
                        continue
                    out[build(key_node, deeper)] = build(value_node, deeper)
                if len(out) != len(node.value):
                    check_duplicates(cast(MappingNode, node), build)
                return out
            elif cls is SequenceNode and node.tag == _SEQ:
                deeper = depth + 1
                return [build(item, deeper) for item in node.value]
            else:
                refuse(node, _tag_reason(node.tag))
            return None

        return build

    def _duplicates(self, node: MappingNode, build: Callable[[Node, int], object]) -> None:
        """Report keys equal to an earlier one, as YAML compares them (``1`` and ``0x1``)."""
        first: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.__class__ is not ScalarNode or key_node.tag == _MERGE:
                continue
            key = build(key_node, 1)
            if key in first:
                self._refuse(
                    key_node, f"duplicate key {key_node.value!r} (first at line {first[key]})"
                )
            else:
                first[key] = key_node.start_mark.line + 1

    def _refuse(self, node: Node, reason: str) -> None:
        self.issues.append((node, reason))
        if len(self.issues) >= MAX_ISSUES_PER_FILE:
            raise _Refused


def _key_reason(node: Node) -> str:
    if node.tag == _MERGE:
        return "YAML merge keys (<<) are not supported in manifests"
    return "a mapping key must be a plain value"


def _tag_reason(tag: str) -> str:
    shown = "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml") else tag
    return f"unsupported YAML tag {shown}: manifests use plain strings, numbers, lists and maps"


def parse(text: str) -> Parsed:
    """Every document of ``text``, plus the issues that make some of them unusable."""
    result = Parsed()
    if _needs_safety_scan(text):
        hazards = _safety_scan(text)
        if hazards:
            result.issues.extend(hazards)
            result.complete = False
            return result
    loader = _Loader(text)
    builder = _Builder(loader)
    index = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            before = len(builder.issues)
            try:
                data = builder.build(node, 1)
            except _Refused:
                data = None
            if len(builder.issues) > before:
                result.issues.extend(_issues_with_paths(node, builder.issues[before:]))
                result.complete = False
                if len(builder.issues) >= MAX_ISSUES_PER_FILE:
                    break
            elif data is not None:
                result.documents.append(Document(index, node.start_mark.line + 1, data))
            index += 1
    except yaml.MarkedYAMLError as exc:
        result.issues.append(_syntax_issue(exc))
        result.complete = False
    except yaml.YAMLError as exc:  # pragma: no cover - libyaml reports marks for all it finds
        result.issues.append(Issue(None, None, f"invalid YAML: {exc}"))
        result.complete = False
    finally:
        loader.dispose()
    return result


def _syntax_issue(exc: yaml.MarkedYAMLError) -> Issue:
    mark = exc.problem_mark or exc.context_mark
    reason = f"invalid YAML: {exc.problem or exc.context or 'syntax error'}"
    if exc.context and exc.problem and exc.context_mark is not None:
        reason += f" ({exc.context} at line {exc.context_mark.line + 1})"
    if mark is None:
        return Issue(None, None, reason)
    return Issue(mark.line + 1, mark.column + 1, reason)


def _needs_safety_scan(text: str) -> bool:
    if "*" in text and _ALIAS_HINT.search(text):
        return True
    if _DEEP_LINE_HINT.search(text):
        return True
    if text.count("[") + text.count("{") <= _FLOW_OPENERS_HINT:
        return False
    start = 0
    while start < len(text):
        end = text.find("\n---", start)
        while end != -1 and text[end + 4 : end + 5] not in ("", " ", "\t", "\r", "\n"):
            end = text.find("\n---", end + 4)
        end = len(text) if end == -1 else end
        if text.count("[", start, end) + text.count("{", start, end) > _FLOW_OPENERS_HINT:
            return True
        start = end + 4
    return False


def _safety_scan(text: str) -> list[Issue]:
    """Aliases and excessive nesting, found from events (no recursion, stops early)."""
    issues: list[Issue] = []
    loader = _EventLoader(text)
    depth = 0
    try:
        while loader.check_event() and len(issues) < MAX_ISSUES_PER_FILE:
            event = loader.get_event()
            mark = event.start_mark
            if isinstance(event, yaml.AliasEvent):
                issues.append(
                    Issue(
                        mark.line + 1,
                        mark.column + 1,
                        f"YAML alias *{event.anchor} is not allowed in manifests: "
                        "write the value out, or use an environment overlay",
                    )
                )
            elif isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    issues.append(
                        Issue(
                            mark.line + 1, mark.column + 1, f"nested deeper than {MAX_DEPTH} levels"
                        )
                    )
                    break
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError as exc:
        # libyaml may refuse deep flow nesting itself while scanning ahead (PyYAML >= 6.0.3,
        # at its own limit): that is our nesting refusal too. Other syntax errors are
        # reported by the regular parse with their position.
        mark = getattr(exc, "problem_mark", None)
        if mark is not None and not issues and "nesting" in str(getattr(exc, "problem", "")):
            issues.append(
                Issue(mark.line + 1, mark.column + 1, f"nested deeper than {MAX_DEPTH} levels")
            )
    finally:
        loader.dispose()
    return issues


def _issues_with_paths(root: Node, found: list[tuple[Node, str]]) -> list[Issue]:
    paths = _paths_to(root, {id(node) for node, _ in found})
    return [
        Issue(
            node.start_mark.line + 1,
            node.start_mark.column + 1,
            reason,
            paths.get(id(node), ()),
        )
        for node, reason in found
    ]


def _paths_to(root: Node, targets: set[int]) -> dict[int, tuple[PathPart, ...]]:
    """Field paths of the target nodes (keys count as their own path), without recursion."""
    found: dict[int, tuple[PathPart, ...]] = {}
    stack: list[tuple[Node, tuple[PathPart, ...]]] = [(root, ())]
    while stack and len(found) < len(targets):
        node, path = stack.pop()
        if id(node) in targets:
            found.setdefault(id(node), path)
        if len(path) > MAX_DEPTH:
            continue
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                sub = (*path, str(key_node.value) if isinstance(key_node, ScalarNode) else "?")
                if id(key_node) in targets:
                    found.setdefault(id(key_node), sub)
                stack.append((value_node, sub))
        elif isinstance(node, SequenceNode):
            stack.extend((item, (*path, i)) for i, item in enumerate(node.value))
    return found


def compose(text: str) -> list[Node | None]:
    """The document nodes of a text, for line numbers; stops quietly at a syntax error."""
    nodes: list[Node | None] = []
    if _needs_safety_scan(text) and _safety_scan(text):
        return nodes
    loader = _Loader(text)
    try:
        while loader.check_node():
            nodes.append(loader.get_node())
    except yaml.YAMLError:
        pass
    finally:
        loader.dispose()
    return nodes


def locate(root: Node | None, path: Sequence[PathPart]) -> int | None:
    """1-based line of the deepest node along ``path``: the key's line for a mapping entry."""
    if root is None:
        return None
    node: Node = root
    line: int = root.start_mark.line + 1
    for part in path:
        if isinstance(node, MappingNode):
            wanted = str(part).lower() if isinstance(part, bool) else str(part)
            for key_node, value_node in reversed(node.value):
                if isinstance(key_node, ScalarNode) and key_node.value == wanted:
                    line = key_node.start_mark.line + 1
                    node = value_node
                    break
            else:
                break
        elif isinstance(node, SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
