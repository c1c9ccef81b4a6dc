"""read/write/list/delete: ``-f`` (empty body), ``-`` (stdin), ``@file``, ``-field``."""

from __future__ import annotations

from tests.integration.secrets.bao_cli.harness import Session, bao

SESSIONS = [
    Session(
        "read-write-list-delete",
        [
            bao("secrets", "enable", "-path=plain", "-version=1", "kv"),
            bao("write", "plain/a", "x=1", "y=two"),
            bao("read", "plain/a"),
            bao("read", "-field=y", "plain/a"),
            bao("read", "-format=json", "plain/a"),
            bao("read", "-format=yaml", "plain/a"),
            bao("write", "plain/b", "-", stdin='{"from": "stdin"}'),
            bao("write", "plain/c", "@body.json", files={"body.json": '{"from": "file"}'}),
            bao("write", "plain/d", "v=@value.txt", files={"value.txt": "multi\nline\n"}),
            bao("read", "-field=v", "plain/d"),
            bao("list", "plain/"),
            bao("list", "-format=json", "plain"),
            bao("delete", "plain/a"),
            bao("read", "plain/a"),
            bao("write", "plain/e"),
            bao("write", "-f", "plain/e"),
            bao("write", "-output-curl-string", "plain/x", "k=v"),
            bao("cubbyhole/x", "k=v"),
            bao("write", "cubbyhole/x", "k=v"),
            bao("read", "cubbyhole/x"),
            bao("list", "cubbyhole/"),
            bao("read", "nomount/x"),
            bao("list", "nomount/"),
        ],
    ),
    Session(
        "write-f-empty-body",
        [
            bao("write", "-f", "sys/rotate"),
            bao("read", "-format=json", "sys/key-status"),
            bao("operator", "rotate"),
            bao("operator", "key-status"),
        ],
    ),
]
