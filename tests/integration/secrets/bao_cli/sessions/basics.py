"""status, secrets and auth mounts."""

from __future__ import annotations

from tests.integration.secrets.bao_cli.harness import Session, bao

# Socle reports its own version and storage, has no build date and no cluster (no HA).
STATUS_OWN = (r"^(Version|Commit Date|Storage Type|Cluster Name|Cluster ID) ",)
STATUS_OWN_JSON = (r'^  "(version|commit_date|storage_type|cluster_name|cluster_id)": ',)

SESSIONS = [
    Session(
        "status",
        [
            bao("status", ignore_lines=STATUS_OWN),
            bao("status", "-format=json", ignore_lines=STATUS_OWN_JSON),
        ],
    ),
    Session(
        "secrets-mounts",
        [
            bao("secrets", "enable", "-path=kv1", "-version=1", "kv"),
            bao("secrets", "enable", "-path=app", "-description=team app", "kv-v2"),
            bao("secrets", "enable", "transit"),
            bao("secrets", "enable", "transit"),
            bao("secrets", "tune", "-max-lease-ttl=87600h", "-default-lease-ttl=1h", "transit"),
            bao("read", "-format=json", "sys/mounts/transit/tune"),
            bao("secrets", "tune", "-listing-visibility=unauth", "-description=crypto", "transit"),
            bao("read", "sys/mounts/transit/tune"),
            bao("secrets", "list", "-format=json"),
            bao("secrets", "disable", "transit"),
            bao("secrets", "disable", "nothing-here"),
            bao("secrets", "list"),
            bao(
                "secrets",
                "enable",
                "-path=long",
                "-max-lease-ttl=87600h",
                "-default-lease-ttl=8760h",
                "-listing-visibility=unauth",
                "-description=ten years",
                "transit",
            ),
            bao("secrets", "enable", "-path=toolong", "-default-lease-ttl=1000h", "transit"),
            bao("secrets", "tune", "-default-lease-ttl=100000h", "long"),
            bao("secrets", "tune", "-max-lease-ttl=system", "-default-lease-ttl=system", "long"),
            bao("read", "sys/mounts/long/tune"),
            bao("secrets", "list", "-detailed"),
            bao("secrets", "tune", "-max-lease-ttl=1h", "nothing-here"),
            bao("secrets", "enable", "nosuchengine"),
        ],
    ),
    Session(
        "auth-mounts",
        [
            bao("auth", "enable", "approle"),
            bao("auth", "enable", "-path=robots", "-description=ci robots", "approle"),
            bao("auth", "list"),
            bao("auth", "tune", "-max-lease-ttl=87600h", "-default-lease-ttl=2h", "robots"),
            bao("read", "sys/auth/robots/tune"),
            bao("auth", "list", "-detailed", "-format=json"),
            bao("auth", "disable", "robots"),
            bao("auth", "list"),
        ],
    ),
]
