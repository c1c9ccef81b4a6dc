"""Terminal output shared by every command: rich tables and colour, or JSON with ``--json``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table."
)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def fail(message: str, hint: str | None = None, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    if hint:
        err_console.print(f"[yellow]hint:[/] {hint}", markup=True, soft_wrap=True)
    raise SystemExit(code)
