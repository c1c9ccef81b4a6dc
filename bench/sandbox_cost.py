"""The cost of the sandbox: start latency, memory per instance, and 200 instances at once.

Targets (issue 7): the sandbox adds <= 50 ms to an instance's start; 200 instances of a
small HTTP app are all ready <= 20 s on a 2-core machine (starts bounded by the driver's
``max_parallel_starts``, default twice the cores).

Figures (JSON on stdout):

``exec``     one bubblewrap run of ``/bin/true``: the previous profile (host root read-only,
             uid 0) against the new one (minimal view, seccomp, setpriv to an app uid);
``start``    ``driver.run()`` until the app's process exists, ``isolation="none"`` against
             the sandbox, and until a small HTTP app answers its health check;
``memory``   proportional set size (PSS) of everything an instance is made of (shim,
             bubblewrap, its init, the app) for a ``sleep`` app, per mode;
``fleet``    N instances of the HTTP app started together until all are ready, with the
             load average seen.

Run as root: ``.venv/bin/python bench/sandbox_cost.py [N=200] [--compare]`` (about 45 s;
``--compare`` also starts the fleet with ``isolation="none"``, another 20-30 s). The load
average before the run is printed too: on a shared machine the fleet figure moves with it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import percentiles

from socle.model.app import HealthSpec
from socle.runtime.driver import InstanceId, InstanceSpec, ReleaseId
from socle.runtime.local import LocalDriver
from socle.runtime.local.procs import children
from socle.runtime.local.sandbox import Profile, bwrap_argv, snapshot_etc
from socle.runtime.local.seccomp import write_filter

HTTP_APP = """
import os
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""
HEALTH = HealthSpec.model_validate({"http": {"port": "http", "path": "/"}, "interval": "2s"})


def old_profile(bwrap: str) -> list[str]:
    """The profile before issue 7 (host root read-only, uid 0, no filter), for comparison."""
    return [
        bwrap,
        "--ro-bind", "/", "/",
        "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
        "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--new-session", "--cap-drop", "ALL", "--", "/bin/true",
    ]  # fmt: skip


def exec_cost(tmp: Path, rounds: int = 30) -> dict[str, object]:
    bwrap = shutil.which("bwrap")
    assert bwrap is not None
    filter_path = write_filter(tmp)
    etc = snapshot_etc(tmp / "etc")  # as the driver does: one bind for the filtered /etc
    results: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run(old_profile(bwrap), check=True)
        results["old"].append(time.perf_counter() - started)
        fd = os.open(filter_path, os.O_RDONLY)
        profile = Profile(
            command=["/bin/true"],
            workdir=tmp,
            release_root=tmp,
            hostname="bench",
            uid=65534,
            seccomp_fd=fd,
            etc=etc,
        )
        started = time.perf_counter()
        subprocess.run(bwrap_argv(bwrap, profile), check=True, pass_fds=(fd,))
        results["new"].append(time.perf_counter() - started)
        os.close(fd)
    old, new = statistics.median(results["old"]), statistics.median(results["new"])
    return {
        "old_ms": round(old * 1000, 2),
        "new_ms": round(new * 1000, 2),
        "added_ms": round((new - old) * 1000, 2),
    }


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(pid: int) -> list[int]:
    out = [pid]
    for child in children(pid):
        out += tree(child)
    return out


async def start_and_memory(tmp: Path, mode: str, rounds: int) -> dict[str, object]:
    release = tmp / f"rel-{mode}"
    release.mkdir()
    (release / "app.py").write_text(HTTP_APP)
    driver = LocalDriver(tmp / f"run-{mode}", tmp / f"logs-{mode}", isolation=mode)
    await driver.start()
    started_ms: list[float] = []
    ready_ms: list[float] = []
    memory: list[int] = []
    try:
        for i in range(rounds):
            spec = InstanceSpec(
                id=InstanceId(f"sleep-{i}"),
                app="bench",
                release=ReleaseId("r1"),
                ordinal=i,
                command=["/bin/sleep", "600"],
                workdir=release,
            )
            began = time.perf_counter()
            await driver.run(spec)
            started_ms.append((time.perf_counter() - began) * 1000)
        await asyncio.sleep(0.5)
        for inst in list(driver._instances.values()):
            shim = inst.record.shim
            if shim is not None:
                memory.append(sum(pss_kib(p) for p in tree(shim.pid)))
        for inst_id in list(driver._instances):
            await driver.stop(InstanceId(inst_id))
        for i in range(min(rounds, 10)):
            spec = InstanceSpec(
                id=InstanceId(f"web-{i}"),
                app="bench",
                release=ReleaseId("r1"),
                ordinal=i,
                command=[sys.executable, "app.py"],
                workdir=release,
                ports=["http"],
                health=HEALTH,
            )
            began = time.perf_counter()
            await driver.run(spec)
            while not next(s for s in driver.instances() if s.id == spec.id).ready:
                await asyncio.sleep(0.005)
            ready_ms.append((time.perf_counter() - began) * 1000)
            await driver.stop(spec.id)
    finally:
        await driver.close(stop_instances=True)
    return {
        "start_ms": percentiles(started_ms),
        "http_ready_ms": percentiles(ready_ms),
        "pss_kib_per_instance": round(statistics.fmean(memory)) if memory else None,
    }


async def fleet(tmp: Path, count: int, mode: str) -> dict[str, object]:
    release = tmp / "fleet-rel"
    release.mkdir(exist_ok=True)
    (release / "app.py").write_text(HTTP_APP)
    driver = LocalDriver(tmp / f"run-fleet-{mode}", tmp / f"logs-fleet-{mode}", isolation=mode)
    await driver.start()
    load_peak = 0.0
    try:
        began = time.perf_counter()
        specs = [
            InstanceSpec(
                id=InstanceId(f"f{i}-0"),
                app=f"fleet{i % 20}",
                release=ReleaseId("r1"),
                ordinal=0,
                command=[sys.executable, "app.py"],
                workdir=release,
                ports=["http"],
                health=HEALTH,
            )
            for i in range(count)
        ]
        await asyncio.gather(*(driver.run(spec) for spec in specs))
        launched = time.perf_counter() - began
        deadline = began + 60
        ready = 0
        while time.perf_counter() < deadline:
            ready = sum(1 for s in driver.instances() if s.ready)
            load_peak = max(load_peak, os.getloadavg()[0])
            if ready == count:
                break
            await asyncio.sleep(0.1)
        all_ready = time.perf_counter() - began
    finally:
        await driver.close(stop_instances=True)
    return {
        "instances": count,
        "all_launched_s": round(launched, 2),
        "all_ready_s": round(all_ready, 2) if ready == count else None,
        "ready": ready,
        "load_peak": round(load_peak, 1),
        "max_parallel_starts": driver.max_parallel_starts,
    }


async def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    count = int(args[0]) if args else 200
    if os.geteuid() != 0:
        sys.exit("run as root: the sandbox profile needs root (or it falls back)")
    with tempfile.TemporaryDirectory(prefix="socle-bench-", dir="/var/tmp") as name:
        tmp = Path(name)
        os.chmod(tmp, 0o755)
        result: dict[str, object] = {"load_before": os.getloadavg()[0], "exec": exec_cost(tmp)}
        result["start"] = {
            "none": await start_and_memory(tmp, "none", 10),
            "sandbox": await start_and_memory(tmp, "sandbox", 10),
        }
        fleets = {"sandbox": await fleet(tmp, count, "sandbox")}
        if "--compare" in sys.argv:
            fleets["none"] = await fleet(tmp, count, "none")
        result["fleet"] = fleets
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
