"""Fixtures shared by every test tree, and the test tiers."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

_UNIT = Path(__file__).parent / "unit"


def _cache_bytecode() -> None:
    """Let every Python process the tests start reuse compiled bytecode.

    The tests start thousands of Python processes that import Socle (control planes, CLI
    calls, log workers): with ``PYTHONDONTWRITEBYTECODE`` set (some shells and CI images set
    it), each one compiles Socle's ~230 modules from source again (measured: importing
    ``socle.server`` 2.6 s with a cache, 6-7 s without, on the 2 shared cores). The cache goes
    to a private folder outside the tree (``PYTHONPYCACHEPREFIX``), so the tree stays as
    clean as whoever set the variable wanted it.
    """
    if not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return
    prefix = os.environ.get("PYTHONPYCACHEPREFIX")
    if prefix is None:
        folder = Path(tempfile.gettempdir()) / f"socle-test-pycache-{os.getuid()}"
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
        if folder.is_symlink() or info.st_uid != os.getuid() or info.st_mode & 0o077:
            return  # not ours alone: no cache rather than bytecode someone else could plant
        prefix = os.environ["PYTHONPYCACHEPREFIX"] = str(folder)
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    sys.pycache_prefix = prefix
    sys.dont_write_bytecode = False


_cache_bytecode()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tiers by place: ``tests/unit`` is the fast tier (pure, no servers or processes), the
    rest is ``slow``. A unit test that needs more marks itself ``slow``."""
    for item in items:
        if item.get_closest_marker("slow") is not None:
            continue
        if Path(str(item.path)).is_relative_to(_UNIT):
            item.add_marker(pytest.mark.fast)
        else:
            item.add_marker(pytest.mark.slow)
