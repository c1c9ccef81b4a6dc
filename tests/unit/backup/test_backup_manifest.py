"""Archive entry names and symlinks that restore accepts, and the manifest's own checks."""

from __future__ import annotations

import json

import pytest

from socle.backup.manifest import (
    Entry,
    Manifest,
    VolumeEntry,
    check_path,
    check_symlink,
    entry_root,
)
from socle.errors import BackupError

REL = "releases/web/r0123456789abcdef"


@pytest.mark.parametrize(
    "path",
    [
        "MANIFEST.json",
        "state/state.db",
        "state/state.pgdump",
        REL,
        f"{REL}/app.py",
        f"{REL}/.venv/bin/python3",
        "volumes/data/data",
        "volumes/data/data/notes.db",
        "volumes/data/data/a b/ünïcode",
    ],
)
def test_good_paths(path: str) -> None:
    assert check_path(path) == path


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("volumes/data/data/../../../etc", "'..'"),
        ("volumes/data/data/./x", "'..'"),
        ("volumes/data/data//x", "'..'"),
        ("volumes/data/data/x/", "'..'"),
        ("volumes/data/data/a\0b", "NUL"),
        ("etc/passwd", "unknown top-level"),
        ("state/other.db", "unknown state file"),
        ("state", "unknown state file"),
        ("releases/web", "releases/<app>/<release id>"),
        ("releases/Web/r0123456789abcdef/x", "releases/<app>/<release id>"),
        ("releases/web/latest/x", "releases/<app>/<release id>"),
        ("volumes/data/image.ext4", "volumes/<name>/data"),
        ("volumes/data/volume.json", "volumes/<name>/data"),
        ("volumes/../data/x", "'..'"),
        ("volumes/UP/data/x", "volumes/<name>/data"),
    ],
)
def test_bad_paths_are_refused_with_the_reason(path: str, reason: str) -> None:
    with pytest.raises(BackupError, match=reason) as caught:
        check_path(path)
    assert caught.value.entry == path


@pytest.mark.parametrize(
    ("path", "root"),
    [
        (f"{REL}/a/b", REL),
        ("volumes/v/data/x/y", "volumes/v/data"),
        ("state/state.db", "state"),
    ],
)
def test_entry_roots(path: str, root: str) -> None:
    assert entry_root(path) == root


@pytest.mark.parametrize(
    ("path", "target"),
    [
        (f"{REL}/main.py", "app.py"),
        (f"{REL}/.venv/lib64", "lib"),
        (f"{REL}/a/b/link", "../../c"),
        (f"{REL}/.venv/bin/python3", "/usr/bin/python3"),
        (f"{REL}/.venv/bin/python", "/root/.pyenv/versions/3.11.7/bin/python3.11"),
        ("volumes/v/data/current", "releases-2026/"),
        ("volumes/v/data/a/up", ".."),
    ],
)
def test_symlinks_that_stay_inside(path: str, target: str) -> None:
    check_symlink(path, target)


@pytest.mark.parametrize(
    ("path", "target", "reason"),
    [
        ("volumes/v/data/l", "/etc/passwd", "absolute"),
        ("volumes/v/data/l", "/usr/bin/python3", "absolute"),  # volumes: never absolute
        (f"{REL}/l", "../r1111111111111111/app.py", "leads outside"),
        ("volumes/v/data/l", "../image.ext4", "leads outside"),
        ("volumes/v/data/a/l", "../../../../etc", "leads outside"),
        ("volumes/v/data", "x", "root"),
        (REL, "/usr", "root"),
        ("state/state.db", "x", "root"),
        ("volumes/v/data/l", "", "empty"),
        ("volumes/v/data/l", "a\0b", "NUL"),
    ],
)
def test_symlinks_that_leave_are_refused(path: str, target: str, reason: str) -> None:
    with pytest.raises(BackupError, match=reason) as caught:
        check_symlink(path, target)
    assert caught.value.entry == path


def _manifest() -> Manifest:
    return Manifest(
        created="2026-11-30T03:00:00+00:00",
        socle_version="0.1.0",
        store="sqlite",
        entries=[
            Entry("state/state.db", "file", 0o600, 3, "a" * 64),
            Entry("volumes/v/data", "dir", 0o755),
            Entry("volumes/v/data/l", "symlink", 0o777, target="x"),
        ],
        volumes={"v": VolumeEntry("v", 1 << 20, retained=True, enforced=True)},
        releases=["web/r0123456789abcdef"],
    )


def test_manifest_round_trip_and_what_it_says() -> None:
    manifest = _manifest()
    raw = manifest.to_json()
    data = json.loads(raw)
    assert data["format"] == "socle-backup" and data["version"] == 1
    assert "admin.token" in data["excluded"] and "secrets-dev-unseal.key" in data["excluded"]
    assert data["total_bytes"] == 3
    assert data["entries"][0] == {
        "path": "state/state.db",
        "type": "file",
        "mode": 0o600,
        "size": 3,
        "sha256": "a" * 64,
    }
    back = Manifest.from_json(raw)
    assert back.entries == manifest.entries
    assert back.volumes == manifest.volumes
    assert back.releases == manifest.releases


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.update(format="tar"), "not a Socle backup"),
        (lambda d: d.update(version=99), "version 99"),
        (lambda d: d.update(store="mysql"), "unknown kind"),
        (lambda d: d["entries"][0].update(sha256="zz"), "no valid sha256"),
        (lambda d: d["entries"][0].update(size=-1), "bad size"),
        (lambda d: d["entries"][0].update(mode=0o17777), "bad mode"),
        (lambda d: d["entries"][0].update(type="socket"), "unknown type"),
        (lambda d: d["volumes"].update({"../x": {"size_bytes": 1}}), "invalid name"),
        (lambda d: d["volumes"]["v"].update(size_bytes=True), "positive integer"),
        (lambda d: d.pop("entries"), "malformed"),
    ],
)
def test_bad_manifests_are_refused(change: object, reason: str) -> None:
    data = json.loads(_manifest().to_json())
    change(data)  # type: ignore[operator]
    with pytest.raises(BackupError, match=reason):
        Manifest.from_json(json.dumps(data).encode())


def test_garbage_is_not_a_manifest() -> None:
    with pytest.raises(BackupError, match="not valid JSON"):
        Manifest.from_json(b"\xff\xfe{")
