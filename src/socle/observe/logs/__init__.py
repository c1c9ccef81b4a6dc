"""Logs: every instance's output and Socle's own records in an embedded DuckDB store,
queried with a LogQL subset and served through a Loki-compatible API.

Modules: :mod:`.store` (DuckDB + sealed Parquet segments), :mod:`.chain` (the segments'
integrity chain and its offline verifier), :mod:`.logql` (parser and SQL compiler),
:mod:`.tail` (the shims' files, read from committed offsets), :mod:`.service` (the
background pass and the logging handler), :mod:`.loki` (Loki's JSON shapes and forwarding).
"""
