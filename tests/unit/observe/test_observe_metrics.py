"""The control plane's metrics, the per-instance exporter, http_sd targets, configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from socle.observe._webauth import bcrypt_check, write_web_auth
from socle.observe.alerts.manager import render_config as alertmanager_config
from socle.observe.metrics.certs import CertificateExpiry
from socle.observe.metrics.instances import instance_exposition, read_usage
from socle.observe.metrics.prometheus import ScrapeSetup, render_config
from socle.observe.metrics.registry import ControlPlaneMetrics, status_class
from socle.observe.metrics.targets import app_targets, socle_targets
from socle.runtime.driver import InstanceResources, InstanceState, InstanceStatus
from socle.tasks import TaskMonitor


def status(
    iid: str = "api-0", *, app: str = "api", pid: int | None = 100, **kw: Any
) -> InstanceStatus:
    fields: dict[str, Any] = {
        "id": iid,
        "app": app,
        "release": "r1",
        "ordinal": 0,
        "state": InstanceState.RUNNING,
        "ready": True,
        "pid": pid,
        "address": "127.0.0.1",
        "ports": {"http": 4000},
        "restarts": 0,
        "started_at": 1.0,
        "ready_since": 1.0,
        "last_exit_code": None,
        "isolation": "namespaces+cgroups",
        "environment": "prod",
    }
    fields.update(kw)
    return InstanceStatus(**fields)


def samples(page: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(page.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_registry_is_per_control_plane_and_counts_runtime_events() -> None:
    monitor = TaskMonitor()
    one, two = ControlPlaneMetrics(monitor), ControlPlaneMetrics()
    one.planned(0.2)
    one.applied("succeeded", 3.0)
    one.synced("synced", 0.4)
    one.synced("failed", 1.5)
    one.instance_changed(status(ready=False))
    one.instance_changed(status(ready=True))  # became ready
    one.instance_changed(status(ready=False, restarts=2))  # two restarts, not ready
    monitor.report("engine/x", RuntimeError("boom"))
    got = samples(one.exposition())
    prod = (("app", "api"), ("env", "prod"))
    assert got[("socle_plan_duration_seconds_count", ())] == 1
    assert got[("socle_applies_total", (("status", "succeeded"),))] == 1
    assert got[("socle_syncs_total", (("result", "failed"),))] == 1
    assert got[("socle_sync_duration_seconds_count", ())] == 2
    assert got[("socle_runtime_restarts_total", prod)] == 2
    assert got[("socle_health_transitions_total", (*prod, ("to", "ready")))] == 1
    assert got[("socle_health_transitions_total", (*prod, ("to", "not_ready")))] == 1
    assert got[("socle_background_task_failures_total", ())] == 1
    # The second plane shares nothing with the first (no global registry).
    assert ("socle_applies_total", (("status", "succeeded"),)) not in samples(two.exposition())


@pytest.mark.parametrize(
    ("code", "cls"), [(200, "2xx"), (404, "4xx"), (503, "5xx"), (99, "other"), (600, "other")]
)
def test_status_class_is_bounded(code: int, cls: str) -> None:
    assert status_class(code) == cls


def fake_proc(
    root: Path, pid: int, *, ticks: tuple[int, int, int, int], rss_kb: int, fds: int
) -> None:
    folder = root / str(pid)
    (folder / "fd").mkdir(parents=True)
    utime, stime, cutime, cstime = ticks
    # The command name may hold spaces and parentheses.
    fields = ["S"] + ["0"] * 10 + [str(utime), str(stime), str(cutime), str(cstime)] + ["0"] * 30
    (folder / "stat").write_text(f"{pid} (my (odd) app) " + " ".join(fields) + "\n")
    (folder / "status").write_text(f"Name:\tapp\nVmRSS:\t{rss_kb} kB\n")
    for n in range(fds):
        (folder / "fd" / str(n)).write_text("")


def test_usage_from_cgroup_and_proc(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    fake_proc(proc, 10, ticks=(100, 50, 10, 0), rss_kb=1000, fds=3)
    fake_proc(proc, 11, ticks=(40, 0, 0, 0), rss_kb=500, fds=2)
    memory = tmp_path / "memory" / "api-0"
    memory.mkdir(parents=True)
    (memory / "cgroup.procs").write_text("10\n11\n")
    (memory / "memory.usage_in_bytes").write_text("52428800\n")
    (memory / "memory.limit_in_bytes").write_text("104857600\n")
    item = InstanceResources(status(pid=10), cgroups=(str(memory),), health_seconds=0.004)
    usage = read_usage(item, proc)
    ticks = 100 + 50 + 10 + 40
    assert usage.cpu_seconds == pytest.approx(ticks / 100, rel=0.5)  # CLK_TCK is 100 on Linux
    assert usage.memory_bytes == 52428800 and usage.memory_limit_bytes == 104857600
    assert usage.open_fds == 5 and usage.processes == 2

    got = samples(instance_exposition(lambda: [item], proc))
    labels = (("app", "api"), ("env", "prod"), ("instance", "api-0"), ("release", "r1"))
    assert got[("socle_instance_memory_bytes", labels)] == 52428800
    assert got[("socle_instance_open_fds", labels)] == 5
    assert got[("socle_instance_restarts_total", labels)] == 0
    assert got[("socle_instance_health_check_duration_seconds", labels)] == 0.004
    assert ("socle_instance_health_check_success", labels) not in got  # no probe finished


def test_usage_without_cgroups_reads_the_process_and_survives_it_vanishing(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    fake_proc(proc, 20, ticks=(10, 10, 0, 0), rss_kb=2048, fds=1)
    usage = read_usage(InstanceResources(status(pid=20)), proc)
    assert usage.memory_bytes == 2048 * 1024 and usage.memory_limit_bytes is None
    gone = read_usage(InstanceResources(status(pid=999)), proc)
    assert gone.cpu_seconds is None and gone.memory_bytes is None and gone.open_fds is None
    stopped = read_usage(InstanceResources(status(pid=None)), proc)
    assert stopped.processes == 0


def test_app_targets_only_for_opted_in_running_instances() -> None:
    instances = [
        status("api-0"),
        status("api-1", ports={"http": 4001}, release="r2"),
        status("api-2", pid=None),  # not running: not a target
        status("worker-0", app="worker"),  # did not opt in
        status("odd-0", app="odd", ports={}),  # named port missing
    ]
    groups = app_targets(
        instances, {"api": {"port": "http", "path": "/m"}, "odd": {"port": "http"}}
    )
    assert groups == [
        {
            "targets": ["127.0.0.1:4000"],
            "labels": {
                "__metrics_path__": "/m",
                "app": "api",
                "env": "prod",
                "instance": "api-0",
                "release": "r1",
            },
        },
        {
            "targets": ["127.0.0.1:4001"],
            "labels": {
                "__metrics_path__": "/m",
                "app": "api",
                "env": "prod",
                "instance": "api-1",
                "release": "r2",
            },
        },
    ]
    assert socle_targets("127.0.0.1:7780", "socle-instances")[0]["labels"] == {
        "__metrics_path__": "/metrics/instances"
    }


def test_prometheus_config_discovers_everything_through_socle(tmp_path: Path) -> None:
    setup = ScrapeSetup(
        socle_url="https://127.0.0.1:7780",
        token_file=tmp_path / "token",
        ca_file=tmp_path / "ca.pem",
        scrape_interval=15,
        rules_dir=tmp_path / "rules",
        alertmanager="127.0.0.1:9093",
        alertmanager_password_file=tmp_path / "am" / "web.password",
        remote_write="https://metrics.example/api/v1/write",
    )
    config = render_config(setup)
    yaml.safe_dump(config)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"socle", "socle-instances", "apps"}
    assert jobs["socle"]["authorization"]["credentials_file"] == str(tmp_path / "token")
    assert jobs["socle-instances"]["honor_labels"] is True
    assert "authorization" not in jobs["apps"]  # apps are scraped without Socle's token
    sd = jobs["apps"]["http_sd_configs"][0]
    assert sd["url"] == "https://127.0.0.1:7780/api/v1/metrics/targets?job=apps"
    assert sd["tls_config"] == {"ca_file": str(tmp_path / "ca.pem")}
    assert config["rule_files"] == [str(tmp_path / "rules" / "*.yml")]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "127.0.0.1:9093"
    ]
    assert config["alerting"]["alertmanagers"][0]["basic_auth"] == {
        "username": "socle",
        "password_file": str(tmp_path / "am" / "web.password"),
    }
    assert config["remote_write"] == [{"url": "https://metrics.example/api/v1/write"}]
    assert config["global"]["scrape_interval"] == "15s"
    # Without an alert interval, everything runs at the scrape interval.
    assert config["global"]["evaluation_interval"] == "15s"
    assert jobs["socle-instances"]["scrape_interval"] == "15s"


def test_the_crash_signal_is_scraped_and_evaluated_faster(tmp_path: Path) -> None:
    setup = ScrapeSetup(
        socle_url="http://127.0.0.1:7780",
        token_file=tmp_path / "token",
        scrape_interval=10,
        alert_interval=5,
    )
    config = render_config(setup)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert config["global"]["scrape_interval"] == "10s"
    assert config["global"]["evaluation_interval"] == "5s"
    assert jobs["socle-instances"]["scrape_interval"] == "5s"
    assert jobs["socle-instances"]["scrape_timeout"] == "5s"  # never above its interval
    assert "scrape_interval" not in jobs["socle"] and "scrape_interval" not in jobs["apps"]
    # Never slower than the scrape interval a user lowered.
    fast = render_config(
        ScrapeSetup(
            socle_url="http://127.0.0.1:7780",
            token_file=tmp_path / "token",
            scrape_interval=2,
            alert_interval=5,
        )
    )
    assert fast["global"]["evaluation_interval"] == "2s"


def test_alertmanager_config_calls_socle_back_with_a_token(tmp_path: Path) -> None:
    config = alertmanager_config("http://127.0.0.1:7780/", tmp_path / "token")
    hook = config["receivers"][0]["webhook_configs"][0]
    assert hook["url"] == "http://127.0.0.1:7780/api/v1/alerts/webhook"
    assert hook["http_config"]["authorization"]["credentials_file"] == str(tmp_path / "token")
    assert config["route"]["receiver"] == "socle"


def test_gauge_sources_are_read_at_scrape_time_and_replaced() -> None:
    metrics = ControlPlaneMetrics()
    failing = {"data"}
    metrics.gauge_source(
        "socle_volume_backup_failing", "doc", ("volume",), lambda: [((v,), 1.0) for v in failing]
    )
    assert samples(metrics.exposition())[("socle_volume_backup_failing", (("volume", "data"),))]
    failing.clear()
    assert ("socle_volume_backup_failing", (("volume", "data"),)) not in samples(
        metrics.exposition()
    )
    # A part that starts again replaces its source; None stops exporting it.
    metrics.gauge_source("socle_volume_backup_failing", "doc", ("volume",), lambda: [(("x",), 1)])
    metrics.gauge_source("socle_volume_backup_failing", "doc", (), None)
    assert not any(k[0] == "socle_volume_backup_failing" for k in samples(metrics.exposition()))


def test_certificate_expiry(tmp_path: Path) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "socle")])
    end = dt.datetime(2030, 1, 2, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(end)
        .sign(key, hashes.SHA256())
    )
    pem = tmp_path / "api.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    source = CertificateExpiry([pem, junk, tmp_path / "missing.pem"])
    assert list(source()) == [((str(pem),), end.timestamp())]


def test_observe_face_targets_and_forgetting_gone_instances() -> None:
    from socle.errors import ConfigError
    from socle.observe.service import Observe, Unavailable

    metrics = ControlPlaneMetrics()
    running = [status("api-0"), status("api-1")]
    observe = Observe(
        metrics,
        address="127.0.0.1:7780",
        instances=lambda: running,
        resources=lambda: [],
        app_metrics=lambda: {"api": {"port": "http", "path": "/metrics"}},
    )
    assert [g["labels"]["instance"] for g in observe.targets("apps")] == ["api-0", "api-1"]
    assert len(observe.targets(None)) == 4  # socle, socle-instances, two app instances
    with pytest.raises(ConfigError, match="unknown scrape job"):
        observe.targets("nope")
    with pytest.raises(Unavailable):
        observe.need_query()
    for item in running:
        metrics.instance_changed(item)
    running.pop()
    observe.socle_page()
    assert set(metrics._seen) == {"api-0"}


def test_web_auth_files_hold_a_bcrypt_hash_and_an_owner_only_password(tmp_path: Path) -> None:
    """What Prometheus and Alertmanager get as ``--web.config.file``: the hash only."""
    first = write_web_auth(tmp_path)
    config = yaml.safe_load(first.config_file.read_text())
    hashed = config["basic_auth_users"]["socle"]
    assert hashed.startswith("$2b$") and first.password not in first.config_file.read_text()
    assert bcrypt_check(first.password, hashed) and not bcrypt_check(first.password + "x", hashed)
    assert first.password_file.read_text() == first.password
    for path in (first.config_file, first.password_file):
        assert path.stat().st_mode & 0o777 == 0o600
    second = write_web_auth(tmp_path)  # every start: a new password
    assert second.password != first.password
    assert not bcrypt_check(
        first.password, yaml.safe_load(second.config_file.read_text())["basic_auth_users"]["socle"]
    )
