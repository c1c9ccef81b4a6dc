"""Token roles as tables: what a role makes of a create request (pure, no server)."""

from __future__ import annotations

import pytest

from socle.secrets.backend import SecretsError
from socle.secrets.core.token_roles import TokenRole, apply_role


def _role(**fields: object) -> TokenRole:
    role = TokenRole("ci")
    role.update(fields)
    return role


@pytest.mark.parametrize(
    ("role", "requested", "kind", "no_default", "policies", "bound", "type_"),
    [
        (_role(allowed_policies="a,b"), [], "", False, ["a", "b"], False, "service"),
        (_role(allowed_policies="a,b"), ["B"], "", False, ["b"], False, "service"),
        (
            _role(allowed_policies_glob="team-*"),
            ["team-x"],
            "",
            False,
            ["team-x"],
            False,
            "service",
        ),
        (_role(), ["x"], "", False, ["x"], True, "service"),
        (_role(), [], "batch", False, [], True, "batch"),
        (_role(token_type="default-batch"), [], "", False, [], True, "batch"),
        (_role(token_type="default-batch"), [], "service", False, [], True, "service"),
        (_role(token_type="batch", orphan=True), [], "default", False, [], True, "batch"),
    ],
)
def test_apply_role(
    role: TokenRole,
    requested: list[str],
    kind: str,
    no_default: bool,
    policies: list[str],
    bound: bool,
    type_: str,
) -> None:
    decision = apply_role(role, requested, kind, no_default)
    assert (decision.policies, decision.parent_bound, decision.token_type) == (
        policies,
        bound,
        type_,
    )
    assert decision.path == "auth/token/create/ci"


@pytest.mark.parametrize(
    ("role", "requested", "kind", "no_default", "message"),
    [
        (_role(allowed_policies="a"), ["z"], "", False, 'token policies (["default" "z"])'),
        (_role(allowed_policies="a"), ["default"], "", True, 'token policies (["default"])'),
        (_role(disallowed_policies="x"), ["x"], "", False, 'token policy "x" is disallowed'),
        (_role(disallowed_policies_glob="adm*"), ["admin"], "", False, '"admin" is disallowed'),
        (_role(disallowed_policies="default"), [], "", False, '"default" is disallowed'),
        (_role(token_type="service"), [], "batch", False, "creates service tokens, not batch"),
    ],
)
def test_apply_role_refusals(
    role: TokenRole, requested: list[str], kind: str, no_default: bool, message: str
) -> None:
    with pytest.raises(SecretsError) as caught:
        apply_role(role, requested, kind, no_default)
    assert caught.value.status == 400 and message in caught.value.errors[0]


def test_path_suffix_and_update_merges() -> None:
    role = _role(path_suffix="ci-x", period="1h")
    role.update({"renewable": False})
    assert role.period == 3600 and role.renewable is False
    assert apply_role(role, [], "", False).path == "auth/token/create/ci/ci-x"
    assert role.describe()["token_period"] == 3600


@pytest.mark.parametrize("suffix", ["ci-\uff58", "c\u0131-x", "a\u200bb", "ci/../x", "ab\ncd"])
def test_path_suffix_is_vaults_ascii_pattern(suffix: str) -> None:
    """Lookalike letters would give two roles' tokens paths that read the same."""
    with pytest.raises(SecretsError, match="path suffix"):
        _role(path_suffix=suffix)
