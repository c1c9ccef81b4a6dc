"""The syscall filter every sandboxed process runs under (apps, exec checks, build steps).

A deny list on top of "allow": a service needs hundreds of ordinary syscalls, and an allow
list that misses one breaks apps in ways nobody can diagnose, while the calls below are
never needed by a service and are the usual first step of a kernel or container escape.
Denied calls fail with ``EPERM`` (the process sees a plain error, not a kill), except
``clone3``, which fails with ``ENOSYS`` so that the C library falls back to ``clone``,
whose flags a filter *can* inspect (``clone3`` passes them in memory, out of a filter's
reach). ``clone`` with any namespace flag is denied, like ``unshare`` and ``setns``:
no new namespaces, hence no user namespace to regain capabilities in.

Syscalls of foreign architectures (32-bit ``int 0x80`` on x86-64) kill the process:
libseccomp's default for an architecture the filter was not built for.

The filter is compiled once per driver with libseccomp (PyPI ``pyseccomp``) into classic
BPF and kept in a private file; each sandbox start opens it and hands the descriptor to
bubblewrap (``--seccomp FD``), which installs it right before executing the command.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

from socle.errors import RuntimeDriverError
from socle.fs import write_private

DENIED = (
    # filesystems and the root
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "open_by_handle_at",
    "name_to_handle_at",
    "swapon",
    "swapoff",
    # kernel keyrings
    "keyctl",
    "add_key",
    "request_key",
    # other processes' memory
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    # the kernel itself
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "reboot",
    "acct",
    "syslog",
    "quotactl",
    "lookup_dcookie",
    "iopl",
    "ioperm",
    "vhangup",
    "nfsservctl",
    "_sysctl",
    "uselib",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    # namespaces
    "unshare",
    "setns",
    # the clock
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "stime",
)
"""Never needed by a service; the usual first steps of an escape (see the module docstring)."""

NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
    0x00000080,  # CLONE_NEWTIME
)


def compile_filter() -> bytes:
    """The filter as classic BPF for this machine's architecture (blocking, ~ms)."""
    try:
        import pyseccomp as seccomp  # type: ignore[import-untyped]
    except ImportError as exc:  # the package wraps the system libseccomp2
        raise RuntimeDriverError(
            "cannot build the syscall filter: pyseccomp (libseccomp) is not available",
            hint="install libseccomp2 (apt-get install libseccomp2) and the pyseccomp package",
        ) from exc
    flt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    deny = seccomp.ERRNO(errno.EPERM)
    for name in DENIED:
        try:
            flt.add_rule(deny, name)
        except (RuntimeError, ValueError, OSError):
            continue  # not a syscall on this architecture (e.g. iopl on arm64)
    flt.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    for flag in NAMESPACE_FLAGS:  # one rule per flag: a filter compares, it cannot test != 0
        flt.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    read, write = os.pipe()
    try:
        # A filter is small (a few hundred bytes): the pipe buffer holds it all.
        with os.fdopen(write, "wb") as handle:
            flt.export_bpf(handle)
        chunks = []
        while chunk := os.read(read, 65536):
            chunks.append(chunk)
    finally:
        os.close(read)
    return b"".join(chunks)


def write_filter(run_dir: Path) -> Path:
    """Compile the filter into ``run_dir/seccomp-<digest>.bpf`` (0600) and return its path."""
    program = compile_filter()
    path = run_dir / f"seccomp-{hashlib.sha256(program).hexdigest()[:12]}.bpf"
    if path.is_file() and path.read_bytes() == program:
        return path
    write_private(path, program)
    return path
