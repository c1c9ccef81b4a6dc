"""What isolation this host allows, decided once, and said plainly.

Three outcomes, best first (``auto`` takes the best that works, ``sandbox`` refuses less
than the first, ``none`` asks for the last):

``sandbox``   root with bubblewrap: the full profile of :mod:`.sandbox` (own uid per app,
              minimal filesystem view, read-only release, seccomp, no capabilities, no new
              privileges, own pid/ipc/uts namespaces) plus cgroup v1 limits.
``userns``    not root, but the kernel allows unprivileged user namespaces: the same
              filesystem view, filter and namespaces, but every app keeps the control
              plane's uid (no uid per app, so apps are not kept apart by file permissions)
              and limits are rlimits only (no cgroups without root).
``rlimits``   plain processes in their own session with RLIMIT_AS: nothing of the above.

:attr:`Isolation.protections` lists "the ten container practices" (plus read-only kernel
tunables and the network namespace) with whether each holds here; :attr:`Isolation.warning`
names what does not; :attr:`Isolation.features` says how each mechanism really is (network,
namespaces, cgroups, user, seccomp, landlock).

The network is orthogonal to the mode: as root, with the Socle bridge (see :mod:`.netns`),
every instance gets its own network namespace, whatever the mode; otherwise apps share the
host's network and listen on its 127.0.0.1. Either way "minimal ports" is not enforced: in
its own namespace an app's undeclared ports are still reachable from the host and from peers
no NetworkPolicy restricts (only nothing off the machine reaches them); sharing the host's
network, from anything on the host.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from socle.errors import RuntimeDriverError
from socle.runtime.driver import Isolation, Mount
from socle.runtime.local import cgroups, seccomp
from socle.runtime.local.cgroups import Cgroups
from socle.runtime.local.sandbox import SCRATCH, SETPRIV, Profile, bwrap_argv, snapshot_etc
from socle.runtime.local.uids import UidAllocator

MODES = ("auto", "sandbox", "none")
NAMESPACES = "namespaces(pid,mount,ipc,uts)"
PLAIN_DETAIL = "plain processes in their own session; memory capped by RLIMIT_AS"
PLAIN_WARNING = (
    "instances are not sandboxed: they run as plain processes of the control plane's user, "
    "see the host's processes and files, and their memory is capped only by RLIMIT_AS "
    "(virtual memory, not resident memory); cpu limits are not enforced"
)
PROTECTIONS = (
    "read_only_code",
    "dedicated_volumes",
    "network_namespace",
    "minimal_ports",
    "non_root",
    "syscall_filter",
    "resource_limits",
    "no_new_privileges",
    "capabilities_dropped",
    "private_tmp",
    "hidden_host_secrets",
    "read_only_kernel_tunables",
)
"""The ten container practices of the field, plus kernel tunables and the network
namespace, in the order shown."""
SHARED_NETWORK = "apps share the host network: ports beyond the declared ones are not blocked"
OWN_NETWORK = (
    "each instance has its own network namespace (nothing off this machine reaches it, and "
    "it cannot reach the host's loopback), but ports beyond the declared ones stay reachable "
    "from the host and from peers that no NetworkPolicy restricts to listed ports"
)
LANDLOCK = "not used (the filesystem view comes from bubblewrap's mount namespace)"
PROBE_UID = 65534
"""``nobody``: the uid the start-up probe drops to (no app's uid is spent on it)."""


@dataclass(frozen=True)
class HostIsolation:
    """The driver's decision, made once at ``start()``."""

    info: Isolation
    sandbox: bool
    bwrap: str | None = None
    cgroups: Cgroups = field(default_factory=lambda: Cgroups({}))
    rootless: bool = False
    """Sandboxed in an unprivileged user namespace: apps keep the control plane's uid."""
    seccomp: Path | None = None
    """The compiled syscall filter, opened anew for every sandbox (bubblewrap reads it)."""
    uids: UidAllocator | None = None
    etc: Path | None = None
    """The filtered /etc every sandbox binds (see :func:`.sandbox.snapshot_etc`)."""

    @property
    def instance_detail(self) -> str:
        return self.info.detail

    def uid_of(self, app: str) -> int | None:
        """The app's own uid (blocking: may write the ledger); None when not root."""
        if not self.sandbox or self.rootless or self.uids is None:
            return None
        return self.uids.uid(app)

    def argv(self, profile: Profile) -> list[str]:
        assert self.bwrap is not None
        if profile.etc is None and self.etc is not None:
            profile = dataclasses.replace(profile, etc=self.etc)
        return bwrap_argv(self.bwrap, profile)


def protections(
    *, sandbox: bool, per_app_uid: bool, limits: bool, rlimits: bool, netns: bool = False
) -> dict[str, bool]:
    """Which practices hold, as data for ``socle status`` and ``/api/v1/status``."""
    return {
        "read_only_code": sandbox,
        "dedicated_volumes": sandbox,
        "network_namespace": netns,
        "minimal_ports": False,
        "non_root": per_app_uid or (sandbox and os.geteuid() != 0),
        "syscall_filter": sandbox,
        "resource_limits": limits or rlimits,
        "no_new_privileges": sandbox,
        "capabilities_dropped": sandbox,
        "private_tmp": sandbox,
        "hidden_host_secrets": sandbox,
        "read_only_kernel_tunables": sandbox,
    }


def _not_enforced(prot: dict[str, bool], extra: list[str]) -> str:
    missing = [name for name in PROTECTIONS if not prot[name]]
    text = "not enforced on this host: " + ", ".join(missing) if missing else ""
    notes = [n for n in [text, *extra] if n]
    return "; ".join(notes)


def network_note(netns: bool) -> str:
    return OWN_NETWORK if netns else SHARED_NETWORK


def features(
    *,
    netns: bool,
    namespaces: bool,
    cgroup_controllers: list[str],
    user: str,
    seccomp_filter: bool,
) -> dict[str, str]:
    """Each mechanism as it really is, in words (:attr:`Isolation.features`)."""
    return {
        "network": "own network namespace per instance, on the Socle bridge"
        if netns
        else "shared with the host (apps listen on its 127.0.0.1)",
        "namespaces": "pid, mount, ipc, uts (bubblewrap)" if namespaces else "none",
        "cgroups": f"v1: {', '.join(cgroup_controllers)} limited per instance"
        if cgroup_controllers
        else "none (memory capped by RLIMIT_AS only; cpu and pids not limited)",
        "user": user,
        "seccomp": "syscall deny list (escape-prone calls fail with EPERM)"
        if seccomp_filter
        else "none",
        "landlock": LANDLOCK if namespaces else "not used",
    }


def plain(reason: str | None = None, *, netns: bool = False) -> HostIsolation:
    warning = PLAIN_WARNING if reason is None else f"{reason}: {PLAIN_WARNING}"
    prot = protections(sandbox=False, per_app_uid=False, limits=False, rlimits=True, netns=netns)
    warning = f"{warning}; {_not_enforced(prot, [network_note(netns)])}"
    said = features(
        netns=netns,
        namespaces=False,
        cgroup_controllers=[],
        user=f"the control plane's own user (uid {os.geteuid()})",
        seccomp_filter=False,
    )
    return HostIsolation(Isolation("rlimits", PLAIN_DETAIL, warning, prot, said), False)


def _probe(bwrap: str, filter_path: Path, etc: Path, *, rootless: bool) -> str | None:
    """Run a trivial sandbox with the full profile once; None if it works, else why not."""
    true = shutil.which("true") or "/bin/true"
    fd = os.open(filter_path, os.O_RDONLY)
    try:
        profile = Profile(
            command=[true],
            workdir=Path("/usr"),
            release_root=Path("/usr"),
            hostname="probe",
            uid=None if rootless else PROBE_UID,
            seccomp_fd=fd,
            die_with_parent=True,
            etc=etc,
        )
        argv = bwrap_argv(bwrap, profile)
        done = subprocess.run(argv, capture_output=True, timeout=10, check=False, pass_fds=(fd,))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    finally:
        os.close(fd)
    if done.returncode != 0:
        return done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"
    return None


def detect(
    requested: str,
    *,
    cgroup_parent: str = "socle",
    run_dir: Path | None = None,
    netns: bool = False,
) -> HostIsolation:
    """Decide the isolation mode; blocking (runs bubblewrap once), call from a thread.

    ``run_dir`` holds the compiled syscall filter and the uid ledger; without it (old
    callers, tests of the plain mode) no sandbox is attempted. ``netns``: the driver puts
    every instance in its own network namespace (it has a bridge network), reported as is.
    """
    if requested not in MODES:
        raise RuntimeDriverError(
            f"unknown isolation mode {requested!r}", hint=f"use one of {', '.join(MODES)}"
        )
    if requested == "none":
        return plain("isolation='none' was asked for", netns=netns)
    problem: str | None = None
    bwrap = shutil.which("bwrap")
    root = os.geteuid() == 0
    filter_path: Path | None = None
    etc: Path | None = None
    if run_dir is None:
        problem = "no run folder to keep the syscall filter in"
    elif bwrap is None:
        problem = "bubblewrap (bwrap) is not installed"
    elif root and not os.access(SETPRIV, os.X_OK):
        problem = f"{SETPRIV} (util-linux) is missing: cannot drop to the app's uid"
    else:
        try:
            filter_path = seccomp.write_filter(run_dir)
            etc = snapshot_etc(run_dir / "etc")
        except (RuntimeDriverError, OSError) as exc:
            problem = f"cannot prepare the sandbox: {exc}"
        else:
            failure = _probe(bwrap, filter_path, etc, rootless=not root)
            if failure is not None:
                what = "namespaces" if root else "unprivileged user namespaces"
                problem = f"bubblewrap cannot create {what} here: {failure}"
    if problem is not None or bwrap is None or filter_path is None or run_dir is None:
        if requested == "sandbox":
            raise RuntimeDriverError(
                f"sandbox isolation is not available: {problem}",
                hint="run as root with bubblewrap and util-linux installed "
                "(apt-get install bubblewrap util-linux), or use isolation='auto' or 'none'",
            )
        return plain(f"no sandbox because {problem}", netns=netns)
    if not root:
        # No bridge network without root: the shared network is the only truth here.
        prot = protections(sandbox=True, per_app_uid=False, limits=False, rlimits=True)
        warning = _not_enforced(
            prot,
            [
                "the control plane is not root: apps run in an unprivileged user namespace "
                "with the control plane's own uid (no uid per app, so apps are not kept apart "
                "by file permissions) and only RLIMIT_AS limits memory; cpu and pids are "
                "not limited",
                SHARED_NETWORK,
            ],
        )
        detail = f"{NAMESPACES}+userns+seccomp, shared uid"
        userns = features(
            netns=False,
            namespaces=True,
            cgroup_controllers=[],
            user=f"user namespace mapping the control plane's own uid ({os.geteuid()}) "
            "for every app",
            seccomp_filter=True,
        )
        return HostIsolation(
            Isolation("userns", detail, warning, prot, userns),
            True,
            bwrap,
            rootless=True,
            seccomp=filter_path,
            etc=etc,
        )
    groups = cgroups.detect(cgroup_parent)
    extra: list[str] = []
    if groups.parents:
        detail = f"{NAMESPACES}+seccomp+uid per app+{cgroups.describe(groups)}"
        mode = "namespaces+cgroups"
        missing = [c for c in cgroups.CONTROLLERS if c not in groups.parents]
        if missing:
            extra.append(f"cgroup controllers not available: {', '.join(missing)}; not limited")
    else:
        detail = f"{NAMESPACES}+seccomp+uid per app"
        mode = "namespaces"
        extra.append("no usable cgroup v1 controllers: memory, cpu and pids are not limited")
    uids = UidAllocator(run_dir)
    _ = uids.start  # claim the home's uid block now: a clash stops the start, loudly
    prot = protections(
        sandbox=True, per_app_uid=True, limits=bool(groups.parents), rlimits=False, netns=netns
    )
    extra.append(network_note(netns))
    if netns:
        detail += "+netns"
    said = _not_enforced(prot, extra) or None
    mechanisms = features(
        netns=netns,
        namespaces=True,
        cgroup_controllers=groups.controllers,
        user="own unprivileged uid per app (no capabilities, no new privileges)",
        seccomp_filter=True,
    )
    return HostIsolation(
        Isolation(mode, detail, said, prot, mechanisms),
        True,
        bwrap,
        groups,
        seccomp=filter_path,
        uids=uids,
        etc=etc,
    )


def scratch_dir(run_dir: Path, instance_id: str) -> Path:
    return run_dir / "scratch" / instance_id


SCRATCH_SIZE = 256 * 1024 * 1024
"""Size of an instance's scratch space (and of its ``/tmp``) when its spec sets no memory."""


def scratch_size(memory: int | None) -> int:
    """Bytes an instance may keep in scratch, and again in ``/tmp``: its memory limit (both
    are tmpfs, whose pages count against the instance's memory cgroup anyway), else
    :data:`SCRATCH_SIZE`. Never the host's disk: a full disk stops the control plane."""
    return memory if memory else SCRATCH_SIZE


def prepare_instance(
    run_dir: Path,
    instance_id: str,
    mounts: list[Mount],
    uid: int | None,
    size: int = SCRATCH_SIZE,
) -> Path:
    """The instance's scratch folder (made, owned by ``uid``, 0700) and its writable mounts'
    top folders handed to ``uid`` (blocking). Owner-only: ``run_dir`` itself stays hidden,
    only this one folder is bound into the sandbox.

    As root the folder is a tmpfs of ``size`` bytes (nosuid, nodev), mounted once and kept
    across restarts of the instance (its exec checks share it): a plain folder would let a
    hostile app fill the disk that holds the state database."""
    scratch = scratch_dir(run_dir, instance_id)
    scratch.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    scratch.mkdir(exist_ok=True, mode=0o700)
    if uid is not None:
        if not os.path.ismount(scratch):
            options = f"size={size},mode=0700,uid={uid},gid={uid},nosuid,nodev"
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", options, "socle-scratch", str(scratch)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeDriverError(
                    f"instance {instance_id}: cannot mount its scratch space at {scratch}: "
                    f"{done.stderr.strip()[-300:]}",
                    hint="the control plane needs root to mount a tmpfs",
                )
        os.chown(scratch, uid, uid)
        for mount in mounts:
            if not mount.read_only:
                mount.source.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.chown(mount.source, uid, uid)
    return scratch


def remove_scratch(run_dir: Path, instance_id: str) -> None:
    """Unmount (lazily: a check may still be leaving it) and delete the scratch space."""
    scratch = scratch_dir(run_dir, instance_id)
    if os.path.ismount(scratch):
        subprocess.run(["umount", "-l", str(scratch)], capture_output=True, timeout=60, check=False)
    shutil.rmtree(scratch, ignore_errors=True)


def check_mounts(instance_id: str, mounts: list[Mount]) -> None:
    """Refuse a mount that would cover the sandbox's own folders or escape its root."""
    for mount in mounts:
        target = mount.target
        normal = os.path.normpath(target)
        if not target.startswith("/") or normal != target.rstrip("/") or normal == "/":
            raise RuntimeDriverError(
                f"instance {instance_id}: mount target {target!r} must be a normalized "
                "absolute path other than /"
            )
        reserved = ("/proc", "/dev", "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", SCRATCH)
        if any(normal == r or normal.startswith(r + "/") for r in reserved):
            raise RuntimeDriverError(
                f"instance {instance_id}: mount target {target!r} is a system folder",
                hint="mount volumes under a folder of their own, e.g. /data",
            )
        if not mount.source.is_absolute():
            raise RuntimeDriverError(
                f"instance {instance_id}: mount source {mount.source} is not absolute"
            )
        outer = next(
            (m.target for m in mounts if normal.startswith(os.path.normpath(m.target) + "/")),
            None,
        )
        if outer is not None:
            # bubblewrap (root) makes the inner mount point inside the outer volume, whose
            # symlinks the app writes: `sub -> ../../oldroot/etc` made it create folders
            # anywhere on the host.
            raise RuntimeDriverError(
                f"instance {instance_id}: mount target {target!r} lies inside the volume "
                f"mounted at {outer!r}",
                hint="mount each volume at a folder of its own, side by side (/data, /cache)",
            )
