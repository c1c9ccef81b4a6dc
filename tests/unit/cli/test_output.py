"""What apps and clients control reaches the terminal with its control characters shown,
never interpreted; ``--json`` stays exact; no 80-column wrapping without a terminal."""

from __future__ import annotations

import json

import pytest

from socle.cli.output import print_json, safe, visible
from socle.cli.render import print_history, print_plan, print_status

EVIL = "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eevil\r"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b[31mred", "\\x1b[31mred"),
        ("bell\x07", "bell\\x07"),
        ("nul\x00", "nul\\x00"),
        ("c1\x9b", "c1\\x9b"),
        ("del\x7f", "del\\x7f"),
        ("bidi\u202e", "bidi\\u202e"),
        ("tab\tnewline\n", "tab\\x09newline\\x0a"),
        ("plain [bold] text é", "plain [bold] text é"),
    ],
)
def test_visible(text: str, shown: str) -> None:
    assert visible(text) == shown


def test_lines_keep_newlines_and_tabs_only() -> None:
    assert visible("a\nb\tc\x1b", lines=True) == "a\nb\tc\\x1b"
    assert safe("[red]x[/]") == "\\[red]x\\[/]"


def _status() -> dict[str, object]:
    instance = {
        "id": "web-abc-0",
        "ordinal": 0,
        "pid": 42,
        "ready": False,
        "state": "starting",
        "message": EVIL,
        "restarts": 1,
        "address": "127.0.0.1",
        "ports": {"http": 34567},
    }
    return {
        "isolation": {"mode": "namespaces", "detail": "bwrap", "warning": EVIL},
        "apps": [
            {
                "name": "web",
                "desired": 1,
                "ready": 0,
                "updated": 0,
                "health": "degraded",
                "rollout": "rolling",
                "message": EVIL,
                "restarts": 1,
                "release": "r1",
                "revision": 3,
                "instances": [instance, {**instance, "ordinal": 1, "ready": True, "id": "w-1"}],
            }
        ],
    }


def _no_raw_controls(text: str) -> None:
    for char in ("\x1b", "\x07", "\x9b", "\u202e", "\r"):
        assert char not in text, repr(text)


def test_status_history_and_plan_escape(capsys: pytest.CaptureFixture[str]) -> None:
    print_status(_status())
    print_history(
        [
            {
                "number": 3,
                "created": 0,
                "who": EVIL,
                "env": None,
                "status": "failed",
                "message": EVIL,
                "plan": {"counts": {"create": 1}},
            }
        ]
    )
    print_plan(
        {
            "changes": [
                {
                    "action": "update",
                    "kind": "App",
                    "name": "web",
                    "reason": EVIL,
                    "fields": [{"path": "spec.env.A", "old": EVIL, "new": "x"}],
                }
            ],
            "counts": {"create": 0, "update": 1, "replace": 0, "delete": 0},
            "unchanged": 0,
        }
    )
    out = capsys.readouterr().out
    _no_raw_controls(out)
    assert "\\x1b]0;pwned" in out


def test_without_a_terminal_rows_are_not_wrapped_and_urls_are_urls(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_status(_status())
    out = capsys.readouterr().out
    assert "http=127.0.0.1:34567" in out  # one piece, not split at 80 columns
    assert "web answers at http://127.0.0.1:34567/" in out


def test_json_stays_exact(capsys: pytest.CaptureFixture[str]) -> None:
    print_json({"message": EVIL})
    assert json.loads(capsys.readouterr().out) == {"message": EVIL}


def test_status_says_loudly_when_rule_files_are_not_written(
    capsys: pytest.CaptureFixture[str],
) -> None:
    prometheus = {"pid": 7, "restarts": 0, "rules": {"error": None, "files": ["a.yml"]}}
    plane = {"components": [], "observe": {"prometheus": prometheus}}
    print_status({**_status(), "control_plane": plane})
    assert "NOT written" not in capsys.readouterr().out

    error = "ObserveError: Prometheus refuses the rules in slo-x.yml: " + EVIL
    prometheus["rules"] = {"error": error, "failed_at": 0.0, "pending": True}
    print_status({**_status(), "control_plane": plane})
    out = capsys.readouterr().out
    _no_raw_controls(out)
    assert "Prometheus rule files NOT written" in out
    assert "refuses the rules in slo-x.yml" in out
