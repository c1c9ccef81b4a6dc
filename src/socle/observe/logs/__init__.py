"""Logs: every instance's output and Socle's own records in an embedded DuckDB store,
queried with a LogQL subset and served through a Loki-compatible API.

Modules: :mod:`.model` (types and the store interface, no engine), :mod:`.store` (DuckDB +
sealed Parquet segments), :mod:`.worker` (the store in its own process, and the control
plane's client), :mod:`.chain` (the segments' integrity chain and its offline verifier),
:mod:`.logql` (parser and SQL compiler), :mod:`.tail` (the shims' files, read from
committed offsets), :mod:`.service` (the background pass, live tails and the logging
handler), :mod:`.loki` (Loki's JSON shapes and forwarding).
"""
