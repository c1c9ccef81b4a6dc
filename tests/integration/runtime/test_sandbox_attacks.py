"""A hostile app, its exec check and its build steps, attacking for real (as root).

Each test starts a real program through the local driver (or the release store with the
driver's build sandbox) in a home placed *outside* /tmp, as a production home would be,
next to files an attacker wants: the admin token, a dev unseal key, another app's release
and volume. The program tries, reports what happened as JSON on stdout, and the test checks
both its report and the host (the host value of a kernel tunable, files that must not
appear).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from socle.engine.releases import ReleaseStore
from socle.errors import BuildError
from socle.model.app import HealthSpec
from socle.runtime.driver import InstanceId, InstanceSpec, InstanceState, Mount, ReleaseId
from socle.runtime.local import LocalDriver
from socle.runtime.local.logs import read_logs
from socle.runtime.local.sandbox import Profile, bwrap_argv, snapshot_etc
from socle.runtime.local.seccomp import write_filter
from socle.runtime.local.uids import BASE
from tests.integration.runtime.conftest import FAST_BACKOFF, SANDBOX_OK, Janitor, app_with_build

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not SANDBOX_OK, reason="needs root and bubblewrap"),
]

CORE_PATTERN = Path("/proc/sys/kernel/core_pattern")

HOSTILE = textwrap.dedent(
    """
    import ctypes, json, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    out = {}

    def attempt(name, fn):
        try:
            out[name] = ["ok", repr(fn())[:200]]
        except Exception as exc:
            out[name] = ["denied", f"{type(exc).__name__}: {exc}"]

    def call(name, result):
        errno = ctypes.get_errno()
        out[name] = ["ok", result] if result == 0 else ["denied", os.strerror(errno)]

    targets = json.loads(sys.argv[1])
    out["uid"] = [os.getuid(), os.geteuid(), os.getgid(), os.getgroups()]
    out["home"] = os.environ.get("HOME")
    attempt("core_pattern", lambda: open("/proc/sys/kernel/core_pattern", "w").write("|/x"))
    attempt("sysrq", lambda: open("/proc/sysrq-trigger", "w").write("h"))
    attempt("shadow", lambda: open("/etc/shadow").read())
    attempt("root", lambda: os.listdir("/root"))
    attempt("home_dir", lambda: os.listdir(targets["home"]))
    attempt("admin_token", lambda: open(targets["token"]).read())
    attempt("unseal_key", lambda: open(targets["unseal"]).read())
    attempt("other_release", lambda: open(targets["other_release"]).read())
    attempt("other_volume", lambda: open(targets["other_volume"]).read())
    attempt("repo", lambda: os.listdir(targets["repo"]))
    attempt("own_release", lambda: open("main.py", "a").write("# owned"))
    attempt("check_script", lambda: open("check.sh", "w").write("#!/bin/sh\\nexit 0\\n"))
    attempt("own_volume", lambda: open("/data/mine", "w").write("x"))
    attempt("tmp", lambda: open("/tmp/x", "w").write("x"))
    attempt("scratch", lambda: open(os.path.join(os.environ["HOME"], "x"), "w").write("x"))
    attempt("sys", lambda: os.listdir("/sys"))
    call("mount", libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
    call("unshare_user", libc.unshare(0x10000000))
    call("unshare_mount", libc.unshare(0x00020000))
    call("ptrace_init", libc.ptrace(16, 1, 0, 0))
    call("keyctl", libc.syscall(250, 0, 0, 0, 0, 0))  # keyctl on x86-64
    status = open("/proc/self/status").read().splitlines()
    out["status"] = {l.split(":")[0]: l.split(":")[1].strip() for l in status
                     if l.startswith(("Cap", "NoNewPrivs", "Seccomp"))}
    print("REPORT " + json.dumps(out), flush=True)
    """
)

CHECK = textwrap.dedent(
    """\
    #!/bin/sh
    { id -u; echo "home=$HOME"; echo original; } > /data/check-ran
    """
)


class Home:
    """A Socle-like home outside /tmp with the secrets an attacker wants."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.run = root / "run"
        self.logs = root / "logs"
        self.token = root / "admin.token"
        self.unseal = root / "secrets" / "dev-unseal.json"
        self.releases = root / "releases"
        self.volumes = root / "volumes"
        self.repo = root.parent / f"{root.name}-repo"
        self.extra: list[Path] = []
        for folder in (root, self.unseal.parent, self.releases, self.volumes, self.repo):
            folder.mkdir(parents=True, mode=0o700)
        self.token.write_text("admin-token-value\n")
        self.unseal.write_text('{"key": "unseal", "root_token": "s.root"}\n')
        (self.repo / "manifest.yaml").write_text("kind: App\n")

    def release(self, app: str, files: dict[str, str]) -> Path:
        root = self.releases / app / "r1"
        root.mkdir(parents=True)
        for name, text in files.items():
            (root / name).write_text(text)
        (root / "check.sh").chmod(0o755) if "check.sh" in files else None
        return root

    def volume(self, app: str) -> Path:
        path = self.volumes / app
        path.mkdir(parents=True, mode=0o700)
        return path


@pytest.fixture
def home() -> Iterator[Home]:
    root = Path("/var/tmp") / f"socle-test-{uuid.uuid4().hex[:8]}"
    made = Home(root)
    try:
        yield made
    finally:
        shutil.rmtree(root, ignore_errors=True)
        for path in [made.repo, *made.extra]:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def driver(home: Home, janitor: Janitor) -> AsyncIterator[LocalDriver]:
    drv = LocalDriver(
        home.run,
        home.logs,
        isolation="sandbox",
        backoff=FAST_BACKOFF,
        cgroup_parent=f"socle-test-{uuid.uuid4().hex[:8]}",
    )
    await drv.start()
    drv.subscribe(janitor.track)
    try:
        yield drv
    finally:
        await drv.close(stop_instances=True)
        janitor.sweep(home.run)


async def wait_state(driver: LocalDriver, iid: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        status = next((s for s in driver.instances() if s.id == iid), None)
        if status is not None and check(status):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"{iid}: condition not met; last status {status}")


def owner(pid: int | None) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid if pid else None
    except OSError:
        return None


def report(driver: LocalDriver, iid: str) -> dict[str, Any]:
    for line in read_logs(driver.logs_dir, InstanceId(iid)):
        if line.text.startswith("REPORT "):
            return dict(json.loads(line.text[7:]))
    texts = [line.text for line in read_logs(driver.logs_dir, InstanceId(iid))]
    raise AssertionError(f"no report from {iid}: {texts}")


async def test_hostile_app_is_contained(driver: LocalDriver, home: Home) -> None:
    host_core = CORE_PATTERN.read_text()
    other = home.release("other", {"secret.py": "API_KEY = 'other-app-secret'\n"})
    other_volume = home.volume("other")
    (other_volume / "db.sqlite").write_text("other app data")
    release = home.release("evil", {"main.py": HOSTILE, "check.sh": CHECK})
    volume = home.volume("evil")
    targets = {
        "home": str(home.root),
        "token": str(home.token),
        "unseal": str(home.unseal),
        "other_release": str(other / "secret.py"),
        "other_volume": str(other_volume / "db.sqlite"),
        "repo": str(home.repo),
    }
    spec = InstanceSpec(
        id=InstanceId("evil-0"),
        app="evil",
        release=ReleaseId("r1"),
        ordinal=0,
        command=[sys.executable, "main.py", json.dumps(targets)],
        workdir=release,
        release_root=release,
        restart="never",
        mounts=[Mount(volume, "/data")],
    )
    await driver.run(spec)
    status = await wait_state(driver, "evil-0", lambda s: s.state is InstanceState.EXITED)
    got = report(driver, "evil-0")

    # Its own unprivileged uid, no groups, no capabilities, no new privileges, filtered.
    uid = status.uid
    assert uid is not None and uid >= BASE
    assert got["uid"] == [uid, uid, uid, []]
    assert got["status"]["CapEff"] == got["status"]["CapBnd"] == "0000000000000000"
    assert got["status"]["NoNewPrivs"] == "1" and got["status"]["Seccomp"] == "2"
    assert got["home"] == "/scratch"

    # Kernel tunables: refused, and the host value is untouched.
    assert got["core_pattern"][0] == "denied" and got["sysrq"][0] == "denied"
    assert CORE_PATTERN.read_text() == host_core
    assert got["sys"][0] == "denied"

    # Host secrets, the control plane's home, other apps, the operator's repository.
    # /root shows at most the path to the interpreter (a pyenv under /root), nothing else.
    interpreter = {
        Path(p).parts[2] for p in (sys.base_prefix, sys.prefix) if p.startswith("/root/")
    }
    assert got["root"][0] == "denied" or got["root"][1] == repr(sorted(interpreter))
    # The home shows only the (empty) folders leading to the app's own release.
    assert got["home_dir"][0] == "denied" or got["home_dir"][1] == "['releases']"
    for name in (
        "shadow",
        "admin_token",
        "unseal_key",
        "other_release",
        "other_volume",
        "repo",
    ):
        assert got[name][0] == "denied", (name, got[name])
        assert "admin-token-value" not in got[name][1] and "s.root" not in got[name][1]

    # Its own code is read-only; state goes to its volume, /tmp and scratch.
    assert got["own_release"][0] == "denied"
    assert got["check_script"][0] == "denied"
    assert (release / "main.py").read_text() == HOSTILE
    assert got["own_volume"][0] == "ok" and (volume / "mine").read_text() == "x"
    assert (volume / "mine").stat().st_uid == uid
    assert got["tmp"][0] == "ok" and got["scratch"][0] == "ok"

    # The syscalls a service never needs.
    for name in ("mount", "unshare_user", "unshare_mount", "ptrace_init", "keyctl"):
        assert got[name] == ["denied", os.strerror(1)], (name, got[name])  # EPERM


async def test_uid_is_stable_per_app_and_distinct_between_apps(
    driver: LocalDriver, home: Home
) -> None:
    uids: dict[str, int | None] = {}
    for app, ordinal in (("one", 0), ("one", 1), ("two", 0)):
        release = home.releases / app / f"r{ordinal}"
        release.mkdir(parents=True)
        spec = InstanceSpec(
            id=InstanceId(f"{app}-{ordinal}"),
            app=app,
            release=ReleaseId("r1"),
            ordinal=ordinal,
            command=["/bin/sleep", "30"],
            workdir=release,
            restart="never",
        )
        await driver.run(spec)
        status = await wait_state(driver, spec.id, lambda s: s.pid is not None)
        uids[spec.id] = status.uid
        # setpriv drops to the app's uid a moment after the process appears.
        await wait_state(driver, spec.id, lambda s: owner(s.pid) == s.uid)
    assert uids["one-0"] == uids["one-1"] != uids["two-0"]
    ledger = home.run / "uids.json"
    assert stat.S_IMODE(ledger.stat().st_mode) == 0o600
    assert json.loads(ledger.read_text())["apps"] == {"one": uids["one-0"], "two": uids["two-0"]}


async def test_exec_check_runs_the_original_inside_the_sandbox(
    driver: LocalDriver, home: Home
) -> None:
    tamper = textwrap.dedent(
        """
        import os, time
        for path in ("check.sh", "/data/check-ran"):
            try:
                open(path, "w").write("#!/bin/sh\\nexit 0\\n")
                print("rewrote", path, flush=True)
            except OSError as exc:
                print("refused", path, exc, flush=True)
        time.sleep(60)
        """
    )
    release = home.release("sly", {"main.py": tamper, "check.sh": CHECK})
    volume = home.volume("sly")
    spec = InstanceSpec(
        id=InstanceId("sly-0"),
        app="sly",
        release=ReleaseId("r1"),
        ordinal=0,
        command=[sys.executable, "main.py"],
        workdir=release,
        release_root=release,
        health=HealthSpec.model_validate({"exec": {"command": ["./check.sh"]}, "interval": "1s"}),
        mounts=[Mount(volume, "/data")],
    )
    await driver.run(spec)
    status = await wait_state(driver, "sly-0", lambda s: s.ready)
    lines = (volume / "check-ran").read_text().split()
    assert lines == [str(status.uid), "home=/scratch", "original"]
    assert status.uid is not None and status.uid != 0
    assert (release / "check.sh").read_text() == CHECK


async def test_build_steps_run_as_the_app_and_write_only_their_release(
    driver: LocalDriver, home: Home
) -> None:
    escape = home.root / "escaped"
    step = textwrap.dedent(
        f"""
        import os
        def tries(path):
            try:
                open(path, "w").write("x"); return "ok"
            except OSError as exc:
                return "denied"
        print("uid", os.getuid(), "groups", os.getgroups(), flush=True)
        print("inside", tries("built.txt"), flush=True)
        print("escape", tries({str(escape)!r}), tries("/etc/evil"), tries("/usr/evil"), flush=True)
        print("token", tries({str(home.token)!r}), flush=True)
        """
    )
    repo = home.repo
    app = app_with_build(
        repo, "builder", [{"command": [sys.executable, "step.py"], "timeout": "60s"}]
    )
    (repo / "app" / "step.py").write_text(step)
    lines: list[str] = []
    store = ReleaseStore(
        home.releases,
        base_env={"PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8"},
        sandbox=driver.build_sandbox(),
    )
    try:
        release = await store.ensure(repo, app, on_output=lines.append)
    finally:
        await store.close()
    uid = driver._host.isolation.uid_of("builder") if driver._host else None
    assert f"uid {uid} groups []" in lines
    assert "inside ok" in lines
    assert "escape denied denied denied" in lines
    assert "token denied" in lines
    assert not escape.exists() and not Path("/etc/evil").exists()
    # Sealed: root-owned, read-only for the app, build log owner-only.
    built = release.root / "built.txt"
    assert built.stat().st_uid == 0 and stat.S_IMODE(built.stat().st_mode) == 0o644
    assert release.root.stat().st_uid == 0
    log = home.releases / "builder" / f"{release.id}.build.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


async def test_build_step_memory_and_time_are_limited(driver: LocalDriver, home: Home) -> None:
    hog = [sys.executable, "-c", "x = bytearray(512 * 2**20)"]
    app = app_with_build(home.repo, "hog", [{"command": hog, "timeout": "60s"}])
    store = ReleaseStore(
        home.releases,
        base_env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        sandbox=driver.build_sandbox(),
        build_memory=256 * 2**20,
    )
    try:
        with pytest.raises(BuildError, match="MemoryError"):
            await store.ensure(home.repo, app)
    finally:
        await store.close()


async def test_a_modified_release_is_never_reused(driver: LocalDriver, home: Home) -> None:
    app = app_with_build(
        home.repo, "kept", [{"command": ["/bin/sh", "-c", "echo built > out.txt"]}]
    )
    store = ReleaseStore(home.releases, sandbox=driver.build_sandbox())
    try:
        first = await store.ensure(home.repo, app)
        assert store.get("kept", first.id) == first
        # Someone with write access (it takes root now) changes a build output.
        (first.root / "out.txt").write_text("tampered\n")
        assert store.get("kept", first.id) is None
        again = await store.ensure(home.repo, app)  # rebuilt, not reused
        assert (again.root / "out.txt").read_text() == "built\n"
        assert store.get("kept", again.id) is not None
    finally:
        await store.close()


def test_rootless_profile_holds_for_an_ordinary_user(home: Home) -> None:
    """The profile a non-root control plane uses (an unprivileged user namespace), run by
    ``nobody``: same view, filter, no capabilities, no new privileges, read-only /etc."""
    tmp_path = home.root.parent / f"{home.root.name}-nobody"  # reachable by nobody
    tmp_path.mkdir(mode=0o755)
    home.extra.append(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    filter_path = write_filter(run_dir)
    etc = snapshot_etc(run_dir / "etc")
    for path in (tmp_path, run_dir, filter_path):
        os.chown(path, 65534, 65534)
    script = (
        "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; "
        "ls /; cat /etc/shadow 2>&1; { echo x > /etc/x; } 2>&1; "
        "{ echo x > /proc/sys/kernel/core_pattern; } 2>&1; unshare -U true 2>&1; true"
    )
    fd = os.open(filter_path, os.O_RDONLY)
    try:
        profile = Profile(
            command=["/bin/sh", "-c", script],
            workdir=Path("/usr"),
            release_root=Path("/usr"),
            hostname="rootless",
            uid=None,
            seccomp_fd=fd,
            etc=etc,
            die_with_parent=True,
        )
        argv = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
        done = subprocess.run(
            [*argv, *bwrap_argv("/usr/bin/bwrap", profile)],
            pass_fds=(fd,),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        os.close(fd)
    out = done.stdout
    if "setting up uid map" in done.stderr or "No permission" in done.stderr:
        pytest.skip(f"unprivileged user namespaces are not allowed here: {done.stderr}")
    assert done.returncode == 0, done.stderr
    assert "CapEff:\t0000000000000000" in out and "NoNewPrivs:\t1" in out
    assert "Seccomp:\t2" in out
    assert "root" not in out.split() and "home" not in out.split()
    assert "No such file" in out  # /etc/shadow is absent
    assert "Read-only file system" in out or "Permission denied" in out
    assert "/proc/sys/kernel/core_pattern" in out  # the write failed and said why
    assert "Operation not permitted" in out  # unshare denied by the filter
    assert Path("/proc/sys/kernel/core_pattern").read_text().strip() != "x"


SCRATCH_LIMIT = 256 * 1024 * 1024
"""isolation.SCRATCH_SIZE: what an instance without a memory limit may keep in scratch."""
FILLER = textwrap.dedent(
    """
    import json, os
    out = {}
    for name, folder in (("scratch", os.environ["HOME"]), ("tmp", "/tmp")):
        st = os.statvfs(folder)
        fd = os.open(os.path.join(folder, "fill"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, int(os.environ["WANT"]))  # no memory used on ENOSPC
            out[name] = [st.f_blocks * st.f_frsize, "ok"]
        except OSError as exc:
            out[name] = [st.f_blocks * st.f_frsize, os.strerror(exc.errno)]
        finally:
            os.close(fd)
            os.unlink(os.path.join(folder, "fill"))
    print("REPORT " + json.dumps(out), flush=True)
    """
)


async def test_scratch_and_tmp_cannot_fill_the_hosts_disk_or_memory(
    driver: LocalDriver, home: Home
) -> None:
    """An app that writes until it cannot: its scratch space (``HOME``) was a folder on the
    disk holding the state database, and ``/tmp`` a tmpfs of half the host's memory."""
    from socle.runtime.local.isolation import scratch_dir

    release = home.release("filler", {"main.py": FILLER})
    want = SCRATCH_LIMIT + 1024 * 1024
    spec = InstanceSpec(
        id=InstanceId("filler-0"),
        app="filler",
        release=ReleaseId("r1"),
        ordinal=0,
        command=[sys.executable, "main.py"],
        env={"WANT": str(want)},
        workdir=release,
        release_root=release,
        restart="never",
    )
    await driver.run(spec)
    await wait_state(driver, "filler-0", lambda s: s.state is InstanceState.EXITED)
    got = report(driver, "filler-0")
    for name in ("scratch", "tmp"):
        size, outcome = got[name]
        assert size <= SCRATCH_LIMIT, (name, size)
        assert outcome == os.strerror(28), (name, outcome)  # ENOSPC
    scratch = scratch_dir(home.run, "filler-0")
    assert os.path.ismount(scratch)
    await driver.stop(InstanceId("filler-0"))
    assert not os.path.ismount(scratch) and not scratch.exists()


async def test_two_homes_whose_paths_share_a_uid_block_give_apps_different_uids(
    janitor: Janitor,
) -> None:
    """Two homes on one host whose run folders hash to the same uid block (1 in 2048): each
    app of one home would have had the uid of the same-named app of the other, and could
    read its files and signal it. The host-wide registry gives the second home another
    block."""
    from socle.runtime.local.uids import BLOCK, BLOCKS, block_start

    base = Path("/var/tmp") / f"socle-test-{uuid.uuid4().hex[:8]}"
    seen: dict[int, Path] = {}
    pair: tuple[Path, Path] | None = None
    for i in range(BLOCKS * 4):
        run = base / f"home-{i}" / "run"
        start = block_start(run)
        if start in seen:
            pair = (seen[start], run)
            break
        seen[start] = run
    assert pair is not None
    drivers: list[LocalDriver] = []
    try:
        uids = []
        for run in pair:
            release = run.parent / "releases" / "web" / "r1"
            release.mkdir(parents=True)
            drv = LocalDriver(
                run,
                run.parent / "logs",
                isolation="sandbox",
                backoff=FAST_BACKOFF,
                cgroup_parent=f"socle-test-{uuid.uuid4().hex[:8]}",
            )
            await drv.start()
            drivers.append(drv)
            drv.subscribe(janitor.track)
            spec = InstanceSpec(
                id=InstanceId("web-0"),
                app="web",
                release=ReleaseId("r1"),
                ordinal=0,
                command=["/bin/sleep", "30"],
                workdir=release,
                restart="never",
            )
            await drv.run(spec)
            status = await wait_state(drv, "web-0", lambda s: s.pid is not None)
            await wait_state(drv, "web-0", lambda s: owner(s.pid) == s.uid)
            uids.append(status.uid)
        assert uids[0] is not None and uids[1] is not None
        # Different blocks (not merely different ids): every later app differs too.
        assert (uids[0] - BASE) // BLOCK != (uids[1] - BASE) // BLOCK, uids
    finally:
        for drv, run in zip(drivers, pair, strict=False):
            await drv.close(stop_instances=True)
            janitor.sweep(run)
        shutil.rmtree(base, ignore_errors=True)


async def test_a_pyvenv_cfg_in_the_release_cannot_bind_another_apps_release(
    driver: LocalDriver, home: Home
) -> None:
    """A build step (a hostile package) writes ``pyvenv.cfg`` next to the program with
    ``home = <another app's release>/bin``: the sandbox used to bind that folder read-only
    as "the venv's base interpreter", showing the other app's code inside this one."""
    other = home.release("other", {"secret.py": "API_KEY = 'other-app-secret'\n"})
    release = home.release("evil", {})
    (release / "tool" / "bin").mkdir(parents=True)
    (release / "tool" / "bin" / "sh").symlink_to("/usr/bin/sh")
    (release / "tool" / "pyvenv.cfg").write_text(f"home = {other / 'bin'}\n")
    script = f"cat {other / 'secret.py'} 2>/dev/null || echo REPORT denied"
    spec = InstanceSpec(
        id=InstanceId("evil-0"),
        app="evil",
        release=ReleaseId("r1"),
        ordinal=0,
        command=[str(release / "tool" / "bin" / "sh"), "-c", script],
        workdir=release,
        release_root=release,
        restart="never",
    )
    await driver.run(spec)
    await wait_state(driver, "evil-0", lambda s: s.state is InstanceState.EXITED)
    texts = [line.text for line in read_logs(driver.logs_dir, InstanceId("evil-0"))]
    assert not any("other-app-secret" in t for t in texts), texts
    assert "REPORT denied" in texts


async def test_a_symlink_in_a_volume_cannot_place_a_nested_mount_on_the_host(
    driver: LocalDriver, home: Home
) -> None:
    """Volume ``outer`` at /data, volume ``inner`` at /data/sub/x. The app made ``sub`` in
    its outer volume a symlink to ``../../oldroot/<host folder>``: bubblewrap, as root and
    before it switches roots, followed it and made ``x`` in the host folder."""
    from socle.errors import StartRefused

    outer, inner = home.volume("outer"), home.volume("inner")
    host = Path("/var/tmp") / f"socle-test-host-{uuid.uuid4().hex[:8]}"
    host.mkdir()
    home.extra.append(host)
    (outer / "sub").symlink_to(f"../../oldroot{host}")
    release = home.release("nest", {})
    spec = InstanceSpec(
        id=InstanceId("nest-0"),
        app="nest",
        release=ReleaseId("r1"),
        ordinal=0,
        command=["/bin/true"],
        workdir=release,
        release_root=release,
        restart="never",
        mounts=[Mount(outer, "/data"), Mount(inner, "/data/sub/x")],
    )
    with contextlib.suppress(StartRefused):
        await driver.run(spec)
        await wait_state(
            driver, "nest-0", lambda s: s.state in (InstanceState.EXITED, InstanceState.FAILED)
        )
    assert list(host.iterdir()) == []


async def test_a_symlink_in_the_release_cannot_place_a_mount_on_the_host(
    driver: LocalDriver, home: Home
) -> None:
    """The same escape through the release, whose symlinks the build steps write, when a
    mountPath lies inside the release folder."""
    from socle.errors import StartRefused

    volume = home.volume("vol")
    host = Path("/var/tmp") / f"socle-test-host-{uuid.uuid4().hex[:8]}"
    host.mkdir()
    home.extra.append(host)
    release = home.release("nest", {})
    (release / "sub").symlink_to(os.path.relpath(f"/oldroot{host}", release))
    spec = InstanceSpec(
        id=InstanceId("nest-0"),
        app="nest",
        release=ReleaseId("r1"),
        ordinal=0,
        command=["/bin/true"],
        workdir=release,
        release_root=release,
        restart="never",
        mounts=[Mount(volume, str(release / "sub" / "x"))],
    )
    with contextlib.suppress(StartRefused):
        await driver.run(spec)
        await wait_state(
            driver, "nest-0", lambda s: s.state in (InstanceState.EXITED, InstanceState.FAILED)
        )
    assert list(host.iterdir()) == []
