"""The connect layer: service registry, Consul-compatible API, DNS, external services,
ingress (nginx).

Reads the runtime (instances and their health) and the state store; never the API, CLI or
server (import-linter keeps it so). The ingress lives in :mod:`socle.network.ingress`.
"""
