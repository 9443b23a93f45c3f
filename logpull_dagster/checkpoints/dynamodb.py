"""Placeholder: filled in by issue 12 (production state)."""

PLUGINS: list = []
