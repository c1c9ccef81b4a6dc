"""operator init/unseal/seal on fresh, sealed servers (OpenBao on in-memory storage, Socle
without --dev), then key-status and rotate with the new root token."""

from __future__ import annotations

from tests.integration.secrets.bao_cli.harness import Session, bao

# Socle reports its own version and storage, has no build date and no cluster (no HA).
OWN = (
    r"^(Version|Commit Date|Storage Type|Cluster Name|Cluster ID|HA Enabled) ",
    r'^\s*"(version|commit_date|build_date|storage_type|cluster_name|cluster_id|ha_enabled)": ',
)
INIT_KEYS = {
    "k1": "unseal_keys_b64.0",
    "k2": "unseal_keys_b64.1",
    "k3": "unseal_keys_b64.2",
    "k1hex": "unseal_keys_hex.0",
    "k2hex": "unseal_keys_hex.1",
    "k3hex": "unseal_keys_hex.2",
    "initroot": "root_token",
}

SESSIONS = [
    Session(
        "operator-init-unseal-seal",
        [
            bao("status", ignore_lines=OWN),
            bao("operator", "init", "-status"),
            bao("operator", "unseal", "AAAA", ignore_lines=OWN),
            bao(
                "operator",
                "init",
                "-key-shares=3",
                "-key-threshold=2",
                "-format=json",
                capture_json=INIT_KEYS,
            ),
            bao("operator", "init", "-status"),
            bao("operator", "init", "-key-shares=1", "-key-threshold=1"),
            bao("status", ignore_lines=OWN),
            bao("operator", "unseal", "${k1}", ignore_lines=OWN),
            bao("operator", "unseal", "-format=json", "${k1}", ignore_lines=OWN),
            bao("operator", "unseal", "-reset", ignore_lines=OWN),
            bao("operator", "unseal", "${k1}", ignore_lines=OWN),
            bao("operator", "unseal", "${k2hex}", ignore_lines=OWN),
            bao("status", "-format=json", ignore_lines=OWN),
            bao("token", "lookup", "-format=json", token="${initroot}"),
            # How many barrier writes an init makes is each server's own storage layout.
            bao(
                "operator",
                "key-status",
                token="${initroot}",
                ignore_lines=(r"^Encryption Count ",),
            ),
            bao("operator", "rotate", token="${initroot}"),
            bao("operator", "seal"),
            bao("operator", "seal", token="${initroot}"),
            bao("status", ignore_lines=OWN),
            bao("kv", "get", "secret/x", token="${initroot}"),
            bao("operator", "unseal", "${k3}", ignore_lines=OWN),
            bao("operator", "unseal", "${k1}", ignore_lines=OWN),
            bao("operator", "key-status", token="${initroot}"),
        ],
        sealed=True,
    ),
]
