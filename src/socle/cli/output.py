"""Terminal output shared by every command: rich tables and colour, or JSON with ``--json``.

Anything an app or a client controls (log lines, status and revision messages, names,
error messages) goes through :func:`visible` (or :func:`safe` for rich markup) before it
reaches the operator's terminal: a control character in it is printed as text (``\\x1b``),
so an app cannot move the cursor, rewrite earlier lines, set the window title or hide text
with escape sequences. ``--json`` output stays exact JSON (its encoder escapes controls).

Without a terminal (a pipe, a CI log) tables are not wrapped at 80 columns: lines are as
long as they need to be, so ports and addresses are never split.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

_WIDE = 400
"""Width used when stdout is not a terminal: wide enough for any status row."""

_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""C0 and C1 controls except tab and newline, DEL, and the Unicode bidi overrides (which
reorder what the terminal shows)."""
_NEWLINES = re.compile("[\n\t]")


def _width(stream: Any) -> int | None:
    return None if stream.isatty() else _WIDE


def _code(match: re.Match[str]) -> str:
    char = match.group()
    point = ord(char)
    return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}"


def visible(text: object, *, lines: bool = False) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``), never sent raw.

    Tab and newline pass only with ``lines=True`` (multi-line messages); otherwise they are
    shown too, so one value stays on one line of a table.
    """
    shown = _CONTROLS.sub(_code, str(text))
    return shown if lines else _NEWLINES.sub(_code, shown)


def safe(text: object, *, lines: bool = False) -> str:
    """:func:`visible`, then escaped for rich markup: for values inside a ``console.print``."""
    return escape(visible(text, lines=lines))


console = Console(highlight=False, width=_width(sys.stdout))
err_console = Console(stderr=True, highlight=False, width=_width(sys.stderr))

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table."
)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def fail(message: str, hint: str | None = None, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {safe(message, lines=True)}", soft_wrap=True)
    if hint:
        err_console.print(f"[yellow]hint:[/] {safe(hint, lines=True)}", soft_wrap=True)
    raise SystemExit(code)
