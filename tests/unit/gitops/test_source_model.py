"""The Source kind refuses what could be read as an option, escape the repository or hold
a credential in the manifest."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from socle.model.source import Source


def source(**spec: Any) -> dict[str, Any]:
    base = {"repo": "https://git.example/platform.git", "branch": "main", "env": "dev"}
    return {"apiVersion": "socle/v1", "kind": "Source", "metadata": {"name": "platform"},
            "spec": {**base, **spec}}  # fmt: skip


def test_defaults() -> None:
    spec = Source.model_validate(source()).spec
    assert (spec.path, spec.auto_sync, spec.prune, spec.self_heal, spec.interval) == (
        ".", True, False, False, 60.0,
    )  # fmt: skip
    assert Source.model_validate(source(path="deploy/./apps/")).spec.path == "deploy/apps"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"repo": "--upload-pack=touch /tmp/x"}, "invalid repository"),
        ({"repo": "https://x/\nevil"}, "control"),
        ({"branch": "-x"}, "invalid git ref"),
        ({"branch": "a..b"}, "invalid git ref"),
        ({"branch": None}, "exactly one of branch or ref"),
        ({"ref": "v1"}, "exactly one of branch or ref"),
        ({"path": "../outside"}, "invalid path"),
        ({"path": "/abs"}, "invalid path"),
        ({"env": "Prod"}, "invalid environment"),
        ({"interval": "0s"}, "at least 1s"),
        ({"credentials": "secret/../sys"}, "invalid secrets path"),
        ({"token": "abc"}, "Extra inputs"),
    ],
)
def test_refused(spec: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        Source.model_validate(source(**spec))
