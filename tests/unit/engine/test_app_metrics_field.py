"""``spec.metrics`` (opt in to be scraped) changes no instance template, and an app that
does not set it plans exactly as before the field existed."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from socle.engine.targets import app_state
from socle.model.app import App


def app(**spec: Any) -> App:
    return App.model_validate(
        {
            "apiVersion": "socle/v1",
            "kind": "App",
            "metadata": {"name": "api"},
            "spec": {"run": {"command": ["python3", "app.py"]}, "ports": [{"name": "http"}]} | spec,
        }
    )


def test_metrics_is_left_out_when_unset_and_never_restarts() -> None:
    plain = app_state(app(), "r1")
    assert "metrics" not in plain.manifest["spec"]
    scraped = app_state(app(metrics={"port": "http"}), "r1")
    assert scraped.manifest["spec"]["metrics"] == {"port": "http", "path": "/metrics"}
    assert scraped.template == plain.template  # same instances: nothing restarts
    assert scraped.digest != plain.digest  # but the plan shows the change


def test_metrics_port_must_be_declared() -> None:
    with pytest.raises(ValidationError, match="metrics uses port 'web'"):
        app(metrics={"port": "web"})
    with pytest.raises(ValidationError, match="must start with '/'"):
        app(metrics={"port": "http", "path": "metrics"})
