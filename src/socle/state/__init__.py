"""The state store: a small key-value interface with compare-and-swap, and its backends.

Ground floor: every subsystem (engine, secrets, and later gitops, network, observe) keeps its
records here and imports nothing else of each other's to do it.
"""
