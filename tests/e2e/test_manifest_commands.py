"""``socle validate``, ``socle render`` and ``socle schema`` through the real entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SOCLE = str(Path(sys.executable).parent / "socle")
QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart"

BAD_APP = """\
apiVersion: socle/v1
kind: App
metadata:
  name: api
spec:
  replica: 2
  run:
    command: [python3, app.py]
  stopGrace: soon
"""


def socle(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCLE_")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [SOCLE, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


@pytest.fixture
def bad_repo(tmp_path: Path) -> Path:
    root = tmp_path / "bad"
    (root / "apps").mkdir(parents=True)
    (root / "apps" / "api.yaml").write_text(BAD_APP)
    (root / "broken.yaml").write_text("kind: [\n")
    return root


@pytest.mark.parametrize(
    ("env", "summary"),
    [("dev", "3 apps, 1 volume valid (env dev)"), (None, "3 apps, 1 volume valid")],
)
def test_validate_quickstart(env: str | None, summary: str) -> None:
    result = socle("validate", QUICKSTART, *(["--env", env] if env else []))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == summary


def test_validate_json() -> None:
    result = socle("validate", QUICKSTART, "--env", "prod", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["valid"] is True and data["problems"] == []
    assert [(a["name"], a["origin"]) for a in data["apps"]] == [
        ("api", "socle/api.yaml:2"),
        ("notes", "socle/notes.yaml:13"),
        ("worker", "socle/worker.yaml:2"),
    ]
    assert [(o["kind"], o["name"]) for o in data["objects"]] == [
        ("App", "api"),
        ("App", "notes"),
        ("App", "worker"),
        ("Volume", "notes-data"),
    ]
    assert len(data["digest"]) == 64


def test_validate_bad_lists_every_problem(bad_repo: Path) -> None:
    result = socle("validate", "bad", cwd=bad_repo.parent)
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert lines == [
        "bad/apps/api.yaml:6: spec.replica: unknown field 'replica'; did you mean 'replicas'?",
        "bad/apps/api.yaml:9: spec.stopGrace: invalid duration 'soon': use forms like '500ms', "
        "'10s', '1m30s', '2h'",
        "bad/broken.yaml:2:1: invalid YAML: did not find expected node content "
        "(while parsing a flow node at line 2)",
        "3 problems in bad; nothing was changed",
    ]


def test_validate_bad_json(bad_repo: Path) -> None:
    result = socle("validate", bad_repo, "--json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["valid"] is False and data["apps"] == []
    assert [(p["file"], p["line"], p["path"]) for p in data["problems"]] == [
        ("apps/api.yaml", 6, "spec.replica"),
        ("apps/api.yaml", 9, "spec.stopGrace"),
        ("broken.yaml", 2, ""),
    ]


def test_validate_unknown_env_and_missing_folder(tmp_path: Path) -> None:
    result = socle("validate", QUICKSTART, "--env", "qa")
    assert result.returncode == 1
    assert "unknown environment 'qa' (available: dev, prod)" in result.stdout
    result = socle("validate", tmp_path / "nope")
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_render_yaml_applies_the_overlay() -> None:
    result = socle("render", QUICKSTART, "--env", "prod")
    assert result.returncode == 0, result.stderr
    documents = list(yaml.safe_load_all(result.stdout))
    assert [(d["kind"], d["metadata"]["name"], d["spec"].get("replicas")) for d in documents] == [
        ("App", "api", 3),
        ("App", "notes", 1),
        ("App", "worker", 1),
        ("Volume", "notes-data", None),
    ]
    assert documents[0]["spec"]["env"]["GREETING"] == "hello from prod"


def test_render_json() -> None:
    result = socle("render", QUICKSTART, "--env", "dev", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [d["metadata"]["name"] for d in data] == ["api", "notes", "worker", "notes-data"]
    assert data[0]["spec"]["stopGrace"] == "10s"


def test_render_bad_fails_with_problems(bad_repo: Path) -> None:
    result = socle("render", bad_repo)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "3 problem(s) in manifests" in result.stderr
    assert f"{bad_repo}/apps/api.yaml:6: spec.replica: unknown field" in result.stderr


def test_schema() -> None:
    result = socle("schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["discriminator"]["propertyName"] == "kind"
    assert "App" in schema["$defs"]
