"""Sandboxed build steps search the control plane's PATH only where the sandbox shows it.

Seen as a new user: the control plane's PATH began with pyenv shims under /root; a build
step `python3 -m venv .venv` found the shim on the host, and the shim (a script calling
/root/.pyenv/libexec/pyenv) failed inside the sandbox, which hides /root. The example's
first command failed on such a machine.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from socle.engine.releases import ReleaseStore
from socle.runtime.local import LocalDriver
from tests.integration.runtime.conftest import FAST_BACKOFF, SANDBOX_OK, app_with_build

pytestmark = pytest.mark.skipif(not SANDBOX_OK, reason="needs root and bubblewrap")


@pytest.fixture
async def driver(tmp_path: Path) -> AsyncIterator[LocalDriver]:
    drv = LocalDriver(
        tmp_path / "run",
        tmp_path / "logs",
        isolation="sandbox",
        backoff=FAST_BACKOFF,
        cgroup_parent=f"socle-test-{uuid.uuid4().hex[:8]}",
    )
    await drv.start()
    try:
        yield drv
    finally:
        await drv.close(stop_instances=True)


async def test_a_host_only_path_entry_is_not_searched_in_the_sandbox(
    driver: LocalDriver, tmp_path: Path
) -> None:
    shims = Path("/var/tmp") / f"socle-shims-{uuid.uuid4().hex[:8]}"
    shims.mkdir()
    try:
        # A "shim" that works on the host only: it runs a program the sandbox does not show.
        shim = shims / "python3"
        shim.write_text(f'#!/bin/sh\nexec {shims}/hidden-python "$@"\n')
        shim.chmod(0o755)
        repo = tmp_path / "repo"
        build = [{"command": ["python3", "-c", "open('built', 'w').write('ok')"]}]
        app = app_with_build(repo, "pathy", build)
        path = f"{shims}{os.pathsep}/usr/bin{os.pathsep}/bin"
        store = ReleaseStore(
            tmp_path / "releases",
            base_env={"PATH": path, "LANG": "C.UTF-8"},
            sandbox=driver.build_sandbox(),
        )
        try:
            release = await store.ensure(repo, app)
        finally:
            await store.close()
        assert (release.root / "built").read_text() == "ok"
        sandbox = driver.build_sandbox()
        assert sandbox.search_path(path) == "/usr/bin:/bin"
        assert sandbox.search_path(str(shims)) == "/usr/local/bin:/usr/bin:/bin"
    finally:
        for child in shims.iterdir():
            child.unlink()
        shims.rmdir()
