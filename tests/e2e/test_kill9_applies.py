"""kill -9 of the control plane at any moment leaves no unsupervised process.

A loop of applies, each followed by a random pause of 0-300 ms and ``kill -9`` of the
server (so the kill lands during a build, a commit, a spawn before its record, a health
check, a stop...), then a restart. At the end every process of this home, found by walking
/proc, belongs to exactly one instance that ``socle status`` reports, and each instance
runs once. Two homes started from one shell never touch each other's apps.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from socle.network.ingress.nginx import NGINX
from socle.runtime.local.driver import default_cgroup_parent
from tests.e2e.socle_fixture import SocleServer, get_json, instance_url, wait_for, write_repo
from tests.support.ports import free_port

ROUNDS = 50
BRIDGE_B, RANGE_B = "soclehomeb", "10.219.0.0/24"
SLEEP_MAX = 0.3


@dataclass
class Proc:
    pid: int
    ppid: int
    cmdline: str
    instance: str | None


@dataclass
class HomeProcesses:
    """The processes of one home, by what /proc says about them."""

    by_pid: dict[int, Proc] = field(default_factory=dict)

    def shims(self, instance: str) -> list[Proc]:
        return [
            p
            for p in self.by_pid.values()
            if f"/instances/{instance}.exit" in p.cmdline and "--status=" in p.cmdline
        ]

    def of(self, instance: str) -> list[Proc]:
        return [p for p in self.by_pid.values() if p.instance == instance]

    def descends_from(self, proc: Proc, root: int) -> bool:
        seen = set()
        while proc.pid not in seen:
            if proc.pid == root:
                return True
            seen.add(proc.pid)
            parent = self.by_pid.get(proc.ppid)
            if parent is None:
                return False
            proc = parent
        return False


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def home_processes(home: Path, *, exclude: set[int]) -> HomeProcesses:
    """Every process whose command line, working folder or cgroup belongs to ``home``."""
    needle = str(home)
    group = default_cgroup_parent((home / "run").absolute())
    found = HomeProcesses()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude | {os.getpid()}:
            continue
        stat = _read(entry / "stat")
        if not stat:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields[0] in (b"Z", b"X"):
            continue
        cmdline = _read(entry / "cmdline").replace(b"\0", b" ").decode(errors="replace")
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            cwd = ""
        cgroup = _read(entry / "cgroup").decode(errors="replace")
        if needle not in cmdline and not cwd.startswith(needle) and group not in cgroup:
            continue
        if cmdline.startswith(("nginx: master process", f"{NGINX} -p {needle}/ingress")):
            continue  # the home's ingress (or its start), not an instance: it outlives planes
        instance = None
        for item in _read(entry / "environ").split(b"\0"):
            if item.startswith(b"SOCLE_INSTANCE="):
                instance = item.split(b"=", 1)[1].decode(errors="replace")
        found.by_pid[int(entry.name)] = Proc(int(entry.name), int(fields[1]), cmdline, instance)
    return found


def assert_every_process_accounted_for(server: SocleServer) -> dict[str, Any]:
    """Each process of the home belongs to one reported instance, each instance runs once."""
    assert server.proc is not None
    status = server.status()
    reported = {i["id"]: i for app in status["apps"] for i in app["instances"]}
    procs = home_processes(server.home, exclude={server.proc.pid})
    strays = [p for p in procs.by_pid.values() if p.instance not in reported]
    assert not strays, f"processes of this home that status does not report: {strays}"
    for iid, inst in reported.items():
        shims = procs.shims(iid)
        assert len(shims) == 1, f"{iid}: {len(shims)} shims: {shims}"
        mine = procs.of(iid)
        outside = [p for p in mine if not procs.descends_from(p, shims[0].pid)]
        assert not outside, f"{iid}: processes outside its shim's tree (duplicates): {outside}"
        assert inst["pid"] in {p.pid for p in mine}, f"{iid}: reported pid is not running"
    return status


@pytest.mark.timeout(600)  # 50 restarts of a Python server: ~60 s idle, more on a busy host
def test_kill_9_at_random_points_of_50_applies(server: SocleServer, tmp_path: Path) -> None:
    seed = int(os.environ.get("SOCLE_TEST_SEED", time.time_ns() % 100_000))
    print(f"seed {seed} (SOCLE_TEST_SEED to replay)")
    rng = random.Random(seed)
    repo = tmp_path / "repo"
    started = time.monotonic()
    for number in range(ROUNDS):
        spec = {"replicas": 2, "env": {"VERSION": f"v{number}"}}
        write_repo(repo, {"web": spec})
        response = server.api("POST", "/api/v1/apply", json={"path": str(repo), "env": None})
        assert response.status_code == 200, response.text
        time.sleep(rng.uniform(0, SLEEP_MAX))
        server.kill9()
        server.start()
    print(f"{ROUNDS} applies, kills and restarts in {time.monotonic() - started:.1f}s")

    last = f"v{ROUNDS - 1}"

    def converged() -> bool:
        app = server.app("web")
        return bool(
            app["ready"] == 2
            and len(app["instances"]) == 2
            and {get_json(instance_url(app, n))["version"] for n in (0, 1)} == {last}
        )

    wait_for(converged, 90, "the last release to run, twice and only twice")
    status = assert_every_process_accounted_for(server)
    pids = sorted(i["pid"] for app in status["apps"] for i in app["instances"])

    server.kill9()  # a quiet kill: the same processes are re-adopted, nothing restarts
    server.start()
    wait_for(lambda: server.app("web")["ready"] == 2, 30, "re-adoption")
    status = assert_every_process_accounted_for(server)
    assert sorted(i["pid"] for app in status["apps"] for i in app["instances"]) == pids

    # The narrowest window, made certain: killed after spawning a shim, before recording it.
    victim = status["apps"][0]["instances"][0]
    server.kill9()
    (server.home / "run" / "instances" / f"{victim['id']}.json").unlink()
    server.start()
    wait_for(converged, 60, "the unrecorded instance to be replaced, not duplicated")
    status = assert_every_process_accounted_for(server)
    assert victim["pid"] not in {i["pid"] for app in status["apps"] for i in app["instances"]}


def test_two_homes_from_one_shell_leave_each_other_alone(
    tmp_path: Path, socle_env: dict[str, str]
) -> None:
    homes = [tmp_path / "home-a", tmp_path / "home-b", tmp_path / "home-c"]

    def env(home: Path, **more: str) -> dict[str, str]:
        return dict(
            socle_env,
            SOCLE_HOME=str(home),  # each home its own ingress, as each has its own nginx
            SOCLE_INGRESS_HTTP=f"127.0.0.1:{free_port()}",
            SOCLE_INGRESS_HTTPS=f"127.0.0.1:{free_port()}",
            **more,
        )

    # A on the default bridge; B on its own bridge and range, as docs/network.md says.
    servers = [
        SocleServer(home=homes[0], env=env(homes[0])),
        SocleServer(
            home=homes[1],
            env=env(homes[1], SOCLE_NETWORK_BRIDGE=BRIDGE_B, SOCLE_NETWORK_RANGE=RANGE_B),
        ),
    ]
    try:
        for server in servers:
            server.start()
        # C on A's bridge: refused before it touches anything (each loads rules for the
        # whole bridge, so two on one bridge would cut each other's instances off).
        third = SocleServer(home=homes[2], env=env(homes[2]))
        refused = third.cli("server", "--listen", "127.0.0.1:0", check=False, timeout=120)
        assert refused.returncode == 1, refused.stderr
        assert f"bridge socle0 is used by another Socle control plane (home {homes[0]}" in (
            refused.stderr
        ), refused.stderr
        assert "SOCLE_NETWORK_BRIDGE" in refused.stderr
        repo = write_repo(tmp_path / "repo", {"web": {}})  # the same app, the same ids
        for server in servers:
            server.cli("apply", str(repo), "--yes")
        a, b = servers
        theirs = b.app("web")["instances"][0]
        assert a.app("web")["instances"][0]["id"] == theirs["id"]

        a.kill9()  # a restart of A reaps what A does not account for, and only that
        a.start()
        wait_for(lambda: a.app("web")["ready"] == 1, 30, "A to re-adopt its app")
        a.cli("down")
        assert a.proc is not None and a.proc.wait(60) == 0

        assert b.app("web")["instances"][0]["pid"] == theirs["pid"], "B's app never restarted"
        assert get_json(instance_url(b.app("web")))["instance"] == theirs["id"]
        assert home_processes(homes[0], exclude=set()).by_pid == {}, "A's apps are gone"
        assert_every_process_accounted_for(b)
    finally:
        for server in servers:
            server.cleanup()
        subprocess.run(["ip", "link", "del", BRIDGE_B], check=False, capture_output=True)
        table = ["nft", "delete", "table", "inet", f"socle_{BRIDGE_B}"]
        subprocess.run(table, check=False, capture_output=True)
