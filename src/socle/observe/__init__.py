"""Observe: metrics, logs, traces and alerts of the apps and of Socle itself."""
