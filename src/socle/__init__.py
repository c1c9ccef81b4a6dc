"""Socle: a self-hosted cloud operating platform driven by one Git repository."""

__version__ = "0.1.0"
