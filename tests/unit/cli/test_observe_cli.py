"""`socle metrics query`, `socle silence`: mistakes refused before any call, with the flag
named; points of another day shown with their date."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from socle.cli.main import cli
from socle.cli.observe import _when


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("SOCLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SOCLE_ADDR", "http://127.0.0.1:9")  # nothing listens there
    return CliRunner()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["metrics", "query", "up", "--range", "0s"], "--range must be more than 0"),
        (["metrics", "query", "up", "--range", "soon"], "--range: invalid duration"),
        (["metrics", "query", "up", "--range", "400d"], "longer than a year"),
        (["metrics", "query", "up", "--range", "1h", "--step", "x"], "--step: invalid duration"),
        (["metrics", "query", "up", "--range", "1h", "--step", "0"], "--step must be more than 0"),
    ],
)
def test_mistakes_are_refused_before_any_call(run: CliRunner, args: list[str], words: str) -> None:
    result = run.invoke(cli, args)
    assert result.exit_code == 1
    assert words in result.output
    assert "did not answer" not in result.output and "connect" not in result.output.lower()


def test_points_of_another_day_carry_their_date() -> None:
    now = time.time()
    assert len(_when(now)) == len("12:34:56")
    assert _when(now - 3 * 86400).count("-") == 2
