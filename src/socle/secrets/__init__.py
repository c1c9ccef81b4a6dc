"""The secrets engine: a subset of the Vault HTTP API served under ``/v1``."""
