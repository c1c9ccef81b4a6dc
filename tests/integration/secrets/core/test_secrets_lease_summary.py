"""The lease summary behind the lease gauges: per mount, how many leases and when the
soonest one that can no longer be renewed ends -- through real requests (hvac), renewals
up to the max TTL, revocation, a remount, a seal and an unseal."""

from __future__ import annotations

import time
from collections.abc import Callable

import hvac
import pytest

from socle.observe.metrics.expiry import LEASE_FINAL, LEASES, lease_gauges
from socle.observe.metrics.registry import ControlPlaneMetrics
from socle.tasks import TaskMonitor
from tests.integration.secrets.core.vault_test_backends import Events, make_registry
from tests.integration.secrets.socle_vault_server import VaultServer


@pytest.fixture
def server(vault_server_factory: Callable[..., VaultServer]) -> VaultServer:
    server = vault_server_factory(registry=make_registry(Events()))
    server.client().sys.enable_secrets_engine("leasing", path="db")
    return server


def creds(client: hvac.Client, **params: str) -> str:
    lease_id: str = client.adapter.get("/v1/db/creds/ro", params=params)["lease_id"]
    return lease_id


def test_summary_follows_leases(server: VaultServer) -> None:
    client = server.client()
    summary = server.core.lease_summary
    assert summary() == {}
    start = time.time()
    renewable = creds(client, ttl="60", max="3600")
    assert summary() == {"db/": (1, None)}  # it can still be renewed: no final expiry
    capped = creds(client, ttl="60", max="120")
    assert summary()["db/"] == (2, None)
    client.sys.renew_lease(capped, increment=600)  # capped by its max TTL: ends for good
    count, final = summary()["db/"]
    assert count == 2 and final is not None and start + 100 < final < time.time() + 121

    # The gauges read the same summary at scrape time.
    metrics = ControlPlaneMetrics(TaskMonitor())
    lease_gauges(metrics, summary)
    page = metrics.exposition().decode()
    assert f'{LEASES}{{mount="db/"}} 2.0' in page
    exported = [line.split()[-1] for line in page.splitlines()
                if line.startswith(f'{LEASE_FINAL}{{mount="db/"}}')]  # fmt: skip
    assert [float(v) for v in exported] == [final]

    client.sys.revoke_lease(capped)
    assert summary() == {"db/": (1, None)}
    client.sys.move_backend("db", "database")
    assert summary() == {"database/": (1, None)}
    server.run(server.core.seal_now())
    assert summary() == {}  # sealed: nothing known, nothing exported
    server.unseal()
    assert summary() == {"database/": (1, None)}  # rebuilt from storage at unseal
    client.sys.revoke_lease(renewable.replace("db/", "database/", 1))
    assert summary() == {}
