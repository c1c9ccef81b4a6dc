"""ReleaseStore with real subprocesses: venvs, failures, timeouts, concurrency, gc."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from socle.engine.releases import Release, ReleaseStore
from socle.errors import BuildError
from socle.model.app import App

PY = str(Path(sys.executable))
BIN = f"{Path(sys.executable).parent}:/usr/bin:/bin"


def make_app(build: list[dict[str, Any]], *, workdir: str = "app", name: str = "web") -> App:
    return App.model_validate(
        {
            "apiVersion": "socle/v1",
            "kind": "App",
            "metadata": {"name": name},
            "spec": {
                "run": {"command": [".venv/bin/python", "main.py"], "workdir": workdir},
                "build": build,
            },
        }
    )


def py_step(code: str, *args: str, timeout: str = "60s") -> dict[str, Any]:
    return {"command": ["python3", "-c", code, *args], "timeout": timeout}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "app").mkdir(parents=True)
    (root / "app" / "main.py").write_text("print('hello')\n")
    return root


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ReleaseStore]:
    releases = ReleaseStore(
        tmp_path / "releases",
        keep=2,
        base_env={"PATH": BIN, "HOME": str(tmp_path), "LANG": "C.UTF-8"},
    )
    yield releases
    await releases.close()


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def live_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that still run (zombies awaiting their reaper are dead)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


async def test_venv_build_runs_from_the_release_and_is_reused(
    store: ReleaseStore, repo: Path
) -> None:
    """Venvs embed absolute paths (pip's shebang), so they must be built where they run."""
    app = make_app(
        [
            {"command": ["python3", "-m", "venv", ".venv"]},
            {"command": [".venv/bin/pip", "--version"]},
            {"command": [".venv/bin/python", "-c", "open('built.txt', 'w').write('ok')"]},
        ]
    )
    release = await store.ensure(repo, app)
    assert (release.root / ".venv/bin/pip").read_text().startswith(f"#!{release.root}/.venv/bin/")
    assert release.id == store.compute_id(repo, app)
    assert release.root == store.releases_dir / "web" / release.id == release.workdir
    assert (release.root / "built.txt").read_text() == "ok"
    assert (release.root / "main.py").read_text() == "print('hello')\n"
    prefix = subprocess.run(
        [str(release.root / ".venv/bin/python"), "-c", "import sys; print(sys.prefix)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert prefix == str(release.root / ".venv")

    marker = json.loads((release.root / ".socle-release.json").read_text())
    assert marker["id"] == release.id and marker["digest"] == release.digest
    assert [s["command"][0] for s in marker["steps"]] == [
        "python3",
        ".venv/bin/pip",
        ".venv/bin/python",
    ]
    log = store.releases_dir / "web" / f"{release.id}.build.log"
    stamps = (log.stat().st_mtime_ns, (release.root / ".socle-release.json").stat().st_mtime_ns)

    again = await store.ensure(repo, app)
    assert again == release
    assert (
        log.stat().st_mtime_ns,
        (release.root / ".socle-release.json").stat().st_mtime_ns,
    ) == stamps
    assert store.get("web", release.id) == release
    assert store.list("web") == [release]


async def test_concurrent_ensure_builds_once(
    store: ReleaseStore, repo: Path, tmp_path: Path
) -> None:
    counter = tmp_path / "builds.txt"
    app = make_app(
        [
            py_step(
                "import sys, time; open(sys.argv[1], 'a').write('x'); time.sleep(0.5)", str(counter)
            )
        ]
    )
    releases = await asyncio.gather(*(store.ensure(repo, app) for _ in range(8)))
    assert counter.read_text() == "x"
    assert len(set(releases)) == 1


async def test_two_stores_on_one_folder_build_once(
    store: ReleaseStore, repo: Path, tmp_path: Path
) -> None:
    """Two stores stand for two processes: the flock, not the in-memory map, decides."""
    other = ReleaseStore(store.releases_dir, base_env={"PATH": BIN})
    counter = tmp_path / "builds.txt"
    app = make_app(
        [
            py_step(
                "import sys, time; open(sys.argv[1], 'a').write('x'); time.sleep(0.5)", str(counter)
            )
        ]
    )
    first, second = await asyncio.gather(store.ensure(repo, app), other.ensure(repo, app))
    assert first == second
    assert counter.read_text() == "x"


async def test_failed_step_reports_and_leaves_nothing_then_fix_builds(
    store: ReleaseStore, repo: Path
) -> None:
    check = repo / "app" / "check.py"
    check.write_text("for i in range(1, 31):\n    print(f'line {i}')\nraise SystemExit(3)\n")
    app = make_app([py_step("pass"), {"command": ["python3", "check.py"]}])
    release_id = store.compute_id(repo, app)
    with pytest.raises(BuildError) as caught:
        await store.ensure(repo, app)
    message = caught.value.message
    assert "app 'web'" in message
    assert "build step 2 of 2 (spec.build[1]) `python3 check.py`" in message
    assert "exit code 3" in message
    assert "line 30" in message and "line 11" in message and "line 10\n" not in message
    assert "build.log" in (caught.value.hint or "")
    assert store.get("web", release_id) is None
    assert not (store.releases_dir / "web" / release_id).exists()
    assert store.list("web") == []
    assert "line 30" in (store.releases_dir / "web" / f"{release_id}.build.log").read_text()

    check.write_text("print('fine')\n")
    release = await store.ensure(repo, app)
    assert release.id != release_id
    assert (release.root / "check.py").read_text() == "print('fine')\n"


async def test_timeout_kills_the_process_group(
    store: ReleaseStore, repo: Path, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    app = make_app(
        [
            {
                "command": ["sh", "-c", 'echo $$ > "$1"; sleep 30; echo never', "sh", str(pidfile)],
                "timeout": "1s",
            }
        ]
    )
    seen: set[int] = set()

    async def watch() -> None:
        while True:
            if pidfile.exists() and (text := pidfile.read_text().strip()):
                seen.update(live_members(int(text)))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(BuildError, match=r"step 1 of 1 .* timed out after 1s"):
            await store.ensure(repo, app)
    finally:
        watcher.cancel()
    assert loop.time() - started < 10
    assert len(seen) == 2  # sh and its sleep child were running...
    assert live_members(int(pidfile.read_text())) == []  # ...and neither is left
    assert store.list("web") == []


async def test_cancelling_the_only_waiter_cancels_the_build(
    store: ReleaseStore, repo: Path, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    app = make_app([{"command": ["sh", "-c", 'echo $$ > "$1"; sleep 30', "sh", str(pidfile)]}])
    waiter = asyncio.create_task(store.ensure(repo, app))
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.02)
    pid = int(pidfile.read_text())
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    for _ in range(100):
        if not (store.releases_dir / "web" / store.compute_id(repo, app)).exists():
            break
        await asyncio.sleep(0.02)
    assert live_members(pid) == []
    assert not (store.releases_dir / "web" / store.compute_id(repo, app)).exists()


async def test_output_is_streamed(store: ReleaseStore, repo: Path) -> None:
    lines: list[str] = []
    app = make_app([py_step("import sys; print('to stdout'); print('to stderr', file=sys.stderr)")])
    await store.ensure(repo, app, on_output=lines.append)
    assert "to stdout" in lines and "to stderr" in lines
    assert any(line.startswith("[socle] step 1/1: python3 -c") for line in lines)


async def test_build_env_is_minimal_plus_step_env(
    store: ReleaseStore, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOCLE_TEST_SECRET", "do-not-leak")
    app = make_app(
        [
            {
                "command": [
                    "python3",
                    "-c",
                    "import os, json; json.dump(sorted(os.environ), open('env.json', 'w'))",
                ],
                "env": {"EXTRA": "1"},
            }
        ]
    )
    release = await store.ensure(repo, app)
    names = set(json.loads((release.root / "env.json").read_text()))
    assert {"PATH", "HOME", "LANG", "EXTRA"} <= names
    assert "SOCLE_TEST_SECRET" not in names


async def test_gc_keeps_newest_and_in_use(store: ReleaseStore, repo: Path) -> None:
    app = make_app([])
    built: list[Release] = []
    for n in range(5):
        (repo / "app" / "version.txt").write_text(str(n))
        built.append(await store.ensure(repo, app))
    assert [r.id for r in store.list("web")] == [r.id for r in reversed(built)]
    removed = store.gc("web", {built[0].id})
    assert sorted(removed) == sorted([built[1].id, built[2].id])
    assert [r.id for r in store.list("web")] == [built[4].id, built[3].id, built[0].id]
    for release in built[1:3]:
        assert not release.root.exists()
        assert not (store.releases_dir / "web" / f"{release.id}.build.log").exists()
    assert store.gc("web", {built[0].id}) == []


async def test_interrupted_build_is_rebuilt(store: ReleaseStore, repo: Path) -> None:
    app = make_app([py_step("open('built.txt', 'w').write('ok')")])
    release = await store.ensure(repo, app)
    # what a control plane killed mid-build leaves: a folder without its marker
    (release.root / ".socle-release.json").unlink()
    (release.root / "half-written").write_text("junk")
    orphan = store.releases_dir / "web" / "r0123456789abcdef"
    orphan.mkdir()
    assert store.get("web", release.id) is None

    rebuilt = await store.ensure(repo, app)
    assert rebuilt.id == release.id and rebuilt.created > release.created
    assert not (rebuilt.root / "half-written").exists()
    assert (rebuilt.root / "built.txt").read_text() == "ok"
    assert not orphan.exists()


async def test_missing_workdir_is_named(store: ReleaseStore, repo: Path) -> None:
    with pytest.raises(BuildError, match=r"workdir 'services/api' of app 'web' does not exist"):
        await store.ensure(repo, make_app([], workdir="services/api"))


async def test_missing_programs_say_where_they_were_looked_for(
    store: ReleaseStore, repo: Path
) -> None:
    with pytest.raises(
        BuildError, match=r"step 1 of 1.*'no-such-tool' not found on the build PATH"
    ):
        await store.ensure(repo, make_app([{"command": ["no-such-tool"]}]))
    with pytest.raises(BuildError, match=r"'\.venv/bin/pip' not found .* in the release folder"):
        await store.ensure(repo, make_app([{"command": [".venv/bin/pip", "install", "x"]}]))
    assert store.list("web") == []


async def test_symlinks_in_the_release(store: ReleaseStore, repo: Path) -> None:
    shared = repo / "shared"
    shared.mkdir()
    (shared / "conf.py").write_text("A = 1\n")
    (repo / "app" / "shared").symlink_to("../shared")
    (repo / "app" / "entry.py").symlink_to("main.py")
    release = await store.ensure(repo, make_app([]))
    assert (release.root / "shared").is_dir() and not (release.root / "shared").is_symlink()
    assert (release.root / "shared" / "conf.py").read_text() == "A = 1\n"
    assert os.readlink(release.root / "entry.py") == "main.py"


async def test_background_children_do_not_hang_the_build(
    store: ReleaseStore, repo: Path, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    app = make_app([{"command": ["sh", "-c", 'sleep 30 & echo $! > "$1"', "sh", str(pidfile)]}])
    loop = asyncio.get_running_loop()
    started = loop.time()
    await store.ensure(repo, app)
    assert loop.time() - started < 10
    sleeper = int(pidfile.read_text())
    for _ in range(100):
        if not running(sleeper):
            break
        await asyncio.sleep(0.02)
    assert not running(sleeper)


async def test_gc_trims_logs_of_failed_builds(store: ReleaseStore, repo: Path) -> None:
    app = make_app([{"command": ["false"]}])
    for n in range(4):
        (repo / "app" / "version.txt").write_text(str(n))
        with pytest.raises(BuildError):
            await store.ensure(repo, app)
    app_dir = store.releases_dir / "web"
    assert len(list(app_dir.glob("*.build.log"))) == 4
    assert store.gc("web", set()) == []
    assert len(list(app_dir.glob("*.build.log"))) == store.keep


async def test_escaped_daemon_holding_output_does_not_hang_the_build(
    store: ReleaseStore, repo: Path, tmp_path: Path
) -> None:
    """A child that left the process group cannot be killed, but it cannot stall us."""
    pidfile = tmp_path / "pid"
    script = (
        'setsid sh -c \'echo $$ > "$1"; exec sleep 60\' sh "$1" & '
        'while [ ! -s "$1" ]; do sleep 0.05; done; echo started'
    )
    app = make_app([{"command": ["sh", "-c", script, "sh", str(pidfile)]}])
    lines: list[str] = []
    try:
        release = await store.ensure(repo, app, on_output=lines.append)
        assert "started" in lines
        assert any("output still open" in line for line in lines)
        assert store.get("web", release.id) == release
    finally:
        for _ in range(100):
            if pidfile.exists() and pidfile.read_text().strip():
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
                break
            await asyncio.sleep(0.02)


async def test_releases_of_an_earlier_version_are_sealed_once_at_upgrade(
    store: ReleaseStore, repo: Path
) -> None:
    app = make_app([py_step("open('built.txt', 'w').write('ok')")])
    release = await store.ensure(repo, app)
    marker = release.root / ".socle-release.json"
    # what an earlier version left: a complete release, writable, its marker without a seal
    data = json.loads(marker.read_text())
    del data["sealed"]
    os.chmod(release.root, 0o755)
    os.chmod(marker, 0o644)
    marker.write_text(json.dumps(data))
    assert store.get("web", release.id) is None  # never sealed: not trusted as such

    assert store.seal_unsealed() == 1
    assert store.seal_unsealed() == 0
    kept = store.get("web", release.id)
    assert kept is not None and kept.sealed

    os.chmod(release.root, 0o755)
    (release.root / "built.txt").chmod(0o644)
    (release.root / "built.txt").write_text("rewritten")
    assert ReleaseStore(store.releases_dir).get("web", release.id) is None


async def test_a_step_that_floods_its_output_cannot_fill_the_disk(
    store: ReleaseStore, repo: Path
) -> None:
    """A hostile step prints far more than the log keeps, in lines that look like Socle's
    own: the file stops growing at the cap, and the step still finishes."""
    from socle.engine.releases._store import BUILD_LOG_MAX

    lines = BUILD_LOG_MAX // 1000 + 4000  # about 4 MB beyond the cap
    code = "import sys\nfor i in range(int(sys.argv[1])): print('[socle] ' + 'x' * 991)\nprint('THE' + 'END')"
    app = make_app([py_step(code, str(lines))])
    release = await store.ensure(repo, app)
    log = store.releases_dir / "web" / f"{release.id}.build.log"
    size = log.stat().st_size
    assert size <= BUILD_LOG_MAX + 4096
    text = log.read_text()
    assert "left out" in text and "THEEND" not in text
    assert "ready in" in text.splitlines()[-1]  # Socle's own lines are always kept


@pytest.mark.parametrize("name", [".socle-release.json.tmp", ".socle-release.json"])
async def test_a_step_cannot_make_the_marker_write_go_through_a_symlink(
    store: ReleaseStore, repo: Path, tmp_path: Path, name: str
) -> None:
    """The release folder is the steps' until the marker is written (as root): a symlink
    left under the marker's temporary name pointed that write at any host file."""
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0::/root:/bin/sh\n")
    code = "import os, sys; os.symlink(sys.argv[1], sys.argv[2])"
    app = make_app([py_step(code, str(victim), name)])
    release = await store.ensure(repo, app)
    assert victim.read_text() == "root:x:0:0::/root:/bin/sh\n"
    marker = release.root / ".socle-release.json"
    assert marker.is_file() and not marker.is_symlink()
    assert ReleaseStore(store.releases_dir).get("web", release.id) is not None
