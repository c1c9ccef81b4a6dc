"""Helpers to write small manifest repositories for the model tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

Files = dict[str, str | bytes]

APP = """\
apiVersion: socle/v1
kind: App
metadata:
  name: {name}
spec:
  run:
    command: [python3, app.py]
"""


def app(name: str, extra: str = "") -> str:
    """A minimal valid App document; ``extra`` lines go under ``spec`` (write them unindented)."""
    return APP.format(name=name) + textwrap.indent(textwrap.dedent(extra), "  ")


def write_files(root: Path, files: Files) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root
