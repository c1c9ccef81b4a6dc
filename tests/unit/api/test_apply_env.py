"""``socle apply --env``: the environment names a scope and goes into host names
(``APP.ENV.localhost``, matched without case), so it follows a Source's rule: ``PROD``
beside ``prod`` would have taken prod's default routes (nginx keeps the first of two
server names that differ only in case)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from socle.api.routes.engine import ApplyBody


@pytest.mark.parametrize("env", ["PROD", "Prod", "prod.eu", "a_b", "-x", "x" * 33])
def test_environment_names_that_could_alias_another_are_refused(env: str) -> None:
    with pytest.raises(ValidationError, match="invalid environment"):
        ApplyBody.model_validate({"path": "/repo", "env": env})


def test_plain_environment_names_pass() -> None:
    assert ApplyBody.model_validate({"path": "/repo", "env": "prod-eu"}).env == "prod-eu"
    assert ApplyBody.model_validate({"path": "/repo"}).env is None
