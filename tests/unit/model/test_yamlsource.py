"""The YAML reader on its own: safe values, refusals, triggers of the safety scan, lines."""

from __future__ import annotations

import datetime

import pytest
import yaml

from socle.model import yamlsource
from socle.model.yamlsource import compose, decode, locate, parse


def test_values_match_the_safe_loader() -> None:
    text = """\
a: 1
b: 1.5
c: true
d: ~
e: "quoted: yes"
f: 2024-01-02
g: [x, 'y', "z", 0x10, =]
h: {k: v}
i: |
  block
  text
---
- just a list
"""
    docs = parse(text).documents
    assert [d.data for d in docs] == [
        {
            "a": 1,
            "b": 1.5,
            "c": True,
            "d": None,
            "e": "quoted: yes",
            "f": datetime.date(2024, 1, 2),
            "g": ["x", "y", "z", 16, "="],
            "h": {"k": "v"},
            "i": "block\ntext\n",
        },
        ["just a list"],
    ]
    assert [(d.index, d.line) for d in docs] == [(0, 1), (1, 13)]


def test_empty_documents_keep_their_index() -> None:
    parsed = parse("---\n---\n# nothing\n---\na: 1\n")
    assert [(d.index, d.line, d.data) for d in parsed.documents] == [(2, 5, {"a": 1})]
    nodes = compose("---\n---\n# nothing\n---\na: 1\n")
    assert locate(nodes[2], ["a"]) == 5


def test_all_duplicate_keys_are_reported() -> None:
    parsed = parse("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n")
    assert not parsed.complete and not parsed.documents
    assert [(i.line, i.path, i.reason) for i in parsed.issues] == [
        (4, ("b", "c"), "duplicate key 'c' (first at line 3)"),
        (5, ("a",), "duplicate key 'a' (first at line 1)"),
    ]


def test_keys_equal_as_yaml_values_are_duplicates() -> None:
    parsed = parse("1: a\n0x1: b\n")
    assert [(i.line, i.reason) for i in parsed.issues] == [
        (2, "duplicate key '0x1' (first at line 1)")
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("? [a]\n: b\n", "a mapping key must be a plain value"),
        ("a: !!set {x}\n", "unsupported YAML tag !!set"),
        ("a: !!python/name:os.system\n", "unsupported YAML tag !!python/name:os.system"),
        ("a: !local x\n", "unsupported YAML tag !local"),
    ],
)
def test_refused_constructs(text: str, reason: str) -> None:
    parsed = parse(text)
    assert len(parsed.issues) == 1 and parsed.issues[0].reason.startswith(reason)
    assert not parsed.documents


def test_issues_per_file_are_capped() -> None:
    text = "".join(f"k: {i}\n" for i in range(100))
    assert len(parse(text).issues) == yamlsource.MAX_ISSUES_PER_FILE


@pytest.mark.parametrize(
    ("text", "scanned"),
    [
        ("a: [b, c]\nd: {e: f}\n", False),
        ("glob: '*.py'\nshell: ls *\n", False),
        ("a: *ref\n", True),
        ("- " * 30 + "x\n", True),
        (" " * 60 + "x: 1\n", True),
        ("a: " + "[" * 49 + "]" * 49 + "\n", True),
        (("a: " + "[x] " * 40 + "\n---\n") * 5, False),
        ("a: [\n" + "[x], " * 60 + "]\n", True),
    ],
)
def test_safety_scan_triggers(text: str, scanned: bool) -> None:
    assert yamlsource._needs_safety_scan(text) is scanned


def test_huge_flow_nesting_is_refused_without_crashing() -> None:
    """One located refusal, whether our scan or libyaml's own depth limit sees it first."""
    parsed = parse("a: " + "[" * 2_000_000)
    assert parsed.documents == []
    assert len(parsed.issues) == 1
    issue = parsed.issues[0]
    assert issue.line == 1 and issue.column is not None and issue.column > 64
    assert issue.reason == "nested deeper than 64 levels"


def test_decode() -> None:
    assert decode(b"\xef\xbb\xbfa: 1\n") == ("a: 1\n", None)
    text, issue = decode(b"a: 1\nb: \xff\n")
    assert text is None and issue is not None
    assert (issue.line, issue.column) == (2, 4)
    _, issue = decode(b"x" * (yamlsource.MAX_FILE_BYTES + 1))
    assert issue is not None and "larger than 5 MiB" in issue.reason


def test_locate_points_at_keys_and_items() -> None:
    text = "a:\n  b:\n    - x\n    - c: 1\n      d: 2\n"
    (root,) = compose(text)
    assert locate(root, ["a", "b", 1, "d"]) == 5
    assert locate(root, ["a", "b", 0]) == 3
    assert locate(root, ["a", "missing", "deeper"]) == 1
    assert locate(root, ["a", "b", 9]) == 2
    assert locate(None, ["a"]) is None


def test_libyaml_is_used_when_available() -> None:
    assert bool(yaml.__with_libyaml__) == yamlsource._LIBYAML
