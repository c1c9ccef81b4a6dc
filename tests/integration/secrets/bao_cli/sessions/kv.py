"""kv on KV v2 (the dev ``secret/`` mount) and KV v1."""

from __future__ import annotations

from tests.integration.secrets.bao_cli.harness import Session, bao

SESSIONS = [
    Session(
        "kv2-basics",
        [
            bao("kv", "put", "secret/app/db", "user=admin", "password=s3cret"),
            bao("kv", "get", "secret/app/db"),
            bao("kv", "get", "-field=password", "secret/app/db"),
            bao("kv", "get", "-format=json", "secret/app/db"),
            bao("kv", "get", "-format=yaml", "secret/app/db"),
            bao("kv", "put", "-mount=secret", "app/db", "user=admin", "password=n3w"),
            bao("kv", "patch", "secret/app/db", "port=5432"),
            bao("kv", "get", "-version=1", "secret/app/db"),
            bao("kv", "list", "secret/app"),
            bao("kv", "list", "secret/"),
            bao("kv", "get", "secret/app/missing"),
        ],
    ),
]
