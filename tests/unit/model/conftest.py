"""Fixtures: a manifest repository in tmp_path, and the problems found when loading it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from socle.errors import ManifestError, Problem
from socle.model.loader import load
from tests.unit.model._repo import Files, write_files

WriteRepo = Callable[[Files], Path]
Problems = Callable[..., list[Problem]]


@pytest.fixture
def write_repo(tmp_path: Path) -> WriteRepo:
    def write(files: Files) -> Path:
        return write_files(tmp_path / "repo", files)

    return write


@pytest.fixture
def problems(write_repo: WriteRepo) -> Problems:
    """Write ``files``, load them, and return the problems (failing if there are none)."""

    def run(files: Files, env: str | None = None) -> list[Problem]:
        root = write_repo(files)
        with pytest.raises(ManifestError) as info:
            load(root, env)
        return info.value.problems

    return run
