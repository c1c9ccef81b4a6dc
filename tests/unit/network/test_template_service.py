"""The template service over a real registry and KV (in-memory store): what it renders,
when it acts (restart one at a time or signal, only for changed files), last good kept."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import pytest

from socle.errors import TemplateError
from socle.model.app import App
from socle.network.kv import ConsulKV
from socle.network.registry import ServiceInstance, ServiceRegistry
from socle.network.templates import ENV_NAME, MOUNT_POINT, TemplateService
from socle.runtime.driver import InstanceId, InstanceState, InstanceStatus, ReleaseId
from socle.state.memory import MemoryData, MemoryStore

TEMPLATE = "abcdef0123456789" * 4


class Runtime:
    """A small in-memory runtime: instances, restarts and signals recorded."""

    def __init__(self, app: str, count: int) -> None:
        self.statuses = {
            InstanceId(f"{app}-{TEMPLATE[:10]}-{n}"): InstanceStatus(
                id=InstanceId(f"{app}-{TEMPLATE[:10]}-{n}"),
                app=app,
                release=ReleaseId("r1"),
                ordinal=n,
                state=InstanceState.RUNNING,
                ready=True,
                pid=100 + n,
                address="127.0.0.1",
                ports={"http": 9000 + n},
                restarts=0,
                started_at=0.0,
                ready_since=0.0,
                last_exit_code=None,
                isolation="test",
            )
            for n in range(count)
        }
        self.events: list[tuple[str, str]] = []

    def instances(self) -> list[InstanceStatus]:
        return list(self.statuses.values())

    def replace(self, instance_id: InstanceId, reason: str) -> bool:
        # Only one instance may be down at a time: the previous one must be ready again.
        assert all(s.ready for s in self.statuses.values())
        old = self.statuses[instance_id]
        self.events.append(("restart", instance_id))
        self.statuses[instance_id] = dataclasses.replace(old, ready=False)
        asyncio.get_running_loop().call_later(0.05, self._back, instance_id)
        return True

    def _back(self, instance_id: InstanceId) -> None:
        old = self.statuses[instance_id]
        self.statuses[instance_id] = dataclasses.replace(
            old, ready=True, restarts=old.restarts + 1, pid=(old.pid or 0) + 1000
        )

    def signal(self, instance_id: InstanceId, name: str) -> bool:
        self.events.append((name, instance_id))
        return True


def make_app(tmp_path: Path, templates: list[dict[str, str]], files: dict[str, str]) -> App:
    for name, text in files.items():
        (tmp_path / "release" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "release" / name).write_text(text)
    return App.model_validate(
        {
            "apiVersion": "socle/v1",
            "kind": "App",
            "metadata": {"name": "reader"},
            "spec": {
                "replicas": 2,
                "run": {"command": ["app"]},
                "templates": templates,
                "update": {"progressDeadlineSeconds": "20s"},
            },
        }
    )


def peer(n: int) -> ServiceInstance:
    return ServiceInstance(
        service="peer", environment="default", id=f"peer-{n}", address="10.0.0.1",
        ports={"http": 8000 + n},
    )  # fmt: skip


async def wait(check: object, what: str) -> None:
    for _ in range(400):
        if callable(check) and check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def parts(tmp_path: Path) -> tuple[ServiceRegistry, ConsulKV, Runtime, TemplateService]:
    registry = ServiceRegistry()
    kv = ConsulKV(MemoryStore(MemoryData()))
    runtime = Runtime("reader", 2)
    service = TemplateService(
        tmp_path / "templates", registry, kv, runtime, tmpfs=False, debounce=0.01
    )
    return registry, kv, runtime, service


async def test_restart_one_at_a_time_and_signal_only_for_changed_files(
    tmp_path: Path, parts: tuple[ServiceRegistry, ConsulKV, Runtime, TemplateService]
) -> None:
    registry, kv, runtime, service = parts
    registry.upsert(peer(1))
    await kv.put("cfg/mode", b"slow")
    app = make_app(
        tmp_path,
        [
            {"source": "peers.tmpl", "destination": "peers.conf"},
            {"source": "mode.tmpl", "destination": "etc/mode.conf", "onChange": "signal"},
        ],
        {
            "peers.tmpl": "{% for p in service('peer') %}{{ p.url }}\n{% endfor %}",
            "mode.tmpl": "{{ key('cfg/mode') }}",
        },
    )
    await service.start()
    try:
        mounts, env = await service.prepare(app, "default", tmp_path / "release", TEMPLATE)
        assert env == {ENV_NAME: MOUNT_POINT}
        [mount] = mounts
        assert mount.target == MOUNT_POINT and mount.read_only
        assert (mount.source / "peers.conf").read_text() == "http://10.0.0.1:8001\n"
        assert (mount.source / "etc/mode.conf").read_text() == "slow"
        assert os.stat(mount.source / "peers.conf").st_mode & 0o077 == 0  # owner-only here
        again, _ = await service.prepare(app, "default", tmp_path / "release", TEMPLATE)
        assert again == mounts  # one render per release template

        # A KV change: only mode.conf changed, which says signal.
        await kv.put("cfg/mode", b"fast")
        await wait(lambda: len(runtime.events) == 2, "both instances signalled")
        assert sorted(runtime.events) == [
            ("SIGHUP", f"reader-{TEMPLATE[:10]}-0"),
            ("SIGHUP", f"reader-{TEMPLATE[:10]}-1"),
        ]
        assert (mount.source / "etc/mode.conf").read_text() == "fast"

        # A peer joins: peers.conf changed (restart), one instance at a time.
        runtime.events.clear()
        registry.upsert(peer(2))
        await wait(
            lambda: len(runtime.events) == 2 and all(s.ready for s in runtime.instances()),
            "a rolling restart",
        )
        assert [e[0] for e in runtime.events] == ["restart", "restart"]
        assert (mount.source / "peers.conf").read_text().split() == [
            "http://10.0.0.1:8001",
            "http://10.0.0.1:8002",
        ]

        # An unrelated registry change that renders the same bytes does nothing.
        runtime.events.clear()
        registry.upsert(dataclasses.replace(peer(2), labels={"x": "y"}))
        await asyncio.sleep(0.3)
        assert runtime.events == []

        # A failing render keeps the last good files and says why.
        await kv.delete("cfg/mode")
        await wait(lambda: service.problem("reader") is not None, "the error")
        assert "KV key 'cfg/mode' does not exist" in (service.problem("reader") or "")
        assert "last good files kept" in (service.problem("reader") or "")
        assert (mount.source / "etc/mode.conf").read_text() == "fast"
        assert runtime.events == []
        await kv.put("cfg/mode", b"fast")
        await wait(lambda: service.problem("reader") is None, "the error cleared")
        assert runtime.events == []  # same bytes as before the error: nothing to do

        service.forget("reader")
        await asyncio.sleep(0.2)
        assert (mount.source / "peers.conf").exists(), "instances still read their files"
        runtime.statuses.clear()
        await wait(lambda: not (tmp_path / "templates" / "reader").exists(), "files removed")
    finally:
        await service.stop()


async def test_a_first_render_that_fails_refuses_the_instance(
    tmp_path: Path, parts: tuple[ServiceRegistry, ConsulKV, Runtime, TemplateService]
) -> None:
    _, _, _, service = parts
    outside = tmp_path / "secret.txt"
    outside.write_text("host secret")
    app = make_app(
        tmp_path,
        [
            {"source": "a.tmpl", "destination": "a"},
            {"source": "link.tmpl", "destination": "b"},
        ],
        {"a.tmpl": "{{ ''.__class__ }}"},
    )
    (tmp_path / "release" / "link.tmpl").symlink_to(outside)
    await service.start()
    try:
        with pytest.raises(TemplateError, match=r"a.tmpl:1: unsafe"):
            await service.prepare(app, "default", tmp_path / "release", TEMPLATE)
        assert "no instance of this release starts" in (service.problem("reader") or "")
        (tmp_path / "release" / "a.tmpl").write_text("ok")
        with pytest.raises(TemplateError, match="resolves outside the app's folder"):
            await service.prepare(app, "default", tmp_path / "release", TEMPLATE)
        (tmp_path / "release" / "link.tmpl").unlink()
        with pytest.raises(TemplateError, match="no such file"):
            await service.prepare(app, "default", tmp_path / "release", TEMPLATE)
    finally:
        await service.stop()


async def test_secret_without_a_reader_is_an_error(
    tmp_path: Path, parts: tuple[ServiceRegistry, ConsulKV, Runtime, TemplateService]
) -> None:
    _, _, _, service = parts
    app = make_app(
        tmp_path,
        [{"source": "s.tmpl", "destination": "s"}],
        {"s.tmpl": "{{ secret('../x#k') }}"},
    )
    await service.start()
    try:
        with pytest.raises(TemplateError, match="invalid secret reference"):
            await service.prepare(app, "default", tmp_path / "release", TEMPLATE)
    finally:
        await service.stop()


async def test_a_new_control_plane_tells_instances_whose_files_changed_meanwhile(
    tmp_path: Path, parts: tuple[ServiceRegistry, ConsulKV, Runtime, TemplateService]
) -> None:
    """Instances outlive the control plane: files rendered by the last one are compared
    with the first render of the next, and the instances are signalled if they differ."""
    registry, kv, runtime, service = parts
    await kv.put("cfg/mode", b"slow")
    app = make_app(
        tmp_path,
        [{"source": "mode.tmpl", "destination": "mode.conf", "onChange": "signal"}],
        {"mode.tmpl": "{{ key('cfg/mode') }}"},
    )
    await service.start()
    try:
        await service.prepare(app, "default", tmp_path / "release", TEMPLATE)
    finally:
        await service.stop()
    await kv.put("cfg/mode", b"fast")  # while no control plane runs
    again = TemplateService(tmp_path / "templates", registry, kv, runtime, tmpfs=False)
    await again.start()
    try:
        [mount], _ = await again.prepare(app, "default", tmp_path / "release", TEMPLATE)
        assert (mount.source / "mode.conf").read_text() == "fast"
        await wait(lambda: len(runtime.events) == 2, "both instances signalled")
        assert {e[0] for e in runtime.events} == {"SIGHUP"}
        runtime.events.clear()
        await again.prepare(app, "default", tmp_path / "release", TEMPLATE)
        await asyncio.sleep(0.2)
        assert runtime.events == []
    finally:
        await again.stop()
