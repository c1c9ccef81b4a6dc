"""Settings read at the edge: a refused value names its environment variable and why,
never pydantic's dump, and never echoes what may be a credential; Prometheus' retention
is checked in Prometheus' own syntax before a Prometheus refuses it at start."""

from __future__ import annotations

import pytest

from socle.errors import ConfigError
from socle.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("SOCLE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SOCLE_HOME", str(tmp_path))


def test_a_refused_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCLE_SCRAPE_INTERVAL", "10 parsecs")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.message.startswith("invalid setting: SOCLE_SCRAPE_INTERVAL: ")
    assert "is not a duration" in caught.value.message and "1h30m" in caught.value.message
    assert "(got '10 parsecs')" in caught.value.message
    assert "errors.pydantic.dev" not in caught.value.message
    assert caught.value.hint and "unset" in caught.value.hint


@pytest.mark.parametrize(
    ("name", "value", "ok"),
    [
        ("SOCLE_PROMETHEUS_RETENTION", "15d", True),
        ("SOCLE_PROMETHEUS_RETENTION", "1y2w", True),
        ("SOCLE_PROMETHEUS_RETENTION", "90m", True),
        ("SOCLE_PROMETHEUS_RETENTION", "abc", False),
        ("SOCLE_PROMETHEUS_RETENTION", "15 d", False),
        ("SOCLE_PROMETHEUS_RETENTION", "1.5d", False),
        ("SOCLE_PROMETHEUS_RETENTION_SIZE", "0", True),
        ("SOCLE_PROMETHEUS_RETENTION_SIZE", "512MB", True),
        ("SOCLE_PROMETHEUS_RETENTION_SIZE", "2G", False),
        ("SOCLE_PROMETHEUS_RETENTION_SIZE", "-1GB", False),
    ],
)
def test_prometheus_retention_in_its_own_syntax(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, ok: bool
) -> None:
    monkeypatch.setenv(name, value)
    if ok:
        load_settings()
        return
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_a_refused_credential_is_not_echoed() -> None:
    # A store DSN or a URL may carry a password: the variable and the reason, not the value.
    for name in ("store", "loki_url", "metrics_remote_write"):
        with pytest.raises(ConfigError) as caught:
            load_settings(**{name: ["postgresql://socle:hunter2@db/socle"]})
        assert f"SOCLE_{name.upper()}" in caught.value.message
        assert "hunter2" not in caught.value.message


def test_overrides_that_are_none_keep_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCLE_LISTEN", "127.0.0.1:7999")
    assert load_settings(listen=None).listen == "127.0.0.1:7999"
    assert load_settings(listen="127.0.0.1:8001").listen == "127.0.0.1:8001"


@pytest.mark.parametrize(
    ("name", "value", "seconds"),
    [
        ("SOCLE_SCRAPE_INTERVAL", "15", 15.0),
        ("SOCLE_SCRAPE_INTERVAL", "15s", 15.0),
        ("SOCLE_SCRAPE_INTERVAL", " 1m30s ", 90.0),
        ("SOCLE_ALERT_INTERVAL", "2.5", 2.5),
        ("SOCLE_REMEDIATION_INTERVAL", "5m", 300.0),
        ("SOCLE_LOG_RETENTION_SECONDS", "2y", 2 * 365 * 86400.0),
        ("SOCLE_TRACE_RETENTION_SECONDS", "1w", 7 * 86400.0),
        ("SOCLE_LEADER_CHECK_SECONDS", "500ms", 0.5),
    ],
)
def test_durations_take_units(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, seconds: float
) -> None:
    monkeypatch.setenv(name, value)
    settings = load_settings()
    assert getattr(settings, name.removeprefix("SOCLE_").lower()) == seconds


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SOCLE_SCRAPE_INTERVAL", "0.5s"),  # below the field's own floor (1 s)
        ("SOCLE_SCRAPE_INTERVAL", "2h"),  # above its ceiling (1 h)
        ("SOCLE_SCRAPE_INTERVAL", "-5"),
        ("SOCLE_SCRAPE_INTERVAL", "inf"),
        ("SOCLE_SCRAPE_INTERVAL", "nan"),
        ("SOCLE_SCRAPE_INTERVAL", "10 s"),
        ("SOCLE_SCRAPE_INTERVAL", "s"),
        ("SOCLE_SCRAPE_INTERVAL", ""),
        ("SOCLE_LOG_RETENTION_SECONDS", "0d"),
    ],
)
def test_bad_durations_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()
