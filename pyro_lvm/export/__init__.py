"""Exports to other tools."""
