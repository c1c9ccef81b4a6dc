"""Release ids: what changes them, what must not, and that caches never hide a change."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from socle.engine.releases import ReleaseStore, _digest
from socle.errors import BuildError
from socle.model.app import App


def make_app(
    workdir: str = "app",
    *,
    build: list[dict[str, Any]] | None = None,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
    replicas: int = 1,
    name: str = "web",
) -> App:
    return App.model_validate(
        {
            "apiVersion": "socle/v1",
            "kind": "App",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "run": {"command": command or ["python3", "main.py"], "workdir": workdir},
                "build": build if build is not None else [{"command": ["true"]}],
                "env": env or {},
            },
        }
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    app = root / "app"
    (app / "pkg").mkdir(parents=True)
    (app / "main.py").write_text("print('hello')\n")
    (app / "pkg" / "util.py").write_text("X = 1\n")
    (app / "run.sh").write_text("#!/bin/sh\n")
    return root


@pytest.fixture
def store(tmp_path: Path) -> ReleaseStore:
    return ReleaseStore(tmp_path / "releases")


@pytest.fixture
def rid(store: ReleaseStore, repo: Path) -> Callable[..., str]:
    def compute(app: App | None = None) -> str:
        return store.compute_id(repo, app or make_app())

    return compute


def test_id_shape_and_determinism_across_stores(
    tmp_path: Path, repo: Path, rid: Callable[..., str]
) -> None:
    first = rid()
    assert first.startswith("r") and len(first) == 17
    int(first[1:], 16)
    assert ReleaseStore(tmp_path / "other").compute_id(repo, make_app()) == first
    assert rid() == first


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda app: (app / "main.py").write_text("print('bye')\n"), id="content"),
        pytest.param(lambda app: (app / "run.sh").chmod(0o755), id="exec-bit"),
        pytest.param(lambda app: (app / "new.txt").write_text(""), id="new-file"),
        pytest.param(lambda app: (app / "pkg" / "empty").mkdir(), id="new-empty-dir"),
        pytest.param(lambda app: (app / "pkg" / "util.py").unlink(), id="removed-file"),
        pytest.param(
            lambda app: (app / "pkg" / "util.py").rename(app / "pkg" / "utils.py"),
            id="renamed-file",
        ),
        pytest.param(
            lambda app: (app / "pkg").rename(app / "lib"),
            id="renamed-dir",
        ),
        pytest.param(lambda app: (app / "link").symlink_to("main.py"), id="new-symlink"),
    ],
)
def test_tree_changes_change_the_id(
    repo: Path, rid: Callable[..., str], change: Callable[[Path], object]
) -> None:
    before = rid()
    change(repo / "app")
    assert rid() != before


def test_symlink_target_change_changes_the_id(repo: Path, rid: Callable[..., str]) -> None:
    link = repo / "app" / "current"
    link.symlink_to("main.py")
    before = rid()
    link.unlink()
    link.symlink_to("pkg/util.py")
    assert rid() != before


def test_same_size_rewrite_is_seen(repo: Path, rid: Callable[..., str]) -> None:
    """Same size, same second: the racy-timestamp guard must still notice."""
    before = rid()
    (repo / "app" / "main.py").write_text("print('HELLO')\n")
    assert rid() != before


@pytest.mark.parametrize(
    "build",
    [
        [{"command": ["false"]}],
        [{"command": ["true"], "env": {"A": "1"}}],
        [{"command": ["true"], "timeout": "5s"}],
        [{"command": ["true"]}, {"command": ["true"]}],
        [],
    ],
)
def test_build_steps_change_the_id(rid: Callable[..., str], build: list[dict[str, Any]]) -> None:
    assert rid(make_app(build=build)) != rid()


def test_run_settings_do_not_change_the_id(rid: Callable[..., str]) -> None:
    base = rid()
    assert rid(make_app(command=["python3", "other.py"])) == base
    assert rid(make_app(env={"DEBUG": "1"})) == base
    assert rid(make_app(replicas=7)) == base
    assert rid(make_app(name="api")) == base


def test_touching_mtimes_does_not_change_the_id(repo: Path, rid: Callable[..., str]) -> None:
    before = rid()
    for path in (repo / "app").rglob("*"):
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert rid() == before


def test_other_modes_than_exec_do_not_change_the_id(repo: Path, rid: Callable[..., str]) -> None:
    before = rid()
    (repo / "app" / "main.py").chmod(0o600)
    assert rid() == before


def test_files_outside_the_workdir_do_not_change_the_id(
    repo: Path, rid: Callable[..., str]
) -> None:
    before = rid()
    (repo / "README.md").write_text("docs\n")
    (repo / "other").mkdir()
    (repo / "other" / "x.py").write_text("")
    assert rid() == before


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        "__pycache__/main.cpython-311.pyc",
        "pkg/__pycache__/util.cpython-311.pyc",
        "stray.pyc",
        ".venv/bin/python",
        "node_modules/left-pad/index.js",
        "pkg/node_modules/x.js",
        ".socle-release.json",
    ],
)
def test_builtin_ignores(repo: Path, rid: Callable[..., str], path: str) -> None:
    before = rid()
    target = repo / "app" / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("ignored\n")
    assert rid() == before


def test_socleignore(repo: Path, rid: Callable[..., str]) -> None:
    app = repo / "app"
    (app / ".socleignore").write_text("# local junk\n*.log\n/build/\ndocs/*.md\ntmp/\n\n")
    (app / "docs").mkdir()
    (app / "docs" / "conf.txt").write_text("kept")
    before = rid()
    (app / "debug.log").write_text("x")
    (app / "pkg" / "deep.log").write_text("x")
    (app / "build").mkdir()
    (app / "build" / "out.bin").write_text("x")
    (app / "docs" / "index.md").write_text("x")
    (app / "pkg" / "tmp").mkdir()
    (app / "pkg" / "tmp" / "t").write_text("x")
    assert rid() == before
    # a dir-only pattern does not hide a file of that name; a path pattern stays anchored
    (app / "tmp").write_text("x")
    assert rid() != before


def test_socleignore_change_changes_the_id(repo: Path, rid: Callable[..., str]) -> None:
    before = rid()
    (repo / "app" / ".socleignore").write_text("*.log\n")
    assert rid() != before


def test_socleignore_refuses_negation(repo: Path, rid: Callable[..., str]) -> None:
    (repo / "app" / ".socleignore").write_text("*.log\n!keep.log\n")
    with pytest.raises(BuildError, match=r"\.socleignore:2: negated"):
        rid()


def test_symlink_escaping_the_repo_is_refused(
    tmp_path: Path, repo: Path, rid: Callable[..., str]
) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("s3cr3t")
    (repo / "app" / "pkg" / "leak").symlink_to(outside)
    with pytest.raises(BuildError, match=r"pkg/leak.*outside the repository"):
        rid()


def test_relative_symlink_escaping_the_repo_is_refused(repo: Path, rid: Callable[..., str]) -> None:
    (repo / "app" / "up").symlink_to("../../..")
    with pytest.raises(BuildError, match=r"up.*outside the repository"):
        rid()


def test_symlink_into_the_repo_outside_the_workdir_is_followed(
    repo: Path, rid: Callable[..., str]
) -> None:
    shared = repo / "shared"
    shared.mkdir()
    (shared / "conf.py").write_text("A = 1\n")
    (repo / "app" / "shared").symlink_to("../shared")
    before = rid()
    (shared / "conf.py").write_text("A = 2\n")
    assert rid() != before


def test_symlink_loop_is_refused(repo: Path, rid: Callable[..., str]) -> None:
    (repo / "app" / "root").symlink_to("..")  # the repo root holds app/ again
    with pytest.raises(BuildError, match=r"root.*loop"):
        rid()


def test_dangling_link_inside_the_workdir_is_kept(repo: Path, rid: Callable[..., str]) -> None:
    (repo / "app" / "python").symlink_to(".venv/bin/python")  # made by the build
    rid()


def test_dangling_link_leaving_the_workdir_is_refused(repo: Path, rid: Callable[..., str]) -> None:
    (repo / "app" / "gone").symlink_to("../nothing-here")
    with pytest.raises(BuildError, match=r"gone.*dangling"):
        rid()


def test_missing_workdir_is_named(rid: Callable[..., str]) -> None:
    with pytest.raises(BuildError, match=r"workdir 'services/api' of app 'web' does not exist"):
        rid(make_app("services/api"))


def test_workdir_that_is_a_file_is_refused(repo: Path, rid: Callable[..., str]) -> None:
    with pytest.raises(BuildError, match=r"not a folder"):
        rid(make_app("app/main.py"))


def test_warm_cache_reads_only_changed_files(
    monkeypatch: pytest.MonkeyPatch, repo: Path, rid: Callable[..., str]
) -> None:
    monkeypatch.setattr(_digest, "RACY_NS", 0)  # our files were all written just now
    reads: list[str] = []
    real = _digest._hash_file

    def counting(path: str, rel: str, shown: str) -> str:
        reads.append(rel)
        return real(path, rel, shown)

    monkeypatch.setattr(_digest, "_hash_file", counting)
    first = rid()
    assert sorted(reads) == ["main.py", "pkg/util.py", "run.sh"]
    reads.clear()
    assert rid() == first
    assert rid(make_app(name="other")) == first
    assert reads == []
    (repo / "app" / "pkg" / "util.py").write_text("X = 22\n")
    assert rid() != first
    assert reads == ["pkg/util.py"]


def test_batch_walks_each_workdir_once(
    monkeypatch: pytest.MonkeyPatch, store: ReleaseStore, repo: Path
) -> None:
    walks: list[str] = []
    real = _digest.walk

    def counting(tree: _digest.Tree) -> list[_digest.Entry]:
        walks.append(tree.workdir_real)
        return real(tree)

    monkeypatch.setattr(_digest, "walk", counting)
    with store.batch():
        ids = {store.compute_id(repo, make_app(name=f"app-{n}")) for n in range(50)}
    assert len(ids) == 1 and len(walks) == 1
    store.compute_id(repo, make_app())
    assert len(walks) == 2  # outside the batch, every call checks the tree again


def test_cache_memory_follows_the_tree(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, repo: Path
) -> None:
    monkeypatch.setattr(_digest, "RACY_NS", 0)
    hasher = _digest.TreeHasher(max_trees=1)
    hasher.digest(repo, make_app())
    assert len(hasher._files) == 3
    (repo / "app" / "pkg" / "util.py").unlink()
    hasher.digest(repo, make_app())
    assert len(hasher._files) == 2
    (repo / "other").mkdir()
    (repo / "other" / "x.py").write_text("")
    hasher.digest(repo, make_app("other"))  # evicts app/ from the one-tree cache
    assert [Path(path).name for path in hasher._files] == ["x.py"]


def test_link_escaping_through_another_link_is_caught(
    tmp_path: Path, repo: Path, rid: Callable[..., str]
) -> None:
    (repo / "app" / "pkg" / "up").symlink_to("..")  # pkg/up is app/ itself: fine
    (repo / "x").write_text("one")
    (repo / "app" / "sneaky").symlink_to("pkg/up/../x")  # lexically app/pkg/x, really repo/x
    before = rid()
    (repo / "x").write_text("two")  # so its content is part of the release
    assert rid() != before
    (repo / "x").unlink()
    (repo / "x").symlink_to(tmp_path)
    with pytest.raises(BuildError, match=r"sneaky.*outside the repository"):
        rid()


def test_link_into_a_local_venv_is_kept(repo: Path, rid: Callable[..., str]) -> None:
    bin_dir = repo / "app" / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to("/usr/bin/python3")
    (repo / "app" / "python").symlink_to(".venv/bin/python")
    rid()
