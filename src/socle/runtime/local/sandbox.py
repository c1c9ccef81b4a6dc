"""The sandbox profile: what a hostile app sees, and the bubblewrap command line for it.

One profile for everything an app influences: its instances, its exec health checks and its
build steps (:class:`Profile` says which, through ``writable_release``). The filesystem view
is built from an empty root instead of hiding things in the host's:

* system folders read-only: ``/usr`` (``/usr/local`` included), ``/bin``, ``/sbin``,
  ``/lib*`` (kept as symlinks where the host has merged them into ``/usr``);
* an allow-listed ``/etc`` (:data:`ETC_ALLOWED`): name service, resolver, TLS roots, time
  zone, loader cache. ``/etc/shadow``, ``/etc/gshadow``, sudoers, ssh host keys and every
  file nobody listed stay out;
* the interpreter a program needs, when it lives outside the system folders (a pyenv under
  ``/root``, a venv): only its own prefix, read-only, found from the program's path and a
  venv's ``pyvenv.cfg`` (:func:`program_roots`); nothing else of ``/root`` or ``/home``;
* the release read-only (read-write only for a build step, which writes into it);
* the app's volumes (:class:`socle.runtime.driver.Mount`) at their targets;
* a private ``/tmp`` (tmpfs), a per-instance scratch folder at :data:`SCRATCH` which is also
  ``HOME``, a minimal ``/dev``, the namespace's own ``/proc`` with ``/proc/sys`` read-only,
  no ``/sys``.

``SOCLE_HOME``, the operator's repository, other apps' releases and volumes are simply not
there. Then: own pid/ipc/uts (/cgroup) namespaces, the host network (apps listen on
127.0.0.1 where ingress and checks reach them), the seccomp filter (:mod:`.seccomp`), and the
app's own uid/gid with no supplementary groups, no capabilities and no new privileges.

Dropping to the app's uid is done by ``setpriv`` (util-linux) *inside* the sandbox: bubblewrap
runs as root (so it can bind folders the app may not traverse, like a 0700 home), keeps only
SETUID/SETGID/SETPCAP for that one exec, and ``setpriv`` changes ids, clears groups, empties
the bounding and inheritable sets and sets no-new-privs before executing the app. The filter
is already in place by then. Without root, bubblewrap makes an unprivileged user namespace
instead (``--unshare-user``) and the app keeps the control plane's uid (see
:mod:`.isolation` for what that leaves unenforced).
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from socle.runtime.driver import Mount

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_ALLOWED = (
    "passwd",
    "group",
    "hosts",
    "host.conf",
    "hostname",
    "resolv.conf",
    "nsswitch.conf",
    "gai.conf",
    "protocols",
    "services",
    "networks",
    "localtime",
    "timezone",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates.conf",
    "ca-certificates",
    "pki/tls/certs",
    "alternatives",
    "mime.types",
    "os-release",
    "debian_version",
    "lsb-release",
    "magic",
    "mailcap",
    "pip.conf",
    "python3",
    "xdg",
)
"""What of /etc a service may read; anything else (shadow, sudoers, ssh keys) is absent."""
SCRATCH = "/scratch"
"""Where the instance's scratch folder appears; also its ``HOME``."""
TMP = "/tmp"  # noqa: S108 - the sandbox's own tmpfs, never the host's
SETPRIV = "/usr/bin/setpriv"


@dataclass(frozen=True)
class Profile:
    """Everything that differs between two sandboxes of the same host."""

    command: list[str]
    """The program (absolute, as resolved on the host) and its arguments."""
    workdir: Path
    release_root: Path
    hostname: str
    uid: int | None
    """The app's host uid (= gid); None without root: a user namespace keeps our uid."""
    seccomp_fd: int | str | None
    """Descriptor of the compiled filter (or the shim's placeholder for it)."""
    mounts: list[Mount] = field(default_factory=list)
    scratch: Path | None = None
    """Host folder shown at :data:`SCRATCH` (writable), or None for a throwaway tmpfs."""
    writable_release: bool = False
    """Only for build steps: the release being built is where their output goes."""
    die_with_parent: bool = False
    """Checks and build steps die with whoever runs them; apps outlive the control plane."""
    extra_ro: tuple[Path, ...] = ()
    """More host folders to show read-only (e.g. the interpreter of a build step)."""
    etc: Path | None = None
    """A filtered copy of /etc (:func:`snapshot_etc`) bound as one folder; None binds the
    allowed entries one by one (about 25 more mounts per sandbox)."""
    tmp_size: int | None = None
    """Bytes the private ``/tmp`` (and a throwaway scratch) may hold; None: the kernel's
    default, half of the host's memory."""


def _read_head(path: Path, limit: int) -> bytes | None:
    """Up to ``limit`` bytes of a regular file, else None. The release is written by the
    app's build steps: a FIFO in place of ``pyvenv.cfg`` would block a plain ``open()``
    forever (and with it a worker thread of the control plane), a huge file would be read
    whole into memory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def _venv_home(venv: Path) -> Path | None:
    """The ``home`` of a venv's ``pyvenv.cfg`` (the base interpreter's bin folder)."""
    head = _read_head(venv / "pyvenv.cfg", 64 * 1024)
    if head is None:
        return None
    for line in head.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "home" and value.strip().startswith("/"):
            return Path(value.strip())
    return None


def _shebang(path: Path) -> Path | None:
    """The absolute interpreter a ``#!`` script names (``/usr/bin/env`` is a system
    program: what it finds on PATH is the PATH's business), else None."""
    head = _read_head(path, 256)
    if head is None or not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    if not words or not words[0].startswith(b"/"):
        return None
    return Path(os.fsdecode(words[0]))


SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
"""The search path inside a sandbox when the host's has no folder the sandbox shows."""


def visible_system(path: str) -> bool:
    """Whether ``path`` lies in the system folders every sandbox shows read-only."""
    return any(path == d or path.startswith(d + "/") for d in SYSTEM_DIRS)


def _system(path: Path) -> bool:
    return visible_system(str(path))


def _prefix_of(program: Path) -> Path:
    """``/x/bin/python`` -> ``/x``; a program not in a ``bin`` folder -> its own folder."""
    return program.parent.parent if program.parent.name == "bin" else program.parent


def _public(folder: Path) -> bool:
    """Whether any user of the host may already read ``folder``: it and every folder above
    it traversable by others (``o+x``), itself listable by others (``o+r``)."""
    try:
        if os.stat(folder).st_mode & 0o005 != 0o005:
            return False
        return all(os.stat(parent).st_mode & 0o001 for parent in folder.parents)
    except OSError:
        return False


def _interpreter_prefixes() -> list[Path]:
    """The control plane's own Python (a pyenv under /root, a venv): what the operator
    installed and runs, so what venvs made by build steps usually point at."""
    found: list[Path] = []
    for prefix in (sys.base_prefix, sys.prefix):
        for path in (Path(prefix), Path(os.path.realpath(prefix))):
            if path not in found and path != Path("/"):
                found.append(path)
    return found


def program_roots(program: str, *, hidden_ok: Iterable[Path] = ()) -> list[Path]:
    """Host folders to show read-only so that ``program`` can run: none for a system
    program, else its prefix (a venv and its base interpreter's prefix, a pyenv version);
    for a ``#!`` script, the same for its interpreter. What a script runs by other means
    (``exec /opt/x/bin/tool``) is not guessed: it must be on a system path or in a volume.

    A venv's ``bin/python`` is a symlink to the base interpreter, and ``pyvenv.cfg`` names
    where that is: both are needed. Folders inside ``hidden_ok`` (the release, already
    shown) are not repeated.

    What a program inside the release leads to (its symlinks, its ``#!`` line, a
    ``pyvenv.cfg`` next to it) was written by the app's build steps, so by the app: such a
    folder is shown only if it is the control plane's own interpreter (or inside it), or if
    every user of the host may read it anyway (:func:`_public`). Otherwise a build step could
    point ``pyvenv.cfg`` at another app's release, ``SOCLE_HOME`` or the operator's
    repository, and have it bound into its sandbox.
    """
    path = Path(program)
    if not path.is_absolute():
        return []
    roots: list[Path] = []
    hidden = list(hidden_ok)
    seen = set(hidden)
    interpreters = _interpreter_prefixes()

    def inside(folder: Path, tops: Iterable[Path]) -> bool:
        return any(folder == top or top in folder.parents for top in tops)

    def add(folder: Path, trusted: bool) -> None:
        if _system(folder) or folder == Path("/") or folder in seen:
            return
        if any(parent in seen for parent in folder.parents):
            return
        if not trusted and not inside(folder, interpreters) and not _public(folder):
            return
        seen.add(folder)
        roots.append(folder)

    # The program itself is named by the manifest (its author's choice) unless it lies in
    # the release; everything found through the release's own files is the app's.
    trusted = not inside(path, hidden)
    candidates = [(path, trusted), (Path(os.path.realpath(path)), trusted)]
    interpreter = _shebang(path)
    if interpreter is not None:  # a script: its interpreter must be there too
        candidates += [(interpreter, trusted), (Path(os.path.realpath(interpreter)), trusted)]
    for candidate, ok in candidates:
        if _system(candidate):
            continue
        prefix = _prefix_of(candidate)
        add(prefix, ok)
        home = _venv_home(prefix)
        if home is not None:
            ok = ok and not inside(prefix, hidden)
            add(_prefix_of(home / "python"), ok)
            real_home = Path(os.path.realpath(home))
            if real_home != home:
                add(_prefix_of(real_home / "python"), ok)
    return roots


def _parents(path: str) -> list[str]:
    parts = PurePosixPath(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


class _Argv:
    """bubblewrap options, creating every parent folder 0755 first: bubblewrap would make
    missing parents 0700 (root's), which the app's uid could not traverse."""

    def __init__(self, bwrap: str) -> None:
        self.argv = [bwrap]
        self.made: set[str] = {"/"}

    def dirs_for(self, dest: str) -> None:
        for parent in _parents(dest):
            if parent not in self.made:
                self.argv += ["--dir", parent]
                self.made.add(parent)

    def add(self, option: str, source: str, dest: str) -> None:
        self.dirs_for(dest)
        self.argv += [option, source, dest]
        self.made.add(dest)


def snapshot_etc(dest: Path) -> Path:
    """Copy the allowed entries of /etc into ``dest`` (replacing what was there) and return
    it; blocking. One bind of this folder instead of one per entry makes a sandbox cheaper
    to set up (mount operations take a kernel-wide lock, so they also serialise starts).
    Taken at driver start: later edits of the host's /etc (resolv.conf) need a restart."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o755, parents=True)
    os.chmod(tmp, 0o755)  # noqa: S103 - public system files, read by every app's uid
    for name in ETC_ALLOWED:
        source = Path("/etc") / name
        target = tmp / name
        try:
            if source.is_dir():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(source, target, symlinks=True)
            elif source.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)  # follows links: resolv.conf -> /run/...
                os.chmod(target, 0o644)
        except OSError:
            continue  # unreadable or vanished: one name less is not a reason to fail
    for folder, _, _ in os.walk(tmp):
        os.chmod(folder, 0o755)  # noqa: S103 - as above
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def _system_view(out: _Argv, etc: Path | None) -> None:
    for folder in SYSTEM_DIRS:
        if os.path.islink(folder):
            out.argv += ["--symlink", os.readlink(folder), folder]
            out.made.add(folder)
        elif os.path.isdir(folder):
            out.add("--ro-bind", folder, folder)
    if etc is not None:
        out.add("--ro-bind", str(etc), "/etc")
        return
    for name in ETC_ALLOWED:
        source = os.path.join("/etc", name)
        if os.path.exists(source):  # follows links: resolv.conf -> /run/... is bound as a file
            out.add("--ro-bind", source, source)


def bwrap_argv(bwrap: str, profile: Profile) -> list[str]:
    """The bubblewrap invocation for one sandbox (argv list, never a shell string)."""
    out = _Argv(bwrap)
    _system_view(out, profile.etc)
    size = [] if profile.tmp_size is None else ["--size", str(profile.tmp_size)]
    out.argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", *size, "--tmpfs", TMP]
    out.made |= {"/proc", "/dev", TMP}
    release = profile.release_root
    program = profile.command[0]
    for root in [*program_roots(program, hidden_ok=[release]), *profile.extra_ro]:
        out.add("--ro-bind", str(root), str(root))
    out.add("--bind" if profile.writable_release else "--ro-bind", str(release), str(release))
    workdir = profile.workdir
    if workdir != release and release not in workdir.parents:
        out.add("--ro-bind", str(workdir), str(workdir))
    if profile.scratch is not None:
        out.add("--bind", str(profile.scratch), SCRATCH)
    else:
        out.dirs_for(SCRATCH)
        out.argv += ["--perms", "0777", *size, "--tmpfs", SCRATCH]
    for mount in profile.mounts:
        option = "--ro-bind" if mount.read_only else "--bind"
        out.add(option, str(mount.source), mount.target)
    out.argv += [
        "--chdir",
        str(workdir),
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        profile.hostname[:63],
        "--new-session",
    ]
    if profile.die_with_parent:
        out.argv.append("--die-with-parent")
    if profile.seccomp_fd is not None:
        out.argv += ["--seccomp", str(profile.seccomp_fd)]
    if profile.uid is None:
        # Unprivileged: a user namespace, our uid mapped to itself, no capabilities.
        return [*out.argv, "--unshare-user", "--cap-drop", "ALL", "--", *profile.command]
    keep = ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
    ids = str(profile.uid)
    return [
        *out.argv,
        "--cap-drop",
        "ALL",
        *keep,
        "--",
        SETPRIV,
        f"--reuid={ids}",
        f"--regid={ids}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
        *profile.command,
    ]


def sandbox_env(env: dict[str, str]) -> dict[str, str]:
    """``HOME`` (and the temp folder) fixed inside the sandbox, whatever the app's env said:
    a HOME pointing at a host folder would be absent, or worse, shared."""
    return {**env, "HOME": SCRATCH, "TMPDIR": TMP}
