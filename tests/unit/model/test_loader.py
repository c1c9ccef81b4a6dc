"""Loading valid repositories: discovery, order, origins, digest, render round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from socle.errors import ManifestError
from socle.model.loader import environments, load, render_yaml
from tests.unit.model._repo import app, write_files
from tests.unit.model.conftest import WriteRepo

QUICKSTART = Path(__file__).resolve().parents[3] / "examples" / "quickstart"


def test_any_layout_several_documents_sorted_by_name(write_repo: WriteRepo) -> None:
    root = write_repo(
        {
            "z.yaml": app("zeta") + "---\n" + app("alpha"),
            "deep/er/m.yml": "---\n# only a comment\n---\n" + app("mid") + "...\n",
            "empty.yaml": "",
            "notes.txt": "not yaml",
        }
    )
    loaded = load(root)
    assert loaded.root == root.resolve()
    assert list(loaded.apps) == ["alpha", "mid", "zeta"]
    assert loaded.origins == {
        "App/alpha": "z.yaml:9",
        "App/mid": "deep/er/m.yml:4",
        "App/zeta": "z.yaml:1",
    }


def test_skips_hidden_environments_and_ignored(write_repo: WriteRepo) -> None:
    bad = "this: [is not loaded\n"
    root = write_repo(
        {
            "a.yaml": app("api"),
            ".git/x.yaml": bad,
            ".venv/lib/y.yml": bad,
            ".hidden.yaml": bad,
            "environments/dev/p.yaml": bad,
            "sub/environments/q.yaml": app("nested-env-folder-is-normal"),
            "docker-compose.yml": bad,
            "fixtures/f.yaml": bad,
            "ci/build.yaml": bad,
            "ci/keep.yaml": app("keep"),
            ".socleignore": "# not manifests\ndocker-compose.yml\nfixtures/\n/ci/build.yaml\n\n",
        }
    )
    assert list(load(root).apps) == ["api", "keep", "nested-env-folder-is-normal"]


def test_socleignore_negation_is_a_problem(write_repo: WriteRepo) -> None:
    root = write_repo({"a.yaml": app("api"), ".socleignore": "*.yml\n!keep.yml\n"})
    with pytest.raises(ManifestError) as info:
        load(root)
    assert [(p.file, p.line, p.reason) for p in info.value.problems] == [
        (".socleignore", 2, "negation (!) is not supported")
    ]


def test_byte_order_mark_and_crlf(write_repo: WriteRepo) -> None:
    text = app("api", "replicas: 2\n").replace("\n", "\r\n")
    root = write_repo({"a.yaml": b"\xef\xbb\xbf" + text.encode()})
    assert load(root).apps["api"].spec.replicas == 2


def test_values_are_normalised(write_repo: WriteRepo) -> None:
    root = write_repo(
        {
            "a.yaml": app(
                "api",
                """\
                env: {N: 3, F: 1.5, S: "x", DB: {secret: "secret/data/db#pw"}}
                stopGrace: 1m30s
                resources: {memory: 128Mi, cpu: 500m}
                """,
            )
        }
    )
    spec = load(root).apps["api"].spec
    assert spec.env["N"] == "3" and spec.env["F"] == "1.5"
    assert spec.stop_grace == 90.0
    assert (spec.resources.memory, spec.resources.cpu) == (128 * 2**20, 0.5)


def test_digest_is_deterministic_and_layout_free(tmp_path: Path) -> None:
    one = write_files(tmp_path / "one", {"a.yaml": app("b") + "---\n" + app("a")})
    two = write_files(
        tmp_path / "two",
        {"x/2.yaml": "# same apps, other files\n" + app("a"), "x/1.yml": app("b")},
    )
    digest = load(one).digest()
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert load(one).digest() == digest
    assert load(two).digest() == digest
    three = write_files(
        tmp_path / "three", {"a.yaml": app("b") + "---\n" + app("a", "replicas: 2\n")}
    )
    assert load(three).digest() != digest


def test_digest_ignores_spelling_of_defaults_and_units(tmp_path: Path) -> None:
    plain = write_files(tmp_path / "p", {"a.yaml": app("a")})
    spelled = write_files(
        tmp_path / "s", {"a.yaml": app("a", "replicas: 1\nstopGrace: 10000ms\nrestart: always\n")}
    )
    assert load(plain).digest() == load(spelled).digest()


@pytest.mark.parametrize("env", [None, "dev", "prod"])
def test_render_round_trip(tmp_path: Path, env: str | None) -> None:
    loaded = load(QUICKSTART, env)
    text = render_yaml(loaded)
    documents = list(yaml.safe_load_all(text))
    assert [(d["kind"], d["metadata"]["name"]) for d in documents] == list(loaded.objects)
    assert all(d["apiVersion"] == "socle/v1" for d in documents)
    copy = write_files(
        tmp_path / "copy",
        {
            "rendered.yaml": text,
            "apps/api/.keep": "",
            "apps/worker/.keep": "",
            "apps/notes/.keep": "",
        },
    )
    again = load(copy)
    assert again.objects == loaded.objects
    assert again.digest() == loaded.digest()


def test_quickstart_is_valid_in_every_environment() -> None:
    assert environments(QUICKSTART) == ["dev", "prod"]
    base = load(QUICKSTART)
    dev = load(QUICKSTART, "dev")
    prod = load(QUICKSTART, "prod")
    assert list(base.apps) == ["api", "notes", "worker"]
    assert list(base.of_kind("Volume")) == ["notes-data"]
    assert base.apps["notes"].spec.volumes[0].mount_path == "/data"
    assert dev.apps["api"].spec.replicas == 2
    assert dev.apps["api"].spec.env["GREETING"] == "hello from dev"
    assert prod.apps["api"].spec.replicas == 3
    assert (prod.apps["api"].spec.resources.memory or 0) > (
        dev.apps["api"].spec.resources.memory or 0
    )
    assert dev.apps["worker"].spec.depends_on == ["api"]
    assert dev.apps["worker"].spec.restart == "on-failure"


def test_load_accepts_a_relative_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(QUICKSTART.parent)
    assert load(Path("quickstart"), "dev").root == QUICKSTART
