"""Shared bench plumbing: a real control plane in a temporary SOCLE_HOME, and figures."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.socle_fixture import SocleServer  # noqa: E402


@contextmanager
def socle_server(
    args: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> Iterator[tuple[SocleServer, Path]]:
    """A control plane in a fresh temporary SOCLE_HOME; ``args`` go to ``socle server``
    (e.g. ``("--dev",)``) and ``env`` is added to the cleaned environment."""
    with tempfile.TemporaryDirectory(prefix="socle-bench-") as tmp:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SOCLE_", "VAULT_"))}
        base["SOCLE_HOME"] = str(Path(tmp) / "home")
        base["SOCLE_CONSUL_LISTEN"] = "127.0.0.1:0"  # free ports, not Consul's 8500/8600
        base["SOCLE_DNS_LISTEN"] = "127.0.0.1:0"
        base["SOCLE_OTLP_BRIDGE_PORT"] = "0"
        base.update(env or {})
        server = SocleServer(home=Path(tmp) / "home", env=base, args=args)
        server.start()
        try:
            yield server, Path(tmp)
        finally:
            server.cleanup()


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)

    return {
        "n": len(ordered),
        "min": round(ordered[0], 4),
        "p50": pick(0.5),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "max": round(ordered[-1], 4),
        "mean": round(statistics.fmean(ordered), 4),
    }
