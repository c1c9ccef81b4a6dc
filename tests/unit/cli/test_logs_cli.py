"""`socle logs`: the words that pick a subcommand, and mistakes refused before any call."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from socle.cli.main import cli


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("SOCLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SOCLE_ADDR", "http://127.0.0.1:9")  # nothing listens there
    return CliRunner()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["logs"], "which app?"),
        (["logs", "api", "--query", '{app="api"}'], "either an APP or --query"),
        (["logs", "--instance", "1", "--query", '{app="api"}'], "either an APP or --query"),
    ],
)
def test_mistakes_are_refused_with_a_hint(run: CliRunner, args: list[str], words: str) -> None:
    result = run.invoke(cli, args)
    assert result.exit_code == 1
    assert words in result.output


def test_verify_reads_the_home_without_a_server(run: CliRunner) -> None:
    result = run.invoke(cli, ["logs", "verify"])
    assert result.exit_code == 0, result.output
    assert "intact" in result.output


def test_help_names_the_query_option_and_verify(run: CliRunner) -> None:
    result = run.invoke(cli, ["logs", "--help"])
    assert result.exit_code == 0
    assert "--query" in result.output and "socle logs verify" in result.output


@pytest.mark.parametrize(
    ("query", "since", "step"),
    [
        ('count_over_time({app="api"}[5m])', None, "300s"),  # a point per window
        ('sum by (app) (rate({app="api"}[1m]))', "2h", "60s"),
        ('count_over_time({app="api"}[1m])', "30d", "10368s"),  # at most 250 points
        ('count_over_time({app="api"}[10s])', "1m", "10s"),
        ('{app="api"} |= "error"', None, None),  # lines: no step
        ("count_over_time({app=", None, None),  # the server says what is wrong
        ('count_over_time({app="api"}[5m])', "soon", None),
    ],
)
def test_counts_over_time_default_to_a_point_per_window(
    query: str, since: str | None, step: str | None
) -> None:
    from socle.cli.logs import _default_step

    assert _default_step(query, since) == step
