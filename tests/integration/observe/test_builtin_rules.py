"""The built-in expiry rules, evaluated by the real ``promtool test rules`` over made-up
series: certificates (API, ingress routes) and secrets-engine leases fire when their end is
near, and only then; the annotations say what ends and when. An environment out of sync
with Git alerts after 10 minutes, a short failure does not."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from socle.observe.alerts.rules import BUILTIN_FILE, builtin_rule_files

pytestmark = pytest.mark.skipif(not shutil.which("promtool"), reason="needs Debian's promtool")

DAY = 86400


def alert(name: str, when: str, firing: list[dict[str, Any]]) -> dict[str, Any]:
    return {"eval_time": when, "alertname": name, "exp_alerts": firing}


def run(
    tmp_path: Path,
    series: list[dict[str, str]],
    tests: list[dict[str, Any]],
    interval: str = "1h",
) -> str:
    """Run promtool on the built-in rules; series have one sample per ``interval``, and
    rules are evaluated at the same pace (eval times must be multiples of it)."""
    rules = tmp_path / BUILTIN_FILE
    rules.write_text(builtin_rule_files()[BUILTIN_FILE])
    spec = {
        "rule_files": [str(rules)],
        "evaluation_interval": interval,
        "tests": [{"interval": interval, "input_series": series, "alert_rule_test": tests}],
    }
    path = tmp_path / "test.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    done = subprocess.run(
        ["promtool", "test", "rules", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_ingress_certificate_expiry(tmp_path: Path) -> None:
    # Route "shop" serves a certificate that ends 10 days after the start of the test
    # (renewal failing); route "blog" one renewed long ago, ending after 60 days.
    series = [
        {"series": 'socle_ingress_certificate_expiry_timestamp_seconds{route="shop",'
                   'host="shop.example"}', "values": f"{10 * DAY}+0x300"},
        {"series": 'socle_ingress_certificate_expiry_timestamp_seconds{route="blog",'
                   'host="blog.example"}', "values": f"{60 * DAY}+0x300"},
    ]  # fmt: skip
    shop = {"route": "shop", "host": "shop.example", "severity": "warning"}
    tests = [
        alert("SocleIngressCertificateExpiringSoon", "2d", []),  # 8 days left
        alert("SocleIngressCertificateExpiringSoon", "4d", [{  # 6 days left
            "exp_labels": shop,
            "exp_annotations": {"summary": "the certificate of route shop (shop.example) "
                                "expires in 6d 0h 0m 0s: its renewal keeps failing"},
        }]),
        alert("SocleIngressCertificateExpired", "9d", []),
        alert("SocleIngressCertificateExpired", "10d", [{
            "exp_labels": dict(shop, severity="critical"),
            "exp_annotations": {"summary": "the certificate of route shop (shop.example) "
                                "has expired: clients refuse the route"},
        }]),
    ]  # fmt: skip
    run(tmp_path, series, tests)


def test_api_certificate_expiry(tmp_path: Path) -> None:
    series = [{"series": 'socle_tls_certificate_expiry_timestamp_seconds{file="/h/tls.crt"}',
               "values": f"{20 * DAY}+0x300"}]  # fmt: skip
    tests = [
        alert("SocleCertificateExpiringSoon", "5d", []),  # 15 days left
        alert("SocleCertificateExpiringSoon", "7d", [{  # 13 days left
            "exp_labels": {"file": "/h/tls.crt", "severity": "warning"},
            "exp_annotations": {"summary": "the certificate in /h/tls.crt expires in "
                                "13d 0h 0m 0s"},
        }]),
    ]  # fmt: skip
    run(tmp_path, series, tests)


def test_lease_that_cannot_be_renewed_ending_soon(tmp_path: Path) -> None:
    # database/: a credential at its max TTL ends 3 h after the start; pki/: every lease
    # there can still be renewed (no sample) until one reaches its max TTL at 2 h, ending
    # 5 h after the start.
    series = [
        {"series": 'socle_secrets_lease_final_expiry_timestamp_seconds{mount="database/"}',
         "values": "10800+0x60"},
        {"series": 'socle_secrets_lease_final_expiry_timestamp_seconds{mount="pki/"}',
         "values": "_x23 18000+0x36"},
        {"series": 'socle_secrets_leases{mount="pki/"}', "values": "3+0x60"},
    ]  # fmt: skip
    database = {"mount": "database/", "severity": "warning"}
    tests = [
        alert("SocleSecretsLeaseEndingSoon", "1h", []),  # 2 h left
        alert("SocleSecretsLeaseEndingSoon", "2h30m", [{  # 30 min left
            "exp_labels": database,
            "exp_annotations": {"summary": "a lease of database/ that can no longer be "
                                "renewed ends in 30m 0s: its users need new credentials"},
        }]),
        alert("SocleSecretsLeaseEndingSoon", "4h30m", [  # database/ ended; pki/ 30 min left
            {"exp_labels": database,
             "exp_annotations": {"summary": "a lease of database/ that can no longer be "
                                 "renewed ends in -1h 30m 0s: its users need new credentials"}},
            {"exp_labels": dict(database, mount="pki/"),
             "exp_annotations": {"summary": "a lease of pki/ that can no longer be "
                                 "renewed ends in 30m 0s: its users need new credentials"}},
        ]),
    ]  # fmt: skip
    run(tmp_path, series, tests, interval="5m")


def test_environment_out_of_sync_for_ten_minutes(tmp_path: Path) -> None:
    # Source "platform" (env prod) sees a commit it does not apply at 5 min and stays out
    # of sync; source "edge" (env dev) fails a sync at 5 min and recovers at 10 min (the
    # gauge has no sample while a source is in sync).
    series = [
        {"series": 'socle_gitops_source_out_of_sync{env="prod",source="platform",'
                   'state="out_of_sync",job="socle",instance="127.0.0.1:7780"}',
         "values": "_ 1+0x10"},
        {"series": 'socle_gitops_source_out_of_sync{env="dev",source="edge",'
                   'state="failed",job="socle",instance="127.0.0.1:7780"}',
         "values": "_ 1 _x9"},
    ]  # fmt: skip
    prod = {"env": "prod", "source": "platform", "state": "out_of_sync", "severity": "warning"}
    tests = [
        alert("SocleEnvironmentOutOfSync", "10m", []),  # 5 min out of sync: not yet
        alert("SocleEnvironmentOutOfSync", "20m", [{
            "exp_labels": prod,
            "exp_annotations": {"summary": "environment prod does not run the commit of "
                                "source platform (out_of_sync for 10 minutes or more): "
                                "see `socle source list`"},
        }]),
    ]  # fmt: skip
    run(tmp_path, series, tests, interval="5m")


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    """The harness can fail: an alert expected where none fires is reported."""
    series = [{"series": 'socle_secrets_lease_final_expiry_timestamp_seconds{mount="kv/"}',
               "values": f"{2 * DAY}+0x10"}]  # fmt: skip
    expected = [{"exp_labels": {"mount": "kv/", "severity": "warning"}}]
    with pytest.raises(AssertionError, match="SocleSecretsLeaseEndingSoon"):
        run(tmp_path, series, [alert("SocleSecretsLeaseEndingSoon", "1h", expected)])
