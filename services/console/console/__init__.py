"""Tally console service."""
