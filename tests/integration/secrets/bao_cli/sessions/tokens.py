"""token create (with its flags), lookup, renew, revoke modes, capabilities; policies."""

from __future__ import annotations

from tests.integration.secrets.bao_cli.harness import Session, bao

READER = 'path "secret/data/app/*" {\n  capabilities = ["read", "list"]\n}\n'

SESSIONS = [
    Session(
        "token-create-lookup",
        [
            bao("token", "lookup"),
            bao("token", "lookup", "-format=json"),
            bao("token", "create", "-policy=default", "-ttl=1h"),
            bao("token", "create", "-policy=default", "-ttl=1h", "-field=token", capture="t1"),
            bao("token", "lookup", "${t1}"),
            bao("token", "lookup", "-format=json", "${t1}"),
            bao("token", "lookup", token="${t1}"),
            bao(
                "token",
                "create",
                "-display-name=ci",
                "-metadata=team=ops",
                "-num-uses=3",
                "-renewable=false",
                "-explicit-max-ttl=2h",
                "-ttl=30m",
                "-format=json",
            ),
            bao("token", "create", "-orphan", "-period=1h", "-field=token", capture="periodic"),
            bao("token", "lookup", "${periodic}"),
            bao("token", "create", "-no-default-policy", "-policy=p1", "-policy=p2"),
            bao("token", "create", "-use-limit=2", "-field=token", capture="limited"),
            bao("token", "lookup", "-accessor", "nope-not-an-accessor"),
            bao("token", "lookup", "not-a-token"),
            bao("token", "create", "-ttl=nonsense"),
            # OpenBao warns that it hashes custom IDs with SHA1; Socle hashes every token with
            # the same HMAC, so it has nothing to warn about: stdout and exit code compared.
            bao(
                "token",
                "create",
                "-id=my-custom-token-id",
                "-policy=default",
                "-ttl=1h",
                compare_stderr=False,
            ),
            bao("token", "lookup", "-format=json", "my-custom-token-id"),
            bao("token", "create", "-id=my-custom-token-id"),
        ],
    ),
    Session(
        "token-renew-revoke",
        [
            bao("token", "create", "-ttl=1h", "-field=token", capture="t"),
            bao("token", "renew", "${t}"),
            bao("token", "renew", "-increment=30m", "${t}"),
            bao("token", "lookup", "${t}"),
            bao("token", "renew", "-format=json", "${t}"),
            bao("token", "create", "-ttl=1h", "-field=token", token="${t}", capture="child"),
            bao("token", "create", "-ttl=1h", "-field=token", token="${t}", capture="child2"),
            bao("token", "revoke", "-mode=orphan", "${t}"),
            bao("token", "lookup", "-format=json", "${child}"),
            bao("token", "create", "-ttl=1h", "-field=token_accessor", capture="acc"),
            bao("token", "lookup", "-accessor", "${acc}"),
            bao("token", "revoke", "-accessor", "${acc}"),
            bao("token", "lookup", "-accessor", "${acc}"),
            bao("token", "create", "-ttl=1h", "-field=token", capture="parent"),
            bao("token", "create", "-ttl=1h", "-field=token", token="${parent}", capture="kid"),
            bao("token", "revoke", "${parent}"),
            bao("token", "lookup", "${kid}"),
            bao("token", "create", "-ttl=1h", "-field=token", capture="self"),
            bao("token", "revoke", "-self", token="${self}"),
            bao("token", "lookup", "${self}"),
            bao("token", "renew", "not-a-token"),
            bao("token", "revoke", "-mode=nonsense", "x"),
        ],
    ),
    Session(
        "token-capabilities",
        [
            bao("policy", "write", "reader", "-", stdin=READER),
            bao("token", "capabilities", "secret/data/app/x"),
            bao("token", "capabilities", "sys/mounts"),
            bao("token", "create", "-policy=reader", "-field=token", capture="r"),
            bao("token", "capabilities", "${r}", "secret/data/app/x"),
            bao("token", "capabilities", "${r}", "secret/data/other"),
            bao("token", "capabilities", "-format=json", "${r}", "secret/data/app/x"),
            bao("kv", "put", "secret/app/x", "a=1"),
            bao("kv", "get", "secret/app/x", token="${r}"),
            bao("kv", "put", "secret/app/x", "a=2", token="${r}"),
            bao("kv", "get", "secret/other", token="${r}"),
            bao("kv", "list", "secret/app", token="${r}"),
        ],
    ),
    Session(
        "policy",
        [
            bao("policy", "write", "reader", "-", stdin=READER),
            bao("policy", "write", "filer", "policy.hcl", files={"policy.hcl": READER}),
            bao("policy", "list"),
            bao("policy", "read", "reader"),
            bao("policy", "read", "-format=json", "filer"),
            bao("policy", "read", "missing"),
            bao(
                "policy",
                "fmt",
                "ugly.hcl",
                files={"ugly.hcl": 'path "a/*" {capabilities=["read"]}'},
            ),
            # Socle's parse errors name the line; OpenBao's repeat the path: same code.
            bao(
                "policy",
                "write",
                "bad",
                "-",
                stdin='path "x" { capabilities = ["fly"] }',
                compare_stderr=False,
            ),
            bao("policy", "delete", "reader"),
            bao("policy", "delete", "reader"),
            bao("policy", "list", "-format=json"),
            bao("policy", "delete", "root"),
            bao("policy", "delete", "default"),
        ],
    ),
]
