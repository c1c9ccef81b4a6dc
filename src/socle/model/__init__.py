"""Manifest kinds, loading, overlays and validation."""
