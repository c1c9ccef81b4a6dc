"""Secrets engines behind the :mod:`socle.secrets.backend` interface: ``kv`` (v1 and v2),
``transit``, ``pki`` and ``database``.

Each engine is a module with a factory registered in :mod:`socle.secrets.registry`; the
modules starting with ``_`` are their private building blocks (path router, field parsing,
pure models of versions, key rings, certificates and SQL templates).
"""
