"""Instance records: what the next control plane needs to re-adopt an instance.

One JSON file per instance, ``run_dir/instances/<id>.json``, written atomically (tmp +
rename) with mode 0600. It holds the spec *minus* ``secret_env`` (only the secret names, so
that a new control plane knows it must wait for ``run()`` to hand the values back before it
can restart the instance), the shim/child/app processes as (pid, start time), the ports and
cgroups, and the restart counters. The shim writes the child's exit status next to it in
``<id>.exit``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from socle.errors import RuntimeDriverError
from socle.fs import private_dir, write_private
from socle.model.app import HealthSpec
from socle.runtime.driver import InstanceId, InstanceSpec, Mount, ReleaseId
from socle.runtime.local.procs import ProcRef

log = logging.getLogger(__name__)

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
"""Instance ids become file and cgroup names: no slashes, no leading dot."""

RECORD_VERSION = 1


def check_id(instance_id: str) -> InstanceId:
    if not ID_RE.fullmatch(instance_id):  # match() would let a trailing newline through
        raise RuntimeDriverError(
            f"invalid instance id {instance_id!r}",
            hint="use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return InstanceId(instance_id)


def spec_to_json(spec: InstanceSpec) -> dict[str, Any]:
    """The spec without secret values (never written anywhere)."""
    return {
        "id": spec.id,
        "app": spec.app,
        "release": spec.release,
        "ordinal": spec.ordinal,
        "command": list(spec.command),
        "workdir": str(spec.workdir),
        "env": dict(spec.env),
        "secret_keys": sorted(spec.secret_env),
        "ports": list(spec.ports),
        "health": spec.health.model_dump(mode="python") if spec.health else None,
        "restart": spec.restart,
        "stop_grace": spec.stop_grace,
        "memory": spec.memory,
        "cpu": spec.cpu,
        "release_root": str(spec.release_root) if spec.release_root else None,
        "mounts": [
            {"source": str(m.source), "target": m.target, "read_only": m.read_only}
            for m in spec.mounts
        ],
        "environment": spec.environment,
        "labels": dict(spec.labels),
    }


def spec_from_json(data: dict[str, Any]) -> InstanceSpec:
    """Back to a spec; ``secret_env`` is empty and must come again from ``run()``."""
    health = data.get("health")
    root = data.get("release_root")
    return InstanceSpec(
        id=InstanceId(data["id"]),
        app=data["app"],
        release=ReleaseId(data["release"]),
        ordinal=int(data["ordinal"]),
        command=list(data["command"]),
        workdir=Path(data["workdir"]),
        env=dict(data.get("env") or {}),
        ports=list(data.get("ports") or []),
        health=HealthSpec.model_validate(health) if health else None,
        restart=data.get("restart", "always"),
        stop_grace=float(data.get("stop_grace", 10.0)),
        memory=data.get("memory"),
        cpu=data.get("cpu"),
        release_root=Path(root) if root else None,
        mounts=[
            Mount(Path(m["source"]), str(m["target"]), bool(m.get("read_only", False)))
            for m in data.get("mounts") or []
        ],
        environment=str(data.get("environment") or "default"),
        labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
    )


@dataclass
class InstanceRecord:
    """Everything about one instance that must survive the control plane."""

    spec: dict[str, Any]
    ports: dict[str, int]
    isolation: str
    sandbox: bool
    cgroups: list[str] = field(default_factory=list)
    shim: ProcRef | None = None
    child: ProcRef | None = None
    app: ProcRef | None = None
    restarts: int = 0
    streak: int = 0
    started_at: float | None = None
    last_exit_code: int | None = None
    uid: int | None = None
    """The app's host uid this instance runs as (sandboxed as root), else None."""
    scratch: str | None = None
    """Host folder of the instance's scratch space (``HOME`` inside the sandbox)."""
    address: str | None = None
    """The instance's address on the Socle bridge (own network namespace), else None."""
    netns: str | None = None
    """The instance's network namespace (``ip netns`` name), else None."""

    @property
    def scratch_path(self) -> Path | None:
        return Path(self.scratch) if self.scratch else None

    @property
    def id(self) -> InstanceId:
        return InstanceId(self.spec["id"])

    @property
    def secret_keys(self) -> list[str]:
        return list(self.spec.get("secret_keys") or [])

    def to_json(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "spec": self.spec,
            "ports": self.ports,
            "isolation": self.isolation,
            "sandbox": self.sandbox,
            "cgroups": self.cgroups,
            "shim": self.shim.to_json() if self.shim else None,
            "child": self.child.to_json() if self.child else None,
            "app": self.app.to_json() if self.app else None,
            "restarts": self.restarts,
            "streak": self.streak,
            "started_at": self.started_at,
            "last_exit_code": self.last_exit_code,
            "uid": self.uid,
            "scratch": self.scratch,
            "address": self.address,
            "netns": self.netns,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InstanceRecord:
        if data.get("version") != RECORD_VERSION:
            raise ValueError(f"unknown record version {data.get('version')!r}")
        check_id(data["spec"]["id"])
        return cls(
            spec=dict(data["spec"]),
            ports={str(k): int(v) for k, v in data["ports"].items()},
            isolation=str(data["isolation"]),
            sandbox=bool(data["sandbox"]),
            cgroups=[str(c) for c in data.get("cgroups") or []],
            shim=ProcRef.from_json(data.get("shim")),
            child=ProcRef.from_json(data.get("child")),
            app=ProcRef.from_json(data.get("app")),
            restarts=int(data.get("restarts", 0)),
            streak=int(data.get("streak", 0)),
            started_at=data.get("started_at"),
            last_exit_code=data.get("last_exit_code"),
            uid=data.get("uid"),
            scratch=data.get("scratch"),
            address=data.get("address"),
            netns=data.get("netns"),
        )


@dataclass(frozen=True)
class ExitStatus:
    """What the shim wrote when the child went away."""

    code: int
    signal: int | None
    time: float
    error: str | None


class RecordStore:
    """The ``run_dir/instances`` folder."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / "instances"

    def ensure(self) -> None:
        private_dir(self.dir)

    def record_path(self, instance_id: str) -> Path:
        return self.dir / f"{instance_id}.json"

    def status_path(self, instance_id: str) -> Path:
        return self.dir / f"{instance_id}.exit"

    def write(self, record: InstanceRecord) -> None:
        """Atomic and private: readers see the old or the new record, never half of one."""
        data = json.dumps(record.to_json(), indent=1, sort_keys=True)
        write_private(self.record_path(record.id), data)

    def load_all(self) -> list[InstanceRecord]:
        """Every readable record; a broken one is logged and left for a human to look at."""
        out: list[InstanceRecord] = []
        if not self.dir.is_dir():
            return out
        for path in sorted(self.dir.glob("*.json")):
            try:
                out.append(InstanceRecord.from_json(json.loads(path.read_text())))
            except (OSError, ValueError, KeyError, TypeError, RuntimeDriverError) as exc:
                log.warning("ignoring unreadable instance record %s: %s", path, exc)
        return out

    def read_status(self, instance_id: str) -> ExitStatus | None:
        try:
            data = json.loads(self.status_path(instance_id).read_text())
            return ExitStatus(
                code=int(data["code"]),
                signal=data.get("signal"),
                time=float(data.get("t", 0.0)),
                error=data.get("error"),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def clear_status(self, instance_id: str) -> None:
        self.status_path(instance_id).unlink(missing_ok=True)

    def delete(self, instance_id: str) -> None:
        self.record_path(instance_id).unlink(missing_ok=True)
        self.clear_status(instance_id)
