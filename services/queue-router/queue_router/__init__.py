"""Tally queue-router service."""
