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
]
