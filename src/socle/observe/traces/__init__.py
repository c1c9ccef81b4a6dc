"""Traces: Socle's own spans (OpenTelemetry SDK) and the apps' (OTLP/HTTP receiver) in an
embedded, bounded DuckDB store served by the log store's worker process.

Modules: :mod:`.model` (spans, the span tree; pure), :mod:`.otlp` (OTLP protobuf and JSON
decoding), :mod:`.store` (the DuckDB store, only in the worker), :mod:`.sdk` (the SDK's
provider and the span rows it yields), :mod:`.service` (buffering, export, queries, the
apps' ingest key).
"""
