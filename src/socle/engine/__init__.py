"""Desired vs actual: stores, plans, releases, apply and history."""
