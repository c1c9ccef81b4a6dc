"""PortBook against the kernel's real port allocator, in a network namespace whose ephemeral
range is four ports wide so that a collision would happen at once if a picked port were not
held (the bug it fixes: two granian listeners of one control plane sharing a port)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

SRC = Path(__file__).resolve().parents[2] / "src"

SCRIPT = """
import json, socket
from socle.ports import PortBook
book = PortBook()
book.avoid(["127.0.0.1:40000"])
a = book.hold("127.0.0.1:0", setting="A")[1]
b = book.hold("127.0.0.1:0", setting="B")[1]
c = book.hold("127.0.0.1:0", setting="C")[1]
others = set()
for _ in range(40):  # what any other program's port-0 picks get meanwhile
    s = socket.socket(); s.bind(("127.0.0.1", 0)); others.add(s.getsockname()[1]); s.close()
try:
    book.hold("127.0.0.1:0", setting="SOCLE_D")
    full = None
except Exception as exc:
    full = str(exc)
print(json.dumps({"picked": [a, b, c], "others": sorted(others), "full": full}))
"""


def test_picks_never_collide_in_a_tiny_port_range() -> None:
    netns = f"socle-ports-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        run = ["ip", "netns", "exec", netns]
        subprocess.run([*run, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(
            [*run, "sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40003"], check=True
        )
        out = subprocess.run(
            [*run, sys.executable, "-c", SCRIPT],
            check=True,
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(SRC)),
        ).stdout
    finally:
        subprocess.run(["ip", "netns", "delete", netns], check=False)
    result = json.loads(out)
    # 40000 is avoided (an explicit setting), the other three are picked once each...
    assert sorted(result["picked"]) == [40001, 40002, 40003]
    # ...and while held nobody else's port-0 bind gets one of them.
    assert not set(result["others"]) & set(result["picked"])
    # The range is exhausted: a clear error naming the setting.
    assert result["full"] and "SOCLE_D" in result["full"]
