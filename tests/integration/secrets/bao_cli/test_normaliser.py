"""The normaliser must hide only what is random or clock-bound: these checks make sure a
real difference (a value, a key, a repeated token in a different place) still shows."""

from __future__ import annotations

from tests.integration.secrets.bao_cli.harness import (
    Normaliser,
    Outcome,
    Session,
    bao,
    differences,
    drop_openbao_only_mounts,
    normalise_all,
)


def norm(text: str) -> str:
    return Normaliser({})(text)


def test_random_values_become_numbered_placeholders() -> None:
    text = (
        "token s.gCQyLVH4iwn4NTj0RxA0Ppu1\naccessor 0BFgCnm8hpJojCuw0StnMYOX\n"
        "again s.gCQyLVH4iwn4NTj0RxA0Ppu1\ncreated 2026-11-30T06:44:21.980163602Z\n"
        "accessor kv_b813865e\nserial 1f:2a:33:44:55:66:77:88:99:aa\n"
    )
    assert norm(text) == (
        "token <token#1>\naccessor <id24#1>\nagain <token#1>\ncreated <time>\n"
        "accessor kv_<hex8#1>\nserial <serial#1>\n"
    )


def test_a_token_in_a_different_place_is_a_difference() -> None:
    a = norm(
        "first s.aaaaaaaaaaaaaaaaaaaaaaaa second s.bbbbbbbbbbbbbbbbbbbbbbbb\nx s.aaaaaaaaaaaaaaaaaaaaaaaa"
    )
    b = norm(
        "first s.aaaaaaaaaaaaaaaaaaaaaaaa second s.bbbbbbbbbbbbbbbbbbbbbbbb\nx s.bbbbbbbbbbbbbbbbbbbbbbbb"
    )
    assert a != b


def test_values_words_and_long_durations_are_kept() -> None:
    assert norm("password s3cret") != norm("password s3creT")
    assert norm("ttl 768h") == norm("ttl 767h59m58s") == "ttl <2764800s>"
    assert norm("ttl 768h") != norm("ttl 767h")
    assert norm('"ttl": 3599') == norm('"ttl": 3600')
    assert norm('"ttl": 3500') != norm('"ttl": 3600')
    # An accessor with characters Vault never issues is not an accessor.
    assert "<id24" not in norm("accessor VJO_7ilx56LjqjBzdoy3JNDm")


def test_differences_report_both_sides() -> None:
    session = Session("demo", [bao("kv", "get", "secret/x")])
    ours = [Outcome(["kv"], 2, "No value found at secret/x\n", "")]
    theirs = [Outcome(["kv"], 0, "== Data ==\nKey  Value\n", "")]
    (report,) = differences(session, theirs, ours)
    assert "exit code: openbao 0, socle 2" in report
    assert "No value found" in report and "== Data ==" in report
    assert differences(session, theirs, theirs) == []


def test_only_openbao_only_mounts_are_dropped() -> None:
    table = "Path Type\nidentity/ identity\nsecret/ kv\n"
    assert drop_openbao_only_mounts(table) == "Path Type\nsecret/ kv\n"
    assert '"secret/"' in drop_openbao_only_mounts('{"identity/": {}, "secret/": {}}')
    assert "identity" not in drop_openbao_only_mounts('{"identity/": {}, "secret/": {}}')


def test_curl_headers_are_sorted_but_kept() -> None:
    a = 'curl -X PUT -H "X-Vault-Request: true" -H "X-Vault-Token: t" http://127.0.0.1:1/v1/x\n'
    b = 'curl -X PUT -H "X-Vault-Token: t" -H "X-Vault-Request: true" http://127.0.0.1:2/v1/x\n'
    assert norm(a) == norm(b)
    assert norm(a) != norm(b.replace("/v1/x", "/v1/y"))


def test_generated_database_credentials_are_shaped_like_vaults() -> None:
    user = "v-token-reader-MqrPjiHOJSFRW1i3xTiN-1796021040"
    assert norm(f"username {user}") == "username v-token-reader-<dbrandom#1>-<epoch>"
    assert norm('"password": "t9q8ytURT8wz3-OUmQth"') == '"password": "<password#1>"'
    # A password of another length (Socle's old 24) is not taken for one.
    assert "<password" not in norm('"password": "RVFcJD-YlAB13kgvc5dHRwuIabcd"')


def test_padding_is_not_compared_but_cells_are() -> None:
    assert norm("key      value\n") == norm("key  value\n")
    assert norm("key  value\n") != norm("key  other\n")


def test_wrapped_warnings_compare_unwrapped() -> None:
    steps = [bao("token", "renew")]
    short = '  * TTL of "2h" exceeded the effective max_ttl of "1h"; TTL value is capped\n  accordingly\n'
    long = '  * TTL of "2h" exceeded the effective max_ttl of "59m59s"; TTL value is\n  capped accordingly\n'
    (a,) = normalise_all(steps, [Outcome(["token"], 0, "", short)], {})
    (b,) = normalise_all(steps, [Outcome(["token"], 0, "", long)], {})
    assert a.stderr == b.stderr
    (c,) = normalise_all(steps, [Outcome(["token"], 0, "", long.replace("capped", "kept"))], {})
    assert c.stderr != b.stderr
