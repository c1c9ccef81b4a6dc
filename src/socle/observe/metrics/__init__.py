"""Metrics: Socle's own, per instance, and the Prometheus that scrapes them."""
