"""Fixtures shared by every test tree."""
